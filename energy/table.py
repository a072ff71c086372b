"""The per-layer energy table of a workload: every layer at every bit width, cached.

`build_table(workload)` traces the model's Conv2d / Linear layers, evaluates each distinct layer
geometry with the workload's engine at every needed (weight, input, output) bit width in worker
processes, stores results in the SQLite cache and returns an `EnergyTable`. A repeated build only
reads the cache.

Bit widths covered: every width in `search.bits` plus `quantization.baseline_bits`; weights and
inputs tied (`quantization.explore: tied`) or all combinations (`separate`); output widths all of
them (one mapping search per (weight, input) pair, see `energy.engines.zigzag`).

Output bits of a layer: the input bits of the next quantized layer in forward order (the hw
converter packs a layer's output at the precision its consumer reads); the last layer writes at
`quantization.baseline_bits`. For branching networks (residual shortcuts) "next in forward order"
is an approximation of the true consumer.
"""

from __future__ import annotations

import csv
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from energy.cache import EnergyCache
from energy.engines import METRICS, Engine, get_engine
from energy.layers import LayerGeometry, workload_layers
from sw.durable import atomic_write
from sw.errors import DataError, UserError

log = logging.getLogger(__name__)

DERIVED = {
    "dram_bits": [c for c in METRICS if c.startswith("dram_") and c.endswith("_bits") and c != "dram_word_bits"],
    "dram_words": [c for c in METRICS if c.startswith("dram_") and c.endswith("_words")],
}
COLUMNS = [*METRICS, *DERIVED]
ALIASES = {"dram_energy": "dram_energy_uj", "energy": "energy_total_uj", "energy_total": "energy_total_uj",
           "latency": "latency_cycles"}
PJ_PER_UJ = 1e6


def resolve_column(name: str) -> tuple[str, float]:
    """(stored column, factor) for a column name; `*_uj` columns are the `*_pj` ones in microjoules."""
    name = ALIASES.get(name, name)
    if name in COLUMNS:
        return name, 1.0
    if name.endswith("_uj") and name[:-3] + "_pj" in COLUMNS:
        return name[:-3] + "_pj", 1.0 / PJ_PER_UJ
    valid = [*COLUMNS, *(c[:-3] + "_uj" for c in COLUMNS if c.endswith("_pj")), *ALIASES]
    raise UserError(f"energy.objective: expected an energy table column ({', '.join(valid)}), got {name!r}")


@dataclass(frozen=True)
class TableSpec:
    """What a table covers; derived from a workload's `energy`, `search` and `quantization` sections."""

    engine: str = "zigzag"
    accelerator: str = "eyeriss_like"
    mapping_objective: str = "energy"
    bits: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
    mode: str = "tied"  # tied: weight bits == input bits; separate: every combination
    baseline_bits: int = 8
    workers: int = 2

    @classmethod
    def from_workload(cls, workload, workers: int | None = None) -> "TableSpec":
        e = energy_section(workload)
        lo, hi = workload.search.bits.lower, workload.search.bits.upper
        base = workload.quantization.baseline_bits
        return cls(engine=e["engine"], accelerator=e["accelerator"], mapping_objective=e["mapping_objective"],
                   bits=tuple(sorted(set(range(lo, hi + 1)) | {base})), mode=workload.quantization.explore,
                   baseline_bits=base, workers=workers or e["workers"])

    def input_pairs(self) -> list[tuple[int, int]]:
        if self.mode == "tied":
            return [(b, b) for b in self.bits]
        return [(wb, ib) for wb in self.bits for ib in self.bits]


ENERGY_DEFAULTS = {"engine": "zigzag", "accelerator": "eyeriss_like", "objective": "dram_energy", "word_bits": 32,
                   "mapping_objective": "energy", "workers": 2, "cache": None}


def energy_section(workload) -> dict:
    """The workload's `energy` section with defaults filled in (the section is optional)."""
    section = getattr(workload, "energy", None) or {}
    return {**ENERGY_DEFAULTS, **dict(section)}


def cache_path(workload) -> Path:
    cache = energy_section(workload)["cache"]
    return Path(cache) if cache else Path(workload.results.dir) / "energy_cache.sqlite"


def csv_path(workload) -> Path:
    return Path(workload.results.dir) / workload.name / "energy_table.csv"


@dataclass
class BuildStats:
    """What a build did: cache hits and misses are counted in mapping searches (engine calls)."""

    layers: int = 0
    geometries: int = 0
    hits: int = 0
    misses: int = 0
    seconds: float = 0.0
    cache: Path | None = None
    csv: Path | None = None


class EnergyTable:
    """Per-layer metrics as dense arrays `[layer, weight bits, input bits, output bits]` (NaN: not computed).

    `lookup` is the search's cost function: vectorised numpy indexing, well under 1 ms for resnet18.
    """

    def __init__(self, layers: Mapping[str, LayerGeometry], bits: Sequence[int], baseline_bits: int,
                 data: Mapping[str, np.ndarray], spec: TableSpec | None = None):
        self.layers = dict(layers)
        self.layer_names = list(layers)
        self.bits = list(bits)
        self.baseline_bits = baseline_bits
        self.data = dict(data)
        self.spec = spec
        self._index = np.full(max(self.bits) + 1, -1, dtype=np.int64)
        self._index[self.bits] = np.arange(len(self.bits))
        self._rows = np.arange(len(self.layer_names))
        self._position = {name: i for i, name in enumerate(self.layer_names)}

    def _indices(self, layer_bits: Mapping[str, tuple[int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        base = self.baseline_bits
        pairs = np.array([layer_bits.get(n, (base, base)) for n in self.layer_names], dtype=np.int64).reshape(-1, 2)
        wb, ib = pairs[:, 0], pairs[:, 1]
        ob = np.append(ib[1:], base)
        try:
            idx = self._index[wb], self._index[ib], self._index[ob]
        except IndexError:
            idx = None
        if idx is None or min(i.min() for i in idx) < 0 or (wb < 0).any() or (ib < 0).any():
            raise DataError(f"energy table covers bits {self.bits}; got {dict(layer_bits)}")
        return idx

    def per_layer(self, layer_bits: Mapping[str, tuple[int, int]], column: str) -> np.ndarray:
        """One value per layer (forward order) for a configuration {layer: (weight bits, input bits)}."""
        stored, factor = resolve_column(column)
        w, i, o = self._indices(layer_bits)
        values = self.data[stored][self._rows, w, i, o]
        if np.isnan(values).any():
            missing = [self.layer_names[k] for k in np.flatnonzero(np.isnan(values))]
            raise DataError(f"energy table has no entry for {missing[0]} at this configuration "
                            f"(table mode {self.spec.mode if self.spec else '?'}): rebuild it for this workload")
        return values * factor

    def lookup(self, layer_bits: Mapping[str, tuple[int, int]], column: str) -> float:
        """Sum over layers of `column` for a configuration {layer: (weight bits, input bits)}."""
        return float(self.per_layer(layer_bits, column).sum())

    def uniform(self, bits: int) -> dict[str, tuple[int, int]]:
        return {n: (bits, bits) for n in self.layer_names}

    def write_csv(self, path: str | Path) -> Path:
        """One row per layer and computed (weight, input, output) bits; energies in pJ."""
        path = Path(path)
        with atomic_write(path, newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["layer", "geometry", "weight_bits", "input_bits", "output_bits", *COLUMNS])
            for li, name in enumerate(self.layer_names):
                block = self.data["energy_total_pj"][li]
                for wi, ii, oi in zip(*np.nonzero(~np.isnan(block))):
                    values = [self.data[c][li, wi, ii, oi] for c in COLUMNS]
                    writer.writerow([name, self.layers[name].describe(), self.bits[wi], self.bits[ii], self.bits[oi],
                                     *(f"{v:.6g}" if v % 1 else f"{int(v)}" for v in values)])
        return path


# -- building -------------------------------------------------------------------------------------
def _worker_init(verbose: bool) -> None:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("zigzag").setLevel(logging.INFO if verbose else logging.ERROR)


def _evaluate_task(task: tuple) -> tuple[str, int, int, dict[int, dict[str, float]], float]:
    engine, geometry, wb, ib, obs = task
    start = time.perf_counter()
    results = engine.evaluate(geometry, wb, ib, obs)
    return geometry.key(), wb, ib, results, time.perf_counter() - start


def build_from_layers(layers: Mapping[str, LayerGeometry], spec: TableSpec, cache_file: str | Path,
                      *, use_cache: bool = True, progress: bool = False, verbose: bool = False,
                      engine: Engine | None = None) -> tuple[EnergyTable, BuildStats]:
    """Evaluate (or read from the cache) every layer at every bit width of `spec`."""
    start = time.perf_counter()
    engine = engine or get_engine(spec.engine, spec.accelerator, spec.mapping_objective)
    engine.check()
    cache = EnergyCache(cache_file, engine.name, engine.version(), engine.accelerator_id())
    stats = BuildStats(layers=len(layers), cache=Path(cache_file))
    try:
        by_key: dict[str, LayerGeometry] = {}
        first_name: dict[str, str] = {}
        for name, g in layers.items():
            by_key.setdefault(g.key(), g)
            first_name.setdefault(g.key(), name)
        stats.geometries = len(by_key)
        obs = list(spec.bits)
        needed = set(METRICS)
        known = {k: ({bits: m for bits, m in cache.get(k).items() if needed <= m.keys()} if use_cache else {})
                 for k in by_key}
        tasks = []
        for key, g in by_key.items():
            for wb, ib in spec.input_pairs():
                if all((wb, ib, ob) in known[key] for ob in obs):
                    stats.hits += 1
                else:
                    tasks.append((engine, g, wb, ib, obs))
        stats.misses = len(tasks)
        for key, wb, ib, results in _run_tasks(tasks, spec.workers, progress, verbose):
            rows = [(wb, ib, ob, m) for ob, m in results.items()]
            cache.put(key, first_name[key], rows)
            known[key].update({(wb, ib, ob): m for ob, m in results.items()})
    finally:
        cache.close()
    table = _assemble(layers, spec, known)
    stats.seconds = time.perf_counter() - start
    return table, stats


def _run_tasks(tasks: list, workers: int, progress: bool, verbose: bool):
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc="energy", unit="search", disable=not progress or not tasks, leave=False)
    try:
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                key, wb, ib, results, _ = _evaluate_task(task)
                bar.update()
                yield key, wb, ib, results
            return
        # spawn: never fork a process that holds torch threads; an executor (unlike Pool) fails
        # instead of hanging when a worker dies.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=ctx, initializer=_worker_init,
                                 initargs=(verbose,)) as pool:
            futures = [pool.submit(_evaluate_task, task) for task in tasks]
            try:
                for future in as_completed(futures):
                    key, wb, ib, results, _ = future.result()
                    bar.update()
                    yield key, wb, ib, results
            except BrokenProcessPool:
                raise UserError("energy: a worker process died (out of memory?); the entries computed so far "
                                "are cached: run again, perhaps with fewer workers") from None
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    finally:
        bar.close()


def _assemble(layers: Mapping[str, LayerGeometry], spec: TableSpec, known: dict) -> EnergyTable:
    bits = list(spec.bits)
    pos = {b: i for i, b in enumerate(bits)}
    shape = (len(layers), len(bits), len(bits), len(bits))
    data = {c: np.full(shape, np.nan) for c in COLUMNS}
    for li, g in enumerate(layers.values()):
        for (wb, ib, ob), m in known[g.key()].items():
            if wb in pos and ib in pos and ob in pos:
                at = (li, pos[wb], pos[ib], pos[ob])
                for c in METRICS:
                    data[c][at] = m[c]
                for c, parts in DERIVED.items():
                    data[c][at] = sum(m[p] for p in parts)
    return EnergyTable(layers, bits, spec.baseline_bits, data, spec)


def build_table(workload, *, workers: int | None = None, use_cache: bool = True, progress: bool = False,
                verbose: bool = False, write_csv: bool = True) -> tuple[EnergyTable, BuildStats]:
    """The energy table of a workload (missing entries computed), plus build statistics."""
    spec = TableSpec.from_workload(workload, workers)
    engine = get_engine(spec.engine, spec.accelerator, spec.mapping_objective)
    try:
        engine.check()
    except UserError as exc:  # settings come from the workload: name its file
        raise UserError(f"{workload.path}: {exc}") from None
    table, stats = build_from_layers(workload_layers(workload), spec, cache_path(workload), use_cache=use_cache,
                                     progress=progress, verbose=verbose, engine=engine)
    if write_csv:
        stats.csv = table.write_csv(csv_path(workload))
    return table, stats


def load_table(workload, **kwargs) -> EnergyTable:
    """The workload's energy table (entries missing from the cache are computed); see `build_table`."""
    kwargs.setdefault("write_csv", False)
    return build_table(workload, **kwargs)[0]
