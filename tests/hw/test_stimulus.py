"""Stimulus by construction and value labels computed from the value (hw/tb/stimulus.py,
hw/tb/classify.py), and the coverage goals (hw/tb/functional_coverage.py), without a simulator.

The labels are checked against an independent exact computation with fractions.Fraction;
the generators must produce, at every bit width, the classes they are built for (exact
product midpoints, decisive integer ties, subnormal dequantized results), as judged by
those labels.
"""

from __future__ import annotations

import functools
import math
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hw" / "tb"))

from classify import dequant_labels, quant_labels, stream_labels  # noqa: E402
from functional_coverage import IMPOSSIBLE, Coverage, all_width_keys, width_key  # noqa: E402
from refmodel import QuantConfig, bounds, f32_bits_to_bf16_bits, f32_to_bits  # noqa: E402
from stimulus import ValueGenerator, all_widths, gen_codes, make_config, straddling_length  # noqa: E402


def _code(v: Fraction, lo: int, hi: int) -> int:
    return min(hi, max(lo, round(v)))  # round() of a Fraction is half to even


def reference_quant_labels(x: np.float32, cfg: QuantConfig) -> set[str]:
    """The tie labels of one finite, nonzero product, from exact rational arithmetic."""
    lo, hi = bounds(cfg.bits, cfg.signed, cfg.narrow)
    s = np.float32(cfg.scale)
    exact = Fraction(float(x)) * Fraction(float(s))
    out = set()
    mag = abs(exact)
    e = math.floor(math.log2(mag))
    while Fraction(2) ** e > mag:
        e -= 1
    while Fraction(2) ** (e + 1) <= mag:
        e += 1
    if e >= -126:
        ulp = Fraction(2) ** (e - 23)
        down = (mag // ulp) * ulp
        if mag - down == ulp / 2:
            sign = -1 if exact < 0 else 1
            c_down, c_up = _code(sign * down, lo, hi), _code(sign * (down + ulp), lo, hi)
            if c_down == c_up:
                out.add("p_tie")
            else:
                out.add("p_tie_up" if (down / ulp) % 2 == 1 else "p_tie_down")
    with np.errstate(all="ignore"):
        p = Fraction(float(np.float32(x) * s))
    k = math.floor(abs(p))
    if abs(p) - k == Fraction(1, 2):
        sign = -1 if p < 0 else 1
        if _code(sign * k, lo, hi) != _code(sign * (k + 1), lo, hi):
            out.add("int_tie_up" if k % 2 else "int_tie_down")
    return out


TIE_LABELS = {"p_tie", "p_tie_up", "p_tie_down", "int_tie_up", "int_tie_down"}


@pytest.mark.parametrize("bits,signed", [(1, False), (2, True), (3, False), (5, True), (8, True), (16, False)])
def test_tie_labels_match_exact_arithmetic(bits: int, signed: bool) -> None:
    rng = np.random.default_rng(bits + 20 * signed)
    checked = ties = 0
    for kind in ("midpoint_up", "midpoint_down", "typical", "midpoint"):
        for _ in range(6):
            cfg = make_config(rng, bits, signed, kind)
            gen = ValueGenerator(rng, cfg)
            for intent in ("p_tie_up", "p_tie_down", "int_tie_up", "int_tie_down", "inrange", "edge_hi"):
                x = gen(intent)
                with np.errstate(all="ignore"):
                    p = x * np.float32(cfg.scale)
                if not np.isfinite(p) or p == 0:
                    continue
                want = reference_quant_labels(x, cfg)
                got = quant_labels([int(f32_to_bits(x))], cfg) & TIE_LABELS
                assert got == want, f"x={x!r} scale={cfg.scale!r} {cfg}: labels {got}, exact {want}"
                checked += 1
                ties += bool(want)
    assert checked > 100 and ties > checked // 3


def _labels_for(cfg: QuantConfig, values, bf16: bool) -> set[str]:
    bits = np.asarray([int(f32_to_bits(v)) for v in values], dtype=np.int64)
    if bf16:
        bits = f32_bits_to_bf16_bits(bits)
    return quant_labels([int(b) for b in bits], cfg, bf16)


@pytest.mark.parametrize("bf16", [False, True])
def test_midpoints_and_ties_are_built_at_every_width(bf16: bool) -> None:
    """A 'midpoint_up' / 'midpoint_down' scale plus the matching intent gives a decisive exact
    product midpoint of that direction (bfloat16 inputs too: x has an 8-bit significand);
    decisive integer ties at a typical scale (float32 inputs; a bfloat16 x rarely has one)."""
    rng = np.random.default_rng(3)
    for bits, signed in all_widths():
        wk = width_key(bits, signed)
        for direction in ("up", "down"):
            for cls in (f"p_tie_{direction}",) + (() if bf16 else (f"int_tie_{direction}",)):
                if (cls, wk) in IMPOSSIBLE:
                    continue
                kind = f"midpoint_{direction}" if cls.startswith("p_") else "typical"
                cfg = make_config(rng, bits, signed, kind, bf16)
                gen = ValueGenerator(rng, cfg, bf16)
                labels = _labels_for(cfg, [gen(cls) for _ in range(3)], bf16)
                assert cls in labels, f"{wk} {'bf16' if bf16 else 'fp32'}: no {cls} from {cfg} ({labels})"


def test_impossible_classes_really_are() -> None:
    """At 1-bit unsigned, no exact midpoint or tie rounds up to a different code: brute force."""
    cfg = QuantConfig(bits=1, scale=1.0, signed=False)
    for k in range(0, 4):
        for v in (Fraction(2 * k + 1, 2),):
            assert not (_code(v, 0, 1) != _code(v - Fraction(1, 2), 0, 1) and k % 2 == 1)
    assert all(make_config(np.random.default_rng(s), 1, False, "midpoint_up").scale for s in range(3))
    rng = np.random.default_rng(0)
    for _ in range(20):
        cfg = make_config(rng, 1, False, "midpoint_up")  # falls back to a 'down' midpoint
        labels = _labels_for(cfg, [ValueGenerator(rng, cfg)("p_tie_up") for _ in range(4)], False)
        assert "p_tie_up" not in labels and "p_tie_down" in labels


def test_subnormal_results_at_every_width() -> None:
    """Scales in [2^127, 2^128) and [2^126, 2^127) with codes |q| <= 3 give subnormal results
    shifted by 2 (deep) and by 1 (shallow) at every width; tiny scales overflow; 'edge' scales
    put the largest code one binade beyond the largest float."""
    rng = np.random.default_rng(4)
    for bits, signed in all_widths():
        for kind, want in (("huge", "r_sub_deep"), ("huge_low", "r_sub_shallow"), ("tiny", "r_overflow"),
                           ("edge", "r_overflow_edge")):
            cfg = make_config(rng, bits, signed, kind)
            codes = gen_codes(rng, bits, signed, 8, {"huge": "small", "huge_low": "small", "edge": "extreme"}.get(
                kind, "random"))
            labels = dequant_labels(codes, cfg)
            if want.startswith("r_sub"):
                assert {want, "r_subnormal"} <= labels, f"{width_key(bits, signed)} {kind}: {labels}"
            elif any(c for c in codes):
                assert {want, "r_inf"} <= labels, f"{width_key(bits, signed)} {kind}: {labels}"


def test_subnormal_inputs_get_nonzero_codes_at_every_width() -> None:
    rng = np.random.default_rng(5)
    for bits, signed in all_widths():
        cfg = make_config(rng, bits, signed, "huge_low")
        gen = ValueGenerator(rng, cfg)
        labels = _labels_for(cfg, [gen("subnormal") for _ in range(4)], False)
        assert {"subnormal_x", "subnormal_coded"} <= labels, f"{width_key(bits, signed)}: {labels}"


def test_labels_follow_the_value_not_the_intent() -> None:
    """A 'tie' meant for a zero, infinite or NaN scale is no tie: the label says what it is."""
    rng = np.random.default_rng(6)
    for kind, want in (("zero", "zero"), ("negzero", "zero"), ("inf", "inf"), ("nan", "nan")):
        cfg = make_config(rng, 8, True, kind)
        gen = ValueGenerator(rng, cfg)
        labels = _labels_for(cfg, [gen(i) for i in ("int_tie_up", "p_tie_down", "inrange")], False)
        assert want in labels and not labels & TIE_LABELS, (kind, labels)


def test_stream_labels() -> None:
    assert stream_labels(7, 5, 32) == {"padded", "straddle", "last_straddles"}
    assert stream_labels(8, 4, 32) == {"exact_fill"}
    assert stream_labels(1, 16, 16) == {"single", "exact_fill"}
    for bits in (3, 5, 7, 11, 13):
        for word_w in (16, 32, 64):
            n = straddling_length(bits, word_w, 200)
            assert "last_straddles" in stream_labels(n, bits, word_w)
            assert "last_straddles" not in stream_labels(n - 1, bits, word_w) or n == 2


def _full_coverage() -> Coverage:
    """Samples that hit every goal: every unit, width, word width, label and stall pattern."""
    from functional_coverage import BP_LABELS, STREAM_GOALS, UNIT_GOALS, WIDTH_GOALS, WORD_UNITS, WORD_WIDTHS

    cov = Coverage()
    for bits, signed in all_widths():
        for units, labels in WIDTH_GOALS:
            cov.sample(units[0], bits, signed, 0, "none", labels)
        for unit in WORD_UNITS:
            for w in WORD_WIDTHS:
                for bp in BP_LABELS:
                    cov.sample(unit, bits, signed, w, bp, STREAM_GOALS)
    for unit, labels in UNIT_GOALS.items():
        cov.sample(unit, 8, True, 0, "none", labels)
    return cov


def test_coverage_goals_fail_when_a_class_is_not_observed() -> None:
    cov = _full_coverage()
    assert cov.missing() == []
    cov.bins = type(cov.bins)({k: v for k, v in cov.bins.items()
                               if not (k[1] == "s9" and k[4] == "p_tie_up")})
    assert cov.missing() == ["quantizer/top.quant s9 value class p_tie_up"]
    cov = _full_coverage()
    cov.bins = type(cov.bins)({k: v for k, v in cov.bins.items()
                               if not (k[0] == "packer" and k[2] == 64 and k[4] == "b2b_after_straddle")})
    assert cov.missing() == ["packer W=64 tensor b2b_after_straddle"]
    cov = _full_coverage()
    cov.bins = type(cov.bins)({k: v for k, v in cov.bins.items()
                               if not (k[0] == "unpacker" and k[1] == "u5" and k[2] == 16 and k[3] != "none")})
    assert cov.missing() == ["unpacker u5 W=16 under stalls"]
    assert len(all_width_keys()) == 31


def test_coverage_report_shows_every_unit_and_goal_table() -> None:
    """The report printed by `make sim` has a line of observed classes for every unit sampled,
    the bit width x word width grids and the value-class grids with the observed counts."""
    cov = _full_coverage()
    cov.sample("quantizer", 9, True, 0, "both", ["p_tie_up", "p_tie_up_marker"])
    report = cov.report()
    per_unit = report[report.index("[per unit]"):].splitlines()
    for unit in cov.units():
        assert any(line.split()[:1] == [unit] for line in per_unit), (unit, per_unit)
    assert "p_tie_up_marker=1" in report
    assert report.count("bins hit") == 4 and "93/93 bins hit" in report
    assert "[quantizer + top.quant] bit width x observed value class" in report
    assert "[dequantizer + top.dequant] bit width x observed value class" in report


# --------------------------------------------------------------------------- rounding-boundary labels
# The boundary labels of classify.py (p_carry ... p_subnormal, r_top_binade ... r_tie_up),
# recomputed here from the bit patterns with Fraction and integer arithmetic only: the
# patterns are decoded by hand, every rounding (float32 product, bfloat16 result, rint) is
# redone on rationals, and float neighbours come from the value's own binade.
import boundaries  # noqa: E402
from refmodel import from_pattern, to_pattern  # noqa: E402

QUANT_BOUNDARY_LABELS = {"p_carry", "p_carry_sat", "p_sticky", "p_sticky_lsb", "int_tie_ulp", "sat_hi_1", "sat_lo_1",
                         "sat_binade16", "x_normal_edge", "p_subnormal"}
DEQUANT_BOUNDARY_LABELS = {"r_top_binade", "r_min_normal", "r_carry", "r_tie_down", "r_tie_up"}
MIN_NORMAL = Fraction(1, 2**126)
BOUNDARY_WIDTHS = [(1, False), (2, True), (3, False), (4, True), (5, True), (8, False), (8, True), (11, False),
                   (13, True), (16, False), (16, True)]


def floor_log2(a: Fraction) -> int:
    """e with 2^e <= a < 2^(e + 1), for a > 0."""
    e = a.numerator.bit_length() - a.denominator.bit_length()
    return e if Fraction(2) ** e <= a else e - 1


def is_pow2(a: Fraction) -> bool:
    n, d = a.numerator, a.denominator
    return n > 0 and n & (n - 1) == 0 and d & (d - 1) == 0


def lsb_weight(a: Fraction, prec: int) -> Fraction:
    """The unit in the last place of a binary format with `prec` bits and float32's exponent
    range (subnormals included) at the magnitude a > 0."""
    return Fraction(2) ** max(floor_log2(a) - prec + 1, -126 - prec + 1)


def round_to_format(v: Fraction, prec: int) -> Fraction | None:
    """v rounded to nearest even in a `prec`-bit format with float32's exponent range; None: overflow."""
    if v == 0:
        return v
    ulp = lsb_weight(abs(v), prec)
    r = round(abs(v) / ulp) * ulp  # round() of a Fraction: half to even
    if r >= Fraction(2) ** 128:
        return None
    return r if v > 0 else -r


def decode_f32(bits: int) -> Fraction | None:
    """The exact value of a float32 bit pattern (None: Inf or NaN)."""
    sign, biased, frac = bits >> 31 & 1, bits >> 23 & 0xFF, bits & 0x7FFFFF
    if biased == 0xFF:
        return None
    v = Fraction(frac, 2**149) if biased == 0 else Fraction(frac + 2**23) * Fraction(2) ** (biased - 150)
    return -v if sign else v


def encode_f32(v: Fraction | None) -> int:
    """The float32 pattern of an exactly representable value (None: +Inf)."""
    if v is None:
        return 0x7F800000
    sign = 1 << 31 if v < 0 else 0
    a = abs(v)
    if a == 0:
        return sign
    if a < MIN_NORMAL:
        return sign | int(a * 2**149)
    e = floor_log2(a)
    return sign | (e + 127) << 23 | int(a / Fraction(2) ** (e - 23)) - 2**23


def exact_quant_boundaries(pattern: int, cfg: QuantConfig, bf16: bool) -> tuple[set[str], int | None]:
    """(boundary labels, code) of one input pattern; code None: no finite nonzero product."""
    lo, hi = bounds(cfg.bits, cfg.signed, cfg.narrow)
    clamp = lambda v: min(hi, max(lo, round(v)))  # noqa: E731
    x = decode_f32(pattern << 16 if bf16 else pattern)
    s = decode_f32(int(f32_to_bits(np.float32(cfg.scale))))
    if x is None or s is None or x == 0 or s == 0:
        return set(), None
    exact = x * s
    p = round_to_format(exact, 24)
    if p is None:
        return set(), None
    out: set[str] = set()
    code = clamp(p)
    sign = 1 if exact > 0 else -1
    a = abs(exact)
    if a >= MIN_NORMAL:
        # carry into 2^N: the exact product is below the power of two it rounds to
        if is_pow2(abs(p)) and a < abs(p) and abs(p) >= 1:
            top = sign * abs(p)
            if clamp(top) == top:
                out.add("p_carry")
            elif clamp(top) != clamp(top / 2):
                out.add("p_carry_sat")
        # sticky: strictly between the midpoint and the float above, even float below
        ulp = lsb_weight(a, 24)
        down = a // ulp
        rest = a - down * ulp
        if rest > ulp / 2 and down % 2 == 0 and clamp(sign * down * ulp) != clamp(sign * (down + 1) * ulp):
            out.add("p_sticky")
            ax, as_ = abs(x), abs(s)
            if ax >= MIN_NORMAL and as_ >= MIN_NORMAL and \
                    rest - ulp / 2 == lsb_weight(ax, 24) * lsb_weight(as_, 24):
                out.add("p_sticky_lsb")
    ap = abs(p)
    if 0 < ap < 2**17:
        ulp_p = lsb_weight(ap, 24)
        below = ap - (ulp_p / 2 if is_pow2(ap) and ap > MIN_NORMAL else ulp_p)
        for t in (below, ap + ulp_p):
            k = math.floor(t)
            if t - k == Fraction(1, 2) and clamp(sign * k) != clamp(sign * (k + 1)):
                out.add("int_tie_ulp")
    if round(p) == hi + 1:
        out.add("sat_hi_1")
    if round(p) == lo - 1:
        out.add("sat_lo_1")
    if 2**16 <= ap < 2**17:
        out.add("sat_binade16")
    if 0 < ap < MIN_NORMAL:
        out.add("p_subnormal")
    largest_sub = MIN_NORMAL - Fraction(1, 2**133 if bf16 else 2**149)
    if abs(x) in (MIN_NORMAL, largest_sub) and code != 0:
        out.add("x_normal_edge")
    return out, code


def exact_dequant_boundaries(q: int, cfg: QuantConfig, bf16: bool) -> tuple[set[str], int]:
    """(boundary labels, result pattern) of one code q and a finite nonzero scale: q / s
    rounded to float32, then (bf16) to bfloat16, each to nearest even."""
    s = decode_f32(int(f32_to_bits(np.float32(cfg.scale))))
    assert s is not None and s != 0
    exact = Fraction(q) / s
    res = round_to_format(exact, 24)
    if bf16 and res is not None:
        res = round_to_format(res, 8)
    negative = (q < 0) != (int(f32_to_bits(np.float32(cfg.scale))) >> 31 == 1)  # 0 / -s is -0
    pattern = encode_f32(abs(res) if res is not None else None) | (1 << 31 if negative else 0)
    out: set[str] = set()
    if res is not None and Fraction(2) ** 127 <= abs(res) < Fraction(2) ** 128:
        out.add("r_top_binade")
    if res is not None and MIN_NORMAL <= abs(res) < 2 * MIN_NORMAL:
        out.add("r_min_normal")
    if q != 0:
        a = abs(exact)
        reached = Fraction(2) ** 128 if res is None else abs(res)  # Inf: the power of two 2^128
        if reached >= MIN_NORMAL and is_pow2(reached) and a < reached:
            out.add("r_carry")
        prec = 8 if bf16 else 24
        if a < Fraction(2) ** 128:
            ulp = lsb_weight(a, prec)
            lower = math.floor(a / ulp)
            if a / ulp - lower == Fraction(1, 2):
                nearest = lower if lower % 2 == 0 else lower + 1
                if res is not None and abs(res) == nearest * ulp:  # a tie onto Inf is no tie
                    out.add("r_tie_down" if nearest == lower else "r_tie_up")
    return out, pattern >> 16 if bf16 else pattern


QUANT_SCALE_KINDS = ("carry", "sticky", "midpoint", "typical", "negative", "huge_low", "subnormal")


@functools.lru_cache(maxsize=None)
def quant_boundary_cases(bits: int, signed: bool, bf16: bool) -> tuple[tuple[QuantConfig, tuple[int, ...]], ...]:
    """(config, input patterns) per scale kind: two values for every boundaries.py intent
    (the sharpest case and the next), two exact product midpoints, random patterns and
    random products near the codes."""
    rng = np.random.default_rng(100 * bits + 10 * signed + bf16)
    cases = []
    for kind in QUANT_SCALE_KINDS:
        cfg = make_config(rng, bits, signed, kind, bf16)
        lo, hi = bounds(bits, signed, cfg.narrow)
        near = np.float32(cfg.scale)
        values = [boundaries.Boundaries(rng, cfg, bf16).value(i) for i in boundaries.INTENTS for _ in range(2)]
        gen = ValueGenerator(rng, cfg, bf16)
        with np.errstate(all="ignore"):
            values += [gen(i) for i in ("p_tie_down", "p_tie_up")]  # exact product midpoints: no sticky bits
            values += [np.float32(rng.uniform(lo - 2, hi + 2) / near) for _ in range(6)]
        patterns = [int(f32_to_bits(v)) >> (16 if bf16 else 0) for v in values if v is not None]
        patterns += [int(v) for v in rng.integers(0, 1 << (16 if bf16 else 32), size=6)]
        cases.append((cfg, tuple(patterns)))
    return tuple(cases)


def _width_name(bits: int, signed: bool, bf16: bool) -> str:
    return f"{width_key(bits, signed)} {'bf16' if bf16 else 'fp32'}"


@pytest.mark.parametrize("bits,signed", BOUNDARY_WIDTHS)
def test_quant_boundary_labels_match_exact_arithmetic(bits: int, signed: bool) -> None:
    """Every boundary label of one input, and of a whole tensor, is the one exact rational
    arithmetic gives, on the values boundaries.py builds and on random ones, fp32 and bf16
    inputs; every label is reached at every width where it exists (at u1 and s2 no carry
    crosses the saturation bound and no one-unit sticky point is decisive; bfloat16 inputs
    have no one-unit sticky point)."""
    for bf16 in (False, True):
        seen: set[str] = set()
        for cfg, patterns in quant_boundary_cases(bits, signed, bf16):
            union: set[str] = set()
            for pat in patterns:
                want, _ = exact_quant_boundaries(pat, cfg, bf16)
                got = quant_labels([pat], cfg, bf16) & QUANT_BOUNDARY_LABELS
                assert got == want, f"{_width_name(bits, signed, bf16)} pattern {pat:#x} scale {cfg.scale!r}: " \
                    f"labels {got}, exact {want}"
                union |= want
            assert quant_labels(list(patterns), cfg, bf16) & QUANT_BOUNDARY_LABELS == union, cfg
            seen |= union
        expected = set(QUANT_BOUNDARY_LABELS)
        if (bits, signed) in ((1, False), (2, True)):
            # the only decisive even k is 0, and 2^46 + 2^22 + 1, 2^47 + 2^23 + 1 (the one-unit
            # points above 1/2) are no product of two 24-bit significands
            expected -= {"p_carry_sat", "p_sticky_lsb"}
        if bf16:  # x has 16 zero bits at the end: the 48-bit product's last bit is 0
            expected.discard("p_sticky_lsb")
        assert seen == expected, f"{_width_name(bits, signed, bf16)}: reached {seen}, missing {expected - seen}"


@pytest.mark.parametrize("bits,signed", [(1, False), (4, True), (8, False), (16, True)])
def test_quant_boundary_labels_count_only_the_code_they_imply(bits: int, signed: bool) -> None:
    """With the observed codes given, a boundary label counts a value only where the code is
    the exact one: right codes give the exact labels, a wrong code (the pattern plus one)
    removes that value's labels, and a tensor keeps just the labels of its right values."""
    rng = np.random.default_rng(7 * bits + signed)
    mask = (1 << bits) - 1
    for bf16 in (False, True):
        for cfg, patterns in quant_boundary_cases(bits, signed, bf16):
            exact = [exact_quant_boundaries(p, cfg, bf16) for p in patterns]
            right = [int(to_pattern(np.array([c or 0]), bits)[0]) for _, c in exact]
            wrong = rng.random(len(patterns)) < 0.5
            observed = [(r + 1) & mask if w else r for r, w in zip(right, wrong)]
            keep = set().union(*(labels for (labels, _), w in zip(exact, wrong) if not w))
            union = set().union(*(labels for labels, _ in exact))
            got = {name: quant_labels(list(patterns), cfg, bf16, codes) & QUANT_BOUNDARY_LABELS
                   for name, codes in (("right", right), ("mixed", observed),
                                       ("wrong", [(r + 1) & mask for r in right]))}
            assert got == {"right": union, "mixed": keep, "wrong": set()}, cfg


DEQUANT_SCALE_CODES = (("near_pow2", "pow2"), ("pow2", "tie9"), ("top", "extreme"), ("huge_edge", "small"),
                       ("typical", "random"), ("huge", "small"), ("pow2", "random"))


@functools.lru_cache(maxsize=None)
def dequant_boundary_cases(bits: int, signed: bool, bf16: bool) -> tuple[tuple[QuantConfig, tuple[int, ...]], ...]:
    """(config, code patterns): the dequantize boundary scales and codes of boundaries.py
    (through make_config / gen_codes), a random float32 scale with random codes."""
    rng = np.random.default_rng(200 * bits + 10 * signed + bf16)
    cases = []
    for kind, codes in DEQUANT_SCALE_CODES:
        cfg = make_config(rng, bits, signed, kind, bf16)
        pool = [c & ((1 << bits) - 1) for c in boundaries.code_pool(bits, signed, "tie9" if kind == "pow2" else "pow2")]
        cases.append((cfg, tuple(gen_codes(rng, bits, signed, 8, codes) + pool)))
    while True:
        scale = np.uint32(rng.integers(0, 1 << 32)).view(np.float32)
        if np.isfinite(scale) and scale != 0:
            break
    cfg = QuantConfig(bits, float(scale), signed)
    cases.append((cfg, tuple(gen_codes(rng, bits, signed, 8, "random"))))
    return tuple(cases)


@pytest.mark.parametrize("bits,signed", BOUNDARY_WIDTHS)
def test_dequant_boundary_labels_match_exact_arithmetic(bits: int, signed: bool) -> None:
    """r_top_binade, r_min_normal, r_carry and r_tie_* of one code and of a whole tensor are
    those of the exact quotient q / s rounded by hand (float32, then bfloat16), and also when
    the results are given; every label is reached at every width (bfloat16: carries, and ties
    where |q| reaches 257; float32 quotients never carry nor tie)."""
    for bf16 in (False, True):
        seen: set[str] = set()
        for cfg, patterns in dequant_boundary_cases(bits, signed, bf16):
            union: set[str] = set()
            results = []
            for pat in patterns:
                q = int(from_pattern(np.array([pat]), bits, signed)[0])
                want, result = exact_dequant_boundaries(q, cfg, bf16)
                got = dequant_labels([pat], cfg, bf16) & DEQUANT_BOUNDARY_LABELS
                assert got == want, f"{_width_name(bits, signed, bf16)} q={q} scale {cfg.scale!r}: " \
                    f"labels {got}, exact {want}"
                union |= want
                results.append(result)
            assert dequant_labels(list(patterns), cfg, bf16) & DEQUANT_BOUNDARY_LABELS == union, cfg
            assert dequant_labels(list(patterns), cfg, bf16, results) & DEQUANT_BOUNDARY_LABELS == union, cfg
            seen |= union
        expected = set(DEQUANT_BOUNDARY_LABELS) if bf16 else {"r_top_binade", "r_min_normal"}
        if max(-bounds(bits, signed, False)[0], bounds(bits, signed, False)[1]) < 257:
            # a bfloat16 tie has a 9-bit odd significand o = odd(q) / odd(s): needs |q| >= 257
            expected -= {"r_tie_down", "r_tie_up"}
        assert seen == expected, f"{_width_name(bits, signed, bf16)}: reached {seen}, missing {expected - seen}"


@pytest.mark.parametrize("bits,signed", [(11, False), (16, True)])
def test_dequant_boundary_labels_follow_the_observed_result(bits: int, signed: bool) -> None:
    """With the results given, r_carry and r_tie_* count only results that really are the
    correctly rounded quotient: the float32 (bfloat16) value one step below a carried power
    of two, or the other neighbour of a tie, loses the label."""
    flipped = 0
    for bf16 in (False, True):
        for cfg, patterns in dequant_boundary_cases(bits, signed, bf16):
            for pat in patterns:
                q = int(from_pattern(np.array([pat]), bits, signed)[0])
                want, result = exact_dequant_boundaries(q, cfg, bf16)
                assert dequant_labels([pat], cfg, bf16, [result]) & DEQUANT_BOUNDARY_LABELS == want
                if want & {"r_tie_down", "r_tie_up"}:
                    other = result + (1 if "r_tie_down" in want else -1)  # the magnitude one step off
                    assert not dequant_labels([pat], cfg, bf16, [other]) & {"r_tie_down", "r_tie_up"}, (q, cfg)
                    flipped += 1
                if "r_carry" in want:
                    assert "r_carry" not in dequant_labels([pat], cfg, bf16, [result - 1]), (q, cfg)
                    flipped += 1
    assert flipped >= 10


# (bits, signed, bf16, input pattern, scale, boundary labels) written out by hand
HAND_QUANT = [
    (8, True, False, 0x00800000, 2.0**126, {"x_normal_edge"}),  # 2^-126 * 2^126 = 1
    (8, True, False, 0x007FFFFF, 2.0**126, {"x_normal_edge"}),  # the largest fp32 subnormal: code 1
    (8, True, False, 0x007F0000, 2.0**126, set()),  # a bfloat16 edge, not an fp32 one
    (8, True, True, 0x007F, 2.0**126, {"x_normal_edge"}),  # the largest bfloat16 subnormal
    (8, True, True, 0x0080, 2.0**126, {"x_normal_edge"}),
    (8, True, False, 0x00800000, 0.5, {"p_subnormal"}),  # 2^-127, code 0: x_normal_edge needs a nonzero code
    (8, True, False, 0x00800000, 1.0, set()),  # 2^-126 is the smallest normal product
    # 9072935 * 9694871 = 2^45 (2.5 + 2^-23) + 1: one unit of the 48-bit product above the midpoint
    (8, True, False, int(f32_to_bits(np.float32(9072935 * 2.0**-23))), 9694871 * 2.0**-22,
     {"p_sticky", "p_sticky_lsb", "int_tie_ulp"}),  # rounds up to the float just above 2.5
    (8, True, False, int(f32_to_bits(np.float32(9072934 * 2.0**-23))), 9694871 * 2.0**-22,
     {"int_tie_ulp"}),  # 5500566 units below 2.5: rounds to the float just below, no sticky
    (2, True, False, int(f32_to_bits(np.float32(2.0))), 1.0, {"sat_hi_1"}),  # rint(2) = max_bound + 1
    (3, False, False, int(f32_to_bits(np.float32(-1.0))), 1.0, {"sat_lo_1"}),
    (16, False, False, int(f32_to_bits(np.float32(65536.0))), 1.0, {"sat_binade16", "sat_hi_1"}),
    (8, True, False, int(f32_to_bits(np.nextafter(np.float32(2.5), np.float32(3)))), 1.0, {"int_tie_ulp"}),
    (8, True, False, int(f32_to_bits(np.float32(2.5))), 1.0, set()),  # the tie itself: int_tie_down
]
# (bits, signed, bf16, code, scale, boundary labels)
HAND_DEQUANT = [
    (16, True, True, 257, 1.0, {"r_tie_down"}),  # 256 | 257 | 258: even 128 * 2
    (16, True, True, 259, 1.0, {"r_tie_up"}),  # 258 | 259 | 260: even 130 * 2
    (16, True, False, 257, 1.0, set()),  # exact in float32
    (16, True, True, 32767, 1.0, {"r_carry"}),  # rounds up to 2^15
    (16, True, True, 511, 2.0**-119, {"r_carry"}),  # 255.5 * 2^120 rounds to Inf: no tie
    (8, True, False, 1, 2.0**-127, {"r_top_binade"}),
    (8, True, True, 1, 2.0**126, {"r_min_normal"}),
]


def test_boundary_labels_at_hand_built_points() -> None:
    """Points whose labels are known by hand (where fp32 and bf16 inputs or results differ,
    the one-unit sticky point, a tie that rounds to Inf): classify and the exact reference
    used above both give them."""
    for bits, signed, bf16, pat, scale, want in HAND_QUANT:
        cfg = QuantConfig(bits, scale, signed)
        assert exact_quant_boundaries(pat, cfg, bf16)[0] == want, (pat, cfg, bf16)
        assert quant_labels([pat], cfg, bf16) & QUANT_BOUNDARY_LABELS == want, (pat, cfg, bf16)
    for bits, signed, bf16, q, scale, want in HAND_DEQUANT:
        cfg = QuantConfig(bits, scale, signed)
        assert exact_dequant_boundaries(q, cfg, bf16)[0] == want, (q, cfg, bf16)
        pat = int(to_pattern(np.array([q]), bits)[0])
        assert dequant_labels([pat], cfg, bf16) & DEQUANT_BOUNDARY_LABELS == want, (q, cfg, bf16)
