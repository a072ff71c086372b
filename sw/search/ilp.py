"""Bit allocation as an integer linear program: the least summed sensitivity under a cost budget.

One binary variable per (layer, bit width), exactly one chosen per layer; minimise the summed
sensitivity (a proxy or the measured drop, `sw.search.sensitivity`) subject to the summed cost
<= budget. Costs must be additive over layers (weighted bits, BOPs, DRAM energy per layer are);
the caller gives each layer's cost at each bit width relative to any common reference. Solved
exactly by scipy's `milp` (HiGHS branch and bound).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp


def allocate(sensitivity: Mapping[str, Mapping[int, float]], cost: Mapping[str, Mapping[int, float]],
             budget: float) -> dict[str, int] | None:
    """The bit width of each layer minimising summed sensitivity with summed cost <= `budget`;
    None when no choice meets the budget."""
    choices = [(layer, bits) for layer in sensitivity for bits in sorted(sensitivity[layer])]
    layers = list(sensitivity)
    n = len(choices)
    objective = np.array([sensitivity[l][b] for l, b in choices], dtype=float)
    scale = float(np.max(np.abs(objective))) if n else 0.0
    if scale > 0:  # to order 1: proxies of 1e-8 sit below HiGHS' absolute gap (1e-6), the optimum does not move
        objective = objective / scale
    one_per_layer = np.zeros((len(layers), n))
    for j, (layer, _) in enumerate(choices):
        one_per_layer[layers.index(layer), j] = 1.0
    costs = np.array([[cost[l][b] for l, b in choices]], dtype=float)
    result = milp(objective, integrality=np.ones(n), bounds=Bounds(0, 1),
                  constraints=[LinearConstraint(one_per_layer, 1, 1), LinearConstraint(costs, -np.inf, budget)],
                  options={"mip_rel_gap": 0.0})  # exact, not within HiGHS' default 1e-4
    if result.status != 0 or result.x is None:
        return None
    return {layer: bits for (layer, bits), x in zip(choices, result.x) if x > 0.5}
