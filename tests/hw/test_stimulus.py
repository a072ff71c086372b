"""Stimulus by construction and value labels computed from the value (hw/tb/stimulus.py,
hw/tb/classify.py), and the coverage goals (hw/tb/functional_coverage.py), without a simulator.

The labels are checked against an independent exact computation with fractions.Fraction;
the generators must produce, at every bit width, the classes they are built for (exact
product midpoints, decisive integer ties, subnormal dequantized results), as judged by
those labels.
"""

from __future__ import annotations

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
