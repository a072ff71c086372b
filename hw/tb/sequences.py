"""Item lists for each test: every bit width, value classes, lengths and stall patterns.

Each builder returns a list of ConvItem; ListSequence plays it.
"""

from __future__ import annotations

import numpy as np

from axi import Throttle
from env import ConvItem
from refmodel import (
    QuantConfig,
    bf16_bits_to_f32,
    bits_to_f32,
    f32_bits_to_bf16_bits,
    f32_to_bits,
    pack,
    quantize,
    to_pattern,
)
from stimulus import (
    SCALE_KINDS,
    VALUE_CLASSES,
    all_widths,
    choose_scale,
    gen_codes,
    gen_length,
    gen_value,
    gen_values,
)

# Stall patterns per tensor (source bubbles, sink back-pressure); "none"/"none" appears too
# so that the no-stall case is checked as well.
BP_PAIRS = [(s, k) for s in Throttle.KINDS for k in Throttle.KINDS]


def _bp(rng: np.random.Generator, stalled: bool | None = None) -> tuple[str, str]:
    while True:
        src, sink = BP_PAIRS[int(rng.integers(0, len(BP_PAIRS)))]
        if stalled is None or stalled == (src != "none" or sink != "none"):
            return src, sink


def _float_frame(values: np.ndarray, bf16: bool) -> list[int]:
    bits = np.asarray(f32_to_bits(values), dtype=np.int64)
    return [int(b) for b in (f32_bits_to_bf16_bits(bits) if bf16 else bits)]


def _config(rng, bits, signed, kind=None, count=1) -> tuple[QuantConfig, str]:
    scale, kind = choose_scale(rng, bits, signed, kind)
    return QuantConfig(bits=bits, scale=scale, signed=signed, narrow=bool(rng.integers(0, 2)), count=count), kind


def _values_all_classes(rng, cfg, n) -> tuple[np.ndarray, list[str]]:
    """n >= len(VALUE_CLASSES) values with every class present at least once, shuffled."""
    values, labels = gen_values(rng, cfg, n)
    values[: len(VALUE_CLASSES)] = np.array([gen_value(rng, c, cfg) for c in VALUE_CLASSES], dtype=np.float32)
    labels[: len(VALUE_CLASSES)] = list(VALUE_CLASSES)
    perm = rng.permutation(n)
    return values[perm], [labels[i] for i in perm]


def quantizer_items(rng: np.random.Generator, settings: dict, bf16: bool, path: str = "quant") -> list[ConvItem]:
    """Per width: one tensor with every value class, plus random tensors; all scale kinds."""
    items: list[ConvItem] = []
    kinds = list(SCALE_KINDS)
    for bits, signed in all_widths():
        for r in range(settings["repeats"]):
            kind = "typical" if r == 0 else None
            cfg, kind = _config(rng, bits, signed, kind)
            n = max(len(VALUE_CLASSES), gen_length(rng, bits, 32, settings["max_len"]))
            values, labels = _values_all_classes(rng, cfg, n)
            src, sink = _bp(rng, stalled=True if r == 0 else None)
            items.append(ConvItem(f"q_{bits}_{signed}_{r}", cfg, {path: _float_frame(values, bf16)},
                                  {path: labels}, src, sink, scale_kind=kind))
        # one tensor per scale kind, rotating through widths
        kind = kinds[len(items) % len(kinds)]
        cfg, kind = _config(rng, bits, signed, kind)
        values, labels = gen_values(rng, cfg, gen_length(rng, bits, 32, settings["max_len"]))
        src, sink = _bp(rng)
        items.append(ConvItem(f"qk_{bits}_{signed}", cfg, {path: _float_frame(values, bf16)},
                              {path: labels}, src, sink, scale_kind=kind))
    return items


def dequantizer_items(rng: np.random.Generator, settings: dict, path: str = "dequant") -> list[ConvItem]:
    """Per width: codes (extremes or random, with junk above bit b) under every scale kind."""
    items: list[ConvItem] = []
    for bits, signed in all_widths():
        for r in range(settings["repeats"] + 1):
            kind = "typical" if r == 0 else str(rng.choice(SCALE_KINDS))
            cfg, kind = _config(rng, bits, signed, kind)
            n = gen_length(rng, bits, 32, settings["max_len"])
            codes, cls = gen_codes(rng, bits, signed, n)
            junk = [int(j) << bits & 0xFFFF for j in rng.integers(0, 1 << 16, size=n)]
            src, sink = _bp(rng, stalled=True if r == 0 else None)
            items.append(ConvItem(f"d_{bits}_{signed}_{r}", cfg, {path: [c | j for c, j in zip(codes, junk)]},
                                  {path: [cls]}, src, sink, scale_kind=kind))
    return items


def packer_items(rng: np.random.Generator, settings: dict, word_w: int, path: str = "pack") -> list[ConvItem]:
    items: list[ConvItem] = []
    for bits, signed in all_widths():
        for r in range(settings["repeats"] + 1):
            n = gen_length(rng, bits, word_w, settings["max_len"] * 2)
            codes, cls = gen_codes(rng, bits, signed, n)
            junk = [int(j) << bits & 0xFFFF for j in rng.integers(0, 1 << 16, size=n)]
            cfg = QuantConfig(bits=bits, scale=1.0, signed=signed)
            src, sink = _bp(rng, stalled=True if r == 0 else None)
            items.append(ConvItem(f"p_{bits}_{signed}_{r}", cfg, {path: [c | j for c, j in zip(codes, junk)]},
                                  {path: [cls]}, src, sink))
    return items


def unpacker_items(rng: np.random.Generator, settings: dict, word_w: int, path: str = "unpack") -> list[ConvItem]:
    items: list[ConvItem] = []
    for bits, signed in all_widths():
        for r in range(settings["repeats"] + 1):
            n = gen_length(rng, bits, word_w, settings["max_len"] * 2)
            codes, cls = gen_codes(rng, bits, signed, n)
            cfg = QuantConfig(bits=bits, scale=1.0, signed=signed, count=n)
            src, sink = _bp(rng, stalled=True if r == 0 else None)
            items.append(ConvItem(f"u_{bits}_{signed}_{r}", cfg, {path: pack(codes, bits, word_w)},
                                  {path: [cls]}, src, sink))
    return items


def top_items(rng: np.random.Generator, settings: dict, lanes: int, word_w: int, bf16: bool) -> list[ConvItem]:
    """Tensors for both paths of every lane under one shared configuration each.

    The dequantize path gets random or extreme codes, or (one time in three) the codes the
    quantize path produces for this tensor, as in a real round trip.
    """
    items: list[ConvItem] = []
    widths = all_widths()
    for r in range(settings["repeats"]):
        order = [widths[i] for i in rng.permutation(len(widths))]
        for k, (bits, signed) in enumerate(order):
            kind = "typical" if (r == 0 and k % 3 != 2) else None
            cfg, kind = _config(rng, bits, signed, kind)
            n = max(len(VALUE_CLASSES), gen_length(rng, bits, word_w, settings["max_len"]))
            cfg = QuantConfig(cfg.bits, cfg.scale, cfg.signed, cfg.narrow, count=n)
            frames: dict[str, list[int]] = {}
            labels: dict[str, list[str]] = {}
            for lane in range(lanes):
                values, vlabels = _values_all_classes(rng, cfg, n)
                qframe = _float_frame(values, bf16)

                if rng.random() < 1 / 3:
                    x = bf16_bits_to_f32(qframe) if bf16 else bits_to_f32(qframe)
                    codes, cls = [int(c) for c in to_pattern(quantize(x, cfg), bits)], "quantized"
                else:
                    codes, cls = gen_codes(rng, bits, signed, n)
                frames[f"q{lane}"] = qframe
                labels[f"q{lane}"] = vlabels
                frames[f"d{lane}"] = pack(codes, bits, word_w)
                labels[f"d{lane}"] = [cls]
            src, sink = _bp(rng, stalled=True if r == 0 else None)
            items.append(ConvItem(f"t_{bits}_{signed}_{r}", cfg, frames, labels, src, sink,
                                  settle=bool(rng.random() < 0.25), scale_kind=kind))
    return items
