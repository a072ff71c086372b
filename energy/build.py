"""Building an energy table: every layer at every bit width of a `TableSpec`, cached.

`build_table(workload)` traces the model's Conv2d / Linear layers (and, when the workload asks
for it, the dataflow between them: `energy.trace`), evaluates each distinct layer geometry with
the workload's engine at every needed (weight, input, output) bit width in worker processes
(`energy.pool`), stores results in the SQLite cache (`energy.cache`) and returns an
`EnergyTable`. A repeated build only reads the cache.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from energy.cache import INFEASIBLE, EnergyCache
from energy.dataflow import Dataflow, chain_dataflow
from energy.engines.base import METRICS, PLAIN, DramCosts, Engine, OnChipBuffer, Residency
from energy.layers import LayerGeometry
from energy.pool import run_tasks
from energy.table import COLUMNS, DERIVED, ELEMENTWISE, RESIDENCY_VARIANTS, EnergyTable, TableSpec, cache_path
from energy.trace import workload_layers_and_dataflow
from sw.core.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class BuildStats:
    """What a build did: cache hits and misses are counted in mapping searches (engine calls)."""

    layers: int = 0
    geometries: int = 0
    hits: int = 0
    misses: int = 0
    infeasible: int = 0   # residency evaluations without a valid mapping (the tensor goes to DRAM)
    damaged: int = 0      # cache rows that could not be read (recomputed)
    seconds: float = 0.0
    cache: Path | None = None


def _needed(layers: Sequence[LayerGeometry], dataflow: Dataflow, spec: TableSpec,
            buffer: OnChipBuffer | None) -> dict[tuple[str, Residency], dict[tuple[int, int], set[int]]]:
    """{(geometry key, residency): {(wb, ib): output widths}} every configuration of `spec` may look up.

    Residency evaluations are only asked where the tensor fits the buffer at those bits.
    """
    bits = list(spec.bits)
    need: dict[tuple[str, Residency], dict[tuple[int, int], set[int]]] = {}

    def want(g: LayerGeometry, residency: Residency, pair: tuple[int, int], obs) -> None:
        if obs:
            need.setdefault((g.key(), residency), {}).setdefault(pair, set()).update(obs)

    flows = dataflow.flows
    for k, g in enumerate(layers):
        for wb, ib in spec.input_pairs():
            want(g, PLAIN, (wb, ib), bits)
            if not spec.residency or buffer is None:
                continue
            # the engine holds the layer's whole (unpooled) output in the buffer: a necessary condition
            out_obs = [ob for ob in bits if flows[k].chain_next and g.n_outputs * ob <= buffer.size_bits]
            input_fits = (k > 0 and flows[k - 1].chain_next
                          and flows[k - 1].stored_values * layers[k - 1].batch * ib <= buffer.size_bits)
            want(g, Residency(False, True), (wb, ib), out_obs)
            if input_fits:
                want(g, Residency(True, False), (wb, ib), bits)
                want(g, Residency(True, True), (wb, ib), out_obs)
    return need


def build_from_layers(layers: Mapping[str, LayerGeometry], spec: TableSpec, cache_file: str | Path,
                      *, dataflow: Dataflow | None = None, use_cache: bool = True, progress: bool = False,
                      verbose: bool = False, engine: Engine | None = None) -> tuple[EnergyTable, BuildStats]:
    """Evaluate (or read from the cache) every layer at every bit width of `spec`.

    `layers` are traced at batch 1; the table evaluates them at `spec.batch`. `dataflow` defaults
    to the forward-order chain (the per-layer view).
    """
    start = time.perf_counter()
    layers = {name: replace(g, batch=spec.batch) for name, g in layers.items()}
    dataflow = dataflow or chain_dataflow(layers)
    if spec.needs_graph and not dataflow.traced:
        raise UserError("energy.residency / energy.elementwise need the model's traced dataflow")
    if spec.elementwise not in ELEMENTWISE:
        raise UserError(f"energy.elementwise: expected one of {', '.join(ELEMENTWISE)}, got {spec.elementwise!r}")
    engine = engine or spec.make_engine()
    engine.check()
    buffer = engine.activation_buffer() if spec.residency else None
    if spec.residency and (not engine.supports_residency or buffer is None):
        raise UserError(f"energy.residency: engine {engine.name} on accelerator {spec.accelerator!r} cannot keep "
                        f"activations on chip (no on-chip memory holds both inputs and outputs); set residency: false")
    dram = engine.dram_costs() if spec.elementwise != "ignored" else None
    cache = EnergyCache(cache_file, engine.name, f"{engine.version()} {engine.settings_id()}", engine.accelerator_id())
    stats = BuildStats(layers=len(layers), cache=Path(cache_file))
    geometry_of = {g.key(): g for g in layers.values()}
    first_name: dict[str, str] = {}
    for name, g in layers.items():
        first_name.setdefault(g.key(), name)
    stats.geometries = len(geometry_of)
    try:
        need = _needed(list(layers.values()), dataflow, spec, buffer)
        known: dict[str, dict[tuple[int, int, int], dict]] = {}
        tasks = []
        for (gkey, residency), pairs in need.items():
            key = gkey + residency.suffix
            rows, damaged = cache.get(key) if use_cache else ({}, 0)
            stats.damaged += damaged
            known[key] = rows
            for (wb, ib), obs in pairs.items():
                if all((wb, ib, ob) in rows for ob in obs):
                    stats.hits += 1
                else:
                    tasks.append((engine, geometry_of[gkey], wb, ib, sorted(obs), residency))
        stats.misses = len(tasks)
        tasks.sort(key=lambda t: -t[1].macs)  # largest first: the pool's tail stays short
        for key, wb, ib, obs, residency, results, error in run_tasks(tasks, spec.workers, progress, verbose):
            if error is not None:
                if residency == PLAIN:
                    raise UserError(f"layer {first_name[key]}: {error}")
                results = {}
            if any(ob not in results for ob in obs):  # residency: widths whose tensor the mapper cannot hold
                stats.infeasible += 1
                results = {**{ob: dict(INFEASIBLE) for ob in obs}, **results}
            cache.put(key, first_name[key.split("+")[0]], [(wb, ib, ob, m) for ob, m in results.items()])
            known[key].update({(wb, ib, ob): m for ob, m in results.items()})
    finally:
        cache.close()
    if stats.damaged:
        log.warning("%s: %d damaged cache rows were recomputed", cache_file, stats.damaged)
    table = _assemble(layers, spec, known, dataflow, dram, buffer)
    stats.seconds = time.perf_counter() - start
    return table, stats


def _assemble(layers: Mapping[str, LayerGeometry], spec: TableSpec, known: dict, dataflow: Dataflow,
              dram: DramCosts | None, buffer: OnChipBuffer | None) -> EnergyTable:
    bits = list(spec.bits)
    pos = {b: i for i, b in enumerate(bits)}
    r = 2 if spec.residency else 1
    shape = (len(layers), len(bits), len(bits), len(bits), r, r)
    data = {c: np.full(shape, np.nan) for c in COLUMNS}
    for li, g in enumerate(layers.values()):
        for (a, b), residency in RESIDENCY_VARIANTS.items():
            if max(a, b) >= r:
                continue
            for (wb, ib, ob), m in known.get(g.key() + residency.suffix, {}).items():
                if wb in pos and ib in pos and ob in pos and "infeasible" not in m:
                    at = (li, pos[wb], pos[ib], pos[ob], a, b)
                    for c in METRICS:
                        data[c][at] = m.get(c, np.nan)  # an engine without a breakdown leaves it NaN
                    for c, parts in DERIVED.items():
                        data[c][at] = sum(m[p] for p in parts)
    return EnergyTable(layers, bits, spec.baseline_bits, data, spec, dataflow=dataflow, dram=dram, buffer=buffer,
                       entries=known)


def build_table(workload, *, workers: int | None = None, use_cache: bool = True, progress: bool = False,
                verbose: bool = False) -> tuple[EnergyTable, BuildStats]:
    """The energy table of a workload (missing entries computed), plus build statistics.

    Writes only the cache; `energy.outputs.write_outputs` writes the table's CSV files and plot.
    """
    spec = TableSpec.from_workload(workload, workers)
    engine = spec.make_engine()
    try:
        engine.check()
    except UserError as exc:  # settings come from the workload: name its file
        raise UserError(f"{workload.path}: {exc}") from None
    layers, dataflow = workload_layers_and_dataflow(workload, spec.needs_graph)
    table, stats = build_from_layers(layers, spec, cache_path(workload), dataflow=dataflow, use_cache=use_cache,
                                     progress=progress, verbose=verbose, engine=engine)
    return table, stats
