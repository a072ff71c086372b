"""Per-layer DRAM accesses, energy and latency of a quantized network on an accelerator.

- `energy.layers`: trace the Conv2d / Linear layer geometry of a model from a real forward pass;
- `energy.engines`: cost-model engines (`zigzag`, the default, and `timeloop`) that evaluate one
  layer at given weight / input / output bit widths;
- `energy.table`: the per-layer table over every bit width of a workload, built in parallel and
  cached in SQLite; `EnergyTable.lookup` is the fast cost function of the energy-aware search;
- `energy.packing`: DRAM words of densely packed b-bit values (the hw converter's layout);
- `energy.plot`: per-layer DRAM energy breakdown of two bit-width configurations.

Command line: `python -m energy --help`.
"""
