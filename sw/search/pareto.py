"""The Pareto front of a run: non-dominated feasible individuals, written as CSV, JSON and PNG.

Rows carry both the exploration metrics the search selected on and the held-out ones
(`heldout_<metric>`, `heldout_feasible`; see `sw.search.heldout`), and front.json names the `best`
point: the cheapest one that meets the constraint on held-out data. `front_point` reads one point's
bits per layer back from front.csv (the report and `energy` price it).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from sw.core.durable import atomic_write, write_text
from sw.core.errors import DataError
from sw.search.heldout import PHASE as HELDOUT_PHASE
from sw.search.heldout import PREFIX, HeldOut, best_index, meets
from sw.search.results import Individual, Run


def non_dominated_mask(F: np.ndarray) -> np.ndarray:
    """True for rows not dominated by any other row (all objectives minimised).

    Written directly (O(n^2)) so the tests can check pymoo's result against it.
    """
    F = np.asarray(F, dtype=float)
    n = len(F)
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        dominated_by = np.all(F <= F[i], axis=1) & np.any(F < F[i], axis=1)
        if dominated_by.any():
            mask[i] = False
    return mask


def pareto_front(individuals: Sequence[Individual]) -> list[Individual]:
    """Feasible, non-dominated individuals (duplicates in objective space kept once), sorted by cost."""
    feasible = [ind for ind in individuals if ind.feasible]
    if not feasible:
        return []
    F = np.array([ind.objectives for ind in feasible])
    front, seen = [], set()
    for ind, keep in zip(feasible, non_dominated_mask(F)):
        if keep and ind.objectives not in seen:
            seen.add(ind.objectives)
            front.append(ind)
    return sorted(front, key=lambda ind: ind.objectives[1:])


def objective_value(run: Run, name: str, value: float) -> float:
    """Objectives are stored minimised; accuracy objectives are stored negated."""
    return -value if name.startswith("-") else value


def front_rows(run: Run, front: Sequence[Individual], heldout: HeldOut) -> list[dict]:
    """One row per front point: exploration metrics, held-out metrics, objectives, decision variables."""
    rows = []
    for rank, ind in enumerate(front):
        held = heldout.points[tuple(ind.x)]
        row = {"point": rank, "generation": ind.generation, "index": ind.index}
        row.update({m: ind.metrics.get(m) for m in run.metric_names})
        row.update({f"{PREFIX}{m}": held[m] for m in run.metric_names})
        row[f"{PREFIX}feasible"] = meets(held, run)
        row.update({name.lstrip("-"): objective_value(run, name, v) for name, v in zip(run.objective_names, ind.objectives)})
        row.update({name: int(b) for name, b in zip(run.var_names, ind.x)})
        rows.append(row)
    return rows


def merged_baselines(exploration: dict[str, dict[str, float]], heldout: HeldOut) -> dict[str, dict[str, float]]:
    """{name: {metric: exploration value, heldout_<metric>: held-out value}}."""
    return {name: {**metrics, **{f"{PREFIX}{m}": v for m, v in heldout.baselines.get(name, {}).items()}}
            for name, metrics in exploration.items()}


def write_front(run: Run, individuals: Sequence[Individual], out_dir: Path, heldout: HeldOut, *, title: str = "",
                baselines: dict[str, dict[str, float]] | None = None) -> dict[str, Path]:
    """Write front.csv, front.json and front.png; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    front = pareto_front(individuals)
    rows = front_rows(run, front, heldout)
    baselines = merged_baselines(baselines or {}, heldout)
    paths = {"csv": out_dir / "front.csv", "json": out_dir / "front.json", "png": out_dir / "front.png"}
    fields = list(rows[0]) if rows else (["point", "generation", "index"] + run.metric_names
                                         + [f"{PREFIX}{m}" for m in run.metric_names] + [f"{PREFIX}feasible"]
                                         + [n.lstrip("-") for n in run.objective_names] + run.var_names)
    with atomic_write(paths["csv"], newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    write_text(paths["json"], json.dumps({
        "run_id": run.id, "workload": run.workload, "problem": run.problem,
        "objectives": [n.lstrip("-") for n in run.objective_names], "thresholds": run.thresholds,
        "heldout_phase": HELDOUT_PHASE, "best": best_index(rows),
        "baselines": baselines, "evaluated": len(individuals), "front": rows}, indent=1))
    plot_front(run, individuals, front, rows, paths["png"], title=title, baselines=baselines)
    return paths


def plot_front(run: Run, individuals: Sequence[Individual], front: Sequence[Individual], rows: Sequence[dict],
               path: Path, *, title: str = "", baselines: dict[str, dict[str, float]] | None = None) -> None:
    """Every individual, the front on exploration data and on held-out data; points that miss the
    constraint on held-out data are crossed out, the best point is starred."""
    import matplotlib  # lazy: matplotlib (0.4 s) only where a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: matplotlib (0.4 s) only where a figure is drawn

    metric = run.metric_names[0]
    cost_name = run.objective_names[1]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    feas = [i for i in individuals if i.feasible]
    infeas = [i for i in individuals if not i.feasible]
    for group, style in ((infeas, dict(c="#d9a0a0", marker="x", label="infeasible")),
                         (feas, dict(c="#9aa9c4", marker="o", label="feasible", alpha=0.6))):
        if group:
            ax.scatter([i.objectives[1] for i in group], [i.metrics[metric] for i in group], s=14, **style)
    if front:
        cost = [i.objectives[1] for i in front]
        held = [row[f"{PREFIX}{metric}"] for row in rows]
        ax.plot(cost, [i.metrics[metric] for i in front], "-o", c="#1f4e9c", ms=5, label="Pareto front (exploration)")
        ax.plot(cost, held, "--s", c="#2a8a4a", ms=5, mfc="none", label=f"same points, held-out ({HELDOUT_PHASE})")
        missed = [(c, h) for c, h, row in zip(cost, held, rows) if not row[f"{PREFIX}feasible"]]
        if missed:
            ax.scatter(*zip(*missed), s=90, marker="x", c="#d62020", linewidths=2, zorder=5,
                       label="misses the constraint on held-out data")
        best = best_index(rows)
        if best is not None:
            ax.scatter([cost[best]], [held[best]], s=220, marker="*", c="#f0b000", edgecolors="black", zorder=6,
                       label=f"best: point {best}")
    if run.thresholds:
        ax.axhline(run.thresholds[0], ls="--", c="#b03030", lw=1, label=f"minimum {metric}")
    for (name, metrics), style in zip((baselines or {}).items(), (":", "-.", (0, (1, 3)))):
        ax.axhline(metrics[metric], ls=style, c="#555555", lw=1, label=f"{name} baseline")
    ax.set_xlabel(cost_name.replace("_", " "))
    ax.set_ylabel(f"{metric} accuracy")
    ax.set_title(title or f"{run.workload}: {metric} vs {cost_name}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def front_point(front_csv: str | Path, layer_names: Sequence[str], cost_column: str | None = None,
                point: int | None = None) -> tuple[dict[str, tuple[int, int]], dict]:
    """Bits {layer: (weight, input)} and the row of one point of a front CSV (`write_front`):
    row `point`, or the row with the lowest `cost_column` (by default the first `*_uj` column)."""
    front_csv = Path(front_csv)
    if not front_csv.is_file():
        raise DataError(f"{front_csv}: expected a Pareto front CSV (run `make explore` first or pass --front)")
    with front_csv.open() as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise DataError(f"{front_csv}: the Pareto front is empty (no feasible point)")
    if point is not None:
        row = rows[point]
    else:
        costs = [c for c in rows[0] if c == cost_column] or [c for c in rows[0] if c.endswith("_uj")]
        row = min(rows, key=lambda r: float(r[costs[0]])) if costs else rows[0]
    bits = {}
    for name in layer_names:
        if f"{name}.bits" in row:
            b = int(float(row[f"{name}.bits"]))
            bits[name] = (b, b)
        elif f"{name}.weight_bits" in row:
            bits[name] = (int(float(row[f"{name}.weight_bits"])), int(float(row[f"{name}.input_bits"])))
        else:
            raise DataError(f"{front_csv}: no bit-width column for layer {name!r} (is it this workload's front?)")
    return bits, row
