"""Build one report per study: `results/<name>/report/index.html`, its figures and their TikZ twins.

`build_report(study)` reads what the other commands wrote (`sw.report.inputs`), builds the
figures (`sw.report.figures`), renders each as PNG + SVG (`sw.report.plots`) and as a
pgfplots `.tex` + data `.csv` (`sw.report.tikz`), writes `figures.tex` (every TikZ figure in
one LaTeX document) and the page (`sw.report.page`). It evaluates no model: a report of a
finished study takes seconds. Sections whose input does not exist say which command writes it.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path

from sw.core.durable import write_text
from sw.report import figures as F
from sw.report import page, plots, tikz
from sw.report.inputs import FOLDERS, StudyInputs, load_inputs
from sw.report.page import FigureFiles, Section


@dataclass
class Report:
    """What `build_report` wrote."""

    index: Path
    out_dir: Path
    inputs: StudyInputs
    sections: list[Section]
    figures: list[FigureFiles] = field(default_factory=list)

    @property
    def present(self) -> list[str]:
        return [s.title for s in self.sections if not s.absent]

    @property
    def absent(self) -> list[str]:
        return [s.title for s in self.sections if s.absent]


def build_report(study, run_id: int | None = None, out_dir: Path | None = None) -> Report:
    """Write the report of `study` (a `sw.study.study.Study`) to `out_dir` (default `<results>/<name>/report`)."""
    inputs = load_inputs(study.workload, study.config_hash, run_id)
    out_dir = Path(out_dir) if out_dir else inputs.results_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[FigureFiles] = []

    def draw(figure) -> str:
        files = {**plots.render(figure, out_dir), **tikz.render(figure, out_dir)}
        written.append(FigureFiles(figure, files))
        return page.figure_html(written[-1])

    sections = [page.summary_section(inputs), page.baselines_section(inputs)]
    sections += _search_sections(inputs, draw)
    sections += [_energy_section(inputs, draw, out_dir), _weather_section(inputs, draw, out_dir),
                 _cosim_section(inputs, out_dir), _sensitivity_section(inputs, draw, out_dir),
                 _compare_section(inputs, draw, out_dir)]
    sections += [_folder_section(folder, out_dir) for folder in inputs.folders]
    sections += [Section(name, title, notes=[n for n in inputs.notes if f"{name}/" in n])
                 for name, (title, _) in _absent_folders(inputs).items()]
    if inputs.problems:
        sections[0].problems += inputs.problems
    _remove_stale(out_dir, {f.figure.name for f in written})
    write_text(out_dir / "figures.tex", tikz.document([(f.figure, f.figure.caption) for f in written],
                                                      f"{inputs.workload.name}: figures"))
    sections.append(page.files_section(out_dir))
    generated = (f"Written {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} by `python -m sw report` "
                 f"from {inputs.results_dir}.")
    index = write_text(out_dir / "index.html", page.render(inputs, sections, generated))
    return Report(index, out_dir, inputs, sections, written)


def _remove_stale(out_dir: Path, written: set[str]) -> None:
    """Files of figures an earlier report drew whose input is gone now (the page must not link them)."""
    for name in set(F.NAMES) - written:
        for kind in ("png", "svg", "csv", "tex"):
            (out_dir / f"{name}.{kind}").unlink(missing_ok=True)


def _search_sections(inputs: StudyInputs, draw) -> list[Section]:
    titles = [("front", "Pareto front"), ("generations", "All individuals"), ("hypervolume", "Hypervolume"),
              ("bits", "Bit widths of the front")]
    if inputs.run is None:
        notes = [n for n in inputs.notes if "explore" in n or "exploration run" in n] or ["no exploration run"]
        return [Section(key, title, notes=notes) for key, title in titles]
    front_notes = [n for n in inputs.notes if "front" in n]
    front = Section("front", "Pareto front", draw(F.front_figure(inputs)) + page.front_table(inputs), notes=front_notes)
    generations = Section("generations", "All individuals", draw(F.generations_figure(inputs)))
    if inputs.hypervolume:
        rows = [[r.generation, r.hv] for r in inputs.hypervolume]
        hv = Section("hypervolume", "Hypervolume", draw(F.hypervolume_figure(inputs))
                     + page.table(["generation", "hypervolume"], rows))
    else:
        hv = Section("hypervolume", "Hypervolume", notes=["no individual evaluated yet"])
    if inputs.front_rows:
        bits = Section("bits", "Bit widths of the front", draw(F.bits_figure(inputs)))
    else:
        bits = Section("bits", "Bit widths of the front", notes=["the Pareto front is empty"])
    return [front, generations, hv, bits]


def _energy_section(inputs: StudyInputs, draw, out_dir: Path) -> Section:
    section = Section("energy", "Energy per layer and operand")
    if inputs.energy_table is None:
        section.notes = [n for n in inputs.notes if "energy" in n]
        return section
    figure, why = F.energy_figure(inputs)
    if why:
        section.notes.append(why)
    body = ""
    if figure is not None:
        body = draw(figure) + page.table(figure.columns[1:2] + [c for c in figure.columns if c.endswith("_uj")],
                                         ([r[1]] + [v for c, v in zip(figure.columns, r) if c.endswith("_uj")]
                                          for r in figure.rows))
        body += '<p class="note">c0, c1, ...: the configurations of the figure, in its legend order; values in uJ.</p>'
    body += page.csv_table(inputs.energy_table, out_dir)
    body += "".join(page.csv_table(t, out_dir) for t in inputs.energy_tables)
    section.body = body
    return section


def _weather_section(inputs: StudyInputs, draw, out_dir: Path) -> Section:
    section = Section("weather", "Weather robustness")
    if inputs.weather is None:
        section.notes = [n for n in inputs.notes if "weather" in n]
        return section
    figure = F.weather_figure(inputs)
    if figure is None:
        section.notes.append(f"{inputs.weather.path}: no model/condition/severity/metric columns to plot")
    section.body = (draw(figure) if figure is not None else "") + page.csv_table(inputs.weather, out_dir)
    return section


def _cosim_section(inputs: StudyInputs, out_dir: Path) -> Section:
    section = Section("cosim", "Co-simulation (RTL vs Python)")
    if not inputs.cosim:
        section.notes = [n for n in inputs.notes if "co-simulation" in n]
        return section
    parts = []
    for t in inputs.cosim:
        if "ok" in t.columns:
            bad = sum(1 for r in t.rows if r.get("ok", "").strip().lower() not in ("true", "1", "yes"))
            elements = sum(int(x) for x in t.numbers("elements") if x == x) if "elements" in t.columns else None
            verdict = ("every tensor bit-exact" if bad == 0 else f"{bad} tensor(s) with mismatches")
            parts.append(f'<p class="note">{page.esc(t.path.name)}: {len(t.rows)} tensors'
                         + (f", {elements:,} elements" if elements is not None else "") + f", {verdict}.</p>")
        parts.append(page.csv_table(t, out_dir))
    section.body = "".join(parts)
    return section


def _sensitivity_section(inputs: StudyInputs, draw, out_dir: Path) -> Section:
    section = Section("sensitivity", "Sensitivity per layer")
    if inputs.sensitivity is None:
        section.notes = [n for n in inputs.notes if "sensitivity table" in n]
        return section
    figure = F.sensitivity_figure(inputs)
    if figure is None:
        section.notes.append(f"{inputs.sensitivity.path}: no layer/bits/fit_proxy/loss_increase columns to plot")
    section.body = (draw(figure) if figure is not None else "") + page.csv_table(inputs.sensitivity, out_dir)
    return section


def _compare_section(inputs: StudyInputs, draw, out_dir: Path) -> Section:
    section = Section("compare_search", "Search methods compared: hypervolume vs evaluations")
    if inputs.compare is None:
        section.notes = [n for n in inputs.notes if "search comparison" in n]
        return section
    figure = F.compare_figure(inputs)
    if figure is None:
        section.notes.append(f"{inputs.compare.path}: no method/seed/evaluations/hypervolume columns to plot")
    section.body = (draw(figure) if figure is not None else "") + (
        page.csv_table(inputs.compare_summary, out_dir) if inputs.compare_summary is not None else "")
    return section


def _folder_section(folder, out_dir: Path) -> Section:
    body = "".join(f'<p class="note">{page.esc(line)}</p>' for line in _descriptions(folder.documents))
    body += "".join(page.csv_table(t, out_dir) for t in folder.tables)
    body += "".join(page.image_html(p) for p in folder.images)
    if folder.documents:
        body += "<ul>" + "".join(f'<li><a href="{page.esc(page.relative(p, out_dir))}">{page.esc(p.name)}</a></li>'
                                 for p in folder.documents) + "</ul>"
    if not body:
        return Section(folder.name, folder.title, notes=[f"{folder.path} holds no CSV, PNG, Markdown or JSON file"])
    return Section(folder.name, folder.title, body)


def _descriptions(documents) -> list[str]:
    """The text a Markdown result file writes above its table (what was measured, on which data)."""
    lines = []
    for path in documents:
        if path.suffix != ".md":
            continue
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            continue
        head = text.split("\n|", 1)[0] if not text.startswith("|") else ""
        lines += [line.strip() for line in head.splitlines() if line.strip()]
    return lines


def _absent_folders(inputs: StudyInputs) -> dict:
    present = {f.name for f in inputs.folders}
    return {name: value for name, value in FOLDERS.items() if name not in present}
