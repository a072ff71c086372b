"""Item lists for each test: scenarios per bit width, stall patterns, tensor streams.

Each builder returns a list of ConvItem; ListSequence plays it. Per bit width, a fixed set
of scenarios (a scale kind and what the tensor must contain) is responsible for the
width's coverage goals, and `repeats` more tensors of rotating scale kinds are filled at
random. Whether the goals were met is decided by coverage from the monitors, not here.

Stall patterns: repeat 0 of every bit width stalls heavily on both sides, with at least
MIN_STALLED values; repeat r > 0 rotates through bubbles, back-pressure, both and none. Streams: groups of tensors with one configuration and no stalls,
sent back to back; from the second tensor of a group on, the DUT must keep one value per
cycle across the tensor boundary (ConvItem.steady, checked by the scoreboard).
"""

from __future__ import annotations

import numpy as np

from axi import Throttle
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
from stimulus import all_widths, gen_codes, gen_length, gen_values, make_config, straddling_length
from uvm_env import ConvItem

STALLED = ("both", "backpressure", "bubbles")
STALL_KINDS = [k for k in Throttle.KINDS if k != "none"]
MIN_STALLED = 8  # values of a heavily stalled tensor: input bubbles and output stalls are then near certain
# Scale kinds rotated over the extra tensors of each width.
EXTRA_KINDS = ("typical", "negative", "tiny", "subnormal", "zero", "negzero", "inf", "nan", "huge", "midpoint",
               "huge_low")
# Quantize scenarios per width: (scale kind, intents the tensor must contain). 'carry' and
# 'sticky' scales are built for their boundaries (boundaries.py); the first call of an
# intent takes its sharpest case (a carry into 1, the sticky and tie neighbours at k = 0).
QUANT_SCENARIOS = (
    ("typical", ("int_tie_down", "int_tie_up", "edge_hi", "edge_lo", "tiny", "inrange", "sat_hi", "sat_lo")),
    ("midpoint_up", ("p_tie_up", "p_tie_up", "p_tie_down", "sat_hi")),
    ("midpoint_down", ("p_tie_down", "p_tie_down", "p_tie_up", "sat_lo")),
    ("huge_low", ("subnormal", "subnormal", "zero", "nan_inf", "x_edge", "x_edge")),
    ("carry", ("carry_in", "carry_in", "carry_in", "carry_sat", "carry_sat", "carry_sat", "int_tie_ulp", "sat_hi_1",
               "sat_lo_1")),
    ("sticky", ("p_sticky", "p_sticky", "p_sticky", "int_tie_ulp", "int_tie_ulp", "sat_binade16", "p_subnormal")),
)
# Dequantize scenarios per width: (scale kind, code kind). The last four are the rounding
# boundaries: largest and smallest normal binade, quotients just below powers of two,
# exact bfloat16 ties (widths with 9-bit codes).
DEQUANT_SCENARIOS = (("typical", "extreme"), ("huge", "small"), ("huge_low", "small"), ("edge", "extreme"),
                     ("tiny", "random"), ("top", "extreme"), ("huge_edge", "small"), ("near_pow2", "pow2"),
                     ("pow2", "tie9"))
# Intents a top-level tensor of a scale kind must contain; codes per scale kind.
TOP_MUST = {"midpoint_up": ("p_tie_up",), "midpoint_down": ("p_tie_down",),
            "carry": ("carry_in", "carry_sat", "int_tie_ulp"), "sticky": ("p_sticky", "sat_hi_1", "sat_lo_1")}
TOP_CODES = {"huge": "small", "huge_low": "small", "huge_edge": "small", "near_pow2": "pow2", "top": "extreme"}
# Bit widths whose tensors can end inside a word (b does not divide W): stream groups.
STREAM_WIDTHS = ((3, False), (5, True), (7, False), (11, True), (13, False))


def bp_for(rng: np.random.Generator, k: int, r: int) -> tuple[str, str]:
    """(source, sink) throttle kinds for repeat r of width k; repeat 0 stalls heavily on both."""
    if r == 0:
        return "heavy", "heavy"
    label = (STALLED + ("none",))[(k + r) % 4]
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


def _with_count(cfg: QuantConfig, n: int) -> QuantConfig:
    return QuantConfig(cfg.bits, cfg.scale, cfg.signed, cfg.narrow, count=n)


def _junk_above(rng, codes: list[int], bits: int) -> list[int]:
    """The codes with random bits above bit b (the blocks must ignore them)."""
    junk = rng.integers(0, 1 << 16, size=len(codes))
    return [c | (int(j) << bits & 0xFFFF) for c, j in zip(codes, junk)]


def _stream_lengths(rng, bits: int, word_w: int, max_len: int) -> list[int]:
    """Lengths of a stream group: straddling ends, a single value, an exact word fill."""
    straddle = straddling_length(bits, word_w, max_len) or 2
    fill = word_w // np.gcd(word_w, bits)
    exact = int(fill) if fill <= max_len else 1
    return [straddle, straddle, 1, exact, straddle, int(rng.integers(1, max_len + 1))]


def _stream(name: str, cfg: QuantConfig, tensors: list[tuple[dict, int]]) -> list[ConvItem]:
    """One configuration, no stalls, tensors back to back; the DUT must not lose a cycle.

    tensors: (frames, count) per item; count is COUNT of the dequantize path (1 if unused).
    The first item waits for the DUT to be idle, so no earlier back-pressure lingers.
    """
    return [ConvItem(f"{name}_{i}", _with_count(cfg, count), frames, settle=i == 0, steady=i > 0)
            for i, (frames, count) in enumerate(tensors)]


def quantizer_items(rng: np.random.Generator, settings: dict, bf16: bool, path: str = "quant") -> list[ConvItem]:
    """Per width: the quantize scenarios, rotating extra scale kinds, a stream; then a soak."""
    items: list[ConvItem] = []
    for k, (bits, signed) in enumerate(all_widths()):
        plan = list(QUANT_SCENARIOS) + [(EXTRA_KINDS[(k + r) % len(EXTRA_KINDS)], ())
                                        for r in range(settings["repeats"])]
        for r, (kind, must) in enumerate(plan):
            cfg = make_config(rng, bits, signed, kind, bf16)
            n = max(len(must) + 2, MIN_STALLED if r == 0 else 1, gen_length(rng, bits, 32, settings["max_len"]))
            values = gen_values(rng, cfg, n, must, bf16=bf16)
            src, sink = bp_for(rng, k, r)
            items.append(ConvItem(f"q_{bits}_{signed}_{r}_{kind}", cfg, {path: _float_frame(values, bf16)},
                                  src_bp=src, sink_bp=sink))
    for bits, signed in STREAM_WIDTHS:
        cfg = make_config(rng, bits, signed, "typical", bf16)
        tensors = [({path: _float_frame(gen_values(rng, cfg, n, bf16=bf16), bf16)}, 1)
                   for n in _stream_lengths(rng, bits, 32, settings["max_len"])]
        items += _stream(f"qs_{bits}", cfg, tensors)
    items += _quantizer_soak(rng, settings, bf16, path)
    return items


def _quantizer_soak(rng, settings, bf16, path) -> list[ConvItem]:
    """Long no-stall tensors of near-grid values (ties, midpoints, carries, boundaries) at random widths."""
    items = []
    total, chunk = settings["soak"], 1000
    fill = ("inrange", "int_tie_down", "int_tie_up", "p_tie_down", "p_tie_up", "edge_hi", "edge_lo", "tiny",
            "sat_hi", "sat_lo")
    # the boundaries of the scales built for them (on other scales most of them do not exist)
    built = {"carry": ("carry_in", "carry_sat", "sat_hi_1", "sat_lo_1", "inrange"),
             "sticky": ("p_sticky", "int_tie_ulp", "sat_hi_1", "sat_lo_1", "inrange")}
    for i in range(0, total, chunk):
        bits, signed = all_widths()[int(rng.integers(0, 31))]
        kind = str(rng.choice(["typical", "midpoint", "midpoint", "typical", "huge_low", "negative", "carry",
                               "sticky"]))
        cfg = make_config(rng, bits, signed, kind, bf16)
        values = gen_values(rng, cfg, min(chunk, total - i), fill=built.get(kind, fill), bf16=bf16)
        items.append(ConvItem(f"qsoak_{i}", cfg, {path: _float_frame(values, bf16)}))
    return items


def dequantizer_items(rng: np.random.Generator, settings: dict, bf16: bool = False,
                      path: str = "dequant") -> list[ConvItem]:
    """Per width: the dequantize scenarios (junk above bit b), extra scale kinds; a stream; a soak."""
    items: list[ConvItem] = []
    for k, (bits, signed) in enumerate(all_widths()):
        plan = list(DEQUANT_SCENARIOS) + [(EXTRA_KINDS[(k + r) % len(EXTRA_KINDS)], "random")
                                          for r in range(settings["repeats"])]
        for r, (kind, code_kind) in enumerate(plan):
            cfg = make_config(rng, bits, signed, kind, bf16)
            n = max(MIN_STALLED if r == 0 else 4, gen_length(rng, bits, 32, settings["max_len"]))
            codes = gen_codes(rng, bits, signed, n, code_kind)
            src, sink = bp_for(rng, k, r)
            items.append(ConvItem(f"d_{bits}_{signed}_{r}_{kind}", cfg, {path: _junk_above(rng, codes, bits)},
                                  src_bp=src, sink_bp=sink))
    for bits, signed in STREAM_WIDTHS:
        cfg = make_config(rng, bits, signed, "typical", bf16)
        tensors = [({path: gen_codes(rng, bits, signed, n)}, 1)
                   for n in _stream_lengths(rng, bits, 32, settings["max_len"])]
        items += _stream(f"ds_{bits}", cfg, tensors)
    # soak: 16-bit codes against scales spread over the whole exponent range
    total, chunk = settings["soak"], 1000
    for i in range(0, total, chunk):
        signed = bool(rng.integers(0, 2))
        scale = float(np.float32(2.0 ** rng.uniform(-149, 128) * (1 if rng.random() < 0.9 else -1)))
        cfg = QuantConfig(bits=16, scale=scale, signed=signed)
        codes = [int(c) for c in rng.integers(0, 1 << 16, size=min(chunk, total - i))]
        items.append(ConvItem(f"dsoak_{i}", cfg, {path: codes}))
    return items


def packer_items(rng: np.random.Generator, settings: dict, word_w: int, path: str = "pack") -> list[ConvItem]:
    items: list[ConvItem] = []
    for k, (bits, signed) in enumerate(all_widths()):
        for r in range(settings["repeats"] + 1):
            n = max(MIN_STALLED if r == 0 else 1, gen_length(rng, bits, word_w, settings["max_len"] * 2))
            codes = gen_codes(rng, bits, signed, n, ("extreme", "random")[r % 2])
            cfg = QuantConfig(bits=bits, scale=1.0, signed=signed)
            src, sink = bp_for(rng, k, r)
            items.append(ConvItem(f"p_{bits}_{signed}_{r}", cfg, {path: _junk_above(rng, codes, bits)},
                                  src_bp=src, sink_bp=sink))
    for bits, signed in STREAM_WIDTHS + ((16, False), (1, False)):
        cfg = QuantConfig(bits=bits, scale=1.0, signed=signed)
        tensors = [({path: gen_codes(rng, bits, signed, n)}, 1)
                   for n in _stream_lengths(rng, bits, word_w, 2 * settings["max_len"])]
        items += _stream(f"ps_{bits}", cfg, tensors)
    return items


def unpacker_items(rng: np.random.Generator, settings: dict, word_w: int, path: str = "unpack") -> list[ConvItem]:
    items: list[ConvItem] = []
    for k, (bits, signed) in enumerate(all_widths()):
        for r in range(settings["repeats"] + 1):
            n = max(MIN_STALLED if r == 0 else 1, gen_length(rng, bits, word_w, settings["max_len"] * 2))
            codes = gen_codes(rng, bits, signed, n, ("extreme", "random")[r % 2])
            cfg = QuantConfig(bits=bits, scale=1.0, signed=signed, count=n)
            src, sink = bp_for(rng, k, r)
            items.append(ConvItem(f"u_{bits}_{signed}_{r}", cfg, {path: pack(codes, bits, word_w)},
                                  src_bp=src, sink_bp=sink))
    for bits, signed in STREAM_WIDTHS + ((16, False), (1, False)):
        # COUNT is configuration: a stream keeps one length (one whose last value straddles)
        n = straddling_length(bits, word_w, 2 * settings["max_len"]) or 3
        cfg = QuantConfig(bits=bits, scale=1.0, signed=signed)
        tensors = [({path: pack(gen_codes(rng, bits, signed, n), bits, word_w)}, n) for _ in range(5)]
        items += _stream(f"us_{bits}", cfg, tensors)
    return items


def _top_frames(rng, cfg: QuantConfig, n: int, lanes: int, word_w: int, bf16: bool, kind: str,
                must=()) -> dict[str, list[int]]:
    """Both paths of every lane: n floats for quantize; n codes (random, extreme, small for
    huge scales, or the quantize path's own output: a round trip) packed for dequantize."""
    frames: dict[str, list[int]] = {}
    for lane in range(lanes):
        qframe = _float_frame(gen_values(rng, cfg, n, must, bf16=bf16), bf16)
        if kind in TOP_CODES:
            codes = gen_codes(rng, cfg.bits, cfg.signed, n, TOP_CODES[kind])
        elif rng.random() < 1 / 3:
            x = bf16_bits_to_f32(qframe) if bf16 else bits_to_f32(qframe)
            codes = [int(c) for c in to_pattern(quantize(x, cfg), cfg.bits)]
        else:
            codes = gen_codes(rng, cfg.bits, cfg.signed, n, str(rng.choice(["extreme", "random"])))
        frames[f"q{lane}"] = qframe
        frames[f"d{lane}"] = pack(codes, cfg.bits, word_w)
    return frames


def top_items(rng: np.random.Generator, settings: dict, lanes: int, word_w: int, bf16: bool) -> list[ConvItem]:
    """Tensors for both paths of every lane under one shared configuration each.

    Every width `repeats` + 1 times (the first always stalled), scale kinds rotating over
    all kinds, then stream groups (one configuration, back to back, no stalls).
    """
    items: list[ConvItem] = []
    widths = all_widths()
    kinds = ("typical", "midpoint_up", "midpoint_down", "huge", "huge_low", "carry", "sticky", "top", "huge_edge",
             "near_pow2") + EXTRA_KINDS
    for r in range(settings["repeats"] + 1):
        for k in rng.permutation(len(widths)):
            bits, signed = widths[k]
            kind = kinds[(int(k) + 3 * r) % len(kinds)]
            must = TOP_MUST.get(kind, ())
            n = max(MIN_STALLED if r == 0 else 1, len(must), gen_length(rng, bits, word_w, settings["max_len"]))
            cfg = make_config(rng, bits, signed, kind, bf16, count=n)
            src, sink = bp_for(rng, int(k), r)
            items.append(ConvItem(f"t_{bits}_{signed}_{r}_{kind}", cfg,
                                  _top_frames(rng, cfg, n, lanes, word_w, bf16, kind, must), src_bp=src,
                                  sink_bp=sink, settle=bool(rng.random() < 0.25)))
    for bits, signed in STREAM_WIDTHS:
        # COUNT is configuration, so a stream keeps one length: one whose last value straddles
        n = straddling_length(bits, word_w, settings["max_len"]) or 3
        cfg = make_config(rng, bits, signed, "typical", bf16)
        tensors = [(_top_frames(rng, cfg, n, lanes, word_w, bf16, "typical"), n) for _ in range(5)]
        items += _stream(f"ts_{bits}", cfg, tensors)
    return items
