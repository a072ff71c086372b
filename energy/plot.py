"""Per-layer DRAM energy breakdown (weights / inputs / outputs) of two bit-width configurations.

`plot_workload` compares the all-baseline-bit model with a chosen point of the workload's Pareto
front (by default its lowest-energy feasible point) and saves a PNG.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Mapping

import numpy as np

from energy.table import EnergyTable
from sw.errors import DataError

PARTS = (("dram_w_energy_uj", "weights"), ("dram_i_energy_uj", "inputs"), ("dram_o_energy_uj", "outputs"))


def plot_breakdown(table: EnergyTable, configs: Mapping[str, Mapping[str, tuple[int, int]]], path: str | Path,
                   title: str = "") -> Path:
    """Stacked bars per layer (W, I, O DRAM energy in uJ), one bar per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_layers, n_cfg = len(table.layer_names), len(configs)
    width = 0.8 / n_cfg
    x = np.arange(n_layers)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * n_layers * n_cfg + 2) + 2.5, 4.5))
    colors = ("#4C72B0", "#DD8452", "#55A868")
    hatches = ("", "//", "..", "xx")
    for k, (label, bits) in enumerate(configs.items()):
        bottom = np.zeros(n_layers)
        total = table.lookup(bits, "dram_energy_uj")
        for (column, part), color in zip(PARTS, colors):
            values = table.per_layer(bits, column)
            ax.bar(x + (k - (n_cfg - 1) / 2) * width, values, width, bottom=bottom, color=color,
                   hatch=hatches[k % len(hatches)], edgecolor="black", linewidth=0.4,
                   label=f"{part}, {label}")
            bottom += values
        ax.plot([], [], " ", label=f"{label}: {total:.3f} uJ")
    ax.set_xticks(x, table.layer_names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("DRAM energy [uJ]")
    ax.set_title(title or "Per-layer DRAM energy")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def front_point(front_csv: str | Path, layer_names: list[str], cost_column: str | None = None,
                point: int | None = None) -> tuple[dict[str, tuple[int, int]], dict]:
    """Bits {layer: (weight, input)} of one front point: `point`, or the lowest-cost row."""
    front_csv = Path(front_csv)
    if not front_csv.is_file():
        raise DataError(f"{front_csv}: expected a Pareto front CSV (run `make explore` first or pass --front)")
    rows = list(csv.DictReader(front_csv.open()))
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


def plot_workload(workload, front_csv: str | None = None, output: str | None = None,
                  workers: int | None = None) -> Path:
    from energy.table import build_table, energy_section, resolve_column

    table, _ = build_table(workload, workers=workers, write_csv=False)
    base = workload.quantization.baseline_bits
    front_csv = front_csv or workload.results_dir / "front.csv"
    objective = resolve_column(energy_section(workload)["objective"])[0]
    bits, row = front_point(front_csv, table.layer_names, cost_column=objective.replace("_pj", "_uj"))
    label = f"front point {row.get('point', '?')}"
    output = output or workload.results_dir / "energy_breakdown.png"
    return plot_breakdown(table, {f"all {base}-bit": table.uniform(base), label: bits}, output,
                          title=f"{workload.name}: per-layer DRAM energy ({table.spec.accelerator})")
