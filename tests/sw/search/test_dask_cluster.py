"""The search on a real dask cluster: a `dask scheduler` and two `dask worker --nthreads 1` processes
started on localhost as they would be on several machines, reached through the workload's
`search.runner.address`; the result must be the serial runner's, and no process may outlive the test."""

from __future__ import annotations

import os
import sys

import cloudpickle
import numpy as np
import pytest

from sw.cli import main
from sw.core.errors import UserError
from sw.search.results import ResultsDB
from sw.search.runner import WORKER_MALLOC, DaskBackend, DaskProcesses, describe_workers, worker_settings
from sw.study.study import Study


@pytest.fixture(scope="module")
def dask_cluster():
    """A scheduler and two one-thread workers as separate processes; every one of them ended afterwards,
    whatever the test did (each wait inside is bounded)."""
    cluster = DaskProcesses(2, timeout_s=60.0, idle_timeout_s=300.0)
    groups = [process.pid for process in cluster.processes]
    try:
        yield cluster
    finally:
        cluster.close()
        left = cluster.alive()
        for pid in left:  # close() failed: end them here, then fail the test that used them
            os.killpg(pid, 9)
        assert not left, f"dask processes outlived the test: groups {left} of {groups}"


def _individuals_of(path) -> dict:
    study = Study(path)
    with ResultsDB(study.db_path) as db:
        return {ind.x: (ind.generation, ind.metrics, ind.objectives, ind.constraints)
                for ind in db.individuals(db.latest_run(study.config_hash).id)}


def _front_of(path) -> list:
    return (Study(path).results_dir / "front.csv").read_text().splitlines()


@pytest.mark.timeout(120)
def test_search_on_an_external_scheduler_gives_the_serial_result(dask_cluster, write_workload):
    common = {"search": {"pop_size": 6, "generations": 2}}  # TINY's CNN, trained once per test session
    serial = write_workload({**common, "name": "tiny_cluster_serial"}, name="serial.yaml")
    cluster = write_workload({**common, "name": "tiny_cluster_dask", "search": {
        **common["search"], "runner": {"kind": "dask", "address": dask_cluster.address}}}, name="cluster.yaml")
    assert main(["explore", str(serial), "--skip-baseline"]) == 0
    assert main(["explore", str(cluster), "--skip-baseline"]) == 0
    individuals = _individuals_of(cluster)
    assert len(individuals) >= 6 and individuals == _individuals_of(serial)
    front = _front_of(cluster)
    assert len(front) > 1 and front == _front_of(serial)  # a header and at least one point


@pytest.mark.timeout(60)
def test_workers_started_with_the_dask_environment_pass_the_check(dask_cluster):
    backend = DaskBackend(2, dask_cluster.address)
    try:
        assert backend.warnings == []
        settings = backend.client.run(worker_settings)
        assert len(settings) == 2
        for info in settings.values():
            assert info["env"] == {name: str(value) for name, value in WORKER_MALLOC.items()}
            assert info["profile"] is False
    finally:
        backend.close()


def test_a_worker_with_several_threads_is_refused_and_a_slow_one_warned_about():
    good = {"nthreads": 1, "env": {name: str(value) for name, value in WORKER_MALLOC.items()}, "profile": False}
    assert describe_workers({"tcp://a:1": good}) == ([], [])
    refusals, warnings = describe_workers({"tcp://a:1": {**good, "nthreads": 4}, "tcp://b:2": good})
    assert len(refusals) == 1 and "tcp://a:1" in refusals[0] and "--nthreads 1" in refusals[0] and warnings == []
    refusals, warnings = describe_workers({"tcp://a:1": {**good, "env": {}, "profile": True}})
    assert refusals == [] and len(warnings) == 1
    assert "MALLOC_ARENA_MAX" in warnings[0] and "profiler" in warnings[0]


@pytest.mark.timeout(60)
def test_no_scheduler_at_the_address_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(DaskBackend, "connect_timeout_s", 2.0)
    with pytest.raises(UserError, match="no dask scheduler answered at tcp://127.0.0.1:9"):
        DaskBackend(2, "tcp://127.0.0.1:9")


def _per_process(x) -> dict:
    """Objectives that differ between processes: a worker that does not compute what this process does."""
    if int(x[0]) < 0:
        raise ValueError(f"candidate {x.tolist()} refused")
    return {"F": np.array([float(os.getpid()), float(x[0])])}


@pytest.mark.timeout(60)
def test_workers_that_compute_other_numbers_are_named_and_task_errors_reach_the_caller(dask_cluster):
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    backend = DaskBackend(2, dask_cluster.address)
    try:
        results = dict(backend.imap(_per_process, [np.array([i]) for i in range(5)]))
        assert sorted(results) == list(range(5)) and all(results[i]["F"][1] == i for i in results)
        assert len(backend.warnings) == 2 and all("computed other F" in line for line in backend.warnings)
        with pytest.raises(ValueError, match="refused"):
            list(backend.imap(_per_process, [np.array([1]), np.array([-1]), np.array([2])]))
    finally:
        backend.close()
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
