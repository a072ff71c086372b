"""The report's HTML page: one self-contained file (styles inline, figures embedded as PNG data),
with links to every figure's SVG, PNG, TikZ and CSV files next to it. No script, no network."""

from __future__ import annotations

import base64
import datetime
import html
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from sw.report.inputs import HELDOUT, MAX_TABLE_ROWS, CsvTable, StudyInputs, to_float
from sw.report.spec import Figure

STYLE = """
:root { --ink: #1d2430; --muted: #5b6472; --line: #d8dde5; --accent: #1f4e9c; --bg: #f6f7f9; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       background: var(--bg); }
header { background: #fff; border-bottom: 1px solid var(--line); padding: 1.2rem 2rem 0.6rem; }
header h1 { margin: 0 0 0.2rem; font-size: 1.5rem; }
header p { margin: 0 0 0.6rem; color: var(--muted); }
nav a { display: inline-block; margin: 0 0.9rem 0.4rem 0; color: var(--accent); text-decoration: none; }
nav a.absent { color: #9aa1ab; }
main { max-width: 1180px; margin: 0 auto; padding: 1rem 2rem 3rem; }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px; margin: 1.2rem 0; padding: 0.4rem 1.4rem 1rem; }
section.absent { background: transparent; border-style: dashed; }
h2 { font-size: 1.2rem; margin: 0.8rem 0 0.6rem; }
h3 { font-size: 1rem; margin: 1rem 0 0.4rem; }
p.note { color: var(--muted); margin: 0.3rem 0; }
p.problem { color: #a01818; margin: 0.3rem 0; }
figure { margin: 0.6rem 0 1rem; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); background: #fff; }
figcaption { color: var(--muted); font-size: 0.9rem; }
figcaption a, .files a { color: var(--accent); }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.4rem 0 0.8rem; }
th, td { border-bottom: 1px solid var(--line); padding: 0.2rem 0.6rem; text-align: left; white-space: nowrap; }
th { background: #eef1f5; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { background: #fff6d6; }
tr.miss td { color: #a01818; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.15rem 1.2rem; margin: 0.4rem 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; }
details pre { background: var(--bg); padding: 0.8rem; overflow-x: auto; font-size: 0.8rem; }
"""


@dataclass
class Section:
    """One part of the page: `body` HTML, or (absent) a note saying which command writes its input."""

    id: str
    title: str
    body: str = ""
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def absent(self) -> bool:
        return not self.body


@dataclass
class FigureFiles:
    figure: Figure
    files: dict[str, Path]  # png, svg, csv, tex


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """A table cell: numbers with at most 6 significant digits, booleans as yes/no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None or value == "":
        return ""
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 100000 else str(value)
    number = to_float(value)
    if math.isnan(number) or isinstance(value, str) and not _numeric(value):
        return str(value)
    if number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    return f"{number:.6g}"


def _numeric(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, row_classes: Sequence[str] | None = None,
          limit: int = MAX_TABLE_ROWS) -> str:
    """An HTML table; numeric cells right-aligned; at most `limit` rows (the rest noted)."""
    rows = list(rows)
    out = ['<div class="scroll"><table><thead><tr>', *(f"<th>{esc(c)}</th>" for c in columns), "</tr></thead><tbody>"]
    for k, row in enumerate(rows[:limit]):
        klass = f' class="{row_classes[k]}"' if row_classes and row_classes[k] else ""
        cells = []
        for value in row:
            number = not isinstance(value, bool) and (isinstance(value, (int, float)) or
                                                      isinstance(value, str) and _numeric(value))
            cells.append(f'<td class="num">{esc(fmt(value))}</td>' if number else f"<td>{esc(fmt(value))}</td>")
        out.append(f"<tr{klass}>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    if len(rows) > limit:
        out.append(f'<p class="note">{len(rows) - limit} more rows in the file.</p>')
    return "".join(out)


COLLAPSE_ROWS = 25  # longer tables start folded


def csv_table(t: CsvTable, base: Path) -> str:
    """A CSV file as a table under its name and link; folded when long."""
    body = table(t.columns, ([r.get(c, "") for c in t.columns] for r in t.rows))
    if len(t.rows) > COLLAPSE_ROWS:
        body = f"<details><summary>{len(t.rows)} rows, {len(t.columns)} columns</summary>{body}</details>"
    return (f'<h3>{esc(t.path.name)}</h3><p class="note"><a href="{esc(relative(t.path, base))}">{esc(t.path)}</a>, '
            f"{len(t.rows)} rows</p>" + body)


def relative(path: Path, base: Path) -> str:
    return os.path.relpath(Path(path).resolve(), base.resolve())


def figure_html(item: FigureFiles) -> str:
    f = item.figure
    data = base64.b64encode(item.files["png"].read_bytes()).decode("ascii")
    links = " · ".join(f'<a href="{esc(item.files[kind].name)}">{label}</a>'
                       for kind, label in (("svg", "SVG"), ("png", "PNG"), ("tex", "TikZ/pgfplots"), ("csv", "data CSV")))
    return (f'<figure id="fig-{esc(f.name)}"><img src="data:image/png;base64,{data}" alt="{esc(f.title)}">'
            f"<figcaption>{esc(f.caption)}. {links}</figcaption></figure>")


def image_html(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{esc(path.name)}">'
            f"<figcaption>{esc(path)}</figcaption></figure>")


def facts(pairs: Iterable[tuple[str, Any]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in pairs) + "</dl>"


def summary_section(inputs: StudyInputs) -> Section:
    w = inputs.workload
    s = w.search
    pairs: list[tuple[str, Any]] = [
        ("workload", f"{w.name} ({w.path})"), ("model", f"{w.model.name}, {w.model.num_classes} classes, input "
                                                       f"{'x'.join(map(str, w.model.input_shape))}"),
        ("problem", w.problem), ("metrics", ", ".join(w.accuracy.metrics)),
        ("quantization", f"{w.quantization.explore}, baseline {w.quantization.baseline_bits} bits, "
                         f"{'per-channel' if w.quantization.per_channel_weights else 'per-tensor'} weights"),
        ("calibration", w.calibration.method),
        ("search", f"NSGA-II, population {s.pop_size}, {s.generations} generations, seed {s.seed}, "
                   f"bits {s.bits.lower}..{s.bits.upper}, cost {s.weighting}"),
        ("minimum accuracy", json.dumps(s.minimum_accuracy.to_dict() if hasattr(s.minimum_accuracy, "to_dict")
                                        else s.minimum_accuracy)),
    ]
    for phase, spec in w.datasets.items():
        limit = f", {spec.sample_limit} samples" if spec.get("sample_limit") else ""
        corruption = f", {spec.corruption.condition} severity {spec.corruption.severity}" if spec.get("corruption") else ""
        pairs.append((f"data: {phase}", f"{spec.name} {spec.get('split') or ''}{limit}{corruption}".strip()))
    run = inputs.run
    if run is not None:
        when = lambda t: datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M") if t else "unfinished"  # noqa: E731
        pairs += [("run", f"{run.id} (config {run.config_hash}), started {when(run.started)}, finished {when(run.finished)}"),
                  ("evaluated", f"{len(inputs.individuals)} individuals, {len(run.var_names)} decision variables"),
                  ("constraint", ", ".join(f"{m} >= {t:.4f}" for m, t in zip(run.metric_names, run.thresholds)))]
        if inputs.hypervolume:
            pairs.append(("hypervolume", f"{inputs.hypervolume[-1].hv:.6g} after generation {inputs.hypervolume[-1].generation}"))
    config = yaml.safe_dump(w.config.to_dict(), sort_keys=False)
    body = facts(pairs) + f"<details><summary>workload configuration</summary><pre>{esc(config)}</pre></details>"
    return Section("summary", "Workload", body)


def baselines_section(inputs: StudyInputs) -> Section:
    if not inputs.baselines:
        return Section("baselines", "Baselines", notes=["no baselines recorded: `python -m sw explore` evaluates them"])
    metrics = inputs.metric_names
    heldout = any(f"{HELDOUT}{m}" in v for v in inputs.baselines.values() for m in metrics)
    columns = ["model", *metrics] + ([f"{HELDOUT}{m}" for m in metrics] if heldout else [])
    rows = [[name, *(v.get(m, "") for m in metrics)] + ([v.get(f"{HELDOUT}{m}", "") for m in metrics] if heldout else [])
            for name, v in inputs.baselines.items()]
    note = ('<p class="note">Exploration data, and held-out (re-evaluation) data in the heldout_ columns.</p>'
            if heldout else '<p class="note">Baseline data of the workload.</p>')
    return Section("baselines", "Baselines", note + table(columns, rows))


def front_columns(inputs: StudyInputs) -> list[str]:
    """The front's columns, each metric followed by its held-out value (whatever order the file has)."""
    columns = list(inputs.front_rows[0])
    held = {f"{HELDOUT}{m}" for m in inputs.metric_names} | {f"{HELDOUT}feasible"}
    out = []
    for c in columns:
        if c in held:
            continue
        out.append(c)
        if c in inputs.metric_names and f"{HELDOUT}{c}" in columns:
            out.append(f"{HELDOUT}{c}")
            if c == inputs.metric_names[-1] and f"{HELDOUT}feasible" in columns:
                out.append(f"{HELDOUT}feasible")
    return out + [c for c in columns if c in held and c not in out]


def front_table(inputs: StudyInputs) -> str:
    rows = inputs.front_rows
    if not rows:
        return '<p class="note">No feasible point: the front is empty.</p>'
    columns = front_columns(inputs)
    status = [inputs.heldout_status(r) for r in rows]
    classes = [{"best": "best", "misses": "miss"}.get(s, "") for s in status]
    if inputs.has_heldout:
        phase = (inputs.front or {}).get("heldout_phase", "held-out")
        misses = status.count("misses")
        note = (f'<p class="note">Each metric on the exploration data the search selected on, and next to it '
                f"(<code>{HELDOUT}</code>) on the held-out <code>{esc(phase)}</code> data. "
                + (f"Best: point {inputs.best}, the cheapest point that meets the constraint on held-out data "
                   f"(highlighted). " if inputs.best is not None else
                   "No point meets the constraint on held-out data. ")
                + (f"{misses} point(s) miss it there (marked <em>misses</em>, in red).</p>" if misses else
                   "Every point meets it there.</p>"))
        return note + table(["held-out", *columns], ([s, *(r.get(c, "") for c in columns)]
                                                    for s, r in zip(status, rows)), row_classes=classes)
    return table(columns, ([r.get(c, "") for c in columns] for r in rows), row_classes=classes)


def files_section(out_dir: Path) -> Section:
    files = sorted(p for p in out_dir.iterdir() if p.is_file() and p.name != "index.html")
    items = "".join(f'<li><a href="{esc(p.name)}">{esc(p.name)}</a> ({p.stat().st_size:,} bytes)</li>' for p in files)
    return Section("files", "Files", f'<p class="note">Next to this page in {esc(out_dir)}; '
                                     f'<code>pdflatex figures.tex</code> there compiles every TikZ figure.</p>'
                                     f'<ul class="files">{items}</ul>')


def render(inputs: StudyInputs, sections: Sequence[Section], generated: str) -> str:
    nav = "".join(f'<a href="#{esc(s.id)}"{" class=absent" if s.absent else ""}>{esc(s.title)}</a>' for s in sections)
    parts = []
    for s in sections:
        notes = "".join(f'<p class="note">{esc(n)}</p>' for n in s.notes)
        problems = "".join(f'<p class="problem">{esc(p)}</p>' for p in s.problems)
        parts.append(f'<section id="{esc(s.id)}"{" class=absent" if s.absent else ""}><h2>{esc(s.title)}</h2>'
                     f"{problems}{notes}{s.body}</section>")
    title = f"{inputs.workload.name}: mixed-precision study report"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
            f"<header><h1>{esc(title)}</h1><p>{esc(generated)}</p><nav>{nav}</nav></header>"
            f"<main>{''.join(parts)}</main></body></html>\n")
