"""The per-layer energy table of a workload: every layer at every bit width, and its cost model.

`EnergyTable` holds the engine's per-layer metrics as dense arrays over (layer, weight bits,
input bits, output bits, residency); `energy.build` fills it (engine calls in worker processes,
SQLite cache). `TableSpec` says what a table covers, from a workload's sections.

Bit widths covered: every width in `search.bits` plus `quantization.baseline_bits`; weights and
inputs tied (`quantization.explore: tied`) or all combinations (`separate`); output widths all of
them (one mapping search per (weight, input) pair, see `energy.engines.zigzag`).

Output bits of a layer: the precision of the tensor it stores, i.e. the largest input width of
the layers that read it (`energy.dataflow`); without a traced graph (`energy.elementwise:
ignored`, `energy.residency: false`: the per-layer view) the input bits of the next layer in
forward order. The last layer writes at `quantization.baseline_bits`.

On top of the engine's per-layer numbers the table models, per candidate configuration:
- residency (`energy.residency: true`): a stored tensor whose only reader is the next layer and
  that fits the on-chip activation buffer at its bits stays there: the producer is looked up in
  its "output on chip" evaluation, the reader in its "input on chip" one (both real mapping
  searches with that tensor in the buffer; if either finds no mapping, the tensor goes to DRAM);
- fused pooling and residual adds (`energy.elementwise: fused`): the producer's final-output
  store to DRAM shrinks to the pooled tensor; an add's host reads the other operand from DRAM;
- separate pooling and adds (`separate`): each is one extra pass over DRAM (read its inputs,
  write its output), charged to the producing layer.
The added DRAM words are densely packed (`energy.packing`) at the engine's DRAM word width and
cost its energy per word.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from energy.dataflow import BASELINE, NETWORK_INPUT, Dataflow, chain_dataflow
from energy.engines import get_engine
from energy.engines.base import METRICS, PLAIN, DramCosts, Engine, OnChipBuffer, Residency, detail
from energy.layers import LayerGeometry
from sw.core.durable import atomic_write
from sw.core.errors import DataError, UserError

DERIVED = {
    "dram_bits": [c for c in METRICS if c.startswith("dram_") and c.endswith(("_read_bits", "_write_bits"))],
    "dram_words": [c for c in METRICS if c.startswith("dram_") and c.endswith("_words")],
}
COLUMNS = [*METRICS, *DERIVED]
ALIASES = {"dram_energy": "dram_energy_uj", "energy": "energy_total_uj", "energy_total": "energy_total_uj",
           "latency": "latency_cycles"}
PJ_PER_UJ = 1e6
ELEMENTWISE = ("ignored", "fused", "separate")
RESIDENCY_VARIANTS = {(0, 0): PLAIN, (1, 0): Residency(True, False), (0, 1): Residency(False, True),
                      (1, 1): Residency(True, True)}


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
    batch: int = 1
    residency: bool = False
    elementwise: str = "ignored"
    lpf_limit: int = 6
    spatial_mappings: int = 3
    mapping: str | None = None

    @classmethod
    def from_workload(cls, workload, workers: int | None = None) -> "TableSpec":
        e = energy_section(workload)
        lo, hi = workload.search.bits.lower, workload.search.bits.upper
        base = workload.quantization.baseline_bits
        mapping = e["mapping"]
        return cls(engine=e["engine"], accelerator=e["accelerator"], mapping_objective=e["mapping_objective"],
                   bits=tuple(sorted(set(range(lo, hi + 1)) | {base})), mode=workload.quantization.explore,
                   baseline_bits=base, workers=workers or e["workers"], batch=e["batch_size"],
                   residency=e["residency"], elementwise=e["elementwise"], lpf_limit=e["lpf_limit"],
                   spatial_mappings=e["spatial_mappings"], mapping=str(mapping) if mapping else None)

    def input_pairs(self) -> list[tuple[int, int]]:
        if self.mode == "tied":
            return [(b, b) for b in self.bits]
        return [(wb, ib) for wb in self.bits for ib in self.bits]

    @property
    def needs_graph(self) -> bool:
        return self.residency or self.elementwise != "ignored"

    def make_engine(self) -> Engine:
        return get_engine(self.engine, self.accelerator, self.mapping_objective, lpf_limit=self.lpf_limit,
                          spatial_mappings=self.spatial_mappings, mapping=self.mapping)


ENERGY_DEFAULTS = {"engine": "zigzag", "accelerator": "eyeriss_like", "objective": "dram_energy", "word_bits": 32,
                   "mapping_objective": "energy", "workers": 2, "cache": None, "batch_size": 1, "residency": False,
                   "elementwise": "ignored", "lpf_limit": 6, "spatial_mappings": 3, "mapping": None}


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
class Resolved:
    """One configuration resolved per layer (forward order): bit widths, residency, table indices."""

    weight_bits: np.ndarray
    input_bits: np.ndarray
    output_bits: np.ndarray
    input_on_chip: np.ndarray
    output_on_chip: np.ndarray
    index: tuple[np.ndarray, ...]
    delta: dict[str, np.ndarray]


class EnergyTable:
    """Per-layer metrics as dense arrays `[layer, weight bits, input bits, output bits, input on chip,
    output on chip]` (NaN: not computed or no valid mapping).

    `lookup` is the search's cost function: numpy indexing plus a short pass over the layers that
    may keep their output on chip, well under 1 ms for resnet18.
    """

    def __init__(self, layers: Mapping[str, LayerGeometry], bits: Sequence[int], baseline_bits: int,
                 data: Mapping[str, np.ndarray], spec: TableSpec | None = None, *, dataflow: Dataflow | None = None,
                 dram: DramCosts | None = None, buffer: OnChipBuffer | None = None,
                 entries: Mapping[str, Mapping[tuple[int, int, int], dict]] | None = None):
        self.layers = dict(layers)
        self.layer_names = list(layers)
        self.bits = list(bits)
        self.baseline_bits = baseline_bits
        # arrays without the on-chip axes ([layer, wb, ib, ob]) are the per-layer view
        self.data = {c: a[..., None, None] if a.ndim == 4 else a for c, a in data.items()}
        self.spec = spec
        self.dataflow = dataflow or chain_dataflow(self.layers)
        self.dram = dram
        self.buffer = buffer
        self.entries = entries or {}
        self.residency = self.data["energy_total_pj"].shape[-1] == 2
        self.elementwise = spec.elementwise if spec else "ignored"
        n = len(self.layer_names)
        batch = np.array([g.batch for g in self.layers.values()], dtype=np.int64)
        flows = self.dataflow.flows
        self._index = np.full(max(self.bits) + 1, -1, dtype=np.int64)
        self._index[self.bits] = np.arange(len(self.bits))
        self._rows = np.arange(n)
        width = max(len(f.precision_from) for f in flows)
        self._precision = np.full((n, width), n, dtype=np.int64)  # n: the baseline column
        for k, f in enumerate(flows):
            self._precision[k, :len(f.precision_from)] = [n if s == BASELINE else s for s in f.precision_from]
        self._out_values = np.array([f.output_values for f in flows], dtype=np.int64) * batch
        self._stored_values = np.array([f.stored_values for f in flows], dtype=np.int64) * batch
        self._pooled = np.array([f.pooled for f in flows])
        self._add_from = np.array([-2 if f.add_operand is None else n if f.add_operand == NETWORK_INPUT
                                   else f.add_operand for f in flows], dtype=np.int64)
        self._add_values = np.array([f.add_values for f in flows], dtype=np.int64) * batch
        self._chain = [k for k, f in enumerate(flows) if f.chain_next and k + 1 < n]

    # -- configurations ---------------------------------------------------------------------------
    def resolve(self, layer_bits: Mapping[str, tuple[int, int]]) -> Resolved:
        """Bit widths, residency and table indices of every layer for {layer: (weight bits, input bits)}."""
        base = self.baseline_bits
        pairs = np.array([layer_bits.get(n, (base, base)) for n in self.layer_names], dtype=np.int64).reshape(-1, 2)
        wb, ib = pairs[:, 0], pairs[:, 1]
        ob = np.append(ib, base)[self._precision].max(axis=1)
        if (wb < 0).any() or (ib < 0).any() or max(wb.max(), ib.max(), ob.max()) >= len(self._index):
            raise DataError(f"energy table covers bits {self.bits}; got {dict(layer_bits)}")
        w, i, o = self._index[wb], self._index[ib], self._index[ob]
        if min(w.min(), i.min(), o.min()) < 0:
            raise DataError(f"energy table covers bits {self.bits}; got {dict(layer_bits)}")
        rin = np.zeros(len(wb), dtype=np.int64)
        rout = np.zeros(len(wb), dtype=np.int64)
        if self.residency and self.buffer is not None:
            total = self.data["energy_total_pj"]
            fits = self._stored_values * ob <= self.buffer.size_bits
            for k in self._chain:
                if not fits[k]:
                    continue
                at, nxt = (k, w[k], i[k], o[k], rin[k]), (k + 1, w[k + 1], i[k + 1], o[k + 1])
                on_chip = total[(*at, 1)] + total[(*nxt, 1, 0)]
                # keep the tensor on chip when both layers map with it there and it saves energy
                if on_chip < total[(*at, 0)] + total[(*nxt, 0, 0)] + self._pooled_store_saving(at):
                    rout[k] = rin[k + 1] = 1
        index = (self._rows, w, i, o, rin, rout) if self.residency else (self._rows, w, i, o, 0, 0)
        resolved = Resolved(wb, ib, ob, rin.astype(bool), rout.astype(bool), index, {})
        resolved.delta = self._dataflow_delta(resolved)
        return resolved

    def _pooled_store_saving(self, at: tuple) -> float:
        """DRAM energy a fused pooling takes off layer `at[0]`'s output store (<= 0) when it goes to DRAM."""
        k = at[0]
        if self.elementwise != "fused" or not self._pooled[k] or self.dram is None:
            return 0.0
        final_bits = int(np.nan_to_num(self.data["dram_o_final_bits"][(*at, 0)]))
        precision = final_bits // max(int(self._out_values[k]), 1)
        saved = self.dram.words(int(self._stored_values[k]), precision) - self.dram.words(int(self._out_values[k]),
                                                                                          precision)
        return saved * self.dram.write_pj

    def _dataflow_delta(self, r: Resolved) -> dict[str, np.ndarray]:
        """DRAM traffic of pooling and residual adds that the per-layer engine results do not contain."""
        if self.elementwise == "ignored" or self.dram is None:
            return {}
        n = len(self.layer_names)
        zero = np.zeros(n)
        delta: dict[str, np.ndarray] = {}

        def add(op: str, direction: str, values: np.ndarray, bits: np.ndarray, sign: int = 1) -> None:
            words = -(-(values * bits) // self.dram.word_bits)
            pj = self.dram.read_pj if direction == "read" else self.dram.write_pj
            for column, amount in ((f"dram_{op}_{direction}_bits", values * bits), (f"dram_{op}_{direction}_words", words),
                                   (f"dram_{op}_energy_pj", words * pj)):
                delta[column] = delta.get(column, zero) + sign * amount

        has_add = self._add_from >= 0
        other_bits = np.append(r.output_bits, self.baseline_bits)[np.where(has_add, self._add_from, n)]
        no_add = np.zeros(n, dtype=np.int64)
        add_values = np.where(has_add, self._add_values, no_add)
        if self.elementwise == "fused":
            final_bits = np.nan_to_num(self.data["dram_o_final_bits"][r.index]).astype(np.int64)
            pooled = self._pooled & ~r.output_on_chip & (final_bits > 0)
            precision = np.where(pooled, final_bits // np.maximum(self._out_values, 1), 0)
            add("o", "write", np.where(pooled, self._out_values, 0), precision, sign=-1)
            add("o", "write", np.where(pooled, self._stored_values, 0), precision)
            delta["dram_o_final_bits"] = delta["dram_o_write_bits"].copy()
            add("i", "read", add_values, other_bits)
        else:  # separate passes over DRAM
            pool_values = np.where(self._pooled, 1, 0)
            add("o", "read", pool_values * self._out_values, r.output_bits)
            add("o", "write", pool_values * self._stored_values, r.output_bits)
            add("o", "read", add_values, r.output_bits)
            add("i", "read", add_values, other_bits)
            add("o", "write", add_values, r.output_bits)
        energy = sum(delta.get(f"dram_{op}_energy_pj", zero) for op in ("w", "i", "o"))
        delta["dram_energy_pj"] = energy
        delta["energy_total_pj"] = energy
        for column, parts in DERIVED.items():
            delta[column] = sum(delta.get(p, zero) for p in parts)
        return delta

    def column(self, resolved: Resolved, column: str) -> np.ndarray:
        """One value per layer of `column` for a resolved configuration."""
        stored, factor = resolve_column(column)
        values = self.data[stored][resolved.index]
        if np.isnan(values).any():
            missing = [self.layer_names[k] for k in np.flatnonzero(np.isnan(values))]
            raise DataError(f"energy table has no entry for {missing[0]} at this configuration "
                            f"(table mode {self.spec.mode if self.spec else '?'}): rebuild it for this workload")
        if stored in resolved.delta:
            values = values + resolved.delta[stored]
        return values * factor

    def per_layer(self, layer_bits: Mapping[str, tuple[int, int]], column: str) -> np.ndarray:
        """One value per layer (forward order) for a configuration {layer: (weight bits, input bits)}."""
        return self.column(self.resolve(layer_bits), column)

    def lookup(self, layer_bits: Mapping[str, tuple[int, int]], column: str) -> float:
        """Sum over layers of `column` for a configuration {layer: (weight bits, input bits)}."""
        return float(self.per_layer(layer_bits, column).sum())

    def uniform(self, bits: int) -> dict[str, tuple[int, int]]:
        return {n: (bits, bits) for n in self.layer_names}

    # -- files ------------------------------------------------------------------------------------
    def _computed(self):
        """(layer index, name, wi, ii, oi, input on chip, output on chip) of every computed entry."""
        total = self.data["energy_total_pj"]
        for li, name in enumerate(self.layer_names):
            for wi, ii, oi, a, b in zip(*np.nonzero(~np.isnan(total[li]))):
                yield li, name, wi, ii, oi, a, b

    def write_csv(self, path: str | Path) -> Path:
        """One row per layer and computed (weight, input, output) bits and residency; energies in pJ."""
        path = Path(path)
        with atomic_write(path, newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["layer", "geometry", "weight_bits", "input_bits", "output_bits", "input_on_chip",
                             "output_on_chip", *COLUMNS])
            for li, name, wi, ii, oi, a, b in self._computed():
                values = [self.data[c][li, wi, ii, oi, a, b] for c in COLUMNS]
                writer.writerow([name, self.layers[name].describe(), self.bits[wi], self.bits[ii], self.bits[oi],
                                 int(a), int(b), *(_number(v) for v in values)])
        return path

    def write_levels_csv(self, path: str | Path) -> Path:
        """Per memory: one row per layer, computed bits and residency, memory and operand."""
        path = Path(path)
        with atomic_write(path, newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["layer", "weight_bits", "input_bits", "output_bits", "input_on_chip", "output_on_chip",
                             "memory", "level", "operand", "read_words", "write_words", "read_bits", "write_bits",
                             "energy_pj"])
            for li, name, wi, ii, oi, a, b in self._computed():
                key = self.layers[name].key() + RESIDENCY_VARIANTS[(int(a), int(b))].suffix
                metrics = self.entries.get(key, {}).get((self.bits[wi], self.bits[ii], self.bits[oi]), {})
                for level, memory, operand, fields in detail(metrics):
                    writer.writerow([name, self.bits[wi], self.bits[ii], self.bits[oi], int(a), int(b), memory, level,
                                     operand, *(_number(fields.get(f, 0.0)) for f in
                                                ("read_words", "write_words", "read_bits", "write_bits", "energy_pj"))])
        return path

    VS_BITS_COLUMNS = ("dram_energy_pj", "dram_w_energy_pj", "dram_i_energy_pj", "dram_o_energy_pj", "dram_bits",
                       "gb_energy_pj", "rf_energy_pj", "mac_energy_pj", "onchip_energy_pj", "energy_total_pj",
                       "latency_cycles", "utilization")

    def vs_bits(self) -> list[dict[str, Any]]:
        """Every layer at every uniform bit width, as the search sees it (dataflow and residency applied),
        with the DRAM energy a linear scaling from the largest width would predict."""
        rows = []
        top = max(self.bits)
        reference = self.column(self.resolve(self.uniform(top)), "dram_energy_pj")
        for bits in self.bits:
            resolved = self.resolve(self.uniform(bits))
            columns = {c: self.column(resolved, c) for c in self.VS_BITS_COLUMNS}
            for k, name in enumerate(self.layer_names):
                linear = reference[k] * bits / top
                rows.append({"layer": name, "bits": bits, "output_bits": int(resolved.output_bits[k]),
                             "input_on_chip": int(resolved.input_on_chip[k]),
                             "output_on_chip": int(resolved.output_on_chip[k]),
                             **{c: float(v[k]) for c, v in columns.items()},
                             "dram_energy_linear_pj": float(linear),
                             "dram_vs_linear": float(columns["dram_energy_pj"][k] / linear) if linear else float("nan")})
        return rows

    def write_vs_bits_csv(self, path: str | Path) -> Path:
        rows = self.vs_bits()
        path = Path(path)
        with atomic_write(path, newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _number(v) if isinstance(v, float) else v for k, v in row.items()})
        return path


def _number(v: float) -> str:
    if np.isnan(v):
        return ""
    return f"{v:.6g}" if v % 1 else f"{int(v)}"
