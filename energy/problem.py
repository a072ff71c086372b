"""`energy_aware_quant_problem`: maximise accuracy, minimise DRAM energy on an accelerator.

The same search as `quantization_problem` (decision vector, accuracy constraints, sampling and
repair are reused unchanged); only the cost is swapped: instead of weighted bits, the sum over
layers of a column of the workload's energy table (`energy.objective`, default `dram_energy`,
presented in uJ), looked up per candidate in well under a millisecond. The table is built from
the workload's `energy` section (engine, accelerator, ...) the first time, with missing entries
computed and cached (`python -m energy table WORKLOAD` builds it ahead of time).

Registered with `sw` as the `mpq_codesign.problems` entry point `energy_aware_quant_problem`
(pyproject.toml): `sw` finds it by name and never imports `energy`.
"""

from __future__ import annotations

import logging
from typing import Callable, Mapping

from energy.build import build_table
from energy.table import energy_section, resolve_column
from sw.core.errors import DataError
from sw.problems import quantization_problem as base

log = logging.getLogger(__name__)

init_function = base.init_function
update_params_function = base.update_params_function
sampling_method = base.sampling_method
repair_method = base.repair_method


def energy_cost(study, qmodel) -> tuple[Callable[[Mapping[str, tuple[int, int]]], float], str]:
    """(cost function, cost name) from the workload's energy table; energies in uJ."""
    column = energy_section(study.workload)["objective"]
    stored, _ = resolve_column(column)
    name = stored[:-3] + "_uj" if stored.endswith("_pj") else stored
    table, stats = build_table(study.workload, progress=getattr(study, "progress", False))
    log.info("energy table: %d cache hits, %d computed", stats.hits, stats.misses)
    unknown = [n for n in qmodel.layer_names if n not in table.layers]
    if unknown:
        raise DataError(f"{study.workload.path}: quantized layer {unknown[0]!r} is not in the energy table "
                        f"(layers: {', '.join(table.layer_names)})")

    def cost(layer_bits: Mapping[str, tuple[int, int]]) -> float:
        return table.lookup(layer_bits, name)

    return cost, name


def prepare_exploration_function(qmodel, study, thresholds, elementwise_runner=None) -> base.QuantizationProblem:
    cost, name = energy_cost(study, qmodel)
    return base.QuantizationProblem(study, qmodel, cost, name, thresholds, elementwise_runner)

