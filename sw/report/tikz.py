"""TikZ/pgfplots rendering of a `sw.report.spec.Figure`, for papers.

Each figure becomes `<name>.tex`, one `tikzpicture` whose plots read `<name>.csv` (written
here too), and `figures.tex` is a LaTeX document that inputs them all. Both compile with a
standard LaTeX install: pdflatex with pgfplots 1.16 or newer (Debian: texlive-latex-base and
texlive-pictures), no other package or library.

In a paper: `\\usepackage{pgfplots}` and `\\pgfplotsset{compat=1.16}` in the preamble, copy
`<name>.tex` and `<name>.csv` next to each other and `\\input{<name>.tex}`; when the CSV lives
elsewhere, `\\newcommand{\\reportdir}{path/}` first (the directory, with a trailing slash).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Iterable

from sw.core.durable import atomic_write, write_text
from sw.report.spec import HEATMAP_COLORS, Axis, Figure, Heatmap, finite

COMPAT = "1.16"
MARKS = {"o": "*", "s": "square*", "x": "x", "*": "star", "^": "triangle*", "none": ""}
OPEN_MARKS = {"o": "o", "s": "square", "^": "triangle"}
STROKE = {"*": 1.3, "x": 0.9}  # line width (pt) of the marks pgfplots only strokes
_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def escape(text: Any) -> str:
    """Text as LaTeX typesets it literally."""
    return "".join(_SPECIAL.get(ch, ch) for ch in str(text))


def cell(value: Any) -> str:
    """A CSV cell pgfplots reads: numbers exactly (shortest round-trip form), `nan` for missing, text without commas."""
    if value is None:
        return "nan"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (int, float)):
        if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
            return "nan"
        return repr(float(value)) if isinstance(value, float) else str(int(value))  # exact: round-trips
    return str(value).replace(",", ";").replace("\n", " ")


def write_data(figure: Figure, path: Path) -> Path:
    with atomic_write(path, newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(figure.columns)
        writer.writerows([cell(v) for v in row] for row in figure.rows)
    return path


def render(figure: Figure, out_dir: Path) -> dict[str, Path]:
    """Write `<name>.csv` and `<name>.tex`; return their paths."""
    paths = {"csv": write_data(figure, out_dir / f"{figure.name}.csv"),
             "tex": write_text(out_dir / f"{figure.name}.tex", picture(figure))}
    return paths


def picture(figure: Figure) -> str:
    """The `tikzpicture` of a figure (a complete `.tex` file to `\\input`)."""
    colors = _colors(figure)
    lines = [f"% {figure.title}: written by `python -m sw report`; data: {figure.name}.csv",
             f"% Needs \\usepackage{{pgfplots}} and \\pgfplotsset{{compat={COMPAT}}}; set \\reportdir to the CSV's directory.",
             r"\providecommand{\reportdir}{}",
             r"\begin{tikzpicture}"]
    lines += [f"\\definecolor{{{name}}}{{HTML}}{{{hexcode}}}" for hexcode, name in colors.items()]
    table = f"{{\\reportdir {figure.name}.csv}}"
    if figure.heatmap is not None:
        lines += _heatmap(figure, figure.heatmap, table)
    else:
        cols = min(figure.columns_per_row, len(figure.axes))
        for k, axis in enumerate(figure.axes):
            at = f"at={{({(k % cols) * 7.2:.1f}cm,{-(k // cols) * 6.4:.1f}cm)}}, " if len(figure.axes) > 1 else ""
            lines += _axis(figure, axis, table, colors, at)
    lines.append(r"\end{tikzpicture}")
    return "\n".join(lines) + "\n"


def _colors(figure: Figure) -> dict[str, str]:
    found = [s.color for a in figure.axes for s in a.series] + [h.color for a in figure.axes for h in a.hlines]
    return {c.lstrip("#").upper(): f"report{k}" for k, c in enumerate(dict.fromkeys(c.lstrip("#").upper() for c in found))}


def _options(items: Iterable[str]) -> str:
    return ",\n    ".join(i for i in items if i)


def _axis(figure: Figure, axis: Axis, table: str, colors: dict[str, str], at: str) -> list[str]:
    bars = [s for s in axis.series if s.kind == "bar"]
    options = [f"{at}width={max(9.0, 0.45 * len(figure.rows) + 3) if bars else (6.2 if at else 8.5):.1f}cm",
               f"height={5.2 if at else 6.2}cm", f"title={{{escape(axis.title or (figure.title if not at else ''))}}}",
               f"xlabel={{{escape(axis.xlabel)}}}", f"ylabel={{{escape(axis.ylabel)}}}",
               "grid=major", "grid style={gray!25}", "legend cell align=left",
               "legend style={font=\\scriptsize}", "title style={font=\\small}", "label style={font=\\small}",
               "tick label style={font=\\scriptsize}", "scaled ticks=false"]
    if axis.legend == "below":
        options.append("legend style={at={(0.5,-0.22)}, anchor=north, legend columns=2, font=\\scriptsize}")
    else:
        options.append("legend pos=outer north east" if axis.legend == "outer" else f"legend pos={axis.legend}")
    if axis.ticks is not None:
        options += ["xtick={" + ",".join(f"{p:g}" for p, _ in axis.ticks) + "}",
                    "xticklabels={" + ",".join("{" + escape(t) + "}" for _, t in axis.ticks) + "}",
                    f"x tick label style={{rotate={60 if len(axis.ticks) > 6 else 0}, anchor={'east' if len(axis.ticks) > 6 else 'north'}}}"]
    if bars:
        options += ["ymin=0", f"xmin={min(p for p, _ in axis.ticks or [(0, '')]) - 0.6:g}",
                    f"xmax={max(p for p, _ in axis.ticks or [(0, '')]) + 0.6:g}"]
    if any(s.kind == "scatter" for s in axis.series):
        options += ["colorbar", "colormap/viridis", f"colorbar style={{ylabel={{{escape(axis.meta_label)}}}, font=\\scriptsize}}"]
    lines = [r"\begin{axis}[", "    " + _options(options) + "]"]
    for s in axis.series:
        color = colors[s.color.lstrip("#").upper()]
        if not figure.points(s):
            continue  # an empty series: pgfplots would stop on it
        if s.kind == "bar":
            # area legend: the legend shows a filled box, not the line a per-plot ybar would get
            style = (f"ybar, bar width={s.width:g}, bar shift={s.shift:g}, fill={color}, draw=black, line width=0.2pt, "
                     "area legend")
        elif s.kind == "scatter":
            style = f"only marks, scatter, scatter src=explicit, mark={MARKS[s.marker] or '*'}, mark size={s.size * 0.45:.2f}pt"
        else:
            mark = MARKS[s.marker] if s.filled else OPEN_MARKS.get(s.marker, MARKS[s.marker])
            style = ", ".join(x for x in (
                f"color={color}", "only marks" if s.kind == "marks" else "",
                f"mark={mark}" if mark else "mark=none",
                f"mark size={s.size * (0.6 if s.marker == '*' else 0.45):.2f}pt",
                # star and x are stroked, not filled: thicker strokes keep them as visible as matplotlib's
                f"mark options={{solid, line width={STROKE[s.marker]}pt}}" if s.marker in STROKE else "mark options={solid}",
                "densely dashed" if s.dashed else "", "thick" if s.kind == "line" else "") if x)
        meta = f", meta={s.meta}" if s.kind == "scatter" else ""
        if not s.label:
            style += ", forget plot"  # no legend entry: keeps later entries on their own plots
        lines.append(f"\\addplot[{style}] table[col sep=comma, x={s.x}, y={s.y}{meta}] {table};")
        if s.label:
            lines.append(f"\\addlegendentry{{{escape(s.label)}}}")
    anchor_x = min(finite([v for ser in axis.series for v in figure.numbers(ser.x)]), default=0.0)
    for h in axis.hlines:  # across the whole axis; the invisible point keeps y inside the axis limits
        color, style = colors[h.color.lstrip("#").upper()], "densely dashed" if h.dashed else "densely dotted"
        at_y = f"{{axis cs:{anchor_x:.10g},{h.y:.10g}}}"
        lines += [f"\\addplot[draw=none, forget plot] coordinates {{({anchor_x:.10g},{h.y:.10g})}};",
                  f"\\draw[{color}, {style}] ({{rel axis cs:0,0}}|-{at_y}) -- ({{rel axis cs:1,0}}|-{at_y});",
                  f"\\addlegendimage{{{color}, {style}}}\\addlegendentry{{{escape(h.label)}}}"]
    lines.append(r"\end{axis}")
    return [line for line in lines if line]


def _heatmap(figure: Figure, spec: Heatmap, table: str) -> list[str]:
    cols, rows = len(spec.col_labels), len(spec.row_labels)
    values = finite(figure.numbers(spec.value))
    options = [f"width={max(7.0, 0.5 * cols + 3):.1f}cm", f"height={max(4.0, 0.45 * rows + 2.5):.1f}cm",
               f"title={{{escape(figure.title)}}}", f"xlabel={{{escape(spec.xlabel)}}}", f"ylabel={{{escape(spec.ylabel)}}}",
               "enlargelimits=false", "axis on top", "y dir=reverse", "colorbar",
               "colormap={report}{" + " ".join(f"rgb255=({int(c[1:3], 16)},{int(c[3:5], 16)},{int(c[5:7], 16)})"
                                               for c in HEATMAP_COLORS) + "}",
               f"colorbar style={{ylabel={{{escape(spec.value_label)}}}, font=\\scriptsize}}",
               f"point meta min={min(values, default=0):g}", f"point meta max={max(values, default=1):g}",
               "colorbar style={ytick distance=1}" if values and max(values) - min(values) <= 16 else "",
               "xtick={" + ",".join(str(c) for c in range(cols)) + "}",
               "xticklabels={" + ",".join("{" + escape(t) + "}" for t in spec.col_labels) + "}",
               "ytick={" + ",".join(str(r) for r in range(rows)) + "}",
               "yticklabels={" + ",".join("{" + escape(t) + "}" for t in spec.row_labels) + "}",
               "x tick label style={rotate=60, anchor=east, font=\\tiny}", "y tick label style={font=\\tiny}",
               "title style={font=\\small}", "label style={font=\\small}",
               "nodes near coords={\\pgfmathprintnumber[fixed, precision=0]{\\pgfplotspointmeta}}",
               "nodes near coords style={font=\\tiny, anchor=center}"]
    return [r"\begin{axis}[", "    " + _options(options) + "]",
            f"\\addplot[matrix plot*, mesh/cols={cols}, mesh/rows={rows}, point meta=explicit] "
            f"table[col sep=comma, x={spec.col}, y={spec.row}, meta={spec.value}] {table};",
            r"\end{axis}"]


def document(figures: list[tuple[Figure, str]], title: str) -> str:
    """`figures.tex`: a LaTeX document with every figure (pairs of figure and caption)."""
    body = []
    for figure, caption in figures:
        body += [r"\begin{figure}[!ht]", r"\centering", f"\\input{{{figure.name}.tex}}",
                 f"\\caption{{{escape(caption)}}}", r"\end{figure}", r"\clearpage"]
    return "\n".join([
        "% All figures of the report: `pdflatex figures.tex` in this folder (pgfplots reads the CSVs here).",
        r"\documentclass{article}",
        r"\usepackage{pgfplots}",
        f"\\pgfplotsset{{compat={COMPAT}}}",
        r"\pagestyle{empty}",
        r"\begin{document}",
        f"\\noindent\\textbf{{{escape(title)}}}\\par",
        *body,
        r"\end{document}", ""])
