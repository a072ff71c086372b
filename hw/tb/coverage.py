"""Functional coverage: bit width x word width x value class x back-pressure pattern.

Each simulation samples into COVERAGE and dumps its bins to $MPCONV_COVERAGE_OUT (JSON).
run.py merges the files of all simulations, prints the report and checks the goals.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

WORD_WIDTHS = (16, 32, 64)
BP_LABELS = ("none", "bubbles", "backpressure", "both")
# Units whose every (bits, signed) x word width must be hit under back-pressure.
WORD_UNITS = ("top.quant", "top.dequant", "packer", "unpacker")


def bp_label(src: str, sink: str) -> str:
    """Back-pressure pattern class of a tensor: input bubbles, output back-pressure, both, none."""
    if src == "none" and sink == "none":
        return "none"
    if sink == "none":
        return "bubbles"
    if src == "none":
        return "backpressure"
    return "both"


def width_key(bits: int, signed: bool) -> str:
    return f"{'s' if signed else 'u'}{bits}"


def all_width_keys() -> list[str]:
    return [width_key(b, False) for b in range(1, 17)] + [width_key(b, True) for b in range(2, 17)]


class Coverage:
    """Counts of (unit, width, word_w, bp, value class) bins."""

    def __init__(self) -> None:
        self.bins: Counter = Counter()

    def sample(self, unit: str, bits: int, signed: bool, word_w: int, bp: str, classes) -> None:
        for cls in set(classes):
            self.bins[(unit, width_key(bits, signed), word_w, bp, cls)] += 1

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

    def _hit(self, unit: str, wkey: str, word_w: int | None = None, bp_any: bool = False,
             cls: str | None = None) -> int:
        return sum(v for (u, w, ww, bp, c), v in self.bins.items()
                   if u == unit and w == wkey and (word_w is None or ww == word_w)
                   and (not bp_any or bp != "none") and (cls is None or c == cls))

    def units(self) -> list[str]:
        return sorted({k[0] for k in self.bins})

    def report(self) -> str:
        """Readable tables of what was hit."""
        out: list[str] = []
        units = self.units()
        for unit in [u for u in WORD_UNITS if u in units]:
            out.append(f"\n[{unit}] tensors per bit width x word width under back-pressure (bp != none)")
            out.append("  width " + "".join(f"{w:>8}" for w in WORD_WIDTHS))
            for wk in all_width_keys():
                cells = "".join(f"{self._hit(unit, wk, w, bp_any=True):>8}" for w in WORD_WIDTHS)
                out.append(f"  {wk:>5} {cells}")
        for unit in units:
            classes = sorted({k[4] for k in self.bins if k[0] == unit})
            if classes == ["any"]:
                continue
            out.append(f"\n[{unit}] tensors per bit width x value class")
            out.append("  width " + "".join(f"{c[:10]:>11}" for c in classes))
            for wk in all_width_keys():
                out.append(f"  {wk:>5} " + "".join(f"{self._hit(unit, wk, cls=c):>11}" for c in classes))
        bp_counts = Counter()
        for (u, _w, _ww, bp, _c), v in self.bins.items():
            bp_counts[(u, bp)] += v
        out.append("\n[all units] back-pressure patterns (value-class samples)")
        for unit in units:
            out.append(f"  {unit:<12} " + "  ".join(f"{bp}={bp_counts[(unit, bp)]}" for bp in BP_LABELS))
        return "\n".join(out)

    def missing(self, units_with_words=WORD_UNITS, class_units=("quantizer", "top.quant"),
                classes=None) -> list[str]:
        """Goal bins not hit: every width x word width under back-pressure, every value class."""
        miss: list[str] = []
        present = self.units()
        for unit in units_with_words:
            if unit not in present:
                continue
            for wk in all_width_keys():
                for w in WORD_WIDTHS:
                    if not self._hit(unit, wk, w, bp_any=True):
                        miss.append(f"{unit} {wk} W={w} under back-pressure")
        if classes:
            for wk in all_width_keys():
                for c in classes:
                    if not any(self._hit(u, wk, cls=c) for u in class_units if u in present):
                        miss.append(f"value class {c} at {wk}")
        return miss


COVERAGE = Coverage()
