"""NSGA-II over per-layer bit widths, with every evaluation recorded durably as it happens.
At the end of each generation the run's hypervolume is committed too (`sw.search.hypervolume`).

Evaluation goes through pymoo's elementwise runner interface (`runner(f, X) -> list[dict]`).
`RecordingRunner` wraps a backend (serial, a process pool or a dask.distributed cluster): it
looks each candidate up in the results database first (so `--resume` re-plays a killed run
without re-evaluating), evaluates the rest, and commits each result the moment it arrives.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from tqdm import tqdm

from sw.search.allocator import KEEP_FREED_BYTES, MMAP_THRESHOLD_BYTES, keep_freed_memory
from sw.search.hypervolume import at_generation, reference_point
from sw.search.results import ResultsDB


# -- evaluation backends ------------------------------------------------------------------------
class SerialBackend:
    """Evaluate in this process, in order."""

    def imap(self, f: Callable, X: Sequence) -> Iterator[tuple[int, dict]]:
        for i, x in enumerate(X):
            yield i, f(x)

    def close(self) -> None:
        pass


def _call(f: Callable, x) -> dict:
    return f(x)


def _call_each(f: Callable, xs: Sequence) -> list[dict]:
    return [f(x) for x in xs]


class ProcessBackend:
    """A pool of worker processes (spawned: each rebuilds the model once from the workload)."""

    def __init__(self, workers: int):
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))

    def imap(self, f: Callable, X: Sequence) -> Iterator[tuple[int, dict]]:
        futures = {self.pool.submit(_call, f, x): i for i, x in enumerate(X)}
        for future in as_completed(futures):
            yield futures[future], future.result()

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


class DaskBackend:
    """A dask.distributed cluster: a given scheduler address, or a local cluster of processes.

    A dask worker evaluates in a thread of its own, and glibc gives each thread its own malloc
    arena, which `sw.search.allocator`'s thresholds do not keep from shrinking: measured ~9,000 page
    faults per evaluation of the default study, 87 ms against 67 ms in a process pool. The local
    cluster's worker processes therefore start with one arena and the allocator's thresholds
    (`MALLOC_*` environment, set before they start), without dask's statistical profiler and with
    slower monitoring ticks; and candidates go out a few per task, not one task each.
    """

    QUIET_WORKERS = {"distributed.worker.profile.enabled": False, "distributed.admin.tick.interval": "1s",
                     "distributed.worker.memory.monitor-interval": "1s",
                     "distributed.admin.system-monitor.interval": "5s"}
    WORKER_MALLOC = {"MALLOC_ARENA_MAX": 1, "MALLOC_TRIM_THRESHOLD_": KEEP_FREED_BYTES,
                     "MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD_BYTES}
    batches_per_worker = 4  # per imap call: enough to balance uneven evaluation times

    def __init__(self, workers: int, address: str | None = None):
        import dask  # lazy: dask's import (0.2 s) only for the dask runner
        from dask.distributed import Client, LocalCluster  # lazy: as above

        self.cluster = None
        if not address:
            environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **self.WORKER_MALLOC}
            with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
                self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                            dashboard_address=None, config=self.QUIET_WORKERS)
        self.client = Client(address or self.cluster)

    def imap(self, f: Callable, X: Sequence) -> Iterator[tuple[int, dict]]:
        from dask.distributed import as_completed as dask_completed  # lazy: as above

        workers = max(1, len(self.client.scheduler_info().get("workers", {})))
        size = max(1, len(X) // (self.batches_per_worker * workers))
        batches = [range(start, min(start + size, len(X))) for start in range(0, len(X), size)]
        futures = [self.client.submit(_call_each, f, [X[i] for i in batch], pure=False) for batch in batches]
        index = {future.key: batch for future, batch in zip(futures, batches)}
        for future in dask_completed(futures):
            yield from zip(index[future.key], future.result())

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def make_backend(kind: str, workers: int, address: str | None = None):
    keep_freed_memory()  # this process evaluates (serial) or hands out work; workers do the same
    if kind == "processes":
        return ProcessBackend(workers)
    if kind == "dask":
        return DaskBackend(workers, address)
    return SerialBackend()


# -- recording ------------------------------------------------------------------------------
@dataclass
class Recorder:
    """Where evaluations go: one run of the results database."""

    db: ResultsDB
    run_id: int
    metric_names: list[str]
    generation: int = 0
    evaluated: int = 0
    reused: int = 0
    reference: list[float] | None = None  # the run's hypervolume reference point, fixed after generation 0

    def lookup(self, x) -> dict | None:
        hit = self.db.lookup(self.run_id, [int(v) for v in x])
        if hit is None:
            return None
        return {"F": np.array(hit.objectives), "G": np.array(hit.constraints),
                "metrics": np.array([hit.metrics[m] for m in self.metric_names]), "wall_time": hit.wall_time}

    def record(self, index: int, x, out: dict) -> None:
        self.db.add_individual(self.run_id, self.generation, index, [int(v) for v in x],
                               {m: float(v) for m, v in zip(self.metric_names, out["metrics"])},
                               list(out["F"]), list(out.get("G", [])), float(out["wall_time"]))


    def end_generation(self) -> float:
        """Commit the hypervolume of generations 0..`generation` (see `sw.search.hypervolume`); returns it.

        A resumed run re-plays its generations and rewrites the same rows: the reference point
        is the one stored with the run's first generation.
        """
        individuals = self.db.individuals(self.run_id)
        if self.reference is None:
            stored = self.db.hypervolume(self.run_id)
            self.reference = (stored[0].ref_point if stored else
                              reference_point(self.db.run(self.run_id).objective_names, individuals))
        hv = at_generation(individuals, self.generation, self.reference)
        self.db.set_hypervolume(self.run_id, self.generation, hv, self.reference)
        return hv


class RecordingRunner:
    """pymoo elementwise runner: database lookup, then evaluation, then an immediate commit."""

    def __init__(self, backend, recorder: Recorder):
        self.backend, self.recorder = backend, recorder

    def __call__(self, f: Callable, X) -> list[dict]:
        outs: list[dict | None] = [None] * len(X)
        todo = []
        for i, x in enumerate(X):
            hit = self.recorder.lookup(x)
            if hit is None:
                todo.append(i)
            else:
                outs[i] = hit
                self.recorder.reused += 1
        rng_state = np.random.get_state()  # evaluation must never perturb the search's random stream
        try:
            for j, out in self.backend.imap(f, [X[i] for i in todo]):
                i = todo[j]
                self.recorder.record(i, X[i], out)
                self.recorder.evaluated += 1
                outs[i] = out
        finally:
            np.random.set_state(rng_state)
        return outs  # type: ignore[return-value]

    def __getstate__(self):  # the runner itself never travels to workers
        return {}


# -- the algorithm --------------------------------------------------------------------------
def build_algorithm(search_cfg, n_var: int, sampling, repair) -> NSGA2:
    prob_var = search_cfg.mutation_prob if search_cfg.mutation_prob is not None else 1.0 / max(1, n_var)
    return NSGA2(
        pop_size=search_cfg.pop_size,
        n_offsprings=search_cfg.offsprings or search_cfg.pop_size,
        sampling=sampling,
        crossover=SBX(prob=search_cfg.crossover_prob, eta=search_cfg.crossover_eta, vtype=float,
                      repair=RoundingRepair()),
        mutation=PM(prob=1.0, prob_var=prob_var, eta=search_cfg.mutation_eta, vtype=float, repair=RoundingRepair()),
        repair=repair,
        eliminate_duplicates=True,
    )


def run_nsga2(problem, algorithm: NSGA2, recorder: Recorder, generations: int, seed: int, *,
              progress: bool = False) -> Any:
    """Ask/tell loop so each generation's number is known to the recorder; returns pymoo's result."""
    algorithm.setup(problem, termination=("n_gen", generations), seed=seed, verbose=False)
    bar = tqdm(total=generations, desc="generations", disable=not progress, leave=False)
    start = time.perf_counter()
    generation = 0
    while algorithm.has_next():
        recorder.generation = generation
        population = algorithm.ask()
        if population is None or len(population) == 0:  # no new candidate left: the space is exhausted
            break
        algorithm.evaluator.eval(problem, population)
        algorithm.tell(infills=population)
        recorder.end_generation()
        generation += 1
        bar.update(1)
        if progress:
            bar.set_postfix(evaluated=recorder.evaluated, reused=recorder.reused)
    bar.close()
    result = algorithm.result()
    result.exec_time = time.perf_counter() - start
    return result
