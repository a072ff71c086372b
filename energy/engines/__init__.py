"""Cost-model engines: evaluate one layer at given bit widths on an accelerator.

An engine returns, per layer and per (weight, input, output) bit widths, the metrics named in
`METRICS`: DRAM reads and writes of each operand in bits and in the engine's DRAM words, DRAM
energy per operand and in all, total energy in pJ, and latency in cycles.

Engines are created by name (`get_engine("zigzag", accelerator, mapping_objective)`) and are
plain picklable objects, so table builds can run them in worker processes.
"""

from __future__ import annotations

from typing import Sequence

from energy.layers import LayerGeometry
from sw.errors import UserError

OPERANDS = ("w", "i", "o")
DIRECTIONS = ("read", "write")
ACCESS_COLUMNS = [f"dram_{op}_{d}_{unit}" for unit in ("bits", "words") for op in OPERANDS for d in DIRECTIONS]
METRICS = [*ACCESS_COLUMNS, "dram_word_bits", *(f"dram_{op}_energy_pj" for op in OPERANDS), "dram_energy_pj",
           "energy_total_pj", "mac_energy_pj", "latency_cycles"]

Metrics = dict[str, float]


class Engine:
    """Base class. Subclasses set `name` and implement `version`, `check` and `evaluate`."""

    name = ""

    def __init__(self, accelerator: str, mapping_objective: str = "energy"):
        self.accelerator = accelerator
        self.mapping_objective = mapping_objective

    def version(self) -> str:
        """Engine version plus this project's modelling revision: part of every cache key."""
        raise NotImplementedError

    def accelerator_id(self) -> str:
        """Identity of the accelerator definition for the cache (a name, or a file's content hash)."""
        raise NotImplementedError

    def check(self) -> None:
        """Raise `UserError` (one line) if the engine or the accelerator cannot be used."""
        raise NotImplementedError

    def evaluate(self, geometry: LayerGeometry, weight_bits: int, input_bits: int,
                 output_bits: Sequence[int]) -> dict[int, Metrics]:
        """Metrics of one layer at (weight_bits, input_bits) for each output bit width in `output_bits`."""
        raise NotImplementedError


ENGINE_NAMES = ("zigzag", "timeloop")


def get_engine(name: str, accelerator: str, mapping_objective: str = "energy") -> Engine:
    """The engine called `name` for `accelerator` (a shipped name or a definition file)."""
    if name == "zigzag":
        from energy.engines.zigzag import ZigZagEngine

        return ZigZagEngine(accelerator, mapping_objective)
    if name == "timeloop":
        from energy.engines.timeloop import TimeloopEngine

        return TimeloopEngine(accelerator, mapping_objective)
    raise UserError(f"energy.engine: expected one of {', '.join(ENGINE_NAMES)}, got {name!r}")
