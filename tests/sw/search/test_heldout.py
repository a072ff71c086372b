"""Held-out truth: Pareto points and baselines re-evaluated on the reevaluation data, flagged when
they miss the constraint there, `best` chosen on held-out numbers, stored durably and only once.

Held-out accuracies are recomputed here with a plain loop over `sw.data.datasets.build_dataset`
(not through sw.evaluation.evaluate or sw.search.heldout), so the tests do not trust the code under test.
"""

from __future__ import annotations

import csv
import json
import sqlite3

import pytest
import torch

from cosim.cosimulation import select_point as cosim_select_point
from sw.cli import main
from sw.commands.explore import front_table
from sw.core.errors import DataError
from sw.data.datasets import build_dataset
from sw.search.heldout import reevaluate
from sw.search.pareto import pareto_front, write_front
from sw.search.results import ResultsDB
from sw.study.study import Study

THRESHOLD = 0.5  # TINY's search.minimum_accuracy


def accuracy(model: torch.nn.Module, study: Study, phase: str = "reevaluation") -> float:
    dataset = build_dataset(study.workload.dataset(phase))
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    labels = torch.tensor([int(dataset[i][1]) for i in range(len(dataset))])
    with torch.no_grad():
        return float((model.eval()(images).argmax(1) == labels).double().mean())


def quantized_accuracy(study: Study, bits: dict, phase: str = "reevaluation") -> float:
    qmodel = study.quantized_model
    qmodel.set_layer_bits(bits)
    return accuracy(qmodel, study, phase)


@pytest.fixture
def crafted(write_workload):
    """A study whose exploration run claims two feasible points: all-2-bit (cheap, 0.90 claimed) and
    all-6-bit (0.95 claimed), as a lucky exploration split could report them. Their held-out
    accuracies are whatever the real tiny CNN scores on the reevaluation data."""
    path = write_workload({"name": "heldout_crafted"})
    study = Study(path)
    w = study.workload
    n = len(study.variable_names)
    low, high = [2] * n, [6] * n
    truth = {2: quantized_accuracy(study, study.uniform_bits(2)), 6: quantized_accuracy(study, study.uniform_bits(6))}
    assert truth[2] < THRESHOLD <= truth[6], f"premise of the test: 2 bits fail, 6 bits pass on held-out data: {truth}"
    with ResultsDB(study.db_path) as db:
        run_id = db.start_run(w.name, w.problem, study.config_hash, w.config.to_dict(), study.variable_names,
                              ["top1"], ["-top1", w.search.weighting], [THRESHOLD])
        for index, (x, claimed) in enumerate(((low, 0.90), (high, 0.95))):
            cost = study.weighted_bits(study.uniform_bits(x[0]))
            db.add_individual(run_id, 0, index, x, {"top1": claimed}, [-claimed, cost], [THRESHOLD - claimed], 0.0)
        db.finish_run(run_id)
    return path, truth


def heldout_rows(study: Study) -> dict[str, tuple[str, float]]:
    with sqlite3.connect(study.db_path) as conn:
        return {model: (metrics, created) for model, metrics, created in
                conn.execute("SELECT model, metrics, created FROM heldout WHERE config_hash = ?", (study.config_hash,))}


def test_a_point_that_fails_on_heldout_data_is_flagged_and_never_best(crafted, tmp_path, capsys):
    path, truth = crafted
    study = Study(path)
    run, rows = study.front()
    assert [row["top1"] for row in rows] == [0.90, 0.95]  # sorted by cost: the 2-bit point first
    assert rows[0]["heldout_top1"] == pytest.approx(truth[2], abs=1e-9)
    assert rows[1]["heldout_top1"] == pytest.approx(truth[6], abs=1e-9)
    assert [row["heldout_feasible"] for row in rows] == [False, True]

    row, bits = study.select_point("best")
    assert row["point"] == 1 and set(bits.values()) == {(6, 6)}
    assert cosim_select_point(study, "best") == bits
    assert study.select_point(0)[1] == study.uniform_bits(2)  # still reachable by index, on purpose

    assert main(["evaluate", str(path), "--point", "best"]) == 0
    out = capsys.readouterr().out
    assert "Pareto point 1 (best on held-out data) on reevaluation: top1" in out
    assert f"top1 {truth[6]:.4f}" in out

    with study.open_db() as db:
        individuals = db.individuals(run.id)
        heldout = reevaluate(study, db, pareto_front(individuals))
    paths = write_front(run, individuals, tmp_path, heldout)
    written = json.loads(paths["json"].read_text())
    assert written["best"] == 1 and written["heldout_phase"] == "reevaluation"
    with paths["csv"].open() as fh:
        table = list(csv.DictReader(fh))
    assert [r["heldout_feasible"] for r in table] == ["False", "True"]
    assert float(table[0]["heldout_top1"]) == pytest.approx(truth[2], abs=1e-9)
    lines = front_table(rows, ["top1"], run.objective_names[1], run.var_names)
    assert "MISSES" in lines[1] and "MISSES" not in lines[2]
    assert lines[-1].startswith("best (the cheapest point that meets the constraint on held-out data): point 1")


def test_heldout_results_are_stored_once_and_resumed(crafted):
    path, truth = crafted
    study = Study(path)
    study.front()
    stored = heldout_rows(study)
    assert set(stored) == {json.dumps([2] * len(study.variable_names)), json.dumps([6] * len(study.variable_names))}
    run, front = study.pareto_points()
    with study.open_db() as db:
        again = reevaluate(study, db, front)
    assert (again.evaluated, again.reused) == (0, 2)
    assert heldout_rows(study) == stored  # nothing evaluated or written again

    # a re-evaluation killed after the first point: only the missing one is evaluated
    killed = json.dumps([6] * len(study.variable_names))
    with sqlite3.connect(study.db_path) as conn:
        conn.execute("DELETE FROM heldout WHERE model = ?", (killed,))
    with study.open_db() as db:
        resumed = reevaluate(study, db, front)
    assert (resumed.evaluated, resumed.reused) == (1, 1)
    after = heldout_rows(study)
    assert after[killed][0] == stored[killed][0]
    assert json.loads(after[killed][0])["top1"] == pytest.approx(truth[6], abs=1e-9)
    untouched = json.dumps([2] * len(study.variable_names))
    assert after[untouched] == stored[untouched]


def test_no_heldout_feasible_point_means_no_best(crafted, capsys):
    path, _ = crafted
    study = Study(path)
    w = study.workload
    with ResultsDB(study.db_path) as db:  # a stricter run over the same two points
        first = db.latest_run(study.config_hash)
        strict = db.start_run(w.name, w.problem, study.config_hash, w.config.to_dict(), first.var_names,
                              first.metric_names, first.objective_names, [0.99])
        for ind in db.individuals(first.id):
            db.add_individual(strict, 0, ind.index, ind.x, {"top1": 0.995 + ind.index * 0.001},
                              [-(0.995 + ind.index * 0.001), ind.objectives[1]], [-0.005], 0.0)
    with pytest.raises(DataError, match="no point of run .* meets the constraint on held-out"):
        study.select_point("best")
    assert main(["evaluate", str(path), "--point", "best"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "heldout_feasible" in err[0]


def test_explore_prints_and_writes_heldout_metrics_of_every_point(write_workload, capsys):
    path = write_workload({"name": "heldout_explore", "search": {"weighting": "uniform"}})
    assert main(["explore", str(path)]) == 0
    out = capsys.readouterr().out
    study = Study(path)
    written = json.loads((study.results_dir / "front.json").read_text())
    assert written["objectives"] == ["top1", "uniform"]  # the cost column is named after the weighting
    rows = written["front"]
    assert rows
    threshold = written["thresholds"][0]
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if "heldout_top1" in line)
    table = lines[header + 1: header + 1 + len(rows)]
    for row, line in zip(rows, table, strict=True):
        bits = study.decode(study.point_vector(row))
        held = quantized_accuracy(study, bits)
        assert row["heldout_top1"] == pytest.approx(held, abs=1e-9)
        assert row["heldout_feasible"] == (held >= threshold)
        assert line.split()[0] == str(row["point"])
        assert f"{row['top1']:.4f}" in line and f"{held:.4f}" in line
        assert ("MISSES" in line) == (held < threshold)
    feasible = [row["point"] for row in rows if row["heldout_feasible"]]
    assert written["best"] == (feasible[0] if feasible else None)
    fp32 = accuracy(study.fp32_model, study)
    assert written["baselines"]["fp32"]["heldout_top1"] == pytest.approx(fp32, abs=1e-9)
    assert written["baselines"]["int8"]["heldout_top1"] == pytest.approx(
        quantized_accuracy(study, study.uniform_bits(8)), abs=1e-9)

    # killed while re-evaluating: the run is not finished yet and the last point's row is missing
    with sqlite3.connect(study.db_path) as conn:
        conn.execute("UPDATE runs SET finished = NULL WHERE id = ?", (written["run_id"],))
        conn.execute("DELETE FROM heldout WHERE model = ?", (json.dumps(study.point_vector(rows[-1])),))
    assert main(["explore", str(path), "--resume"]) == 0
    out = capsys.readouterr().out
    assert f"resuming run {written['run_id']}" in out and "evaluated 0 new individuals" in out
    assert f"held-out re-evaluation on the reevaluation data: 1 evaluated, {len(rows) + 1} from the database" in out
    assert json.loads((study.results_dir / "front.json").read_text())["front"] == rows

    assert main(["explore", str(path)]) == 0  # a second run: the held-out numbers come from the database
    assert f"held-out re-evaluation on the reevaluation data: 0 evaluated, {len(rows) + 2} from the database" \
        in capsys.readouterr().out
