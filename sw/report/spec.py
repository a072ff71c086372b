"""A report figure as data: one table (written as `<name>.csv`) and what to draw from its columns.

The same `Figure` is rendered twice, by `sw.report.plots` (matplotlib: PNG and SVG) and by
`sw.report.tikz` (pgfplots reading the CSV), so the picture in the HTML page and the one in a
paper show the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

NAN = math.nan
HEATMAP_COLORS = ("#ffffcc", "#a1dab4", "#41b6c4")  # light to mid: cell numbers stay readable


@dataclass
class Series:
    """One plotted column against another.

    kind: "line" (markers joined), "marks" (markers only), "scatter" (markers coloured by the
    `meta` column, with a colour bar) or "bar" (bars at x + `shift`, `width` wide; bars of one
    axis are drawn in order, so give cumulative columns tallest first for a stacked look).
    Rows where x or y is NaN are skipped.
    """

    x: str
    y: str
    label: str = ""
    kind: str = "line"
    color: str = "#1f4e9c"
    marker: str = "o"  # o (circle), s (square), x, * (star), ^ (triangle), none
    size: float = 4.0  # marker size in points
    dashed: bool = False
    filled: bool = True
    meta: str | None = None
    shift: float = 0.0
    width: float = 0.8


@dataclass
class HLine:
    """A horizontal reference line (a threshold, a baseline)."""

    y: float
    label: str
    color: str = "#555555"
    dashed: bool = True


@dataclass
class Axis:
    """One panel: labels, series, reference lines; `ticks` puts text labels at x positions."""

    xlabel: str
    ylabel: str
    series: list[Series]
    title: str = ""
    hlines: list[HLine] = field(default_factory=list)
    ticks: list[tuple[float, str]] | None = None
    meta_label: str = ""  # colour bar label (scatter)
    legend: str = "south east"  # pgfplots legend position; matplotlib takes the nearest "lower right" etc.


@dataclass
class Heatmap:
    """A matrix of integers: `value` at (`col`, `row`) cells, labelled with `col_labels`/`row_labels`."""

    col: str
    row: str
    value: str
    col_labels: list[str]
    row_labels: list[str]
    xlabel: str
    ylabel: str
    value_label: str


@dataclass
class Figure:
    """A named figure: its data table and its panels (or a heat map)."""

    name: str
    title: str
    caption: str
    columns: list[str]
    rows: list[list[Any]]
    axes: list[Axis] = field(default_factory=list)
    heatmap: Heatmap | None = None
    columns_per_row: int = 3  # panels per row when there are several

    def column(self, name: str) -> list[Any]:
        k = self.columns.index(name)
        return [row[k] for row in self.rows]

    def numbers(self, name: str) -> list[float]:
        return [_number(v) for v in self.column(name)]

    def points(self, series: Series) -> list[tuple[float, float]]:
        """The (x, y) pairs a series draws: rows where both are numbers. None: the series is not drawn
        at all, and gets no legend entry, in either renderer."""
        return [(x, y) for x, y in zip(self.numbers(series.x), self.numbers(series.y))
                if not (math.isnan(x) or math.isnan(y))]


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return NAN


def finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if not math.isnan(v)]
