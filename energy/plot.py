"""Energy figures of an energy table.

- `plot_vs_bits`: per layer, energy against (uniform) bit width, off-chip (DRAM) vs on-chip
  (global buffers, register files, MACs), with the DRAM energy a linear scaling from the largest
  width would predict: where the two differ, the accelerator model adds something to bit counts.
- `plot_breakdown` / `plot_workload`: per-layer DRAM energy (weights / inputs / outputs) of the
  all-baseline-bit model and a chosen Pareto point (by default the lowest-energy feasible one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
from matplotlib.figure import Figure

from energy.build import build_table
from energy.table import EnergyTable, energy_section, resolve_column
from sw.search.pareto import front_point

PARTS = (("dram_w_energy_uj", "weights"), ("dram_i_energy_uj", "inputs"), ("dram_o_energy_uj", "outputs"))


def plot_vs_bits(table: EnergyTable, path: str | Path, title: str = "") -> Path:
    """One panel per layer: DRAM, on-chip memory and MAC energy (uJ) against uniform bits."""
    rows = table.vs_bits()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = table.layer_names
    cols = min(4, len(names))
    nrows = -(-len(names) // cols)
    fig = Figure(figsize=(3.2 * cols, 2.5 * nrows + 0.6))
    axes = fig.subplots(nrows, cols, squeeze=False)
    for k, name in enumerate(names):
        ax = axes[k // cols][k % cols]
        mine = [r for r in rows if r["layer"] == name]
        bits = [r["bits"] for r in mine]
        for column, label, style in (("dram_energy_pj", "off-chip (DRAM)", "o-"),
                                     ("dram_energy_linear_pj", "DRAM if linear in bits", "k:"),
                                     ("gb_energy_pj", "on-chip buffers", "s-"),
                                     ("rf_energy_pj", "register files", "^-"),
                                     ("mac_energy_pj", "MACs", "x-")):
            ax.plot(bits, [r[column] / 1e6 for r in mine], style, label=label, markersize=3, linewidth=1)
        resident = [r["bits"] for r in mine if r["output_on_chip"]]
        if resident:
            ax.axvspan(min(resident) - 0.5, max(resident) + 0.5, color="#55A868", alpha=0.12,
                       label="output stays on chip")
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xticks(bits)
    for k in range(len(names), nrows * cols):
        axes[k // cols][k % cols].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for row in axes:
        for ax in row:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=6, fontsize=7, frameon=False)
    fig.supxlabel("bits (weights = inputs, every layer)", fontsize=8, y=0.06)
    fig.supylabel("energy per batch [uJ]", fontsize=8)
    fig.suptitle(title or "Energy vs bits per layer", fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=120)
    return path


def plot_breakdown(table: EnergyTable, configs: Mapping[str, Mapping[str, tuple[int, int]]], path: str | Path,
                   title: str = "") -> Path:
    """Stacked bars per layer (W, I, O DRAM energy in uJ), one bar per configuration."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_layers, n_cfg = len(table.layer_names), len(configs)
    width = 0.8 / n_cfg
    x = np.arange(n_layers)
    fig = Figure(figsize=(max(6.0, 0.55 * n_layers * n_cfg + 2) + 2.5, 4.5))
    ax = fig.subplots()
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
    return path


def plot_workload(workload, front_csv: str | None = None, output: str | None = None,
                  workers: int | None = None) -> Path:
    """`plot_breakdown` of the all-baseline-bit model and the lowest-energy point of a front
    (by default the workload's front.csv), into results/<name>/energy_breakdown.png by default."""
    table, _ = build_table(workload, workers=workers)
    base = workload.quantization.baseline_bits
    front_csv = front_csv or workload.results_dir / "front.csv"
    objective = resolve_column(energy_section(workload)["objective"])[0]
    bits, row = front_point(front_csv, table.layer_names, cost_column=objective.replace("_pj", "_uj"))
    label = f"front point {row.get('point', '?')}"
    output = output or workload.results_dir / "energy_breakdown.png"
    return plot_breakdown(table, {f"all {base}-bit": table.uniform(base), label: bits}, output,
                          title=f"{workload.name}: per-layer DRAM energy ({table.spec.accelerator})")
