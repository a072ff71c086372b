"""Per-layer DRAM accesses, energy and latency of a quantized network on an accelerator.

Layered top to bottom (import-linter contract in pyproject.toml; each imports only what is below):

- `energy.cli` (`python -m energy --help`): the command line;
- `energy.problem`, `energy.costs`: the plugins `sw` finds by entry point (the energy-aware
  search problem; the `dram_energy` cost provider), `energy.fronts`, `energy.bench`,
  `energy.outputs` (the files `python -m energy table` writes);
- `energy.plot`: energy figures of a table;
- `energy.build`: build a workload's table: engine calls in worker processes (`energy.pool`),
  cached in SQLite (`energy.cache`), layers traced from the model (`energy.trace`);
- `energy.table`: the per-layer table over every bit width; `EnergyTable.lookup` is the fast cost
  function of the energy-aware search;
- `energy.dataflow`: what travels between layers; `energy.engines`: cost-model engines (`zigzag`,
  the default, and `timeloop`) that evaluate one layer at given weight / input / output bits;
- `energy.layers`: the geometry of one Conv2d / Linear; `energy.packing`: DRAM words of densely
  packed b-bit values (the hw converter's layout).
"""
