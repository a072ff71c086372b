"""`python -m sw report`: a real tiny study plus every optional input, written by the project's own
writers where they exist; the page, the figures' data against independent recomputation, the
TikZ files (structure always, compiled where pdflatex exists) and missing/unreadable inputs."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from workload_files import write_tiny_workload

from sw.cli import main
from sw.commands.compare_search import CURVE_COLUMNS
from sw.search.results import ResultsDB
from sw.search.sensitivity_store import write_csv as write_sensitivity_csv
from sw.study.study import Study

FIGURES = ("front", "generations", "hypervolume", "bits", "energy", "weather", "sensitivity", "compare_search")


# -- fixtures: a real explored study, and the other commands' outputs ---------------------------
@pytest.fixture(scope="module")
def study(tmp_path_factory, shared_results) -> Study:
    """A tiny study explored for real (baselines, held-out front, hypervolume)."""
    path = write_tiny_workload(tmp_path_factory.mktemp("report_study"), {
        "name": "tiny_report", "results": {"dir": str(shared_results)}, "search": {"pop_size": 6, "generations": 3}},
        "w.yaml")
    assert main(["explore", str(path)]) == 0
    return Study(path)


def energy_value(column: str, layer_index: int, wb: int, ib: int, ob: int) -> float:
    """The synthetic energy table's entries (pJ): distinct per operand, layer and bit width."""
    scale = {"dram_w_energy_pj": 1000.0 * wb, "dram_i_energy_pj": 300.0 * ib, "dram_o_energy_pj": 70.0 * ob}
    return scale.get(column, 1.0) * (layer_index + 1)


def write_energy_table(study: Study) -> Path:
    """energy_table.csv through energy.table's own writer, with synthetic numbers for every bit width."""
    from energy.table import COLUMNS, EnergyTable, csv_path
    from energy.trace import workload_layers

    layers = workload_layers(study.workload)
    bits = [2, 3, 4, 5, 6, 8]
    shape = (len(layers), len(bits), len(bits), len(bits))
    data = {c: np.zeros(shape) for c in COLUMNS}
    for li in range(len(layers)):
        for wi, wb in enumerate(bits):
            for ii, ib in enumerate(bits):
                for oi, ob in enumerate(bits):
                    for c in COLUMNS:
                        data[c][li, wi, ii, oi] = energy_value(c, li, wb, ib, ob)
    return EnergyTable(layers, bits, 8, data).write_csv(csv_path(study.workload))


def accuracy_under(model: str, condition: str, severity: int) -> float:
    return round(0.9 - 0.05 * severity - (0.1 if condition == "snow" else 0.0) - 0.01 * len(model), 6)


def write_weather(study: Study) -> Path:
    """weather/sweep.csv through sw.robustness.store's own writer."""
    from sw.robustness.result import CLEAN, SweepModel, SweepResult
    from sw.robustness.store import write_csv

    models = [SweepModel("fp32", None, 32.0), SweepModel("int8", {}, 8.0), SweepModel("P0", {}, 4.2)]
    result = SweepResult(1, "exploration", 0, ["top1"], ["fog", "snow"], [1, 3], models)
    for m in models:
        for condition, severity in [CLEAN, ("fog", 1), ("fog", 3), ("snow", 1), ("snow", 3)]:
            result.metrics[(m.label, condition, severity)] = {"top1": accuracy_under(m.label, condition, severity)}
    path = study.results_dir / "weather" / "sweep.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(result, path)
    return path


def write_cosim(study: Study, mismatching: int) -> Path:
    """A cosim report with the columns cosim.report writes; `mismatching` tensors fail."""
    from cosim.report import COLUMNS

    path = study.results_dir / "cosim" / "best_icarus_w32.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["point", "sim", "word_bits", "quantizer", *COLUMNS])
        writer.writeheader()
        for k in range(3):
            row = {c: 0 for c in COLUMNS}
            row.update(layer=f"features.{k}", tensor="weight", bits=4, elements=100 * (k + 1), ok=k >= mismatching)
            writer.writerow({"point": "best", "sim": "icarus", "word_bits": 32, "quantizer": f"features.{k}.weight", **row})
    return path


def write_folders(study: Study) -> None:
    """ablation/, deploy/, retrain/ with columns the report does not know in advance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, column in (("ablation", "clip_method"), ("deploy", "int_top1"), ("retrain", "qat_epochs")):
        folder = study.results_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}_extra.csv").write_text(f"point,{column}\n0,alpha_{name}\n1,beta_{name}\n")
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    fig.savefig(study.results_dir / "ablation" / "ablation.png")
    plt.close(fig)
    write_ablation_table(study)


ABLATION = {"fp32": 0.9312, "naive (max)": 0.4871, "+ ACIQ (laplace)": 0.7654}


def write_ablation_table(study: Study) -> None:
    """ablation.csv + ablation.md as `python -m sw ablate` writes them (its own writer), one recipe skipped."""
    from sw.study.ablation import ACIQ, NAIVE, write_ablation

    rows = [{"recipe": "fp32", "heldout_top1": ABLATION["fp32"]}]
    for name, calibration in (("naive (max)", NAIVE), ("+ ACIQ (laplace)", ACIQ)):
        rows.append({"recipe": name, **calibration, "weight_bits": 4, "input_bits": 4, "calibration_s": 0.25,
                     "mean_weight_bits": 4.0, "heldout_top1": ABLATION[name]})
    rows.append({"recipe": "+ bit allocation", **ACIQ, "bit_allocation": True, "weight_bits": 4, "input_bits": 4,
                 "note": "skipped: needs quantization.per_channel_weights: true"})
    write_ablation(rows, study.results_dir / "ablation", study, 4, 4)


def sensitivity_value(layer_index: int, bits: int) -> tuple[float, float]:
    """The synthetic sensitivity table's (fit_proxy, loss_increase): distinct per layer and bits."""
    return 10.0 ** (-bits - layer_index), 0.5 ** bits * (layer_index + 1)


def write_sensitivity(study: Study) -> None:
    """sensitivity/sensitivity.csv through sw.search.sensitivity_store's own writer."""
    rows = []
    for k, layer in enumerate(study.quantized_model.layer_names):
        for bits in (2, 3, 4, 5, 6):
            fit, loss = sensitivity_value(k, bits)
            rows.append({"layer": layer, "bits": bits, "parameters": 1, "hessian_trace": 0, "fisher_trace": 0,
                         "perturbation": 0, "hessian_proxy": 0, "fit_proxy": fit, "loss_increase": loss,
                         "top1_drop": 0})
    write_sensitivity_csv(study, rows)


COMPARE = {("nsga2_random", "1"): [0.0, 1.0, 2.0], ("nsga2_random", "2"): [0.5, 1.5, 1.5, 3.0],
           ("ilp_only", "0"): [0.0, 2.5]}


def write_compare(study: Study) -> None:
    """compare_search/curves.csv and summary.csv with the columns `python -m sw compare-search` writes."""
    folder = study.results_dir / "compare_search"
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "curves.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CURVE_COLUMNS)
        for (method, seed), values in COMPARE.items():
            writer.writerows([method, seed, k + 1, v] for k, v in enumerate(values))
    (folder / "summary.csv").write_text("method,final_hv\nnsga2_random,2.5\nilp_only,2.5\n")


def remove_optional_inputs(study: Study) -> None:
    for name in ("weather", "cosim", "ablation", "deploy", "retrain", "report", "sensitivity", "compare_search"):
        shutil.rmtree(study.results_dir / name, ignore_errors=True)
    (study.results_dir / "energy_table.csv").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def full_report(study, tmp_path_factory) -> Path:
    """The report of `study` with every optional input present, in its own folder."""
    remove_optional_inputs(study)
    write_energy_table(study)
    write_weather(study)
    write_cosim(study, mismatching=1)
    write_folders(study)
    write_sensitivity(study)
    write_compare(study)
    out = tmp_path_factory.mktemp("full_report")
    assert main(["report", str(study.workload.path), "--out", str(out)]) == 0
    return out


class Page(HTMLParser):
    """The parts of the page the tests look at: section ids (present / absent), images, links."""

    def __init__(self, text: str):
        super().__init__()
        self.sections: dict[str, bool] = {}
        self.images: dict[str, str] = {}
        self.links: list[str] = []
        self.external: list[str] = []
        self._figure = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections[a["id"]] = "absent" not in (a.get("class") or "")
        if tag == "figure":
            self._figure = a.get("id")
        if tag == "img":
            self.images[self._figure or a.get("alt", "")] = a["src"]
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        for key in ("src", "href"):
            if a.get(key, "").startswith(("http:", "https:", "//")):
                self.external.append(a[key])


def section_html(text: str, name: str) -> str:
    match = re.search(rf'<section id="{name}"[^>]*>(.*?)</section>', text, re.S)
    assert match, f"no section {name}"
    return match.group(1)


class Tables(HTMLParser):
    """Every table of an HTML fragment: (header, [(row class, cells)])."""

    def __init__(self, text: str):
        super().__init__()
        self.tables: list[tuple[list[str], list[tuple[str, list[str]]]]] = []
        self._cell: list[str] | None = None
        self._head = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append(([], []))
        elif tag == "tr" and not self._head:
            self.tables[-1][1].append((dict(attrs).get("class") or "", []))
        elif tag == "thead":
            self._head = True
        elif tag in ("td", "th"):
            self._cell = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag == "thead":
            self._head = False
        if tag in ("td", "th") and self._cell is not None:
            header, rows = self.tables[-1]
            (header if tag == "th" else rows[-1][1]).append("".join(self._cell))
            self._cell = None


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def number(text: str) -> float:
    return float("nan") if text == "nan" else float(text)


# -- the tests -----------------------------------------------------------------------------------
def test_report_with_every_input(full_report):
    report = full_report
    page = Page((report / "index.html").read_text())
    assert all(page.sections.values()), f"absent sections: {[k for k, v in page.sections.items() if not v]}"
    for section in ("summary", "baselines", "front", "generations", "hypervolume", "bits", "energy", "weather",
                    "cosim", "sensitivity", "compare_search", "ablation", "deploy", "retrain", "files"):
        assert section in page.sections
    assert page.external == [], "the page must not load anything from the network"
    for name in FIGURES:  # each figure: embedded PNG, and its four files next to the page, linked
        assert page.images[f"fig-{name}"].startswith("data:image/png;base64,")
        for kind in ("png", "svg", "csv", "tex"):
            assert (report / f"{name}.{kind}").stat().st_size > 0
            assert f"{name}.{kind}" in page.links
    text = (report / "index.html").read_text()
    # generic result folders: their own columns and values, the image, the linked markdown
    for value in ("clip_method", "alpha_ablation", "int_top1", "beta_deploy", "qat_epochs"):
        assert value in text
    assert "ablation.md" in text and page.images.get(None) is None
    assert "1 tensor(s) with mismatches" in text and "600 elements" in text


def test_ablation_table_as_the_ablate_command_writes_it(full_report):
    """The ablation section: what was measured (ablation.md's description) and every recipe's held-out accuracy."""
    section = section_html((full_report / "index.html").read_text(), "ablation")
    assert "Calibration ablation, tiny_report" in section and "held-out `reevaluation` split" in section
    header, rows = next(t for t in Tables(section).tables if "recipe" in t[0])
    assert "heldout_top1" in header and "note" in header
    shown = {cells[header.index("recipe")]: cells for _, cells in rows}
    assert set(shown) == {*ABLATION, "+ bit allocation"}
    for recipe, value in ABLATION.items():
        assert float(shown[recipe][header.index("heldout_top1")]) == value
    assert shown["+ bit allocation"][header.index("note")].startswith("skipped")


def front_table_rows(report: Path) -> tuple[list[str], list[tuple[str, list[str]]]]:
    return Tables(section_html((report / "index.html").read_text(), "front")).tables[0]


def expected_status(front: dict, row: dict) -> str:
    return "best" if row["point"] == front["best"] else "meets" if row["heldout_feasible"] else "misses"


def check_front_table(report: Path, front: dict) -> None:
    """Held-out value next to each exploration value; each point marked best / meets / misses (in red)."""
    header, rows = front_table_rows(report)
    assert header[0] == "held-out"
    assert header.index("heldout_top1") == header.index("top1") + 1
    assert header.index("heldout_feasible") == header.index("heldout_top1") + 1
    assert len(rows) == len(front["front"])
    for (klass, cells), point in zip(rows, front["front"]):
        status = expected_status(front, point)
        assert cells[0] == status
        assert klass == {"best": "best", "misses": "miss"}.get(status, "")
        assert int(cells[header.index("point")]) == point["point"]
        for column in ("top1", "heldout_top1"):
            assert float(cells[header.index(column)]) == pytest.approx(point[column], rel=1e-5)
        assert cells[header.index("heldout_feasible")] == ("yes" if point["heldout_feasible"] else "no")


def test_front_table_shows_heldout_next_to_exploration(study, full_report):
    check_front_table(full_report, json.loads((study.results_dir / "front.json").read_text()))


def test_points_that_miss_on_heldout_data_are_marked(study, full_report, tmp_path):
    """front.json where the last point misses the constraint on held-out data: table and heat map mark it."""
    path = study.results_dir / "front.json"
    original = path.read_text()
    front = json.loads(original)
    assert front["front"], "the tiny study has an empty front"
    last = front["front"][-1]
    last["heldout_feasible"] = False
    last["heldout_top1"] = front["thresholds"][0] - 0.05
    front["best"] = next((p["point"] for p in front["front"] if p["heldout_feasible"]), None)
    try:
        path.write_text(json.dumps(front))
        assert main(["report", str(study.workload.path), "--out", str(tmp_path)]) == 0
    finally:
        path.write_text(original)
    check_front_table(tmp_path, front)
    assert front_table_rows(tmp_path)[1][-1][1][0] == "misses"
    assert f"P{last['point']} (held-out miss)" in (tmp_path / "bits.tex").read_text()
    misses = [r for r in read_rows(tmp_path / "front.csv") if r["heldout_miss_acc"] != "nan"]
    assert [(float(r["cost"]), float(r["heldout_miss_acc"])) for r in misses] == \
        [(last[front["objectives"][1]], pytest.approx(last["heldout_top1"]))]


def test_report_figure_data_equals_the_results(study, full_report):
    """Every figure's CSV holds the numbers of the results it was drawn from, recomputed here."""
    report = full_report
    front = json.loads((study.results_dir / "front.json").read_text())
    with ResultsDB(study.db_path) as db:
        run = db.run(front["run_id"])
        individuals = db.individuals(run.id)
        hv = db.hypervolume(run.id)
    cost = front["objectives"][1]
    # front.csv of the report: the exploration and held-out accuracy of every front point at its cost
    rows = read_rows(report / "front.csv")
    assert len(rows) == len(individuals)
    drawn = {(float(r["cost"]), number(r["front_acc"])) for r in rows if r["front_acc"] != "nan"}
    assert drawn == {(p[cost], p["top1"]) for p in front["front"]}
    held = {(float(r["cost"]), number(r["heldout_acc"])) for r in rows if r["heldout_acc"] != "nan"}
    assert held == {(p[cost], p["heldout_top1"]) for p in front["front"]}
    best = [r for r in rows if r["best_acc"] != "nan"]
    if front["best"] is None:
        assert best == []
    else:
        assert [float(best[0]["cost"])] == [front["front"][front["best"]][cost]]
    # hypervolume.csv: the database's rows
    assert [(int(r["generation"]), float(r["hv"])) for r in read_rows(report / "hypervolume.csv")] == \
        [(r.generation, r.hv) for r in hv]
    # bits.csv: every front point's bit width of every decision variable
    cells = {(int(r["row"]), r["variable"]): int(r["bits"]) for r in read_rows(report / "bits.csv")}
    assert cells == {(k, v): p[v] for k, p in enumerate(front["front"]) for v in run.var_names}
    # energy.csv: all-8-bit and the best point; a layer's output bits are the next layer's input bits
    layers = [v.removesuffix(".bits") for v in run.var_names]
    energy = read_rows(report / "energy.csv")
    assert [r["layer"] for r in energy] == layers
    point = front["front"][front["best"] if front["best"] is not None else 0]
    for k, r in enumerate(energy):
        b = point[f"{layers[k]}.bits"]
        ob = point[f"{layers[k + 1]}.bits"] if k + 1 < len(layers) else 8
        assert float(r["c0_weights_uj"]) == pytest.approx(energy_value("dram_w_energy_pj", k, 8, 8, 8) / 1e6)
        assert float(r["c1_weights_uj"]) == pytest.approx(energy_value("dram_w_energy_pj", k, b, b, ob) / 1e6)
        assert float(r["c1_outputs_uj"]) == pytest.approx(energy_value("dram_o_energy_pj", k, b, b, ob) / 1e6)
        assert float(r["c1_cum_outputs"]) == pytest.approx(sum(
            energy_value(c, k, b, b, ob) for c in ("dram_w_energy_pj", "dram_i_energy_pj", "dram_o_energy_pj")) / 1e6)
    # weather.csv: one row per severity (0: clean), a column per condition and model
    weather = read_rows(report / "weather.csv")
    assert [int(r["severity"]) for r in weather] == [0, 1, 3]
    for r in weather:
        s = int(r["severity"])
        for condition in ("fog", "snow"):
            for model in ("fp32", "int8", "P0"):
                expected = accuracy_under(model, "clean", 0) if s == 0 else accuracy_under(model, condition, s)
                assert float(r[f"{condition}.{model}"]) == pytest.approx(expected)


def _tex_files(report: Path) -> list[Path]:
    return [report / f"{name}.tex" for name in FIGURES if (report / f"{name}.tex").exists()]


def test_tikz_figures_read_existing_columns(full_report):
    """Structure, without LaTeX: balanced environments, and every column a plot reads is in its CSV."""
    report = full_report
    files = _tex_files(report)
    assert len(files) == len(FIGURES)
    document = (report / "figures.tex").read_text()
    for tex in files:
        text = tex.read_text()
        assert f"\\input{{{tex.name}}}" in document
        for env in ("tikzpicture", "axis"):
            assert text.count(f"\\begin{{{env}}}") == text.count(f"\\end{{{env}}}") >= 1
        header = (report / f"{tex.stem}.csv").read_text().splitlines()[0].split(",")
        used = re.findall(r"table\[col sep=comma, ([^\]]*)\] \{\\reportdir ([^}]*)\}", text)
        assert used, tex
        for keys, csv_name in used:
            assert csv_name.strip() == f"{tex.stem}.csv"
            for key in re.findall(r"(?:x|y|meta)=([^,\]]+)", keys):
                assert key.strip() in header, (tex.name, key)
        assert text.count("{") == text.count("}")
        for plot in re.findall(r"\\addplot\[([^\]]*)\]", text):  # bars: a filled box in the legend, not a line
            assert "ybar" not in plot or "area legend" in plot, (tex.name, plot)


def test_every_model_has_one_legend_entry_even_where_its_first_panel_is_empty(study, tmp_path):
    """A sweep where model P7 has no clean and no fog rows: it is named in the snow panel, in both renderers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sw.report import figures, plots, tikz
    from sw.report.inputs import StudyInputs, read_csv

    path = tmp_path / "sweep.csv"
    lines = ["model,condition,severity,top1", "fp32,clean,0,0.9"]
    lines += [f"fp32,{c},{s},{0.8 - 0.1 * s}" for c in ("fog", "snow") for s in (1, 2)]
    lines += [f"P7,snow,{s},{0.7 - 0.1 * s}" for s in (1, 2)]
    path.write_text("\n".join(lines) + "\n")
    inputs = StudyInputs(study.workload, study.config_hash, study.results_dir, weather=read_csv(path))
    figure = figures.weather_figure(inputs)
    named = [(a.title, s.label) for a in figure.axes for s in a.series if s.label]
    assert sorted(named) == [("fog", "fp32"), ("snow", "P7")]
    assert all(figure.points(s) for a in figure.axes for s in a.series if s.label)
    fig = plots.draw(figure, plt)
    legends = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    plt.close(fig)
    assert sorted(legends) == ["P7", "fp32"]
    text = tikz.picture(figure)
    assert text.count("\\addlegendentry{P7}") == 1 and text.count("\\addlegendentry{fp32}") == 1


@pytest.mark.skipif(shutil.which("pdflatex") is None,
                    reason="pdflatex is not installed (Debian: apt-get install texlive-latex-base texlive-pictures; "
                           ".ci/run installs them)")
def test_tikz_figures_compile_with_pdflatex(full_report, tmp_path):
    report = full_report
    work = tmp_path / "tex"
    shutil.copytree(report, work)
    result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "figures.tex"], cwd=work,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    pages = re.search(r"Output written on figures\.pdf \((\d+) pages?", result.stdout)
    assert pages and int(pages.group(1)) == len(FIGURES), result.stdout[-1500:]
    # a paper that keeps the data elsewhere: \reportdir points pgfplots at it
    paper = tmp_path / "paper"
    paper.mkdir()
    shutil.copy(report / "front.tex", paper)
    (paper / "paper.tex").write_text("\\documentclass{article}\\usepackage{pgfplots}\\pgfplotsset{compat=1.16}"
                                     f"\\newcommand{{\\reportdir}}{{{work.as_posix()}/}}"
                                     "\\begin{document}\\input{front.tex}\\end{document}\n")
    result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"], cwd=paper,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]


def test_missing_inputs_leave_sections_out_with_the_command_that_writes_them(study, full_report, capsys):
    remove_optional_inputs(study)
    stale = study.results_dir / "report" / "energy.png"  # drawn by an earlier report, its input gone since
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"old")
    assert main(["report", str(study.workload.path)]) == 0
    out = capsys.readouterr().out
    page = Page((study.results_dir / "report" / "index.html").read_text())
    text = (study.results_dir / "report" / "index.html").read_text()
    assert page.sections["front"] and page.sections["hypervolume"]
    for section, command in (("energy", "python -m energy table"), ("weather", "python -m sw weather-sweep"),
                             ("cosim", "python -m cosim"), ("ablation", "python -m sw ablate"),
                             ("deploy", "python -m sw export"), ("retrain", "python -m sw retrain")):
        assert page.sections[section] is False, section
        assert command in text, command
    assert "not yet" in out and "Weather robustness" in out
    assert not stale.exists() and "energy.png" not in page.links


def test_report_before_any_exploration_says_so(write_workload, capsys):
    path = write_workload({"name": "tiny_report_empty"})
    assert main(["report", str(path)]) == 0
    page = Page((Study(path).results_dir / "report" / "index.html").read_text())
    assert page.sections["summary"] and not page.sections["front"] and not page.sections["hypervolume"]
    assert f"python -m sw explore {path}" in (Study(path).results_dir / "report" / "index.html").read_text()


def test_unreadable_input_is_one_error_line_and_the_rest_is_still_reported(study, full_report, capsys):
    remove_optional_inputs(study)
    bad = study.results_dir / "weather" / "sweep.csv"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\xff\xfe\x00garbage\x00" * 20)
    assert main(["report", str(study.workload.path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and err[0].startswith("error:") and "CSV" in err[0]
    text = (study.results_dir / "report" / "index.html").read_text()
    assert str(bad) in text and Page(text).sections["front"]
    shutil.rmtree(bad.parent)


# -- in a real browser ---------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,1000")


@pytest.mark.timeout(300)
@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                    reason="Chromium and chromedriver are not installed (Debian: apt-get install chromium "
                           "chromium-driver; .ci/run installs them)")
def test_page_in_headless_chromium_has_no_console_error_and_shows_the_front(full_report, tmp_path, monkeypatch):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_AVOID_STATS", "true")  # selenium must not phone home
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(120)
        driver.set_script_timeout(60)
        driver.get((full_report / "index.html").as_uri())
        driver.get(((full_report / "index.html").as_uri()) + "#front")
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == [], errors
        shown = driver.execute_script("""
            const img = document.querySelector('#fig-front img');
            if (!img) return null;
            img.scrollIntoView();
            const box = img.getBoundingClientRect();
            const hit = document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2);
            const broken = [...document.images].filter(i => !i.complete || i.naturalWidth === 0).length;
            return {complete: img.complete, width: img.naturalWidth, height: img.naturalHeight,
                    shownWidth: box.width, shownHeight: box.height, onTop: hit === img, broken: broken,
                    visible: getComputedStyle(img).visibility === 'visible' && getComputedStyle(img).display !== 'none'};
        """)
        assert shown is not None, "no front figure in the page"
        assert shown["complete"] and shown["width"] > 300 and shown["height"] > 200, shown
        assert shown["shownWidth"] > 300 and shown["shownHeight"] > 200 and shown["visible"] and shown["onTop"], shown
        assert shown["broken"] == 0, shown
        assert "Pareto front" in driver.find_element("css selector", "#front h2").text
    finally:
        driver.quit()


def test_sensitivity_and_compare_figures_hold_their_tables(study, full_report):
    """sensitivity.csv: log10 of each layer's proxy and loss per bits, stars at the best point's bits;
    compare_search.csv: per method the lower median over seeds while every seed's curve lasts."""
    front = json.loads((study.results_dir / "front.json").read_text())
    point = front["front"][front["best"] if front["best"] is not None else 0]
    rows = read_rows(full_report / "sensitivity.csv")
    assert [int(r["bits"]) for r in rows] == [2, 3, 4, 5, 6]
    for k, layer in enumerate(study.quantized_model.layer_names):
        for r in rows:
            fit, loss = sensitivity_value(k, int(r["bits"]))
            assert number(r[f"l{k}_log_fit"]) == pytest.approx(np.log10(fit))
            assert number(r[f"l{k}_loss"]) == pytest.approx(np.log10(loss))
            chosen = int(r["bits"]) == point[f"{layer}.bits"]
            assert (r[f"l{k}_chosen_log_fit"] != "nan") == chosen
    curves = read_rows(full_report / "compare_search.csv")
    assert len(curves) == 4
    assert [number(r["m0_median"]) for r in curves[:3]] == [0.0, 1.0, 1.5]  # lower median of 2 seeds
    assert curves[3]["m0_median"] == "nan"  # one seed's curve ended
    assert [number(r["m1_median"]) for r in curves[:2]] == [0.0, 2.5]
