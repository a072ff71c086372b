"""`dram_energy`: the cost provider through which `sw` prices a configuration's DRAM energy.

Registered with `sw` as the `mpq_codesign.costs` entry point `dram_energy` (pyproject.toml; the
protocol is `sw.search.costs`), so `sw` (e.g. the weather sweep) reads DRAM energies without
importing `energy`.
"""

from __future__ import annotations

import logging

from energy.build import build_table
from energy.table import csv_path
from sw.search.costs import CostFunction, CostProvider

log = logging.getLogger(__name__)


def dram_energy_function(study) -> CostFunction | None:
    """`bits -> DRAM energy (uJ)` when the workload has an energy section and its table was built
    (`python -m energy table`, or an energy-aware exploration), else None.

    Only reads the table's cache: building a table takes minutes and is not the caller's job.
    """
    if study.workload.energy is None:
        return None
    if not csv_path(study.workload).is_file():
        log.info("no energy table built for %s yet: plotting against weighted bits only", study.name)
        return None
    table, stats = build_table(study.workload)
    if stats.misses:
        log.warning("the energy table had %d missing entries; they were computed now", stats.misses)
    return lambda bits: table.lookup(bits, "dram_energy")


DRAM_ENERGY = CostProvider("dram_energy", "DRAM energy", "uJ", dram_energy_function)
