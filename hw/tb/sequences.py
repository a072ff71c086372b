"""Item lists for each test: every bit width, value classes, lengths and stall patterns.

Each builder returns a list of ConvItem; ListSequence plays it. Repeat r of bit width k
uses back-pressure pattern ROTATION[(k + r) % 4] restricted so that repeat 0 always
stalls: with 4 repeats (full suite) every width sees every pattern.
"""

from __future__ import annotations

import numpy as np

from axi import Throttle
from uvm_env import ConvItem
from refmodel import (
    QuantConfig,
    bf16_bits_to_f32,
    bits_to_f32,
    dequantize_bits,
    f32_bits_to_bf16_bits,
    f32_to_bits,
    from_pattern,
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

STALLED = ("both", "backpressure", "bubbles")
STALL_KINDS = [k for k in Throttle.KINDS if k != "none"]


def bp_for(rng: np.random.Generator, k: int, r: int) -> tuple[str, str]:
    """(source, sink) throttle kinds for repeat r of width k; repeat 0 always stalls."""
    label = STALLED[k % 3] if r == 0 else (STALLED + ("none",))[(k + r) % 4]
    pick = lambda: str(rng.choice(STALL_KINDS))  # noqa: E731
    return {
        "none": ("none", "none"),
        "bubbles": (pick(), "none"),
        "backpressure": ("none", pick()),
        "both": (pick(), pick()),
    }[label]


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


def result_classes(codes: list[int], cfg: QuantConfig) -> list[str]:
    """Classes of the dequantized results (for coverage): normal, subnormal, zero, inf, nan."""
    b = dequantize_bits(from_pattern(codes, cfg.bits, cfg.signed), cfg) & 0x7FFFFFFF
    exp = b >> 23
    found = {
        "r_zero": b == 0,
        "r_subnormal": (exp == 0) & (b != 0),
        "r_normal": (exp > 0) & (exp < 255),
        "r_inf": b == 0x7F800000,
        "r_nan": b > 0x7F800000,
    }
    return [name for name, mask in found.items() if np.any(mask)]


def _junk_above(rng, codes: list[int], bits: int) -> list[int]:
    """The codes with random bits above bit b (the blocks must ignore them)."""
    junk = rng.integers(0, 1 << 16, size=len(codes))
    return [c | (int(j) << bits & 0xFFFF) for c, j in zip(codes, junk)]


def quantizer_items(rng: np.random.Generator, settings: dict, bf16: bool, path: str = "quant") -> list[ConvItem]:
    """Per width: tensors with every value class under every scale kind; then a soak."""
    items: list[ConvItem] = []
    for k, (bits, signed) in enumerate(all_widths()):
        for r in range(settings["repeats"] + 1):
            kind = "typical" if r == 0 else SCALE_KINDS[(k + r) % len(SCALE_KINDS)]
            cfg, kind = _config(rng, bits, signed, kind)
            n = max(len(VALUE_CLASSES), gen_length(rng, bits, 32, settings["max_len"]))
            values, labels = _values_all_classes(rng, cfg, n)
            src, sink = bp_for(rng, k, r)
            items.append(ConvItem(f"q_{bits}_{signed}_{r}", cfg, {path: _float_frame(values, bf16)},
                                  {path: labels}, src, sink, scale_kind=kind))
    items += _quantizer_soak(rng, settings, bf16, path)
    return items


def _quantizer_soak(rng, settings, bf16, path) -> list[ConvItem]:
    """Long no-stall tensors of near-grid values (ties, boundaries) at random widths."""
    items = []
    total, chunk = settings["soak"], 1000
    for i in range(0, total, chunk):
        bits, signed = all_widths()[int(rng.integers(0, 31))]
        cfg, kind = _config(rng, bits, signed, "typical" if rng.random() < 0.8 else None)
        classes = ("inrange", "tie", "boundary", "tiny", "saturation")
        values, labels = gen_values(rng, cfg, min(chunk, total - i), classes=classes)
        items.append(ConvItem(f"qsoak_{i}", cfg, {path: _float_frame(values, bf16)}, {path: labels},
                              scale_kind=kind))
    return items


def dequantizer_items(rng: np.random.Generator, settings: dict, bf16: bool = False,
                      path: str = "dequant") -> list[ConvItem]:
    """Per width: codes (extremes or random, junk above bit b) under every scale kind; a soak."""
    items: list[ConvItem] = []
    for k, (bits, signed) in enumerate(all_widths()):
        for r in range(settings["repeats"] + 1):
            kind = "typical" if r == 0 else SCALE_KINDS[(k + r) % len(SCALE_KINDS)]
            cfg, kind = _config(rng, bits, signed, kind)
            n = gen_length(rng, bits, 32, settings["max_len"])
            codes, cls = gen_codes(rng, bits, signed, n)
            src, sink = bp_for(rng, k, r)
            items.append(ConvItem(f"d_{bits}_{signed}_{r}", cfg, {path: _junk_above(rng, codes, bits)},
                                  {path: [cls, *result_classes(codes, cfg)]}, src, sink, scale_kind=kind))
    # soak: 16-bit codes against scales spread over the whole exponent range
    total, chunk = settings["soak"], 1000
    for i in range(0, total, chunk):
        signed = bool(rng.integers(0, 2))
        scale = float(np.float32(2.0 ** rng.uniform(-149, 128) * (1 if rng.random() < 0.9 else -1)))
        cfg = QuantConfig(bits=16, scale=scale, signed=signed)
        codes = [int(c) for c in rng.integers(0, 1 << 16, size=min(chunk, total - i))]
        items.append(ConvItem(f"dsoak_{i}", cfg, {path: codes}, {path: ["soak", *result_classes(codes, cfg)]}))
    return items


def packer_items(rng: np.random.Generator, settings: dict, word_w: int, path: str = "pack") -> list[ConvItem]:
    items: list[ConvItem] = []
    for k, (bits, signed) in enumerate(all_widths()):
        for r in range(settings["repeats"] + 1):
            n = gen_length(rng, bits, word_w, settings["max_len"] * 2)
            codes, cls = gen_codes(rng, bits, signed, n)
            cfg = QuantConfig(bits=bits, scale=1.0, signed=signed)
            src, sink = bp_for(rng, k, r)
            items.append(ConvItem(f"p_{bits}_{signed}_{r}", cfg, {path: _junk_above(rng, codes, bits)},
                                  {path: [cls]}, src, sink))
    return items


def unpacker_items(rng: np.random.Generator, settings: dict, word_w: int, path: str = "unpack") -> list[ConvItem]:
    items: list[ConvItem] = []
    for k, (bits, signed) in enumerate(all_widths()):
        for r in range(settings["repeats"] + 1):
            n = gen_length(rng, bits, word_w, settings["max_len"] * 2)
            codes, cls = gen_codes(rng, bits, signed, n)
            cfg = QuantConfig(bits=bits, scale=1.0, signed=signed, count=n)
            src, sink = bp_for(rng, k, r)
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
        for k in rng.permutation(len(widths)):
            bits, signed = widths[k]
            kind = "typical" if (r == 0 and k % 3 != 2) else SCALE_KINDS[(k + r) % len(SCALE_KINDS)]
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
                labels[f"d{lane}"] = [cls, *result_classes(codes, cfg)]
            src, sink = bp_for(rng, int(k), r)
            items.append(ConvItem(f"t_{bits}_{signed}_{r}", cfg, frames, labels, src, sink,
                                  settle=bool(rng.random() < 0.25), scale_kind=kind))
    return items
