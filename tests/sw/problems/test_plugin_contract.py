"""One plugin contract: a problem plugin with its own decision vector (one global bit width plus
per-layer offsets, tests/global_offset_problem.py) works in explore, evaluate, retrain, the
weather sweep and cosim's point selection, because every one of them applies a vector through
the plugin. The expected bits are computed here from the vector's documented meaning."""

from __future__ import annotations

import json

import pytest
from workload_files import write_tiny_workload

from cosim.cosimulation import select_point as cosim_select_point
from sw.cli import main
from sw.search.results import ResultsDB
from sw.study.study import Study


def expected_bits(x, study: Study) -> dict[str, tuple[int, int]]:
    lower, upper = study.workload.search.bits.lower, study.workload.search.bits.upper
    names = study.quantized_model.layer_names
    return {name: (min(upper, max(lower, x[0] + off)),) * 2 for name, off in zip(names, x[1:], strict=True)}


@pytest.fixture(scope="module")
def explored(tmp_path_factory):
    path = write_tiny_workload(tmp_path_factory.mktemp("plugin"), {
        "name": "offsets", "problem": "global_offset_problem:plugin", "trust_custom_code": True,
        "search": {"pop_size": 6, "generations": 2, "minimum_accuracy": 0.3}}, "offsets.yaml")
    assert main(["explore", str(path)]) == 0
    return path


def test_explore_searches_the_plugins_vector(explored):
    study = Study(explored)
    names = study.quantized_model.layer_names
    assert study.variable_names == ["global_bits"] + [f"{n}.offset" for n in names]
    with ResultsDB(study.db_path) as db:
        run = db.latest_run(study.config_hash)
        individuals = db.individuals(run.id)
    assert run.var_names == study.variable_names
    assert all(len(ind.x) == len(names) + 1 for ind in individuals)
    assert any(ind.x[1:] != (0,) * len(names) for ind in individuals), "offsets must be searched"
    sizes = study.quantized_model.layer_sizes
    for ind in individuals:  # the recorded cost is the weighting of the plugin's bits
        bits = expected_bits(ind.x, study)
        total = sum(s.weights + s.inputs for s in sizes)
        assert ind.objectives[1] == pytest.approx(sum((s.weights + s.inputs) * bits[s.name][0] for s in sizes) / total)
    front = json.loads((study.results_dir / "front.json").read_text())["front"]
    assert front and all("global_bits" in row and "heldout_top1" in row for row in front)
    assert study.pareto_bits() == [expected_bits(study.point_vector(row), study) for row in front]


def test_evaluate_and_cosim_selection_go_through_the_plugin(explored, capsys):
    study = Study(explored)
    assert main(["evaluate", str(explored), "--list"]) == 0
    listed = [line.split()[1] for line in capsys.readouterr().out.splitlines()]
    assert listed == study.variable_names

    x = [3] + [(-1) ** i * 2 for i in range(len(study.variable_names) - 1)]  # offsets +2, -2, ...
    assert main(["evaluate", str(explored), "--bits", ",".join(map(str, x)), "--phase", "exploration"]) == 0
    out = capsys.readouterr().out
    want = expected_bits(x, study)
    assert "bits per layer: " + ", ".join(f"{n}={b}/{b}" for n, (b, _) in want.items()) in out
    qmodel = study.quantized_model
    qmodel.set_layer_bits(want)
    from sw.evaluation.evaluate import evaluate

    reference = evaluate(qmodel, study.batches("exploration"), ["top1"])["top1"]
    assert f"top1 {reference:.4f}" in out

    row, bits = study.select_point("best")
    assert bits == expected_bits(study.point_vector(row), study)
    assert cosim_select_point(study, "best") == bits


def test_weather_sweep_and_retrain_apply_the_plugins_vector(explored, capsys):
    import csv

    study = Study(explored)
    run, rows = study.front()
    argv = ["weather-sweep", str(explored), "--conditions", "fog", "--severities", "1", "--workers", "1",
            "--no-progress"]

    def swept() -> dict:
        with (study.results_dir / "weather" / "sweep.csv").open() as fh:
            return {(r["model"], r["condition"]): r for r in csv.DictReader(fh)}

    assert main(argv) == 0  # the whole front
    sweep = swept()
    assert {m for m, _ in sweep} == {"fp32", "int8"} | {f"P{row['point']}" for row in rows}
    for row in rows:  # a point on clean exploration data is exactly what the search measured for it
        assert float(sweep[(f"P{row['point']}", "clean")]["top1"]) == pytest.approx(row["top1"], abs=1e-6)
    assert main([*argv, "--point", "best"]) == 0  # one point: the best on held-out data
    best = rows[json.loads((study.results_dir / "front.json").read_text())["best"]]
    assert {m for m, _ in swept()} == {"fp32", "int8", f"P{best['point']}"}
    capsys.readouterr()
    row = rows[0]

    assert main(["retrain", str(explored), "--point", "0", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    # before QAT: the point on held-out data, the number the front reports for it
    assert f"point0: before QAT (reevaluation) top1 {row['heldout_top1']:.4f}" in out
