"""The types every cost-model engine shares: the `Engine` base class, per-level access records,
the metric columns they fill (`summarise`), residency and mapper settings.

The contract an engine meets is described in `energy.engines`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

from energy.layers import LayerGeometry
from sw.core.errors import UserError

OPERANDS = ("w", "i", "o")
DIRECTIONS = ("read", "write")
LEVELS = ("dram", "gb", "rf")  # off-chip DRAM; on-chip buffers shared by the array; per-PE register files
ACCESS_COLUMNS = [f"dram_{op}_{d}_{unit}" for unit in ("bits", "words") for op in OPERANDS for d in DIRECTIONS]
ONCHIP_COLUMNS = [f"{lv}_{op}_{d}_bits" for lv in LEVELS[1:] for op in OPERANDS for d in DIRECTIONS]
ONCHIP_ENERGY = [f"{lv}_{op}_energy_pj" for lv in LEVELS[1:] for op in OPERANDS]
CORE_METRICS = [*ACCESS_COLUMNS, "dram_word_bits", *(f"dram_{op}_energy_pj" for op in OPERANDS), "dram_energy_pj",
                "energy_total_pj", "mac_energy_pj", "latency_cycles"]
# per-level breakdown, utilisation and the final-output store (NaN where an engine cannot tell)
BREAKDOWN_METRICS = [*ONCHIP_COLUMNS, *ONCHIP_ENERGY, "gb_energy_pj", "rf_energy_pj", "onchip_energy_pj",
                     "dram_o_final_bits", "ideal_cycles", "utilization", "spatial_utilization"]
METRICS = [*CORE_METRICS, *BREAKDOWN_METRICS]
DETAIL_PREFIX = "mem/"  # per-memory keys of a Metrics dict: mem/<level>/<memory>/<operand>/<field>
DETAIL_FIELDS = ("read_words", "write_words", "read_bits", "write_bits", "energy_pj")

Metrics = dict[str, float]


@dataclass(frozen=True)
class Residency:
    """Which activations of a layer live in the on-chip activation buffer instead of DRAM."""

    input_on_chip: bool = False
    output_on_chip: bool = False

    @property
    def suffix(self) -> str:
        """'' for the plain per-layer view, else '+in', '+out' or '+inout' (part of the cache key)."""
        parts = ("in" if self.input_on_chip else "") + ("out" if self.output_on_chip else "")
        return f"+{parts}" if parts else ""


PLAIN = Residency()


@dataclass(frozen=True)
class MapperSettings:
    """Settings of the mapping search that change its result (all part of the cache key)."""

    mapping_objective: str = "energy"  # energy | latency
    lpf_limit: int = 6                 # loop prime factors the temporal search permutes
    spatial_mappings: int = 3          # spatial mappings generated and searched
    mapping: str | None = None         # the engine's mapping / spatial-unrolling file (or shipped name)


@dataclass(frozen=True)
class DramCosts:
    word_bits: int
    read_pj: float   # per word read
    write_pj: float  # per word written

    def words(self, values: int, bits: int) -> int:
        """Words of `values` densely packed `bits`-bit values (see energy.packing)."""
        return -(-values * bits // self.word_bits)


@dataclass(frozen=True)
class OnChipBuffer:
    name: str
    size_bits: int


@dataclass(frozen=True)
class LevelAccess:
    """Traffic of one operand at one memory during one layer.

    `read_*` is data read out of the memory (towards the array or up to the next level), `write_*`
    data written into it (fills from above, results from below); words are the memory's own port
    words. For DRAM, reads are off-chip loads and writes off-chip stores.
    """

    memory: str
    level: str  # one of LEVELS
    operand: str  # one of OPERANDS
    read_words: float
    write_words: float
    read_bits: float
    write_bits: float
    energy_pj: float


class MappingError(UserError):
    """The mapper found no valid mapping for a layer at some bit widths (one line)."""


def one_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message, shortened: engines fail in paragraphs."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    if ". " in text:  # a paragraph on one line: its first sentence
        text = text[:text.index(". ") + 1]
    return text if len(text) <= limit else text[:limit - 3] + "..."


def summarise(levels: Iterable[LevelAccess], *, mac_energy_pj: float, latency_cycles: float, ideal_cycles: float,
              spatial_utilization: float, dram_word_bits: float, dram_o_final_bits: float) -> Metrics:
    """All `METRICS` columns (plus per-memory detail keys) from one layer's per-level records.

    `dram_o_final_bits`: bits of final outputs the layer stores to DRAM (0 when they stay on chip);
    the table uses it to rescale that store when a pooling is fused into the layer.
    """
    out: Metrics = {c: 0.0 for c in METRICS}
    for rec in levels:
        if rec.level not in LEVELS or rec.operand not in OPERANDS:
            raise ValueError(f"level record {rec}: level must be one of {LEVELS}, operand one of {OPERANDS}")
        for d, bits in (("read", rec.read_bits), ("write", rec.write_bits)):
            out[f"{rec.level}_{rec.operand}_{d}_bits"] += float(bits)
        if rec.level == "dram":
            out[f"dram_{rec.operand}_read_words"] += float(rec.read_words)
            out[f"dram_{rec.operand}_write_words"] += float(rec.write_words)
        out[f"{rec.level}_{rec.operand}_energy_pj"] += float(rec.energy_pj)
        for field in DETAIL_FIELDS:
            key = f"{DETAIL_PREFIX}{rec.level}/{rec.memory}/{rec.operand}/{field}"
            out[key] = out.get(key, 0.0) + float(getattr(rec, field))
    for lv in LEVELS:
        out[f"{lv}_energy_pj"] = sum(out[f"{lv}_{op}_energy_pj"] for op in OPERANDS)
    out["mac_energy_pj"] = float(mac_energy_pj)
    out["onchip_energy_pj"] = out["gb_energy_pj"] + out["rf_energy_pj"] + out["mac_energy_pj"]
    out["energy_total_pj"] = out["dram_energy_pj"] + out["onchip_energy_pj"]
    out["latency_cycles"] = float(latency_cycles)
    out["ideal_cycles"] = float(ideal_cycles)
    out["utilization"] = float(ideal_cycles) / float(latency_cycles) if latency_cycles else 0.0
    out["spatial_utilization"] = float(spatial_utilization)
    out["dram_word_bits"] = float(dram_word_bits)
    out["dram_o_final_bits"] = float(dram_o_final_bits)
    return out


def detail(metrics: Metrics) -> list[tuple[str, str, str, dict[str, float]]]:
    """Per-memory records of a Metrics dict: [(level, memory, operand, {field: value})]."""
    found: dict[tuple[str, str, str], dict[str, float]] = {}
    for key, value in metrics.items():
        if key.startswith(DETAIL_PREFIX):
            level, rest = key[len(DETAIL_PREFIX):].split("/", 1)
            memory, operand, field = rest.rsplit("/", 2)
            found.setdefault((level, memory, operand), {})[field] = value
    return [(lv, m, op, fields) for (lv, m, op), fields in found.items()]


class Engine:
    """Base class. Subclasses set `name` and implement `version`, `accelerator_id`, `check`, `evaluate`,
    `dram_costs` and (with `supports_residency`) `activation_buffer`."""

    name = ""
    supports_residency = False

    def __init__(self, accelerator: str, mapping_objective: str = "energy", *, lpf_limit: int = 6,
                 spatial_mappings: int = 3, mapping: str | None = None):
        self.accelerator = accelerator
        self.mapping_objective = mapping_objective
        self.settings = MapperSettings(mapping_objective, int(lpf_limit), int(spatial_mappings), mapping)

    def version(self) -> str:
        """Engine version plus this project's modelling revision: part of every cache key."""
        raise NotImplementedError

    def settings_id(self) -> str:
        """The mapper settings as they enter the cache key (the mapping file by content in accelerator_id)."""
        s = self.settings
        return f"map={s.mapping_objective} lpf={s.lpf_limit} sm={s.spatial_mappings}"

    def accelerator_id(self) -> str:
        """Identity of the accelerator (and mapping) definition for the cache: a name and a content hash."""
        raise NotImplementedError

    def check(self) -> None:
        """Raise `UserError` (one line) if the engine or the accelerator cannot be used."""
        raise NotImplementedError

    def evaluate(self, geometry: LayerGeometry, weight_bits: int, input_bits: int, output_bits: Sequence[int],
                 residency: Residency = PLAIN) -> dict[int, Metrics]:
        """Metrics of one layer at (weight_bits, input_bits) for each output bit width in `output_bits`."""
        raise NotImplementedError

    def dram_costs(self) -> DramCosts:
        raise NotImplementedError

    def activation_buffer(self) -> OnChipBuffer | None:
        """The on-chip memory that holds both a layer's inputs and outputs (where activations can stay)."""
        return None


def psum_bits(geometry: LayerGeometry, weight_bits: int, input_bits: int, cap: int = 32) -> int:
    """Width of an accumulator that cannot overflow, capped at `cap` bits (shared by every engine)."""
    growth = math.ceil(math.log2(geometry.reduction_size)) if geometry.reduction_size > 1 else 0
    return min(cap, weight_bits + input_bits + growth)
