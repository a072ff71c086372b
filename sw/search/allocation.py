"""ILP allocations as search points: a budget sweep over the sensitivity table, stored and
evaluated exactly like a search's individuals, and the seeds of an ILP-initialised search.

- `layer_costs`: each layer's cost at each bit width, relative to the all-baseline-bits model
  (the workload's `search.weighting` is additive over layers);
- `sweep`: the distinct ILP allocations (`sw.search.ilp.allocate`) over evenly spaced budgets from
  the all-lowest-bits cost to the all-highest-bits cost: a predicted front in well under a second;
- `record_allocations`: an ILP run in the results database (table `runs`, method `ilp:<sensitivity>`),
  each allocation an individual of generation 0 evaluated on the exploration data through the
  problem plugin (objectives, constraints, metrics as a search point), with its hypervolume row;
  the held-out metrics go to the `heldout` table (`sw.search.heldout.reevaluate`), so `--point
  ilp:N|ilp:best` addresses the sweep's Pareto front as `--point N|best` the search's;
- `seed_vectors`: the first population of `search.init: ilp` beyond the uniform bit widths: the
  sweep's allocations (evenly spread along it when there are more than places) and, when there
  are fewer, their neighbours (one layer one bit up or down).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from sw.core.errors import DataError, UserError
from sw.search.ilp import allocate
from sw.search.results import ILP, ResultsDB, Run
from sw.search.runner import Recorder, RecordingRunner, SerialBackend
from sw.search.sensitivity_store import measure, sensitivity_table, stored_rows

SWEEP_STEPS = 61  # budgets of a sweep: every 0.1 weighted bits between 2 and 8 bits


def layer_costs(study, layers: Sequence[str], bits: Sequence[int]) -> tuple[dict[str, dict[int, float]], float]:
    """({layer: {bits: cost change against the all-baseline-bits model}}, that model's cost)."""
    base = study.uniform_bits(study.workload.quantization.baseline_bits)
    reference = study.weighted_bits(base)
    return {layer: {b: study.weighted_bits({**base, layer: (b, b)}) - reference for b in bits}
            for layer in layers}, reference


def sweep(sensitivity: Mapping[str, Mapping[int, float]], cost: Mapping[str, Mapping[int, float]], reference: float,
          steps: int = SWEEP_STEPS) -> list[tuple[float, dict[str, int]]]:
    """(budget, allocation) of every distinct ILP allocation over `steps` budgets, cheapest first."""
    low = reference + sum(min(c.values()) for c in cost.values())
    high = reference + sum(max(c.values()) for c in cost.values())
    found: list[tuple[float, dict[str, int]]] = []
    for budget in np.linspace(low, high, max(2, steps)).round(9):
        choice = allocate(sensitivity, cost, float(budget) - reference + 1e-9)
        if choice is not None and all(choice != seen for _, seen in found):
            found.append((float(budget), choice))
    return found


def vector_of(study, layer_bits: Mapping[str, int]) -> list[int]:
    """The decision vector of tied bits per layer, for the default vector (`sw.search.vector`)."""
    w = study.workload
    methods = w.calibration.search_methods or []
    clipping = methods.index(w.calibration.method) if w.calibration.method in methods else 0
    x = []
    for name in study.variable_names:
        layer, _, part = name.rpartition(".")
        if part in ("bits", "weight_bits", "input_bits") and layer in layer_bits:
            x.append(int(layer_bits[layer]))
        elif part == "clipping" and layer in layer_bits:
            x.append(clipping)
        else:
            raise UserError(f"{w.path}: an ILP allocation needs the default decision vector (bits per layer); "
                            f"problem {w.problem} has variable {name!r}")
    return x


def ilp_table(study, db: ResultsDB, key: str, *, log: Callable[[str], None] = print) -> dict[str, dict[int, float]]:
    """The sensitivity table for the ILP: stored, or measured now (resumably) when missing."""
    rows = stored_rows(study, db)
    if not rows:
        log(f"no complete sensitivity table for {study.name} in {study.db_path}: measuring it "
            f"(`python -m sw sensitivity` does the same)")
        rows, _ = measure(study, db, log=log)
    return sensitivity_table(rows, key)


def neighbours(allocation: Mapping[str, int], bits: range) -> list[dict[str, int]]:
    """Every allocation one layer one bit away (within `bits`)."""
    return [{**allocation, layer: allocation[layer] + step} for layer in allocation for step in (-1, 1)
            if allocation[layer] + step in bits]


def seed_vectors(study, db: ResultsDB, count: int, key: str, *, allowed_drop: float | None = None,
                 log: Callable[[str], None] = print) -> list[list[int]]:
    """Up to `count` decision vectors from the ILP sweep and its neighbours, none of them uniform.

    With `allowed_drop` (the first metric's reference accuracy minus its threshold), the places go
    to the predicted constraint boundary: half to consecutive sweep allocations from the cheapest
    one whose summed measured top1 drop (`sensitivity_store`, calibration data) is within it (the
    sum of single-layer drops underestimates the joint drop, so the true boundary lies at or above
    it), the rest to their neighbours one bit up (each one's cheapest first, in turn). Without it,
    to sweep allocations evenly along the whole sweep, then to their neighbours."""
    w = study.workload
    rows = stored_rows(study, db) or measure(study, db, log=log)[0]
    table, drop = sensitivity_table(rows, key), sensitivity_table(rows, "top1_drop")
    bits = range(w.search.bits.lower, w.search.bits.upper + 1)
    cost, reference = layer_costs(study, list(table), list(bits))
    allocations = [a for _, a in sweep(table, cost, reference) if len(set(a.values())) > 1]
    chosen: list[dict[str, int]] = []

    def add(candidates: Sequence[Mapping[str, int]], limit: int) -> None:
        for a in candidates:
            if len(chosen) >= limit:
                return
            if dict(a) not in chosen and len(set(a.values())) > 1:
                chosen.append(dict(a))

    def spread(candidates: Sequence[dict[str, int]], n: int) -> list[dict[str, int]]:
        """`n` of them evenly (both ends kept), or all."""
        if len(candidates) <= n:
            return list(candidates)
        return [candidates[i] for i in np.linspace(0, len(candidates) - 1, n).round().astype(int)] if n > 0 else []

    def spent(a: Mapping[str, int]) -> float:
        return sum(cost[layer][b] for layer, b in a.items())

    feasible = [i for i, a in enumerate(allocations)
                if allowed_drop is not None and sum(drop[layer][b] for layer, b in a.items()) <= allowed_drop]
    if feasible:  # summed single-layer drops underestimate a joint drop: the boundary is at or above the edge
        edge = feasible[0]
        band = allocations[edge: edge + (count + 1) // 2]
        add(band, count)
        ups = [sorted((n for n in neighbours(a, bits) if spent(n) > spent(a)), key=spent) for a in band]
        add([up[r] for r in range(max(map(len, ups), default=0)) for up in ups if r < len(up)], count)
        add(spread(allocations[edge + len(band):], count - len(chosen)), count)
        how = f"from the predicted boundary {' '.join(map(str, allocations[edge].values()))} up (summed top1 drop " \
              f"<= {allowed_drop:.4f})"
    else:
        add(spread(allocations, count), count)
        add([n for a in list(chosen) for n in neighbours(a, bits)], count)
        how = "evenly along the sweep"
    log(f"search.init: ilp: {len(chosen)} allocations from the ILP sweep over {key} and their neighbours "
        f"in the first population, {how}")
    return [vector_of(study, a) for a in chosen[:count]]


def record_allocations(study, db: ResultsDB, problem, thresholds: Sequence[float], key: str,
                       allocations: Sequence[tuple[float, dict[str, int]]], config: dict[str, Any]) -> Run:
    """A finished ILP run whose individuals are `allocations` (budget, bits per layer), evaluated on
    the exploration data through `problem` (the plugin's pymoo problem), in budget order."""
    w = study.workload
    if problem.var_names != study.variable_names:
        raise DataError(f"{w.path}: the problem's variables differ from the study's")
    run_id = db.start_run(w.name, w.problem, study.config_hash, {**w.config.to_dict(), "ilp": config},
                          problem.var_names, list(w.accuracy.metrics), problem.objective_names, list(thresholds),
                          method=ILP + key)
    recorder = Recorder(db, run_id, list(w.accuracy.metrics))
    runner = RecordingRunner(SerialBackend(), recorder)
    runner(problem.evaluate_one, [vector_of(study, a) for _, a in allocations])
    if allocations:
        recorder.end_generation()
    db.finish_run(run_id)
    return db.run(run_id)
