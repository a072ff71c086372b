"""Functional coverage from what the monitors saw: bins, goals and the report.

A bin is (unit, bit width, word width, stall pattern, label), counted in tensors. Every
sample comes from an observed tensor: the configuration it was converted with, its input
frame and its output frame as the AXI4-Stream monitors recorded them. The labels are
computed from the observed values (classify.py) and the stall pattern from the observed
handshakes, so a goal fails when the DUT never saw a class, whatever a generator intended.

Each simulation dumps its bins to $MPCONV_COVERAGE_OUT (JSON); regression.py merges the
files of all simulations, prints the report and fails when a goal bin is missed.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

WORD_WIDTHS = (16, 32, 64)
BP_LABELS = ("none", "bubbles", "backpressure", "both")
# Units whose every (bits, signed) x word width must be seen under stalls.
WORD_UNITS = ("top.quant", "top.dequant", "packer", "unpacker")
QUANT_UNITS = ("quantizer", "top.quant")
DEQUANT_UNITS = ("dequantizer", "top.dequant")
STREAM_GOALS = ("single", "exact_fill", "padded", "straddle", "last_straddles", "back_to_back",
                "b2b_after_straddle")
# Classes that must be seen at every bit width, on any of the units.
# The rounding-datapath boundaries (p_carry ... sat_lo_1, r_top_binade ... r_carry) count
# only values whose observed output is the one the boundary implies (classify.py).
WIDTH_GOALS = (
    (QUANT_UNITS, ("inrange", "tiny", "zero", "sat_hi", "sat_lo", "edge_hi", "edge_lo", "int_tie_down",
                   "int_tie_up", "p_tie_down", "p_tie_up", "subnormal_coded", "p_carry", "p_carry_sat", "p_sticky",
                   "int_tie_ulp", "sat_hi_1", "sat_lo_1")),
    (DEQUANT_UNITS, ("q_zero", "q_min", "q_max", "r_normal", "r_zero", "r_sub_deep", "r_sub_shallow",
                     "r_overflow", "r_overflow_edge", "r_top_binade", "r_min_normal", "r_carry")),
)
SIGNED_ONLY = ("edge_lo", "q_min")  # unsigned min_bound is 0: the zero classes cover it
# (class, width): why no value of the class exists at that width.
IMPOSSIBLE = {
    ("inrange", "u1"): "codes 0..1: both are the range's edges (edge_lo does not apply, edge_hi is 1)",
    ("int_tie_up", "u1"): "codes 0..1: the only odd k is 1, and 1 and 2 both give code 1",
    ("p_tie_up", "u1"): "codes 0..1: rounding up to 1.5 gives 2, clamped to 1 like its neighbour",
    ("p_carry_sat", "u1"): "codes 0..1: a carry into 2 is clamped to 1, and 1 (without the carry) is 1 too",
    ("p_carry_sat", "s2"): "codes -2..1: 2 and -4 clamp to 1 and -2, the values 1 and -2 without the carry",
}
SCALE_GOALS = ("scale_zero", "scale_negzero", "scale_neg", "scale_inf", "scale_nan", "scale_subnormal",
               "scale_huge", "scale_typical")
# Classes each unit must see at least once (any width); stream classes per word width.
UNIT_GOALS = {
    "quantizer": ("nan", "inf", "subnormal_x", "p_sticky_lsb", "sat_binade16", "x_normal_edge", "p_subnormal",
                  *SCALE_GOALS),
    "dequantizer": ("junk", "r_nan", "r_inf", "r_subnormal", "r_tie_down", "r_tie_up", *SCALE_GOALS),
    "top.quant": ("nan", "inf", "p_tie_up", "p_tie_down", "p_carry", "p_carry_sat", "p_sticky"),
    "top.dequant": ("r_nan", "r_sub_deep", "r_sub_shallow", "r_top_binade", "r_min_normal"),
    "packer": ("junk",),
}
STREAM_UNITS = WORD_UNITS


def bp_label(bubbles: bool, backpressure: bool) -> str:
    """Stall pattern of a tensor: input bubbles, output back-pressure, both, none."""
    return ("both" if backpressure else "bubbles") if bubbles else ("backpressure" if backpressure else "none")


def width_key(bits: int, signed: bool) -> str:
    return f"{'s' if signed else 'u'}{bits}"


def all_width_keys() -> list[str]:
    return [width_key(b, False) for b in range(1, 17)] + [width_key(b, True) for b in range(2, 17)]


class Coverage:
    """Counts of (unit, width, word_w, stall pattern, label) bins, in tensors."""

    def __init__(self) -> None:
        self.bins: Counter = Counter()

    def sample(self, unit: str, bits: int, signed: bool, word_w: int, bp: str, labels) -> None:
        for label in {"tensor", *labels}:
            self.bins[(unit, width_key(bits, signed), word_w, bp, label)] += 1

    def dump(self, path: str | None = None) -> None:
        path = path or os.environ.get("MPCONV_COVERAGE_OUT")
        if not path:
            return
        rows = [[*k, v] for k, v in sorted(self.bins.items())]
        Path(path).write_text(json.dumps(rows))

    @classmethod
    def merged(cls, paths) -> "Coverage":
        cov = cls()
        for p in paths:
            if Path(p).exists():
                for *key, count in json.loads(Path(p).read_text()):
                    cov.bins[tuple(key)] += count
        return cov

    def hits(self, unit: str | tuple | None = None, wkey: str | None = None, word_w: int | None = None,
             stalled: bool = False, label: str | None = None, bp: str | None = None) -> int:
        """Tensors in the bins that match every given field (None: any)."""
        units = (unit,) if isinstance(unit, str) else unit
        return sum(v for (u, w, ww, b, c), v in self.bins.items()
                   if (units is None or u in units) and (wkey is None or w == wkey)
                   and (word_w is None or ww == word_w) and (not stalled or b != "none")
                   and (bp is None or b == bp) and (label is None or c == label))

    def units(self) -> list[str]:
        return sorted({k[0] for k in self.bins})

    def word_widths(self, unit: str) -> list[int]:
        return sorted({k[2] for k in self.bins if k[0] == unit})

    # ------------------------------------------------------------------ goals
    def missing(self) -> list[str]:
        """Goal bins not hit (only for the units present in the samples)."""
        miss: list[str] = []
        present = set(self.units())
        for unit in WORD_UNITS:
            if unit not in present:
                continue
            for w in WORD_WIDTHS:
                for wk in all_width_keys():
                    if not self.hits(unit, wk, w, stalled=True):
                        miss.append(f"{unit} {wk} W={w} under stalls")
                for label in STREAM_GOALS:
                    if not self.hits(unit, word_w=w, label=label):
                        miss.append(f"{unit} W={w} tensor {label}")
                for bp in BP_LABELS:
                    if not self.hits(unit, word_w=w, bp=bp):
                        miss.append(f"{unit} W={w} stall pattern {bp}")
        for units, labels in WIDTH_GOALS:
            if not present & set(units):
                continue
            for wk in all_width_keys():
                for label in labels:
                    if (label, wk) in IMPOSSIBLE or (label in SIGNED_ONLY and wk.startswith("u")):
                        continue
                    if not self.hits(units, wk, label=label):
                        miss.append(f"{'/'.join(units)} {wk} value class {label}")
        for unit, labels in UNIT_GOALS.items():
            if unit in present:
                miss += [f"{unit} class {label}" for label in labels if not self.hits(unit, label=label)]
        return miss

    # ------------------------------------------------------------------ report
    def _grid(self, title: str, rows: list[tuple[str, dict]], keys: list[str]) -> list[str]:
        out = [title, "  " + " " * 16 + "".join(f"{k:>4}" for k in keys)]
        for label, counts in rows:
            out.append(f"  {label:<16}" + "".join(f"{min(counts.get(k, 0), 999):>4}" for k in keys))
        return out

    def report(self) -> str:
        """Readable tables of what was observed: tensors per bin, capped at 999."""
        out: list[str] = []
        present = self.units()
        keys = all_width_keys()
        for unit in [u for u in WORD_UNITS if u in present]:
            rows = [(f"W={w}", {k: self.hits(unit, k, w, stalled=True) for k in keys}) for w in WORD_WIDTHS]
            hit = sum(1 for _, c in rows for k in keys if c[k])
            out += self._grid(f"\n[{unit}] bit width x word width, tensors seen under stalls: "
                              f"{hit}/{len(rows) * len(keys)} bins hit", rows, keys)
        for units, labels in WIDTH_GOALS:
            if not set(units) & set(present):
                continue
            rows = [(label, {k: self.hits(units, k, label=label) for k in keys}) for label in labels]
            out += self._grid(f"\n[{' + '.join(units)}] bit width x observed value class (tensors)", rows, keys)
        out.append("\n[per unit] observed classes (tensors), stall patterns per word width")
        for unit in present:
            labels = sorted({k[4] for k in self.bins if k[0] == unit} - {"tensor"})
            text = ", ".join(f"{label}={self.hits(unit, label=label)}" for label in labels)
            out.append(f"  {unit:<12} {text}")
            for w in self.word_widths(unit):
                bps = "  ".join(f"{bp}={self.hits(unit, word_w=w, bp=bp, label='tensor')}" for bp in BP_LABELS)
                out.append(f"  {'':<12} {f'W={w}' if w else 'stalls'}: {bps}")
        return "\n".join(out)


COVERAGE = Coverage()
