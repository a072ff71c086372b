"""Weather sweeps: how accuracy falls with bad weather, for every model of a study.

A sweep evaluates the fp32 model, the uniform baseline-bit model (all-8-bit by default) and
every Pareto point of an exploration on the clean data of a phase and under every
condition x severity. A phase's own `corruption` (a study explored under a condition) is
replaced by the swept ones; each image gets the same seed as through `sw.data.datasets`, so the
swept condition equal to the study's own reproduces the exploration's accuracies. Each
(condition, severity) is corrupted once (in parallel processes, cached on disk, overlapping
with the evaluations) and every model is evaluated on the same tensors.

Each model is priced by the workload's bit weighting and, when a `dram_energy` cost provider
(`sw.search.costs`; the `energy` package's) can price the workload, by DRAM energy. Results go to
the study's results database (`sw.robustness.store`): rows already there are reused.
`sw.robustness.plots.write_outputs` writes sweep.csv and the plots.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from sw.core.errors import UserError
from sw.data import corruptions
from sw.data.corrupted_dataset import CorruptedDataset, cache_dir_for
from sw.data.datasets import build_dataset
from sw.evaluation.evaluate import Batches, evaluate
from sw.robustness.result import CLEAN, ENERGY, FP32_BITS, SweepModel, SweepResult
from sw.robustness.store import ensure_tables, finish_sweep, start_sweep, store_metrics, stored_metrics
from sw.search.costs import COSTS, CostFunction

log = logging.getLogger(__name__)

DEFAULT_CONDITIONS = ("fog", "snow", "frost", "brightness", "rain", "sun_flare")

# ---------------------------------------------------------------- models


def energy_function(study) -> tuple[CostFunction | None, str]:
    """(bits -> DRAM energy, its axis label) from the `dram_energy` cost provider, or (None, "")
    when none is installed or it cannot price this workload (`energy`'s: no energy section, or
    no table built yet; it only reads the table's cache, building one is not this command's job)."""
    if ENERGY not in COSTS:
        log.info("no %r cost provider is installed: plotting against weighted bits only", ENERGY)
        return None, ""
    provider = COSTS.get(ENERGY)
    return provider(study), f"{provider.label} ({provider.unit})"


def sweep_models(study, *, pareto: bool = True, run_id: int | None = None,
                 point: str | None = None) -> tuple[list[SweepModel], int | None, str]:
    """fp32, the uniform baseline-bit model and (if `pareto`) the Pareto points of an exploration,
    or only the one `point` ("best" or an index, see `Study.select_point`); plus the exploration
    run and the axis label of their DRAM energy ("" when they have none)."""
    baseline = study.workload.quantization.baseline_bits
    models = [SweepModel("fp32", None, FP32_BITS)]
    configs = [(f"int{baseline}", study.uniform_bits(baseline), None)]
    exploration_run = None
    if point is not None:
        row, bits = study.select_point(point, run_id)
        exploration_run = study.pareto_points(run_id)[0].id
        configs.append((f"P{row['point']}", bits, tuple(study.point_vector(row))))
    elif pareto:
        run, front = study.pareto_points(run_id)
        exploration_run = run.id
        if not front:
            log.warning("exploration run %d has no feasible Pareto point: sweeping the baselines only", run.id)
        configs += [(f"P{i}", study.decode(ind.x), tuple(ind.x)) for i, ind in enumerate(front)]
    energy, label = energy_function(study)
    for name, bits, x in configs:
        models.append(SweepModel(name, bits, study.weighted_bits(bits), energy(bits) if energy else None, x))
    return models, exploration_run, label


# ---------------------------------------------------------------- data


@dataclass
class PhaseData:
    """The data a sweep corrupts: the phase's full dataset without corruption, and the indices
    its spec selects (sample limit). Corrupting the full dataset and then selecting keeps every
    image's seed equal to the one a workload's own `corruption` gives it (`sw.data.datasets`)."""

    full: Dataset
    indices: list[int]
    batch_size: int

    def clean(self) -> Dataset:
        return Subset(self.full, self.indices)

    def corrupted(self, condition: str, severity: int, seed: int, cache_dir: Path | None, pool) -> Dataset:
        dataset = CorruptedDataset(self.full, condition, severity, seed, cache_dir)
        return dataset.materialize(executor=pool, indices=self.indices)


def phase_data(study, phase: str) -> PhaseData:
    """The clean data of a phase (its own `corruption`, if any, is replaced by the swept ones)."""
    spec = study.workload.dataset(phase)
    if spec.name == "imagenet_c":
        raise UserError(f"{study.workload.path}: datasets.{phase}: the weather sweep corrupts clean images itself; "
                        f"an 'imagenet_c' tree is already corrupted (evaluate it with `python -m sw evaluate`)")
    clean_spec = spec.__class__({**spec, "corruption": None})
    full = build_dataset(spec.__class__({**clean_spec, "sample_limit": None}))
    selected = build_dataset(clean_spec)
    indices = list(selected.indices) if isinstance(selected, Subset) else list(range(len(selected)))
    return PhaseData(full, [int(i) for i in indices], spec.batch_size)


def to_batches(dataset: Dataset, batch_size: int, device: torch.device | str = "cpu") -> Batches:
    """A (corrupted) set decoded once onto `device` (the study's), shared by every swept model."""
    return Batches.from_loader(DataLoader(dataset, batch_size=batch_size, shuffle=False), device=device)


# ---------------------------------------------------------------- the sweep


def run_sweep(study, conditions: Sequence[str] = DEFAULT_CONDITIONS, severities: Sequence[int] = (1, 2, 3, 4, 5), *,
              phase: str = "exploration", seed: int = 0, workers: int = 2, pareto: bool = True,
              run_id: int | None = None, point: str | None = None, fresh: bool = False,
              progress: bool = False) -> SweepResult:
    """Evaluate every model of `study` on clean data and under every condition x severity."""
    for condition in conditions:
        corruptions.check_condition(condition)
    for severity in severities:
        corruptions.check_severity(severity)
    if workers < 1:
        raise UserError(f"workers: expected an integer >= 1, got {workers}")
    conditions = list(dict.fromkeys(conditions))
    severities = sorted(set(int(s) for s in severities))
    models, exploration_run, energy_label = sweep_models(study, pareto=pareto, run_id=run_id, point=point)
    metric_names = list(study.workload.accuracy.metrics)
    config_hash = study.config_hash
    result = SweepResult(-1, phase, seed, metric_names, conditions, severities, models,
                         cost_name=study.workload.search.weighting, energy_label=energy_label)

    with study.open_db() as db, contextlib.ExitStack() as stack:
        ensure_tables(db)
        done = {} if fresh else stored_metrics(db, config_hash, phase, seed)
        result.sweep_id = start_sweep(db, study.name, config_hash, exploration_run, phase, seed, conditions,
                                      severities, models)
        bar = tqdm(total=len(result.combos) * len(models), desc="weather sweep", unit="eval", disable=not progress)
        work = []  # (condition, severity, models still to evaluate)
        for condition, severity in result.combos:
            todo = []
            for model in models:
                key = (model.key, condition, severity)
                if key in done:
                    result.metrics[(model.label, condition, severity)] = done[key]
                    result.reused += 1
                    bar.update(1)
                else:
                    todo.append(model)
            if todo:
                work.append((condition, severity, todo))
        if work:
            data = phase_data(study, phase)
            corrupting = any((c, s) != CLEAN for c, s, _ in work)
            pool = stack.enter_context(corruptions.process_pool(workers)) if workers > 1 and corrupting else None
            cache_dir = cache_dir_for(study.workload.results.dir)

            def load(condition: str, severity: int) -> Dataset:
                if (condition, severity) == CLEAN:
                    return data.clean()
                return data.corrupted(condition, severity, seed, cache_dir, pool)

            for (condition, severity, todo), dataset in zip(work, _prefetched(load, work), strict=True):
                batches = to_batches(dataset, data.batch_size, study.device)
                for model in todo:
                    bar.set_postfix_str(f"{condition} {severity} {model.label}", refresh=False)
                    start = time.perf_counter()
                    metrics = evaluate(_module(study, model), batches, metric_names)
                    store_metrics(db, config_hash, phase, seed, model, condition, severity, metrics,
                                  time.perf_counter() - start)
                    result.metrics[(model.label, condition, severity)] = metrics
                    result.evaluated += 1
                    bar.update(1)
        bar.close()
        finish_sweep(db, result.sweep_id)
    return result


def _prefetched(load, work: Sequence[tuple], ahead: int = 2) -> Iterable[Dataset]:
    """Yield `load(condition, severity)` for each work item, computing up to `ahead` items in a
    background thread: corrupting the next datasets (in the process pool) overlaps with
    evaluating the models on the current one."""
    pending: deque = deque()
    items = iter(work)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="corrupt") as thread:
        try:
            while True:
                while len(pending) < ahead and (item := next(items, None)) is not None:
                    pending.append(thread.submit(load, item[0], item[1]))
                if not pending:
                    return
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _module(study, model: SweepModel) -> nn.Module:
    if model.bits is None:
        return study.fp32_model
    if model.x is not None:
        return study.apply(model.x)
    qmodel = study.quantized_model
    qmodel.set_layer_bits(model.bits)
    return qmodel
