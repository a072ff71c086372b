"""matplotlib rendering of a `sw.report.spec.Figure`: PNG (embedded in the page) and SVG."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from sw.core.durable import atomic_write
from sw.report.spec import HEATMAP_COLORS, Axis, Figure, Heatmap

MARKERS = {"o": "o", "s": "s", "x": "x", "*": "*", "^": "^", "none": ""}
LEGEND = {"south east": "lower right", "south west": "lower left", "north east": "upper right",
          "north west": "upper left", "outer": "best", "below": "lower right"}
DPI = 110


def render(figure: Figure, out_dir: Path) -> dict[str, Path]:
    """Write `<name>.png` and `<name>.svg`; return their paths."""
    import matplotlib  # lazy: matplotlib (0.4 s) only where a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: matplotlib (0.4 s) only where a figure is drawn

    fig = draw(figure, plt)
    paths = {}
    for kind in ("png", "svg"):
        path = out_dir / f"{figure.name}.{kind}"
        with atomic_write(path, "wb") as fh:
            fig.savefig(fh, format=kind, dpi=DPI, metadata={"Date": None} if kind == "svg" else None)
        paths[kind] = path
    plt.close(fig)
    return paths


def draw(figure: Figure, plt):
    """The matplotlib figure of `figure`, drawn with `plt` (`matplotlib.pyplot`) and not saved:
    what `render` writes, for callers that inspect or save it themselves."""
    if figure.heatmap is not None:
        return _heatmap(figure, figure.heatmap, plt)
    n = len(figure.axes)
    cols = min(figure.columns_per_row, n)
    rows = math.ceil(n / cols)
    wide = any(s.kind == "bar" for a in figure.axes for s in a.series)
    size = (max(6.4, 0.3 * len(figure.rows) + 2.5), 4.2) if wide else (6.4 if n == 1 else 4.3 * cols, 4.2 * rows if n == 1 else 3.5 * rows)
    fig, grid = plt.subplots(rows, cols, figsize=size, squeeze=False)
    for ax in grid.flat[n:]:
        ax.set_visible(False)
    for ax, spec in zip(grid.flat, figure.axes):
        _axis(figure, spec, ax, fig)
    if n > 1:
        fig.suptitle(figure.title)
    fig.tight_layout()
    return fig


def _axis(figure: Figure, spec: Axis, ax, fig) -> None:
    for s in spec.series:
        if not figure.points(s):
            continue  # an empty series gets no legend entry either (as in the TikZ version)
        x, y = np.array(figure.numbers(s.x)), np.array(figure.numbers(s.y))
        keep = ~(np.isnan(x) | np.isnan(y))
        x, y = x[keep], y[keep]
        marker = MARKERS[s.marker]
        if s.kind == "bar":
            ax.bar(x + s.shift, y, s.width, color=s.color, edgecolor="black", linewidth=0.4, label=s.label or None)
        elif s.kind == "scatter":
            meta = np.array(figure.numbers(s.meta))[keep]
            points = ax.scatter(x, y, c=meta, cmap="viridis", s=s.size ** 2, marker=marker or "o",
                                label=s.label or None, edgecolors="none")
            from matplotlib.ticker import MaxNLocator  # lazy: matplotlib (0.4 s) only where a figure is drawn

            bar = fig.colorbar(points, ax=ax, ticks=MaxNLocator(integer=True))
            bar.set_label(spec.meta_label)
        elif s.kind == "marks":
            style = dict(c=s.color) if s.filled or marker == "x" else dict(facecolors="none", edgecolors=s.color)
            ax.scatter(x, y, s=s.size ** 2 * (2.5 if marker == "*" else 1), marker=marker or "o",
                       label=s.label or None, linewidths=1.5 if marker == "x" else 0.8, zorder=4, **style)
        else:
            ax.plot(x, y, marker=marker or None, ms=s.size, ls="--" if s.dashed else "-", color=s.color,
                    mfc=s.color if s.filled else "none", label=s.label or None)
    for h in spec.hlines:
        ax.axhline(h.y, ls="--" if h.dashed else ":", color=h.color, lw=1, label=h.label)
    if spec.ticks is not None:
        ax.set_xticks([p for p, _ in spec.ticks], [t for _, t in spec.ticks], rotation=60 if len(spec.ticks) > 6 else 0,
                      ha="right" if len(spec.ticks) > 6 else "center", fontsize=7 if len(spec.ticks) > 12 else 8)
    ax.set_xlabel(spec.xlabel)
    ax.set_ylabel(spec.ylabel)
    if spec.title:
        ax.set_title(spec.title if len(figure.axes) > 1 else f"{figure.title}\n{spec.title}", fontsize=10)
    elif len(figure.axes) == 1:
        ax.set_title(figure.title, fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize=7, loc=LEGEND.get(spec.legend, "best"))


def _heatmap(figure: Figure, spec: Heatmap, plt):
    cols, rows = len(spec.col_labels), len(spec.row_labels)
    grid = np.full((rows, cols), np.nan)
    for c, r, v in zip(figure.numbers(spec.col), figure.numbers(spec.row), figure.numbers(spec.value)):
        grid[int(r), int(c)] = v
    fig, ax = plt.subplots(figsize=(max(5.0, 0.42 * cols + 2.5), max(2.6, 0.34 * rows + 1.8)))
    from matplotlib.colors import LinearSegmentedColormap  # lazy: matplotlib (0.4 s) only where a figure is drawn

    cmap = LinearSegmentedColormap.from_list("report", HEATMAP_COLORS)
    image = ax.imshow(grid, cmap=cmap, aspect="auto", origin="upper")
    for r in range(rows):
        for c in range(cols):
            if not np.isnan(grid[r, c]):
                ax.text(c, r, f"{grid[r, c]:.0f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(cols), spec.col_labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(rows), spec.row_labels, fontsize=7)
    ax.set_xlabel(spec.xlabel)
    ax.set_ylabel(spec.ylabel)
    ax.set_title(figure.title, fontsize=10)
    from matplotlib.ticker import MaxNLocator  # lazy: matplotlib (0.4 s) only where a figure is drawn

    bar = fig.colorbar(image, ax=ax, ticks=MaxNLocator(integer=True))
    bar.set_label(spec.value_label)
    fig.tight_layout()
    return fig
