"""Xilinx 7-series resource classes from primitive cell counts, and the utilization table.

Columns: LUT = LUT1..LUT6; FF = FDRE/FDSE/FDCE/FDPE (and latches LDCE/LDPE, which a clean
synchronous design has none of); CARRY4; BRAM in RAMB36 units (a RAMB36E1 counts 1, a
RAMB18E1 0.5); DSP = DSP48E1; LUTRAM = distributed-RAM primitives (LUTs used as memory);
SRL = shift-register LUTs; INV = inverter cells that yosys leaves as separate primitives
(Vivado folds most of them into neighbouring LUTs, flip-flops or carry chains).
Timing columns (timing.py; one lane, flat): crit_ns = latest arrival of cell delays only,
levels = logic levels on that path, fmax_cells_mhz = 1 / crit_ns (an upper bound),
fmax_est_mhz = with an assumed routing delay per net.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

RESOURCES = ("LUT", "FF", "CARRY4", "BRAM", "DSP", "LUTRAM", "SRL", "INV")
TIMING = ("crit_ns", "levels", "fmax_cells_mhz", "fmax_est_mhz")

_CLASSES: tuple[tuple[str, re.Pattern, float], ...] = (
    ("LUT", re.compile(r"LUT[1-6]"), 1.0),
    ("FF", re.compile(r"FD[RSCP]E(_1)?|LD[CP]E"), 1.0),
    ("CARRY4", re.compile(r"CARRY4"), 1.0),
    ("BRAM", re.compile(r"RAMB36E1"), 1.0),
    ("BRAM", re.compile(r"RAMB18E1"), 0.5),
    ("DSP", re.compile(r"DSP48E1"), 1.0),
    ("LUTRAM", re.compile(r"RAM(16|32|64|128|256)X1[SD](_1)?|RAM32M|RAM64M"), 1.0),
    ("SRL", re.compile(r"SRL16E|SRLC16E|SRLC32E"), 1.0),
    ("INV", re.compile(r"INV"), 1.0),
)


def resources(cells: Counter) -> dict[str, float]:
    """Sum primitive cell counts into the table's resource classes."""
    out = {name: 0.0 for name in RESOURCES}
    for cell, count in cells.items():
        for name, pattern, weight in _CLASSES:
            if pattern.fullmatch(cell):
                out[name] += weight * count
                break
    return out


@dataclass
class Row:
    """One synthesized configuration of mpconv_top."""

    lanes: int
    word_w: int
    bf16: bool
    fifo_depth: int
    counts: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    timing: dict[str, float] = field(default_factory=dict)  # TIMING keys, once measured

    @property
    def name(self) -> str:
        text = f"L{self.lanes}_W{self.word_w}_{'bf16' if self.bf16 else 'fp32'}"
        return text if self.fifo_depth == 512 else f"{text}_D{self.fifo_depth}"

    @property
    def lut_per_lane(self) -> float:
        """All LUTs of the design (shared registers included) divided by the lanes."""
        return self.counts["LUT"] / self.lanes


def _number(value: float) -> str:
    return f"{value:g}" if value != int(value) else str(int(value))


def _cells(row: Row) -> list[str]:
    return [row.name, str(row.lanes), str(row.word_w), "bf16" if row.bf16 else "fp32",
            str(row.fifo_depth), *(_number(row.counts[r]) for r in RESOURCES[:1]),
            f"{row.lut_per_lane:.0f}", *(_number(row.counts[r]) for r in RESOURCES[1:]),
            f"{row.seconds:.0f}", *(_timing(row, key) for key in TIMING)]


def _timing(row: Row, key: str) -> str:
    if key not in row.timing:
        return ""
    value = row.timing[key]
    return str(int(value)) if key == "levels" else (f"{value:.2f}" if key == "crit_ns" else f"{value:.0f}")


HEADER = ["config", "lanes", "word_w", "float", "fifo_depth", "LUT", "LUT_per_lane",
          *RESOURCES[1:], "seconds", *TIMING]


def write_csv(rows: list[Row], path: Path) -> None:
    """Write the table as CSV (one row per configuration)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows(_cells(row) for row in rows)


def markdown(rows: list[Row], title: str) -> str:
    """The table as Markdown, preceded by a title line."""
    lines = [title, "", "| " + " | ".join(HEADER) + " |",
             "|" + "|".join("---" if i < 1 or i == 3 else "---:" for i in range(len(HEADER))) + "|"]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_markdown(rows: list[Row], path: Path, title: str) -> None:
    """Write the table as Markdown under `title`."""
    Path(path).write_text(markdown(rows, title))
