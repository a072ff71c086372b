"""Hypervolume of a search, generation by generation: how much of the objective space the
feasible individuals found so far dominate.

The search minimises every objective (accuracies are stored negated). The hypervolume of
generation g is the volume dominated by the feasible individuals evaluated in generations
0..g (the archive the Pareto front is taken from, so it never decreases), bounded by a
reference point fixed once per run:

- an accuracy objective (stored as `-metric`): 0, i.e. accuracy 0;
- any other objective (a cost): the largest value among generation 0's individuals plus 10 %
  (generation 0 holds every uniform bit width, so this is the all-highest-bits cost plus a
  margin, and the most expensive configurations still add volume).

The value is pymoo's `HV` indicator (exact in two dimensions); `sw.search.runner` writes one row per
generation to the results database (table `hypervolume`), the report plots it and a golden
test keeps the default search from getting worse.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from pymoo.indicators.hv import HV

from sw.search.results import Individual

MARGIN = 0.1  # reference point = worst generation-0 cost + 10 %


def reference_point(objective_names: Sequence[str], individuals: Sequence[Individual]) -> list[float]:
    """The run's reference point from its generation-0 individuals (see the module docstring)."""
    first = [ind.objectives for ind in individuals if ind.generation == 0] or [ind.objectives for ind in individuals]
    if not first:
        raise ValueError("a reference point needs at least one evaluated individual")
    worst = np.max(np.array(first, dtype=float), axis=0)
    ref = []
    for name, value in zip(objective_names, worst):
        if name.startswith("-"):
            ref.append(0.0)
        else:
            ref.append(float(value + MARGIN * abs(value)) if value != 0 else MARGIN)
    return ref


def hypervolume(F: np.ndarray, ref: Sequence[float]) -> float:
    """Volume dominated by the rows of F (minimised) and bounded by `ref`; 0 for no row better than ref."""
    F = np.asarray(F, dtype=float).reshape(-1, len(ref))
    inside = F[np.all(F < np.asarray(ref), axis=1)]
    if len(inside) == 0:
        return 0.0
    return float(HV(ref_point=np.asarray(ref, dtype=float))(inside))


def at_generation(individuals: Sequence[Individual], generation: int, ref: Sequence[float]) -> float:
    """Hypervolume of the feasible individuals of generations 0..`generation`."""
    F = [ind.objectives for ind in individuals if ind.feasible and ind.generation <= generation]
    return hypervolume(np.array(F, dtype=float), ref) if F else 0.0


def per_generation(objective_names: Sequence[str], individuals: Sequence[Individual]
                   ) -> list[tuple[int, float, list[float]]]:
    """(generation, hypervolume, reference point) for every generation of a run's individuals.

    Used for runs recorded before the `hypervolume` table existed; new runs store the same
    numbers as they go.
    """
    if not individuals:
        return []
    ref = reference_point(objective_names, individuals)
    generations = sorted({ind.generation for ind in individuals})
    return [(g, at_generation(individuals, g, ref), ref) for g in generations]
