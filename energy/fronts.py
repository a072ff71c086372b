"""Pareto fronts side by side, each point costed both ways: the energy table and the bit weighting.

A front found by the weighted-bits search and one found by the energy-aware search differ when
the accelerator model adds something to bit counts; costing every point of both fronts with both
objectives shows where (`python -m energy fronts WORKLOAD --front bits=results/x/front.csv`).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Mapping

from energy.table import EnergyTable, energy_section, resolve_column
from sw.core.errors import DataError
from sw.model.weighting import WEIGHTINGS, LayerSize
from sw.search.pareto import front_point


def weighted_bits(table: EnergyTable, weighting: str, bits: Mapping[str, tuple[int, int]]) -> float:
    """The search's bit-weighting cost of `bits`, from the table's layer sizes (per inference)."""
    sizes = [LayerSize(name, weights=g.n_weights, inputs=g.n_inputs // g.batch, macs=g.macs // g.batch)
             for name, g in table.layers.items()]
    return float(WEIGHTINGS.get(weighting)(sizes, bits))


def front_costs(workload, table: EnergyTable, fronts: Mapping[str, Path]) -> list[dict]:
    """One row per point of every front: label, point, bits, accuracy columns and both costs."""
    objective = energy_section(workload)["objective"]
    stored, _ = resolve_column(objective)
    energy_name = stored[:-3] + "_uj" if stored.endswith("_pj") else stored
    metric = workload.accuracy.metrics[0]
    rows = []
    for label, path in fronts.items():
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: expected a Pareto front CSV (run `python -m sw explore` first)")
        with path.open() as fh:
            points = len(list(csv.DictReader(fh)))
        for k in range(points):
            bits, row = front_point(path, table.layer_names, point=k)
            rows.append({"front": label, "point": row.get("point", str(k)),
                         "bits": " ".join(f"{w}" if w == i else f"{w}/{i}" for w, i in bits.values()),
                         metric: float(row[metric]), f"heldout_{metric}": float(row.get(f"heldout_{metric}", "nan")),
                         workload.search.weighting: weighted_bits(table, workload.search.weighting, bits),
                         energy_name: table.lookup(bits, energy_name)})
    return rows
