"""The exploration end to end: a tiny real search, its front, the results DB, kill -9 and --resume."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import types

import numpy as np
import pytest

from sw.cli import main
from sw.core.errors import DataError, WorkloadError
from sw.search.pareto import non_dominated_mask
from sw.search.plugin import PLUGIN_FUNCTIONS, PROBLEMS, check_plugin
from sw.search.results import ResultsDB
from sw.study.study import Study


def _dominates(a, b) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def test_tiny_search_returns_a_non_dominated_feasible_front(write_workload, capsys):
    path = write_workload({"name": "tiny_front"})
    assert main(["explore", str(path)]) == 0
    out = capsys.readouterr().out
    assert "baseline  fp32" in out and "baseline  int8" in out
    study = Study(path)
    with ResultsDB(study.db_path) as db:
        run = db.latest_run(study.config_hash)
        individuals = db.individuals(run.id)
    assert run.finished is not None
    assert len(individuals) >= 6
    written = json.loads((study.results_dir / "front.json").read_text())
    front = written["front"]
    assert front, "the tiny search must find feasible points"
    cost = study.workload.search.weighting  # the cost column is named after the weighting
    assert written["objectives"] == ["top1", cost] and cost == "params_weighted"
    lower, upper = study.workload.search.bits.lower, study.workload.search.bits.upper
    feasible = [i for i in individuals if i.metrics["top1"] >= 0.5]
    for point in front:
        bits = [point[name] for name in run.var_names]
        assert all(lower <= b <= upper for b in bits)
        assert point["top1"] >= 0.5
        objectives = (-point["top1"], point[cost])
        assert not any(_dominates((-i.metrics["top1"], i.objectives[1]), objectives) for i in feasible)
    for a in front:
        for b in front:
            assert not _dominates((-a["top1"], a[cost]), (-b["top1"], b[cost]))
    # the weighted-bits objective is the weighting of the decoded bits, recomputed here independently
    sizes = study.quantized_model.layer_sizes
    for point in front:
        bits = {s.name: point[f"{s.name}.bits"] for s in sizes}
        total = sum(s.weights + s.inputs for s in sizes)
        assert point[cost] == pytest.approx(sum((s.weights + s.inputs) * bits[s.name] for s in sizes) / total)
    for kind in ("front.csv", "front.json", "front.png"):
        assert (study.results_dir / kind).stat().st_size > 0
        assert str(study.results_dir / kind) in out


def test_non_dominated_mask_agrees_with_pymoo():
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    rng = np.random.default_rng(4)
    for _ in range(20):
        F = rng.integers(0, 6, size=(30, 2)).astype(float)
        ours = set(np.flatnonzero(non_dominated_mask(F)))
        theirs = set(NonDominatedSorting().do(F, only_non_dominated_front=True))
        assert ours == theirs


def test_plugin_contract():
    plugin = check_plugin(PROBLEMS.get("quantization_problem"))
    for name in PLUGIN_FUNCTIONS:
        assert callable(getattr(plugin, name))
    incomplete = types.SimpleNamespace(**{n: (lambda *a: None) for n in PLUGIN_FUNCTIONS[:-1]})
    with pytest.raises(TypeError, match=PLUGIN_FUNCTIONS[-1]):
        check_plugin(incomplete)
    with pytest.raises(WorkloadError, match="trust_custom_code"):
        PROBLEMS.get("sw.problems.quantization_problem:QuantizationProblem", file="w.yaml", key="problem")
    assert PROBLEMS.get("sw.search.plugin:PROBLEMS", trust_custom_code=True) is PROBLEMS


def test_custom_problem_through_the_plugin_door(write_workload, tmp_path, monkeypatch, capsys):
    """A user's plugin (opted in with trust_custom_code) that reuses the quantization problem."""
    (tmp_path / "my_problem.py").write_text(
        "import sys\n"
        "from sw.problems import quantization_problem as base\n"
        "init_function = base.init_function\n"
        "update_params_function = base.update_params_function\n"
        "sampling_method = base.sampling_method\n"
        "repair_method = base.repair_method\n"
        "def prepare_exploration_function(qmodel, study, thresholds, elementwise_runner=None):\n"
        "    cost = lambda bits: float(max(w for w, _ in bits.values()))\n"
        "    return base.QuantizationProblem(study, qmodel, cost, 'max_weight_bits', thresholds, elementwise_runner)\n"
        "plugin = sys.modules[__name__]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write_workload({"name": "tiny_custom", "problem": "my_problem:plugin", "trust_custom_code": True,
                           "search": {"generations": 1}})
    assert main(["explore", str(path), "--skip-baseline"]) == 0
    front = json.loads((Study(path).results_dir / "front.json").read_text())
    assert front["objectives"] == ["top1", "max_weight_bits"]
    assert all(float(p["max_weight_bits"]).is_integer() for p in front["front"])


def test_corrupt_results_database_is_refused_and_kept(write_workload, capsys):
    path = write_workload({"name": "tiny_corrupt"})
    study = Study(path)
    study.db_path.parent.mkdir(parents=True, exist_ok=True)
    study.db_path.write_bytes(b"this is not a database" * 100)
    assert main(["explore", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(study.db_path) in err and "SQLite" in err
    assert study.db_path.read_bytes() == b"this is not a database" * 100
    with pytest.raises(DataError):
        ResultsDB(study.db_path)


def test_kill_9_then_resume_keeps_every_individual(write_workload):
    path = write_workload({"name": "tiny_resume", "search": {"pop_size": 8, "generations": 8}})
    study = Study(path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "sw", "explore", str(path), "--skip-baseline"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 300
    count = 0
    while time.time() < deadline and proc.poll() is None:
        if study.db_path.exists():
            try:
                with sqlite3.connect(study.db_path) as conn:
                    count = conn.execute("SELECT COUNT(*) FROM individuals").fetchone()[0]
            except sqlite3.OperationalError:
                count = 0
            if count >= 12:
                break
        time.sleep(0.05)
    assert proc.poll() is None, f"explore ended before it could be killed: {proc.stderr.read().decode()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with ResultsDB(study.db_path) as db:
        run = db.latest_run()
        before = {ind.x: ind for ind in db.individuals(run.id)}
        assert run.finished is None and len(before) >= 12

    result = subprocess.run([sys.executable, "-m", "sw", "explore", str(path), "--skip-baseline", "--resume"],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"resuming run {run.id}" in result.stdout
    with ResultsDB(study.db_path) as db:
        resumed = db.run(run.id)
        after = {ind.x: ind for ind in db.individuals(run.id)}
        assert len(db.runs()) == 1
    assert resumed.finished is not None
    for x, ind in before.items():
        assert after[x] == ind, "an individual written before the kill changed or disappeared"
    assert len(after) > len(before)

    # the resumed run is the run an uninterrupted search would have produced
    fresh = write_workload({"name": "tiny_resume_ref", "search": {"pop_size": 8, "generations": 8}}, name="ref.yaml")
    assert main(["explore", str(fresh), "--skip-baseline"]) == 0
    ref_study = Study(fresh)
    with ResultsDB(ref_study.db_path) as db:
        reference = {ind.x: ind.metrics for ind in db.individuals(db.latest_run().id)}
        reference_hv = db.hypervolume(db.latest_run().id)
    assert reference == {x: ind.metrics for x, ind in after.items()}
    # and so is its hypervolume per generation (rows re-played after the kill are rewritten equal)
    with ResultsDB(study.db_path) as db:
        assert db.hypervolume(run.id) == reference_hv and len(reference_hv) == 8


def _individuals_of(path) -> dict:
    study = Study(path)
    with ResultsDB(study.db_path) as db:
        return {ind.x: (ind.metrics, ind.objectives) for ind in db.individuals(db.latest_run(study.config_hash).id)}


@pytest.mark.parametrize("kind", ["processes", "dask"])
def test_parallel_runner_gives_the_serial_result(kind, write_workload, monkeypatch):
    from sw.search.runner import DaskBackend

    monkeypatch.setattr(DaskBackend, "batches_per_worker", 1)  # 6 candidates, 2 workers: batches of 3
    common = {"search": {"pop_size": 6, "generations": 2}}
    serial = write_workload({**common, "name": f"tiny_serial_{kind}"}, name="serial.yaml")
    parallel = write_workload({"name": f"tiny_{kind}", "search": {**common["search"], "runner": {"kind": kind, "workers": 2}}},
                              name="parallel.yaml")
    assert main(["explore", str(serial), "--skip-baseline"]) == 0
    assert main(["explore", str(parallel), "--skip-baseline"]) == 0
    assert _individuals_of(parallel) == _individuals_of(serial)
