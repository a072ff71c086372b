"""`weather-sweep` over a small exploration, exploration under a condition, workload validation."""

from __future__ import annotations

import csv
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from sw.cli import main
from sw.config.workload import load_workload
from sw.core.errors import WorkloadError
from sw.data import corruptions

REPO = Path(__file__).resolve().parents[3]
SMALL = {"datasets": {"exploration": {"sample_limit": 48, "batch_size": 48, "randomize": True, "seed": 3}}}


def top1(model: torch.nn.Module, dataset) -> float:
    """Accuracy computed here, independently of sw.evaluation.evaluate."""
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    labels = torch.tensor([int(dataset[i][1]) for i in range(len(dataset))])
    with torch.no_grad():
        return float((model.eval()(images).argmax(1) == labels).float().mean())


def results_rows(db_path: Path) -> list[tuple]:
    with sqlite3.connect(db_path) as conn:
        return conn.execute("SELECT model, condition, severity, metrics FROM weather_results").fetchall()


@pytest.fixture
def explored(write_workload):
    """A tiny workload (its own name: its own results database) with one finished exploration."""
    path = write_workload({**SMALL, "name": "weather_sweep"})
    assert main(["explore", str(path)]) == 0
    return path


def test_sweep_stores_results_writes_plots_and_reuses_rows(explored, tmp_path, capsys):
    from sw.search.pareto import pareto_front
    from sw.search.results import ResultsDB
    from sw.study.study import Study

    argv = ["weather-sweep", str(explored), "--conditions", "fog", "rain", "--severities", "1", "5",
            "--workers", "1", "--no-progress"]
    assert main(argv) == 0
    study = Study(explored)
    with ResultsDB(study.db_path) as db:
        run = db.latest_run(study.config_hash)
        front = pareto_front(db.individuals(run.id))
    labels = ["fp32", "int8"] + [f"P{i}" for i in range(len(front))]
    combos = [("clean", 0)] + [(c, s) for c in ("fog", "rain") for s in (1, 5)]

    rows = results_rows(study.db_path)
    assert len(rows) == len(labels) * len(combos)
    out = study.results_dir / "weather"
    with (out / "sweep.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert {(r["model"], r["condition"], int(r["severity"])) for r in table} == \
        {(m, c, s) for m in labels for c, s in combos}
    weighting = study.workload.search.weighting
    for name in ("accuracy_vs_severity.png", f"drop_vs_{weighting}.png"):
        with Image.open(out / name) as image:
            assert image.size[0] > 200 and image.size[1] > 200

    by_key = {(r["model"], r["condition"], int(r["severity"])): r for r in table}
    # The cost column is named after the workload's weighting and holds that weighting of the bits.
    assert "weighted_bits" not in table[0] and weighting in table[0]
    assert float(by_key[("int8", "clean", 0)][weighting]) == pytest.approx(study.weighted_bits(study.uniform_bits(8)))
    for i, individual in enumerate(front):
        assert float(by_key[(f"P{i}", "clean", 0)][weighting]) == pytest.approx(
            study.weighted_bits(study.decode(individual.x)), abs=1e-4)
    # Pareto points on clean data: exactly what the exploration measured for them.
    for i, individual in enumerate(front):
        assert float(by_key[(f"P{i}", "clean", 0)]["top1"]) == pytest.approx(individual.metrics["top1"], abs=1e-6)
    # fp32 under fog 5: the same images as a workload asking for fog 5 gets from sw.data.datasets.
    from sw.data.datasets import build_dataset

    spec = study.workload.dataset("exploration")
    foggy = build_dataset(spec.__class__({**spec, "corruption": {"condition": "fog", "severity": 5, "seed": 0}}))
    assert float(by_key[("fp32", "fog", 5)]["top1"]) == pytest.approx(top1(study.fp32_model, foggy), abs=1e-6)
    assert float(by_key[("fp32", "fog", 5)]["top1_drop"]) == pytest.approx(
        float(by_key[("fp32", "clean", 0)]["top1"]) - float(by_key[("fp32", "fog", 5)]["top1"]), abs=1e-5)

    # Run again with one more severity: only the new severity is evaluated.
    capsys.readouterr()
    assert main(argv[:-3] + ["3", "5", "1", "--workers", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"{2 * len(labels)} evaluations, {5 * len(labels)} reused" in printed
    assert len(results_rows(study.db_path)) == len(labels) * (len(combos) + 2)


def test_sweep_without_exploration_is_a_clear_error_unless_baselines_only(write_workload, capsys):
    from sw.study.study import Study

    path = write_workload({**SMALL, "name": "weather_no_exploration"})
    argv = ["weather-sweep", str(path), "--conditions", "snow", "--severities", "2", "--workers", "1", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "explore" in err and "\n" not in err
    assert main(argv + ["--baselines-only"]) == 0
    rows = results_rows(Study(path).db_path)
    assert len(rows) == 2 * 2  # fp32 and int8, clean and snow 2
    assert {r[0] for r in rows} >= {"fp32"} and len({r[0] for r in rows}) == 2


@pytest.mark.parametrize("extra, message", [
    (["--conditions", "hail"], "unknown condition 'hail'"),
    (["--severities", "0"], "severity 0 is out of range"),
])
def test_bad_condition_or_severity_is_one_error_line(write_workload, capsys, extra, message):
    assert main(["weather-sweep", str(write_workload()), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_unknown_condition_in_a_workload_names_the_key(write_workload):
    path = write_workload({"datasets": {"exploration": {"corruption": {"condition": "hail", "severity": 2}}}})
    with pytest.raises(WorkloadError, match=r"datasets\.exploration\.corruption\.condition.*'hail'"):
        load_workload(path)


def test_severity_out_of_range_in_a_workload_names_the_key(write_workload):
    path = write_workload({"datasets": {"exploration": {"corruption": {"condition": "fog", "severity": 6}}}})
    with pytest.raises(WorkloadError, match=r"datasets\.exploration\.corruption\.severity"):
        load_workload(path)


@pytest.mark.parametrize("condition", ["fog", "snow"])
def test_weather_workloads_measure_the_exploration_on_corrupted_data(condition):
    workload = load_workload(REPO / "workloads" / f"digits_cnn_{condition}.yaml")
    for phase in ("exploration", "baseline"):
        corruption = workload.dataset(phase).corruption
        assert (corruption.condition, corruption.severity) == (condition, 1)
    assert workload.dataset("calibration").corruption is None


def test_exploration_under_a_condition_scores_candidates_on_corrupted_data(write_workload):
    from sw.data.corrupted_dataset import to_float_chw, to_uint8_hwc
    from sw.data.datasets import build_dataset
    from sw.search.results import ResultsDB
    from sw.study.study import Study

    fog = {"condition": "fog", "severity": 5, "seed": 0}
    path = write_workload({"name": "weather_fog_search", "search": {"pop_size": 4, "generations": 1},
                           "datasets": {"exploration": {"sample_limit": 48, "batch_size": 48, "randomize": True,
                                                        "corruption": fog}}})
    assert main(["explore", str(path)]) == 0
    study = Study(path)
    with ResultsDB(study.db_path) as db:
        individuals = db.individuals(db.latest_run(study.config_hash).id)
    # The foggy images, rebuilt here from the clean split: image i of the full split gets seed (0, i).
    spec = study.workload.dataset("exploration")
    full = build_dataset(spec.__class__({**spec, "corruption": None, "sample_limit": None}))
    chosen = build_dataset(spec.__class__({**spec, "corruption": None})).indices
    foggy = [(to_float_chw(corruptions.corrupt(to_uint8_hwc(full[i][0]), "fog", 5, corruptions.derive_seed(0, i))),
              full[i][1]) for i in chosen]
    uniform = max(individuals, key=lambda ind: sum(ind.x))  # the search starts with the all-upper-bits candidate
    study.quantized_model.set_layer_bits(study.decode(uniform.x))
    assert uniform.metrics["top1"] == pytest.approx(top1(study.quantized_model, foggy), abs=1e-6)
    clean = [full[i] for i in chosen]
    assert top1(study.quantized_model, clean) != pytest.approx(uniform.metrics["top1"], abs=1e-6)


@pytest.mark.slow
def test_acceptance_sweep_on_the_default_workload(tmp_path):
    """The issue's acceptance run: explore the default study, then 5 conditions x 5 severities over its front.

    Run on demand: `pytest -m slow tests/test_weather_sweep.py` (prints the wall time)."""
    workload = tmp_path / "digits_cnn.yaml"
    data = yaml.safe_load((REPO / "workloads" / "digits_cnn.yaml").read_text())
    data["results"]["dir"] = str(tmp_path / "results")
    workload.write_text(yaml.safe_dump(data))
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    subprocess.run([sys.executable, "-m", "sw", "explore", str(workload)], check=True, env=env, cwd=REPO)
    sweep = subprocess.run([sys.executable, "-m", "sw", "weather-sweep", str(workload), "--conditions", "fog", "snow",
                            "frost", "brightness", "rain", "--severities", "1", "2", "3", "4", "5", "--no-progress"],
                           env=env, cwd=REPO, capture_output=True, text=True)
    print(sweep.stdout)
    assert sweep.returncode == 0, sweep.stderr
    out = tmp_path / "results" / "digits_cnn" / "weather"
    assert (out / "accuracy_vs_severity.png").is_file() and (out / "drop_vs_params_weighted.png").is_file()
    with (out / "sweep.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    models = {r["model"] for r in rows}
    assert {"fp32", "int8", "P0"} <= models
    assert len(rows) == len(models) * (1 + 25)


@pytest.mark.slow
def test_sweep_plots_drop_vs_dram_energy_when_the_workload_has_an_energy_table(write_workload):
    """Builds a small ZigZag table (about a minute): run on demand with `pytest -m slow`."""
    from energy.build import build_table
    from energy.outputs import write_outputs
    from sw.study.study import Study

    path = write_workload({**SMALL, "name": "weather_energy", "search": {"bits": {"lower": 7, "upper": 8}},
                           "energy": {"engine": "zigzag", "accelerator": "eyeriss_like"}})
    assert main(["explore", str(path)]) == 0
    argv = ["weather-sweep", str(path), "--conditions", "snow", "--severities", "2", "--workers", "1",
            "--no-progress"]
    assert main(argv) == 0
    out = Study(path).results_dir / "weather"
    assert not (out / "drop_vs_dram_energy.png").exists()  # no table built yet: weighted bits only
    workload = Study(path).workload
    table, _ = build_table(workload)
    write_outputs(workload, table)  # energy_table.csv: the table counts as built
    assert main(argv) == 0
    with Image.open(out / "drop_vs_dram_energy.png") as image:
        assert image.size[0] > 200
    with (out / "sweep.csv").open() as handle:
        rows = {r["model"]: r for r in csv.DictReader(handle) if r["condition"] == "clean"}
    study = Study(path)
    assert float(rows["int8"]["dram_energy"]) == pytest.approx(table.lookup(study.uniform_bits(8), "dram_energy"),
                                                               rel=1e-5)
    assert rows["fp32"]["dram_energy"] == ""


def test_sweep_keys_keep_points_with_equal_bits_but_different_decision_vectors_apart():
    """A plugin's own variables (or a clipping method per layer) change the model without changing
    its bits: its stored weather results must not be reused for another point with the same bits."""
    from sw.robustness.result import SweepModel

    bits = {"conv1": (4, 5), "fc": (8, 8)}
    a, b = SweepModel("P0", bits, 6.0, x=(4, 5, 8, 8, 0)), SweepModel("P1", bits, 6.0, x=(4, 5, 8, 8, 1))
    baseline = SweepModel("int", dict(bits), 6.0)
    assert len({a.key, b.key, baseline.key, SweepModel("fp32", None, 32.0).key}) == 4
    assert SweepModel("P2", dict(bits), 6.0, x=(4, 5, 8, 8, 0)).key == a.key  # same point: its rows are reused


def test_dram_energy_comes_from_the_registered_cost_provider(monkeypatch):
    """sw reaches energy only through the `dram_energy` cost provider (sw.search.costs): none
    registered, no DRAM energy; registered, its cost function and its label."""
    import types

    from sw.core.registry import Registry
    from sw.robustness import run
    from sw.search.costs import CostProvider

    study = types.SimpleNamespace(name="s")
    monkeypatch.setattr(run, "COSTS", Registry("cost"))
    assert run.energy_function(study) == (None, "")
    costs = Registry("cost")
    costs.add("dram_energy", CostProvider("dram_energy", "DRAM energy", "mJ", lambda s: lambda bits: len(bits) * 0.5))
    monkeypatch.setattr(run, "COSTS", costs)
    function, label = run.energy_function(study)
    assert function({"a": (8, 8), "b": (4, 4)}) == 1.0 and label == "DRAM energy (mJ)"
