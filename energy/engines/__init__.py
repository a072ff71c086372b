"""Cost-model engines: evaluate one layer at given bit widths on an accelerator.

The contract every engine meets (ZigZag is the reference implementation; Timeloop fills the same):

- constructed by name, `get_engine(name, accelerator, mapping_objective, **mapper_settings)`, and a
  plain picklable object (table builds run engines in worker processes);
- `version()` (engine version + this project's modelling revision), `settings_id()` (the mapper
  settings, `MapperSettings`) and `accelerator_id()` (accelerator + mapping definition, by content):
  together they key the cache, so a changed engine, setting or file never reuses stale numbers;
- `check()`: raise `UserError` (one line) when the engine or the accelerator cannot be used, e.g.
  an accelerator whose outermost memory is not an off-chip DRAM;
- `evaluate(geometry, weight_bits, input_bits, output_bits, residency=Residency())` returns
  `{output bits: Metrics}`. Build each `Metrics` with `summarise(levels, ...)` from one
  `LevelAccess` record per (memory, operand): that is what puts every engine's numbers into the
  same per-level columns (`METRICS`). A layer the mapper cannot map raises `MappingError` (one
  line naming the layer geometry, the bits and the accelerator);
- `dram_costs()`: the DRAM word width and energy per word access, used for the traffic of fused
  pooling / residual adds that the table adds on top of the engine's per-layer numbers;
- `activation_buffer()`: the on-chip memory where an activation tensor can stay between layers
  (`None`: no such memory); engines with `supports_residency = True` evaluate a layer whose input
  and/or output lives there instead of in DRAM (`Residency`).

The shared types (`Engine`, `LevelAccess`, `summarise`, `Residency`, the `METRICS` columns) live in
`energy.engines.base`; this package names the engines (`get_engine`).
"""

from __future__ import annotations

from energy.engines.base import Engine
from energy.engines.timeloop import TimeloopEngine
from energy.engines.zigzag import ZigZagEngine
from sw.core.errors import UserError

ENGINES: dict[str, type[Engine]] = {"zigzag": ZigZagEngine, "timeloop": TimeloopEngine}
ENGINE_NAMES = tuple(ENGINES)


def get_engine(name: str, accelerator: str, mapping_objective: str = "energy", **mapper_settings) -> Engine:
    """The engine called `name` for `accelerator` (a shipped name or a definition file)."""
    if name not in ENGINES:
        raise UserError(f"energy.engine: expected one of {', '.join(ENGINE_NAMES)}, got {name!r}")
    return ENGINES[name](accelerator, mapping_objective, **mapper_settings)
