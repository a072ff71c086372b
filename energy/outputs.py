"""The files `python -m energy table` writes next to the cache, in results/<name>/:

energy_table.csv (per layer and bits, every column), energy_levels.csv (per memory),
energy_vs_bits.csv and energy_vs_bits.png (every layer at every uniform bit width).
"""

from __future__ import annotations

from pathlib import Path

from energy.plot import plot_vs_bits
from energy.table import EnergyTable, csv_path


def results_files(workload) -> dict[str, Path]:
    """{"table" | "levels" | "vs_bits" | "plot": path} of a workload's table files."""
    folder = Path(workload.results.dir) / workload.name
    return {"table": csv_path(workload), "levels": folder / "energy_levels.csv",
            "vs_bits": folder / "energy_vs_bits.csv", "plot": folder / "energy_vs_bits.png"}


def write_outputs(workload, table: EnergyTable) -> list[Path]:
    """Write the table's CSV files and its energy-vs-bits plot; returns their paths."""
    files = results_files(workload)
    return [table.write_csv(files["table"]), table.write_levels_csv(files["levels"]),
            table.write_vs_bits_csv(files["vs_bits"]),
            plot_vs_bits(table, files["plot"], title=f"{workload.name} on {table.spec.accelerator}")]
