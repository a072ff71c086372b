"""Functional coverage: bit width x word width x value class x back-pressure pattern.

Each simulation samples into COVERAGE and dumps its bins to $MPCONV_COVERAGE_OUT (JSON).
regression.py merges the files of all simulations, prints the report and checks the goals.
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

    def _grid(self, title: str, rows: list[tuple[str, dict]], keys: list[str]) -> list[str]:
        out = [title, "  " + " " * 10 + "".join(f"{k:>4}" for k in keys)]
        for label, counts in rows:
            out.append(f"  {label:<10}" + "".join(f"{min(counts.get(k, 0), 999):>4}" for k in keys))
        return out

    def report(self) -> str:
        """Readable tables of what was hit: tensors per bin, capped at 999."""
        out: list[str] = []
        units = self.units()
        keys = all_width_keys()
        for unit in [u for u in WORD_UNITS if u in units]:
            rows = [(f"W={w}", {k: self._hit(unit, k, w, bp_any=True) for k in keys}) for w in WORD_WIDTHS]
            hit = sum(1 for _, c in rows for k in keys if c[k])
            out += self._grid(f"\n[{unit}] bit width x word width under back-pressure: "
                              f"{hit}/{len(rows) * len(keys)} bins hit", rows, keys)
        for unit in units:
            classes = sorted({k[4] for k in self.bins if k[0] == unit})
            if classes == ["any"]:
                continue
            rows = [(c[:10], {k: self._hit(unit, k, cls=c) for k in keys}) for c in classes]
            out += self._grid(f"\n[{unit}] bit width x value class", rows, keys)
        out.append("\n[full cross] bit width x word width x value class x back-pressure pattern")
        for unit in units:
            cells = {(w, ww, c, bp) for (u, w, ww, bp, c) in self.bins if u == unit}
            wws = sorted({k[1] for k in cells})
            classes = sorted({k[2] for k in cells})
            total = len(keys) * len(wws) * len(classes) * len(BP_LABELS)
            bps = "  ".join(f"{bp}={sum(v for k, v in self.bins.items() if k[0] == unit and k[3] == bp)}"
                            for bp in BP_LABELS)
            out.append(f"  {unit:<12} {len(cells):>5}/{total:<5} bins hit   samples: {bps}")
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
