"""Weather sweeps: how accuracy falls with bad weather, for every model of a study.

A sweep evaluates the fp32 model, the uniform baseline-bit model (all-8-bit by default) and
every Pareto point of an exploration on the clean data of a phase and under every
condition x severity. A phase's own `corruption` (a study explored under a condition) is
replaced by the swept ones; each image gets the same seed as through `sw.data.datasets`, so the
swept condition equal to the study's own reproduces the exploration's accuracies. Each
(condition, severity) is corrupted once (in parallel processes, cached on disk, overlapping
with the evaluations) and every model is evaluated on the same tensors.

Results go to the study's results database, in two tables of their own:
- `weather_results`: one row per (model, condition, severity), keyed by the workload's
  config hash, the phase, the corruption seed and the model's bits; rows already present
  are reused, so a sweep that is killed continues where it stopped and a repeated sweep
  only evaluates what is new;
- `weather_sweeps`: one row per sweep (its conditions, severities and models).

`write_outputs` writes `sweep.csv` and the plots (accuracy vs severity per condition;
accuracy drop vs weighted bits, and vs DRAM energy when the workload has an energy table).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from sw.core.durable import atomic_write
from sw.core.errors import UserError
from sw.data import corruptions
from sw.data.corrupted_dataset import CorruptedDataset, cache_dir_for
from sw.evaluation.evaluate import Batches, evaluate

log = logging.getLogger(__name__)

DEFAULT_CONDITIONS = ("fog", "snow", "frost", "brightness", "rain", "sun_flare")
CLEAN = ("clean", 0)  # the uncorrupted data: condition "clean", severity 0
FP32_BITS = 32.0  # where fp32 sits on a weighted-bits axis

SCHEMA = """
CREATE TABLE IF NOT EXISTS weather_sweeps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workload TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    exploration_run INTEGER,
    phase TEXT NOT NULL,
    seed INTEGER NOT NULL,
    conditions TEXT NOT NULL,
    severities TEXT NOT NULL,
    models TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS weather_results (
    config_hash TEXT NOT NULL,
    phase TEXT NOT NULL,
    seed INTEGER NOT NULL,
    model TEXT NOT NULL,
    condition TEXT NOT NULL,
    severity INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    wall_time REAL NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (config_hash, phase, seed, model, condition, severity)
);
"""


@dataclass
class SweepModel:
    """One model of a sweep: fp32 (`bits` None), a uniform bit configuration, or a Pareto point
    (`x`: its decision vector, applied through the problem plugin)."""

    label: str
    bits: dict[str, tuple[int, int]] | None
    cost: float  # the workload's bit weighting (`search.weighting`) of `bits`
    dram_energy: float | None = None
    x: tuple[int, ...] | None = None

    @property
    def key(self) -> str:
        """Identifies the model in the results table: 'fp32', its per-layer bits as JSON, or, for a
        point whose decision vector carries more than bits (a plugin's own variables, a clipping
        method per layer), the bits and that vector: two points with equal bits stay apart."""
        if self.bits is None:
            return "fp32"
        bits = {name: list(b) for name, b in sorted(self.bits.items())}
        if self.x is None:
            return json.dumps(bits, separators=(",", ":"))
        return json.dumps({"bits": bits, "x": [int(v) for v in self.x]}, separators=(",", ":"))


@dataclass
class SweepResult:
    """Metrics of every model under every (condition, severity), clean included."""

    sweep_id: int
    phase: str
    seed: int
    metric_names: list[str]
    conditions: list[str]
    severities: list[int]
    models: list[SweepModel]
    metrics: dict[tuple[str, str, int], dict[str, float]] = field(default_factory=dict)  # (label, cond, sev)
    evaluated: int = 0
    reused: int = 0
    cost_name: str = "weighted_bits"  # the workload's `search.weighting`: the CSV column and plot axis

    @property
    def metric(self) -> str:
        return self.metric_names[0]

    def accuracy(self, label: str, condition: str, severity: int) -> float:
        return self.metrics[(label, condition, severity)][self.metric]

    def clean(self, label: str) -> float:
        return self.accuracy(label, *CLEAN)

    def drop(self, label: str, condition: str, severity: int) -> float:
        """Accuracy lost to the condition: the model's clean accuracy minus its corrupted one."""
        return self.clean(label) - self.accuracy(label, condition, severity)

    def mean_accuracy(self, label: str, condition: str) -> float:
        return float(np.mean([self.accuracy(label, condition, s) for s in self.severities]))


# ---------------------------------------------------------------- models


def sweep_models(study, *, pareto: bool = True, run_id: int | None = None,
                 point: str | None = None) -> tuple[list[SweepModel], int | None]:
    """fp32, the uniform baseline-bit model and (if `pareto`) the Pareto points of an exploration,
    or only the one `point` ("best" or an index, see `Study.select_point`)."""
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
    energy = energy_function(study)
    for label, bits, x in configs:
        models.append(SweepModel(label, bits, study.weighted_bits(bits), energy(bits) if energy else None, x))
    return models, exploration_run


def energy_function(study):
    """`bits -> DRAM energy (uJ)` when the workload has an energy section and its table was built
    (`python -m energy table`, or an energy-aware exploration), else None.

    Only reads the table's cache: building a table takes minutes and is not this command's job.
    """
    if study.workload.energy is None:
        return None
    try:
        from energy.table import build_table, csv_path
    except ImportError as exc:
        log.info("energy tables are not available (%s): plotting against weighted bits only", exc)
        return None
    if not csv_path(study.workload).is_file():
        log.info("no energy table built for %s yet: plotting against weighted bits only", study.name)
        return None
    table, stats = build_table(study.workload, write_csv=False)
    if stats.misses:
        log.warning("the energy table had %d missing entries; they were computed now", stats.misses)
    return lambda bits: table.lookup(bits, "dram_energy")


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
    from sw.data.datasets import build_dataset

    spec = study.workload.dataset(phase)
    if spec.name == "imagenet_c":
        raise UserError(f"{study.workload.path}: datasets.{phase}: the weather sweep corrupts clean images itself; "
                        f"an 'imagenet_c' tree is already corrupted (evaluate it with `python -m sw evaluate`)")
    clean_spec = spec.__class__({**spec, "corruption": None})
    full = build_dataset(spec.__class__({**clean_spec, "sample_limit": None}))
    selected = build_dataset(clean_spec)
    indices = list(selected.indices) if isinstance(selected, Subset) else list(range(len(selected)))
    return PhaseData(full, [int(i) for i in indices], spec.batch_size)


def to_batches(dataset: Dataset, batch_size: int) -> Batches:
    return Batches.from_loader(DataLoader(dataset, batch_size=batch_size, shuffle=False))


# ---------------------------------------------------------------- database


def ensure_tables(db) -> None:
    """Create the sweep tables in a results database (idempotent)."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)


def stored_metrics(db, config_hash: str, phase: str, seed: int) -> dict[tuple[str, str, int], dict[str, float]]:
    """Every stored row of (config_hash, phase, seed): {(model key, condition, severity): metrics}."""
    rows = db.execute("SELECT model, condition, severity, metrics FROM weather_results"
                      " WHERE config_hash = ? AND phase = ? AND seed = ?", (config_hash, phase, seed))
    return {(model, condition, int(severity)): json.loads(metrics) for model, condition, severity, metrics in rows}


def store_metrics(db, config_hash: str, phase: str, seed: int, model: SweepModel, condition: str, severity: int,
                  metrics: Mapping[str, float], wall_time: float) -> None:
    """One row, committed on its own (the connection is in autocommit mode)."""
    db.execute("INSERT OR REPLACE INTO weather_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
               (config_hash, phase, seed, model.key, condition, severity, json.dumps(dict(metrics)), wall_time,
                time.time()))


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
    models, exploration_run = sweep_models(study, pareto=pareto, run_id=run_id, point=point)
    metric_names = list(study.workload.accuracy.metrics)
    config_hash = study.config_hash
    combos = [CLEAN] + [(c, s) for c in conditions for s in severities]
    result = SweepResult(-1, phase, seed, metric_names, conditions, severities, models,
                         cost_name=study.workload.search.weighting)

    with study.open_db() as db, contextlib.ExitStack() as stack:
        ensure_tables(db)
        done = {} if fresh else stored_metrics(db, config_hash, phase, seed)
        model_json = json.dumps([{"label": m.label, "key": m.key, "cost": m.cost,
                                  "dram_energy": m.dram_energy} for m in models])
        cursor = db.execute(
            "INSERT INTO weather_sweeps (workload, config_hash, exploration_run, phase, seed, conditions, severities,"
            " models, started) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (study.name, config_hash, exploration_run, phase, seed, json.dumps(conditions), json.dumps(severities),
             model_json, time.time()))
        result.sweep_id = int(cursor.lastrowid)

        bar = tqdm(total=len(combos) * len(models), desc="weather sweep", unit="eval", disable=not progress)
        work = []  # (condition, severity, models still to evaluate)
        for condition, severity in combos:
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
                batches = to_batches(dataset, data.batch_size)
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
        db.execute("UPDATE weather_sweeps SET finished = ? WHERE id = ?", (time.time(), result.sweep_id))
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


def _module(study, model: SweepModel):
    if model.bits is None:
        return study.fp32_model
    if model.x is not None:
        return study.apply(model.x)
    qmodel = study.quantized_model
    qmodel.set_layer_bits(model.bits)
    return qmodel


# ---------------------------------------------------------------- outputs


def write_outputs(result: SweepResult, out_dir: Path, *, title: str = "") -> dict[str, Path]:
    """sweep.csv and the plots (titles start with `title`); returns {name: path}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / "sweep.csv", "severity": out_dir / "accuracy_vs_severity.png",
             "bits": out_dir / f"drop_vs_{result.cost_name}.png"}
    write_csv(result, paths["csv"])
    plot_accuracy_vs_severity(result, paths["severity"], title=title)
    plot_drop_vs_cost(result, paths["bits"], "cost", f"{result.cost_name.replace('_', ' ')} (bits)", title=title)
    if all(m.dram_energy is not None for m in result.models if m.bits is not None):
        paths["energy"] = out_dir / "drop_vs_dram_energy.png"
        plot_drop_vs_cost(result, paths["energy"], "dram_energy", "DRAM energy (uJ)", title=title)
    return paths


def write_csv(result: SweepResult, path: Path) -> None:
    fields = ["model", result.cost_name, "dram_energy", "condition", "severity", *result.metric_names,
              f"{result.metric}_drop"]
    with atomic_write(path, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for model in result.models:
            for condition, severity in [CLEAN] + [(c, s) for c in result.conditions for s in result.severities]:
                metrics = result.metrics[(model.label, condition, severity)]
                writer.writerow({"model": model.label, result.cost_name: f"{model.cost:.4f}",
                                 "dram_energy": "" if model.dram_energy is None else f"{model.dram_energy:.6g}",
                                 "condition": condition, "severity": severity,
                                 **{m: f"{metrics[m]:.6f}" for m in result.metric_names},
                                 f"{result.metric}_drop": f"{result.drop(model.label, condition, severity):.6f}"})


def _grid(n: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), dpi=110, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return plt, fig, list(axes.flat[:n])


def _model_colors(result: SweepResult) -> dict[str, Any]:
    """fp32 black, baseline grey, Pareto points coloured by their bit cost."""
    import matplotlib

    colors: dict[str, Any] = {"fp32": "black"}
    points = [m for m in result.models if m.label.startswith("P")]
    bits = [m.cost for m in points]
    norm = matplotlib.colors.Normalize(min(bits, default=0), max(bits, default=1) + 1e-9)
    cmap = matplotlib.colormaps["viridis"]
    for m in result.models:
        if m.label not in colors:
            colors[m.label] = cmap(norm(m.cost)) if m.label.startswith("P") else "#888888"
    return colors


def plot_accuracy_vs_severity(result: SweepResult, path: Path, *, title: str = "") -> None:
    plt, fig, axes = _grid(len(result.conditions))
    colors = _model_colors(result)
    x = [0, *result.severities]
    for ax, condition in zip(axes, result.conditions, strict=True):
        for model in result.models:
            y = [result.clean(model.label)] + [result.accuracy(model.label, condition, s) for s in result.severities]
            style = {"ls": "--", "lw": 1.6} if model.bits is None else ({"lw": 1.6} if not model.label.startswith("P")
                                                                        else {"lw": 1.0, "alpha": 0.85})
            ax.plot(x, y, marker="o", ms=3, color=colors[model.label],
                    label=f"{model.label} ({model.cost:.2f} b)" if model.bits is not None else "fp32", **style)
        ax.set_title(condition)
        ax.set_xticks(x, ["clean", *map(str, result.severities)])
        ax.set_xlabel("severity")
        ax.set_ylabel(f"{result.metric} accuracy")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6, loc="lower left", ncol=2)
    fig.suptitle(f"{title + ': ' if title else ''}{result.metric} accuracy vs severity ({result.phase} data)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_drop_vs_cost(result: SweepResult, path: Path, attribute: str, label: str, *, title: str = "") -> None:
    """Accuracy drop (clean minus corrupted, per model) against a cost, one line per severity;
    fp32 (no cost on this axis) is a dotted line per severity."""
    import matplotlib

    plt, fig, axes = _grid(len(result.conditions))
    cmap = matplotlib.colormaps["plasma"]
    quantized = sorted((m for m in result.models if m.bits is not None), key=lambda m: getattr(m, attribute))
    fp32 = next((m for m in result.models if m.bits is None), None)
    for ax, condition in zip(axes, result.conditions, strict=True):
        for i, severity in enumerate(result.severities):
            color = cmap(0.1 + 0.75 * i / max(1, len(result.severities) - 1))
            ax.plot([getattr(m, attribute) for m in quantized],
                    [result.drop(m.label, condition, severity) for m in quantized],
                    marker="o", ms=3, lw=1, color=color, label=f"severity {severity}")
            if fp32 is not None:
                ax.axhline(result.drop(fp32.label, condition, severity), color=color, ls=":", lw=1)
        ax.set_title(condition)
        ax.set_xlabel(label)
        ax.set_ylabel(f"{result.metric} drop (clean - corrupted)")
        ax.grid(alpha=0.3)
    if fp32 is not None:
        axes[0].plot([], [], color="#555555", ls=":", lw=1, label="fp32 (same colour per severity)")
    axes[0].legend(fontsize=6, loc="best")
    fig.suptitle(f"{title + ': ' if title else ''}{result.metric} drop vs {label} ({result.phase} data)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def summary_lines(result: SweepResult) -> Iterable[str]:
    """A text table: clean accuracy and mean accuracy over severities per condition."""
    width = max(6, *(len(c) for c in result.conditions))
    yield f"{'model':>6} {'bits':>6}  {'clean':>{width}}  " + "  ".join(f"{c:>{width}}" for c in result.conditions)
    for model in result.models:
        yield (f"{model.label:>6} {model.cost:>6.2f}  {result.clean(model.label):>{width}.4f}  "
               + "  ".join(f"{result.mean_accuracy(model.label, c):>{width}.4f}" for c in result.conditions))
