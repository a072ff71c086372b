"""The sensitivity table in the results database, ILP allocations as search points (`--point ilp:N`),
`search.init: ilp` seeding of NSGA-II and `compare-search`, on the real tiny study with real pymoo.

Expected values are recomputed here from first principles (brute force over allocations, the
hypervolume of the stored individuals, plain loops), not through the code under test."""

from __future__ import annotations

import csv
import itertools
import sqlite3

import numpy as np
import pytest
import torch

from sw.cli import main
from sw.commands.compare_search import RANDOM, SEEDED, median, evaluations_to_reach
from sw.search.allocation import layer_costs, seed_vectors, sweep, vector_of
from sw.search.hypervolume import hypervolume
from sw.search.ilp import allocate
from sw.search.results import ILP, ResultsDB
from sw.search.sensitivity_store import measure, sensitivity_table, stored_rows
from sw.study.study import Study


def _outputs(study: Study) -> torch.Tensor:
    qmodel = study.quantized_model  # built (trained) outside no_grad
    was_training = qmodel.training
    x, _ = next(iter(study.batches("exploration")))
    with torch.no_grad():
        out = qmodel.eval()(x)
    qmodel.train(was_training)  # as the study hands it out (training mode, as after init)
    return out


def test_sensitivity_is_stored_resumed_and_leaves_the_model_as_it_was(write_workload, capsys):
    path = write_workload({"name": "ilp_sensitivity", "search": {"bits": {"lower": 6, "upper": 8}}})
    study = Study(path)
    before = _outputs(study)
    assert study.quantized_model.training  # the premise: measure gets the model as a study hands it out
    with study.open_db() as db:
        rows, measured = measure(study, db, samples=2)
    layers = study.quantized_model.layer_names
    assert measured == len(rows) == 3 * len(layers)
    assert torch.equal(_outputs(study), before)  # no batch-norm statistics moved, bits restored
    for row in rows:
        if row["bits"] == study.workload.quantization.baseline_bits:  # the baseline itself: nothing changes
            assert row["loss_increase"] == 0.0 and row["top1_drop"] == 0.0
    with sqlite3.connect(study.db_path) as conn:  # a killed run: two measurements lost
        conn.execute("DELETE FROM sensitivity WHERE model_hash = ? AND bits = 6 AND layer IN (?, ?)",
                     (study.model_hash, layers[0], layers[1]))
    assert stored_rows(study, ResultsDB(study.db_path)) == []  # incomplete: nothing to allocate from
    with study.open_db() as db:
        again, measured = measure(study, db, samples=2)
    assert measured == 2
    assert again == rows  # the same numbers, re-measured or read back
    variant = study.variant({"search": {"seed": 7, "pop_size": 30}})  # the search section changes nothing
    with variant.open_db() as db:
        assert measure(variant, db, samples=2)[1] == 0
    assert main(["sensitivity", str(path), "--samples", "2"]) == 0
    assert "0 (layer, bits) measured now" in capsys.readouterr().out


def test_sweep_is_the_set_of_optimal_allocations_under_each_budget():
    rng = np.random.default_rng(1)
    layers, bits = ["a", "b", "c"], [2, 3, 4, 5]
    sens = {l: {b: float(rng.random() * 10 / b ** 2) for b in bits} for l in layers}
    cost = {l: {b: float(b * (i + 1)) for b in bits} for i, l in enumerate(layers)}
    found = sweep(sens, cost, 0.0, steps=25)
    assert found == sorted(found, key=lambda f: f[0])
    low, high = sum(min(c.values()) for c in cost.values()), sum(max(c.values()) for c in cost.values())
    for budget in np.linspace(low, high, 25).round(9):  # brute force: each budget's optimum is in the sweep
        best = min((sum(sens[l][b] for l, b in zip(layers, choice)), choice)
                   for choice in itertools.product(bits, repeat=3)
                   if sum(cost[l][b] for l, b in zip(layers, choice)) <= budget + 1e-9)
        assert any(sum(sens[l][a[l]] for l in layers) == pytest.approx(best[0]) for _, a in found)
    assert len({tuple(sorted(a.items())) for _, a in found}) == len(found)  # each allocation once


def test_allocate_sweep_stores_an_ilp_run_addressable_with_point_ilp(write_workload, capsys):
    path = write_workload({"name": "ilp_allocate", "search": {"bits": {"lower": 3, "upper": 5}}})
    assert main(["allocate", str(path), "--sweep", "9"]) == 0  # measures the sensitivity table on the way
    out = capsys.readouterr().out
    assert "measuring" in out and "ilp:best" in out
    study = Study(path)
    with study.open_db() as db:
        run = db.latest_run(study.config_hash, method=ILP)
        assert run is not None and run.method == "ilp:fit_proxy" and run.finished
        assert db.latest_run(study.config_hash) is None  # an ILP run is not a search run
        individuals = db.individuals(run.id)
        table = sensitivity_table(stored_rows(study, db), "fit_proxy")
        heldout = {m for (m,) in db.execute("SELECT model FROM heldout WHERE config_hash = ?", (study.config_hash,))}
    layers = study.quantized_model.layer_names
    cost, reference = layer_costs(study, layers, [3, 4, 5])
    expected = [vector_of(study, a) for _, a in sweep(table, cost, reference, 9)]
    assert [list(ind.x) for ind in individuals] == expected
    for ind in individuals:  # evaluated as a search point: exploration metrics, cost, held-out metrics
        bits = study.decode(ind.x)
        assert ind.objectives[1] == pytest.approx(study.weighted_bits(bits))
        assert ind.metrics["top1"] == pytest.approx(study.evaluate_bits(bits, "exploration")["top1"])
        assert str(list(ind.x)).replace(" ", "") in {m.replace(" ", "") for m in heldout}
    row, bits = study.select_point("ilp:0")
    assert bits == study.decode(study.point_vector(row))
    front = [ind for ind in individuals if ind.feasible]
    assert tuple(study.point_vector(row)) == min(front, key=lambda i: i.objectives[1]).x
    assert main(["evaluate", str(path), "--point", "ilp:0"]) == 0
    assert "ILP Pareto point 0" in capsys.readouterr().out
    assert main(["evaluate", str(path), "--point", "ilp:x"]) == 2
    assert "ilp:N" in capsys.readouterr().err
    assert main(["evaluate", str(path), "--point", "best"]) == 2  # no search run: one line, not the ILP's
    assert "explore" in capsys.readouterr().err


def test_allocate_budgets_are_honoured(write_workload, capsys):
    path = write_workload({"name": "ilp_allocate", "search": {"bits": {"lower": 3, "upper": 5}}})
    assert main(["allocate", str(path), "--budget", "4.0", "3.4", "1.0"]) == 0
    assert "1.0000  no allocation meets this budget" in capsys.readouterr().out
    study = Study(path)
    rows = list(csv.DictReader((study.results_dir / "sensitivity" / "allocate_fit_proxy.csv").open()))
    assert [float(r["budget"]) for r in rows] == [4.0, 3.4, 1.0]
    for row in rows[:2]:
        assert float(row["cost"]) <= float(row["budget"]) + 1e-9
        bits = [int(b) for b in row["bits"].split()]
        assert float(row["cost"]) == pytest.approx(study.weighted_bits(
            {n: (b, b) for n, b in zip(study.quantized_model.layer_names, bits)}))


def test_seeded_search_puts_the_ilp_allocations_in_the_first_population(write_workload, capsys):
    changes = {"name": "ilp_seeded", "search": {"bits": {"lower": 3, "upper": 5}, "pop_size": 8, "generations": 1}}
    random_path = write_workload(changes, name="random.yaml")
    seeded_path = write_workload({**changes, "search": {**changes["search"], "init": "ilp"}}, name="seeded.yaml")
    assert main(["explore", str(seeded_path)]) == 0  # measures the sensitivity table first
    assert "search.init: ilp" in capsys.readouterr().out
    assert main(["explore", str(random_path)]) == 0
    seeded, random = Study(seeded_path), Study(random_path)
    assert seeded.config_hash != random.config_hash  # the first population is part of the configuration
    plain = write_workload({"name": "ilp_seeded"}, name="plain.yaml")
    assert Study(plain).variant({"search": {"init": "random"}}).config_hash == Study(plain).config_hash
    with seeded.open_db() as db:
        first = {ind.x for ind in db.individuals(db.latest_run(seeded.config_hash).id) if ind.generation == 0}
        table = sensitivity_table(stored_rows(seeded, db), "fit_proxy")
        fp32 = db.baseline(seeded.config_hash, "fp32")["top1"]
        seeds = seed_vectors(seeded, db, 8 - 3, "fit_proxy", allowed_drop=fp32 - 0.5, log=lambda line: None)
        random_first = {ind.x for ind in db.individuals(db.latest_run(random.config_hash).id) if ind.generation == 0}
    cost, reference = layer_costs(seeded, seeded.quantized_model.layer_names, [3, 4, 5])
    allocations = {tuple(vector_of(seeded, a)) for _, a in sweep(table, cost, reference)}
    uniform = {tuple([b] * len(seeded.variable_names)) for b in (3, 4, 5)}
    assert uniform <= first and uniform <= random_first
    assert {tuple(x) for x in seeds} <= first and len(seeds) == 5
    assert first & allocations - uniform  # at least one ILP optimum itself, not only neighbours
    assert not (random_first - uniform) <= allocations  # the random run's other members are not the sweep's


def test_compare_search_curves_are_the_hypervolume_of_the_stored_runs(write_workload, capsys):
    path = write_workload({"name": "ilp_compare", "search": {"bits": {"lower": 3, "upper": 5}, "pop_size": 6,
                                                             "generations": 2}})
    assert main(["compare-search", str(path), "--seeds", "1", "2"]) == 0
    assert main(["compare-search", str(path), "--seeds", "1", "1"]) == 2
    capsys.readouterr()
    study = Study(path)
    out = study.results_dir / "compare_search"
    curves = list(csv.DictReader((out / "curves.csv").open()))
    assert {r["method"] for r in curves} == {RANDOM, "ilp_only", SEEDED}
    by_run: dict = {}
    for r in curves:
        by_run.setdefault((r["method"], r["seed"]), []).append((int(r["evaluations"]), float(r["hypervolume"])))
    with study.open_db() as db:
        for seed in (1, 2):
            for method, init in ((RANDOM, "random"), (SEEDED, "ilp")):
                variant = study.variant({"search": {"seed": seed, "init": init}})
                run = db.latest_run(variant.config_hash, finished=True)
                individuals = sorted(db.individuals(run.id), key=lambda i: (i.generation, i.index))
                points = by_run[(method, str(seed))]
                assert [k for k, _ in points] == list(range(1, len(individuals) + 1))
                hv = [h for _, h in points]
                assert hv == sorted(hv)  # never decreases
                feasible = [i.objectives for i in individuals if i.feasible]
                ref = [0.0, max(i.objectives[1] for i in individuals if i.generation == 0) * 1.1]
                assert hv[-1] == pytest.approx(hypervolume(np.array(feasible), ref), rel=1e-5)
    summary = {r["method"]: r for r in csv.DictReader((out / "summary.csv").open())}
    assert float(summary[RANDOM]["final_hv"]) == pytest.approx(
        np.median([by_run[(RANDOM, s)][-1][1] for s in ("1", "2")]), rel=1e-5)
    assert main(["report", str(path)]) == 0
    assert (study.results_dir / "report" / "compare_search.png").is_file()
    assert (study.results_dir / "report" / "sensitivity.png").is_file()


def test_median_and_evaluations_to_reach():
    assert median([3, 1, 2]) == 2 and median([1, 2, 3, 4]) == 2.5
    assert median([1, None, 2]) == 2 and median([None, None, 1]) is None and median([1, None]) is None
    curve = [(1, 0.0), (2, 1.0), (3, 1.0), (4, 2.0)]
    assert evaluations_to_reach(curve, 1.0) == 2 and evaluations_to_reach(curve, 2.0) == 4
    assert evaluations_to_reach(curve, 2.5) is None


def test_a_database_from_before_ilp_runs_gets_the_method_column(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, workload TEXT NOT NULL, problem TEXT "
                     "NOT NULL, config_hash TEXT NOT NULL, config TEXT NOT NULL, var_names TEXT NOT NULL, metric_names "
                     "TEXT NOT NULL, objective_names TEXT NOT NULL, thresholds TEXT NOT NULL, started REAL NOT NULL, "
                     "finished REAL)")
        conn.execute("INSERT INTO runs VALUES (1, 'w', 'p', 'h', '{}', '[]', '[]', '[]', '[]', 0, 1)")
    with ResultsDB(path) as db:
        assert db.latest_run("h").method == "nsga2"
        db.start_run("w", "p", "h", {}, [], [], [], [], method="ilp:fit_proxy")
        assert db.latest_run("h").id == 1 and db.latest_run("h", method=ILP).id == 2


def test_tiny_proxies_are_solved_exactly():
    """Proxies of 1e-9 (ResNet-18's last layers) are optimal too, not within the solver's absolute gap."""
    rng = np.random.default_rng(2)
    layers, bits = [f"l{i}" for i in range(6)], [2, 3, 4, 5, 6]
    for _ in range(10):
        sens = {l: {b: float(rng.random() * 1e-9 / b ** 3) for b in bits} for l in layers}
        cost = {l: {b: float(b * (i + 1)) for b in bits} for i, l in enumerate(layers)}
        budget = float(rng.uniform(50, 100))
        best = min(sum(sens[l][b] for l, b in zip(layers, choice)) for choice in itertools.product(bits, repeat=6)
                   if sum(cost[l][b] for l, b in zip(layers, choice)) <= budget)
        got = allocate(sens, cost, budget)
        assert sum(sens[l][got[l]] for l in layers) == pytest.approx(best, rel=1e-9)
