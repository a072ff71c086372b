"""NSGA-II over per-layer bit widths, with every evaluation recorded durably as it happens.
At the end of each generation the run's hypervolume is committed too (`sw.search.hypervolume`).

Evaluation goes through pymoo's elementwise runner interface (`runner(f, X) -> list[dict]`).
`RecordingRunner` wraps a backend (serial, a process pool or a dask.distributed cluster): it
looks each candidate up in the results database first (so `--resume` re-plays a killed run
without re-evaluating), evaluates the rest, and commits each result the moment it arrives.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from tqdm import tqdm

from sw.core.errors import UserError, first_line
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


_UNPICKLED: dict[bytes, Callable] = {}  # in a dask worker process: the evaluation functions it was sent


def _call_pickled(payload: bytes, xs: Sequence) -> list[dict]:
    """`f(x)` for each x, `f` pickled in `payload` and unpickled once per worker process.

    A dask scheduler unpickles the arguments of every task it receives; a pickled problem that
    rebuilds its model when unpickled (`sw.problems.quantization_problem`) would build it in the
    scheduler too (measured: 2.4 s and 600 MB, and the scheduler's machine would need the data).
    As bytes it is only unpickled where it runs, once, not once per task."""
    f = _UNPICKLED.get(payload)
    if f is None:
        if len(_UNPICKLED) >= 4:  # one function per search generation, all alike: keep a few
            _UNPICKLED.clear()
        # trusted: the bytes come from this search's own process through the cluster, which itself
        # unpickles every task (keep dask's ports on a trusted network; README); never from a file
        f = _UNPICKLED[payload] = pickle.loads(payload)
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


# -- dask: a local cluster, or a scheduler and workers started as processes (here or on other machines) --
DASK_QUIET = {"distributed.worker.profile.enabled": False, "distributed.admin.tick.interval": "1s",
              "distributed.worker.memory.monitor-interval": "1s",
              "distributed.admin.system-monitor.interval": "5s"}
_PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds the `sw` package
WORKER_MALLOC = {"MALLOC_ARENA_MAX": 1, "MALLOC_TRIM_THRESHOLD_": KEEP_FREED_BYTES,
                 "MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD_BYTES}


def dask_environment() -> dict[str, str]:
    """Environment variables to start each `dask scheduler` and `dask worker` process of a search with.

    One malloc arena with the allocator's thresholds (`MALLOC_*`, which glibc reads when the
    process starts: see `DaskBackend`), one OpenMP thread, and `DASK_QUIET` as dask's own
    configuration variables. The local cluster (`DaskBackend` without an address) applies the same."""
    env = {name: str(value) for name, value in WORKER_MALLOC.items()}
    env["OMP_NUM_THREADS"] = "1"
    for key, value in DASK_QUIET.items():
        env["DASK_" + key.upper().replace(".", "__").replace("-", "_")] = str(value)
    return env


def worker_settings() -> dict[str, Any]:
    """What this dask worker process runs with, as `describe_workers` reads it (run in each worker)."""
    import dask  # lazy: dask's import (0.2 s) only for the dask runner; a worker has it loaded

    return {"env": {name: os.environ.get(name) for name in WORKER_MALLOC},
            "profile": bool(dask.config.get("distributed.worker.profile.enabled"))}


def describe_workers(workers: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """(refusals, warnings): one line per worker that cannot evaluate for a search, or evaluates slower.

    `workers`: worker address -> its `nthreads` and `worker_settings()`. A worker process holds one
    model and sets a candidate's bits on it, so it must run one task at a time (`--nthreads 1`;
    more workers per machine instead). Without `dask_environment()` it evaluates slower (glibc
    trims its thread's arena, dask profiles it), but correctly."""
    refusals, warnings = [], []
    expected = {name: str(value) for name, value in WORKER_MALLOC.items()}
    for address, info in sorted(workers.items()):
        if info.get("nthreads") != 1:
            refusals.append(f"dask worker {address} runs {info.get('nthreads')} threads: a worker evaluates one "
                            f"candidate at a time; start it with `dask worker SCHEDULER --nthreads 1` (one worker "
                            f"per core)")
        env = info.get("env", {})
        missing = sorted(name for name, value in expected.items() if env.get(name) != value)
        if missing or info.get("profile", False):
            what = ([f"{', '.join(missing)} not as in sw.search.runner.dask_environment()"] if missing else []) + (
                ["dask's profiler on"] if info.get("profile", False) else [])
            warnings.append(f"dask worker {address}: {'; '.join(what)}: it evaluates slower (README, "
                            f"'Spreading a search over machines')")
    return refusals, warnings


class DaskBackend:
    """A dask.distributed cluster: a given scheduler address, or a local cluster of processes.

    A dask worker evaluates in a thread of its own, and glibc gives each thread its own malloc
    arena, which `sw.search.allocator`'s thresholds do not keep from shrinking: measured ~9,000 page
    faults per evaluation of the default study, 87 ms against 67 ms in a process pool. The local
    cluster's worker processes therefore start with one arena and the allocator's thresholds
    (`MALLOC_*` environment, set before they start), without dask's statistical profiler and with
    slower monitoring ticks (`DASK_QUIET`); workers of a scheduler at `address` are expected to be
    started with the same settings (`dask_environment()`), are checked for them when the backend
    connects (a warning line each) and refused when one runs more than one thread; on the first
    call each one evaluates a candidate this process evaluates too, and a worker whose numbers
    differ is warned about (it found other files). Each call sends its candidates as
    `batches_per_worker` tasks per worker in one graph, the evaluation function as bytes that only
    workers unpickle (`_call_pickled`: the problem is its workload path and thresholds, rebuilt
    once per worker process), and yields results as they arrive.
    """

    batches_per_worker = 4  # tasks per worker and call: fewer cost less (~3 ms CPU each), more balance workers
    connect_timeout_s = 30.0  # for the scheduler to answer and for a first worker to join it

    def __init__(self, workers: int, address: str | None = None):
        import dask  # lazy: dask's import (0.2 s) only for the dask runner
        from dask.distributed import Client, LocalCluster  # lazy: as above

        self.cluster = None
        self.warnings: list[str] = []
        self.compared = bool(not address)  # a local cluster's workers read this machine's files
        if not address:
            environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **WORKER_MALLOC}
            with dask.config.set({"distributed.nanny.pre-spawn-environ": environ, **DASK_QUIET}):
                self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                            dashboard_address=None, config=DASK_QUIET)
            self.client = Client(self.cluster)
            return
        try:
            self.client = Client(address, timeout=self.connect_timeout_s)
        except (OSError, TimeoutError) as exc:
            raise UserError(f"search.runner.address: no dask scheduler answered at {address} within "
                            f"{self.connect_timeout_s:.0f} s ({first_line(exc)})") from exc
        try:
            self._check_workers(address)
        except BaseException:
            self.client.close()
            raise

    def _check_workers(self, address: str) -> None:
        try:
            self.client.wait_for_workers(1, timeout=self.connect_timeout_s)
        except TimeoutError as exc:
            raise UserError(f"search.runner.address: no dask worker joined the scheduler at {address} within "
                            f"{self.connect_timeout_s:.0f} s (start one with `dask worker {address} "
                            f"--nthreads 1`)") from exc
        settings = self.client.run(worker_settings)
        threads = self.client.nthreads()
        refusals, self.warnings = describe_workers(
            {worker: {"nthreads": threads.get(worker), **info} for worker, info in settings.items()})
        if refusals:
            more = f" (and {len(refusals) - 1} more)" if len(refusals) > 1 else ""
            raise UserError(refusals[0] + more)
        for line in self.warnings:
            print(f"warning: {line}", file=sys.stderr)
        self.client.run(keep_freed_memory)  # the main arena's thresholds, where the environment did not set them

    def imap(self, f: Callable, X: Sequence) -> Iterator[tuple[int, dict]]:
        import cloudpickle  # lazy: dask's own pickler, loaded with it
        from dask.distributed import as_completed as dask_completed  # lazy: as above

        if not len(X):
            return
        workers = max(1, len(self.client.nthreads()))
        batches = split_batches(len(X), self.batches_per_worker * workers)
        payload = cloudpickle.dumps(f)  # bytes: see _call_pickled
        if not self.compared:
            self.compared = True
            self._compare_numbers(f, payload, X[0])
        # one graph for all (one message to the scheduler), results fetched by the client's event loop
        # as they come (no round trip per result from this thread): ~3 ms of CPU per task, all processes
        futures = self.client.map(_call_pickled, [payload] * len(batches), [[X[i] for i in b] for b in batches],
                                  pure=False)
        index = {future.key: batch for future, batch in zip(futures, batches)}
        # this client's event loop: as_completed would take the newest client's (another cluster's)
        for future, results in dask_completed(futures, loop=self.client.loop, with_results=True):
            if isinstance(results, BaseException):  # the task's error, raised here as the serial runner would
                raise results
            yield from zip(index[future.key], results)

    def _compare_numbers(self, f: Callable, payload: bytes, x) -> None:
        """Evaluate `x` on every worker and here; a warning line per worker whose objectives or
        constraints differ. A worker on another machine rebuilds the model from its own copy of the
        workload, data and results folder (checkpoint, calibration); where one is missing or
        different it would evaluate another model, silently (an fp32 model trained there on one
        thread ends at other weights)."""
        workers = sorted(self.client.nthreads())
        futures = [self.client.submit(_call_pickled, payload, [x], workers=[w], allow_other_workers=False,
                                      pure=False) for w in workers]
        local = f(x)
        for worker, [out] in zip(workers, self.client.gather(futures)):
            differ = [k for k in ("F", "G") if k in local and not np.array_equal(np.asarray(out.get(k)),
                                                                                  np.asarray(local[k]))]
            if differ:
                line = (f"dask worker {worker} computed other {'/'.join(differ)} than this process for the same "
                        f"candidate ({np.asarray(out.get(differ[0])).tolist()} vs "
                        f"{np.asarray(local[differ[0]]).tolist()}): it does not evaluate the same model; give every "
                        f"machine the same workload, data and results folder")
                self.warnings.append(line)
                print(f"warning: {line}", file=sys.stderr)

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


class DaskProcesses:
    """A dask scheduler and `workers` one-thread workers started on this machine as separate
    processes (`python -m dask scheduler` / `python -m dask worker ADDRESS --nthreads 1`, with
    `dask_environment()`, in this working directory and importing this process's `sw`), as they
    would be started on several machines; `address` is the scheduler's. For tests and benchmarks
    of that path. Every wait is bounded; `close()` (or leaving the `with` block) ends the processes
    it started, each in its own process group (a worker's nanny and the worker process it spawns),
    and the scheduler ends itself after `idle_timeout_s` without work should this process die
    without closing it.
    """

    def __init__(self, workers: int, *, timeout_s: float = 60.0, idle_timeout_s: float = 600.0):
        import dask.distributed  # lazy: as DaskBackend

        self.folder = Path(tempfile.mkdtemp(prefix="mpq-dask-"))
        self.processes: list[subprocess.Popen] = []
        self.timeout_s = timeout_s
        # the code this process runs (an installed or an editable checkout alike), and its working
        # directory, against which a workload's relative paths resolve
        path = os.pathsep.join(p for p in (str(_PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        self.env = {**os.environ, **dask_environment(), "PYTHONPATH": path}
        try:
            scheduler_file = self.folder / "scheduler.json"
            self._start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                      "--scheduler-file", str(scheduler_file), "--idle-timeout", f"{idle_timeout_s}s"])
            self.address = self._wait_for_address(scheduler_file)
            for i in range(workers):
                self._start(f"worker-{i}", ["worker", self.address, "--nthreads", "1", "--no-dashboard", "--host",
                                            "127.0.0.1", "--name", f"worker-{i}", "--death-timeout", "60"])
            with dask.distributed.Client(self.address, timeout=timeout_s) as client:
                try:
                    client.wait_for_workers(workers, timeout=timeout_s)
                except TimeoutError as exc:
                    logs = "\n".join(f"{name}: {self.log(name)}" for name in (f"worker-{i}" for i in range(workers)))
                    raise RuntimeError(f"{workers} dask workers did not join within {timeout_s:.0f} s:\n"
                                       f"{logs}") from exc
        except BaseException:
            self.close()
            raise

    def _start(self, name: str, args: list[str]) -> None:
        with open(self.folder / f"{name}.log", "wb") as log:
            self.processes.append(subprocess.Popen([sys.executable, "-m", "dask", *args], stdin=subprocess.DEVNULL,
                                                   stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                                   start_new_session=True))

    def _wait_for_address(self, scheduler_file: Path) -> str:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.processes[0].poll() is not None:
                break
            try:
                return json.loads(scheduler_file.read_text())["address"]
            except (OSError, ValueError, KeyError):
                time.sleep(0.05)
        raise RuntimeError(f"dask scheduler did not start within {self.timeout_s:.0f} s: {self.log('scheduler')}")

    def log(self, name: str) -> str:
        """The last lines a process (`scheduler`, `worker-0`, ...) wrote."""
        try:
            return "\n".join((self.folder / f"{name}.log").read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""

    def alive(self) -> list[int]:
        """Process groups of this cluster in which a process still runs (none after `close()`)."""
        alive = []
        for process in self.processes:
            try:
                os.killpg(process.pid, 0)
                alive.append(process.pid)
            except ProcessLookupError:
                pass
            except PermissionError:  # a group id another user's process took over: not ours
                pass
        return alive

    def close(self) -> None:
        """End every process started here: SIGTERM to each process group, SIGKILL where one is left
        after a few seconds; then remove the logs."""
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            for pid in self.alive():
                try:
                    os.killpg(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace
            for process in self.processes:  # reap our children, then wait for their own children
                try:
                    process.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not self.alive():
                break
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "DaskProcesses":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def split_batches(n: int, batches: int) -> list[range]:
    """`range(n)` in `min(n, batches)` consecutive batches whose sizes differ by at most one."""
    count = max(1, min(n, batches))
    edges = [n * i // count for i in range(count + 1)]
    return [range(a, b) for a, b in zip(edges, edges[1:]) if b > a]


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
