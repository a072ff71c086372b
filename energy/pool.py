"""Engine calls, in worker processes: one mapping search per task, results as they finish.

Workers are spawned (never forked from a process that holds torch threads) and import this
module to run a task: it imports only the engines and the layer geometry, never torch, so a
worker starts in well under a second. `run_tasks` feeds a table build (`energy.build`);
`time_both_pipelines` feeds the benchmark's side-by-side comparison (`energy.bench`).
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Iterator

from tqdm import tqdm

from energy.engines.base import PLAIN, MappingError
from sw.core.errors import UserError


def worker_init(verbose: bool = False) -> None:
    """Logging of a worker process: warnings, and ZigZag's own log only when `verbose`."""
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("zigzag").setLevel(logging.INFO if verbose else logging.ERROR)


def evaluate_task(task: tuple) -> tuple:
    """(key, wb, ib, obs, residency, results or None, error message or None, seconds) of
    task (engine, geometry, wb, ib, output widths, residency)."""
    engine, geometry, wb, ib, obs, residency = task
    start = time.perf_counter()
    try:  # engines without residency support take no residency argument
        results = (engine.evaluate(geometry, wb, ib, obs) if residency == PLAIN
                   else engine.evaluate(geometry, wb, ib, obs, residency))
        error = None
    except MappingError as exc:
        results, error = None, str(exc)
    return geometry.key() + residency.suffix, wb, ib, obs, residency, results, error, time.perf_counter() - start


def run_tasks(tasks: list, workers: int, progress: bool, verbose: bool) -> Iterator[tuple]:
    """`evaluate_task` of every task (without its seconds), in this process when one worker or task
    suffices, else in `workers` spawned processes, in the order they finish."""
    bar = tqdm(total=len(tasks), desc="energy", unit="search", disable=not progress or not tasks, leave=False)
    try:
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                *result, _ = evaluate_task(task)
                bar.update()
                yield tuple(result)
            return
        # spawn: never fork a process that holds torch threads; an executor (unlike Pool) fails
        # instead of hanging when a worker dies.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=ctx, initializer=worker_init,
                                 initargs=(verbose,)) as pool:
            futures = [pool.submit(evaluate_task, task) for task in tasks]
            try:
                for future in as_completed(futures):
                    *result, _ = future.result()
                    bar.update()
                    yield tuple(result)
            except BrokenProcessPool:
                raise UserError("energy: a worker process died (out of memory?); the entries computed so far "
                                "are cached: run again, perhaps with fewer workers") from None
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    finally:
        bar.close()


def quiet_zigzag() -> None:
    """Worker initializer of the benchmark: ZigZag's log off, nothing else configured."""
    logging.getLogger("zigzag").setLevel(logging.ERROR)


def time_both_pipelines(task: tuple) -> tuple[float, float, bool]:
    """(stock seconds, fast seconds, identical) of one ZigZag search (engine, geometry, wb, ib, ob)."""
    engine, geometry, wb, ib, ob = task
    start = time.perf_counter()
    stock = engine.search(geometry, wb, ib, ob, stock=True)
    middle = time.perf_counter()
    fast = engine.search(geometry, wb, ib, ob)
    end = time.perf_counter()
    same = (engine.metrics(stock) == engine.metrics(fast)
            and stock.temporal_mapping.mapping_dic_origin == fast.temporal_mapping.mapping_dic_origin
            and stock.spatial_mapping.mapping_dict_origin == fast.spatial_mapping.mapping_dict_origin)
    return middle - start, end - middle, same
