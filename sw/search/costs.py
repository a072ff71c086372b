"""Cost providers: costs of a bit configuration that a package above `sw` knows how to price.

`sw` reports some costs it cannot compute itself, e.g. the DRAM energy of a configuration on an
accelerator (the `energy` package's table). A package registers a `CostProvider` in `COSTS`
as a package entry point in the group `mpq_codesign.costs` (this project's pyproject.toml
registers `dram_energy` from `energy.costs`), so `sw` finds it by name and never imports it.

The protocol: `provider(study)` returns the cost function `bits -> float` of the study's
workload ({layer: (weight bits, input bits)} -> cost in `provider.unit`), or None when it
cannot price this workload (e.g. no `energy` section, or its table has not been built).
`provider.name` is the cost's column name in result files, `provider.label` its axis label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from sw.core.registry import Registry

Bits = Mapping[str, tuple[int, int]]
CostFunction = Callable[[Bits], float]


@dataclass(frozen=True)
class CostProvider:
    """A named cost: `function(study)` gives the study's cost function, or None when it has none."""

    name: str   # column name, e.g. "dram_energy"
    label: str  # axis label without the unit, e.g. "DRAM energy"
    unit: str   # e.g. "uJ"
    function: Callable[[Any], CostFunction | None]

    def __call__(self, study: Any) -> CostFunction | None:
        return self.function(study)


COSTS: Registry[CostProvider] = Registry("cost", entry_point_group="mpq_codesign.costs")
