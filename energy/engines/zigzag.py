"""The ZigZag engine (KU Leuven `zigzag-dse` from PyPI): the default cost model.

Each layer becomes one ZigZag layer dictionary, so weight (W), input (I), partial-sum (O) and
final-output (O_final) precisions are set independently (the ONNX route ties O_final to I).

Modelling choices (documented in energy/README.md):
- Linear layers are 1x1 convolutions on a 1x1 map (same loop nest as ZigZag's Gemm).
- Partial sums are held at the exact no-overflow accumulator width
  `wb + ib + ceil(log2(reduction size))`, capped at 32 bits.
- One mapping search (spatial + LOMA temporal) runs per (weight bits, input bits) with the
  largest requested output width; the chosen mapping is then re-evaluated with ZigZag's own
  cost model at every smaller output width. A mapping that fits the largest outputs fits the
  smaller ones, and output bits only change the final-output traffic; tests compare this against
  a fresh search at each output width on real layers.
- The mapping objective (energy or latency), the LOMA loop-prime-factor limit and the number of
  spatial mappings are pinned per table (they change the chosen mapping and so the traffic).
- Accelerators: ZigZag's shipped ones, this project's (`energy/accelerators/*.yaml`) or a user
  file; mappings (spatial unrolling, optional loop-order constraints) from `energy.mapping`, the
  accelerator's own mapping file, or ZigZag's default.
- "DRAM" is the outermost memory of each operand, and must be named as an off-chip memory;
  an accelerator without one is refused. Memory levels are classified as `dram`, `gb` (one
  instance serving the whole array) or `rf` (replicated per PE, row or column).
- Residency: a layer whose input and/or output stays on chip is evaluated on the accelerator
  with the DRAM level removed for that operand (ZigZag's own inter-layer data-locality
  transformation), so the mapping search itself must fit the whole tensor in the buffer.

The energy-objective search is exact but faster than ZigZag's stock pipeline: each candidate
temporal mapping's energy is computed first and its latency only when it can still win (the
choice rule is ZigZag's `MinimalEnergyStage`: least energy, ties by latency); the test suite
checks it against the stock pipeline.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import zigzag
from zigzag.cost_model.cost_model import CostModelEvaluation
from zigzag.datatypes import Constants, MemoryOperand
from zigzag.hardware.architecture.imc_array import ImcArray
from zigzag.hardware.architecture.memory_port import DataDirection
from zigzag.mapping.data_movement import DataMoveAttr
from zigzag.mapping.spatial_mapping_internal import SpatialMappingInternal
from zigzag.mapping.temporal_mapping import TemporalMapping, TemporalMappingType
from zigzag.parser.workload_factory import LayerNodeFactory
from zigzag.stages.evaluation.cost_model_evaluation import CostModelStage
from zigzag.stages.exploit_data_locality_stages import ExploitInterLayerDataLocalityStage
from zigzag.stages.main import MainStage
from zigzag.stages.mapping.spatial_mapping_generation import SpatialMappingGeneratorStage
from zigzag.stages.mapping.temporal_mapping_generator_stage import TemporalMappingGeneratorStage
from zigzag.stages.parser.accelerator_parser import AcceleratorParserStage
from zigzag.stages.parser.workload_parser import WorkloadParserStage
from zigzag.stages.results.reduce_stages import MinimalEnergyStage, MinimalLatencyStage
from zigzag.stages.workload_iterator import WorkloadStage
from zigzag.workload.dnn_workload import DNNWorkload

from energy.engines.base import (PLAIN, DramCosts, Engine, LevelAccess, MappingError, Metrics, OnChipBuffer,
                                 Residency, one_line, psum_bits, summarise)
from energy.engines.zigzag_search import EnergyBoundedTemporalSearch, SearchBound
from energy.layers import LayerGeometry
from sw.core.errors import UserError

# Bump when the way layers are modelled changes: cached results of older revisions are not reused.
MODEL_REVISION = 3
MAX_PSUM_BITS = 32
PROJECT_ROOT = Path(__file__).resolve().parents[1]
PROJECT_ACCELERATORS = PROJECT_ROOT / "accelerators"
PROJECT_MAPPINGS = PROJECT_ROOT / "mappings"
DRAM_NAME = re.compile(r"dram|ddr|hbm|off[-_ ]?chip|main[-_ ]?mem", re.IGNORECASE)
# The energy-first search re-states ZigZag's cost-model construction; it is used only with the
# ZigZag release it was checked against (any other release runs the stock pipeline).
FAST_SEARCH_ZIGZAG = ("3.9.1",)


def zigzag_root() -> Path:
    """The installed ZigZag package folder (its shipped hardware and mapping YAMLs live under inputs/)."""
    return Path(zigzag.__file__).resolve().parent


def shipped_accelerators() -> list[str]:
    """Names of the accelerator definitions this project and ZigZag ship."""
    return sorted({p.stem for p in PROJECT_ACCELERATORS.glob("*.yaml")}
                  | {p.stem for p in (zigzag_root() / "inputs" / "hardware").glob("*.yaml")})


def shipped_mappings() -> list[str]:
    """Names of the mapping files this project and ZigZag ship (values of `energy.mapping`)."""
    return sorted({p.stem for p in PROJECT_MAPPINGS.glob("*.yaml")}
                  | {p.stem for p in (zigzag_root() / "inputs" / "mapping").glob("*.yaml")})


def _is_path(text: str) -> bool:
    return Path(text).suffix in (".yaml", ".yml") or "/" in text or Path(text).exists()


def layer_dict(geometry: LayerGeometry, weight_bits: int, input_bits: int, output_bits: int,
               name: str = "layer") -> dict[str, Any]:
    """The ZigZag user-format layer dictionary of one layer (grouped convolutions via the G loop)."""
    g = geometry
    return {
        "id": 0,
        "name": name,
        "operator_type": "Conv",
        "equation": "O[b][g][k][oy][ox]+=W[g][k][c][fy][fx]*I[b][g][c][iy][ix]",
        "dimension_relations": [f"ix={g.stride_w}*ox+{g.dilation_w}*fx", f"iy={g.stride_h}*oy+{g.dilation_h}*fy"],
        "loop_dims": ["B", "K", "G", "OX", "OY", "C", "FX", "FY"],
        "loop_sizes": [g.batch, g.out_channels // g.groups, g.groups, g.out_w, g.out_h,
                       g.in_channels // g.groups, g.kernel_w, g.kernel_h],
        "operand_precision": {"W": weight_bits, "I": input_bits,
                              "O": psum_bits(g, weight_bits, input_bits, MAX_PSUM_BITS), "O_final": output_bits},
        "operand_source": {"I": 0},
        "pr_loop_dims": ["IX", "IY"],
        "pr_loop_sizes": [g.in_w, g.in_h],
        "padding": [[g.pad_left, g.pad_right], [g.pad_top, g.pad_bottom]],
    }


class ZigZagEngine(Engine):
    """ZigZag with LOMA temporal mapping search; accelerators by shipped name or YAML file."""

    name = "zigzag"
    supports_residency = True

    def __init__(self, accelerator: str, mapping_objective: str = "energy", **mapper_settings):
        super().__init__(accelerator, mapping_objective, **mapper_settings)
        if mapping_objective not in ("energy", "latency"):
            raise UserError(f"energy.mapping_objective: expected one of energy, latency, got {mapping_objective!r}")
        self._parsed: Any = None  # per-process cache: (accelerator, mapping data)
        self._variants: dict[Residency, Any] = {}  # per-process cache: accelerators without some DRAM levels

    # -- identity ---------------------------------------------------------------------------------
    def version(self) -> str:
        return f"zigzag-dse {metadata.version('zigzag-dse')} model r{MODEL_REVISION}"

    def _hardware_path(self) -> Path:
        if _is_path(self.accelerator):
            candidate = Path(self.accelerator)
            if not candidate.is_file():
                raise UserError(f"energy.accelerator: expected an existing ZigZag accelerator YAML file, "
                                f"got {self.accelerator!r} (not found)")
            return candidate
        for folder in (PROJECT_ACCELERATORS, zigzag_root() / "inputs" / "hardware"):
            if (folder / f"{self.accelerator}.yaml").is_file():
                return folder / f"{self.accelerator}.yaml"
        raise UserError(f"energy.accelerator: expected a shipped accelerator ({', '.join(shipped_accelerators())}) "
                        f"or a path to a ZigZag accelerator YAML file, got {self.accelerator!r}")

    def _mapping_path(self, hardware: Path) -> Path:
        mapping = self.settings.mapping
        zz_mappings = zigzag_root() / "inputs" / "mapping"
        if mapping:
            if _is_path(mapping):
                if not Path(mapping).is_file():
                    raise UserError(f"energy.mapping: expected an existing ZigZag mapping YAML file, got {mapping!r} "
                                    f"(not found)")
                return Path(mapping)
            for folder in (PROJECT_MAPPINGS, zz_mappings):
                if (folder / f"{mapping}.yaml").is_file():
                    return folder / f"{mapping}.yaml"
            raise UserError(f"energy.mapping: expected a shipped mapping ({', '.join(shipped_mappings())}) or a path "
                            f"to a ZigZag mapping YAML file, got {mapping!r}")
        if not _is_path(self.accelerator):  # a shipped accelerator comes with its own mapping, if any
            for folder in (PROJECT_MAPPINGS, zz_mappings):
                if (folder / f"{hardware.stem}.yaml").is_file():
                    return folder / f"{hardware.stem}.yaml"
        return zz_mappings / "default.yaml"

    def _paths(self) -> tuple[Path, Path]:
        """(hardware YAML, mapping YAML) of the accelerator."""
        hardware = self._hardware_path()
        return hardware, self._mapping_path(hardware)

    def accelerator_id(self) -> str:
        hardware, mapping = self._paths()
        digest = hashlib.sha256(hardware.read_bytes() + b"\0" + mapping.read_bytes()).hexdigest()[:16]
        return f"{hardware.stem}+{mapping.stem}:{digest}"

    def describe(self) -> str:
        hardware, mapping = self._paths()
        return f"{hardware.stem} (mapping {mapping.stem})"

    # -- set-up -----------------------------------------------------------------------------------
    def _load(self) -> tuple[Any, list[dict[str, Any]]]:
        if self._parsed is None:
            hardware, mapping = self._paths()
            try:
                accelerator = AcceleratorParserStage.parse_accelerator(str(hardware))
            except Exception as exc:  # ZigZag raises ValueError/KeyError/AssertionError on bad YAML
                raise UserError(f"{hardware}: not a valid ZigZag accelerator definition ({one_line(exc)})") from None
            try:
                mapping_data = WorkloadParserStage.parse_mapping_data(str(mapping))
            except Exception as exc:
                raise UserError(f"{mapping}: not a valid ZigZag mapping file ({one_line(exc)})") from None
            self._parsed = (accelerator, mapping_data)
        return self._parsed

    def _operand_links(self) -> dict[str, Any]:
        """{'w'|'i'|'o': ZigZag memory operand} of the default mapping entry."""
        _, mapping_data = self._load()
        entry = next((m for m in mapping_data if m.get("name") == "default"), mapping_data[0])
        links = entry.get("memory_operand_links") or {"O": "O", "W": "I2", "I": "I1"}
        return {"w": MemoryOperand(links["W"]), "i": MemoryOperand(links["I"]), "o": MemoryOperand(links["O"])}

    def _top_memories(self) -> dict[str, Any]:
        accelerator, _ = self._load()
        hierarchy = accelerator.memory_hierarchy
        return {op: hierarchy.get_operand_top_level(mem_op) for op, mem_op in self._operand_links().items()}

    def check(self) -> None:
        accelerator, _ = self._load()
        hardware, _ = self._paths()
        if isinstance(accelerator.operational_array, ImcArray):
            raise UserError(f"energy.accelerator: expected a digital accelerator, got the in-memory-computing "
                            f"accelerator {self.accelerator!r} (not supported by the energy table)")
        try:
            tops = self._top_memories()
        except Exception as exc:  # an operand of the mapping that no memory serves
            raise UserError(f"{hardware}: the mapping's memory operands do not match the accelerator's memories "
                            f"({one_line(exc)})") from None
        if not all(DRAM_NAME.search(level.name) for level in tops.values()):
            names = ", ".join(f"{op.upper()}: {level.name}" for op, level in tops.items())
            raise UserError(f"{hardware}: expected an accelerator whose outermost memory of weights, inputs and "
                            f"outputs is an off-chip DRAM (a memory named like dram, ddr, hbm or off_chip); "
                            f"its outermost memories are {names}")

    def __getstate__(self) -> dict:  # parsed ZigZag objects stay in their process
        state = dict(self.__dict__)
        state["_parsed"], state["_variants"] = None, {}
        return state

    def dram_costs(self) -> DramCosts:
        level = self._top_memories()["o"]
        mem_op = self._operand_links()["o"]
        width = level.get_max_bandwidth(mem_op, DataDirection.WR_IN_BY_LOW) or level.get_max_bandwidth(
            mem_op, DataDirection.RD_OUT_TO_LOW)
        return DramCosts(int(width), float(level.read_energy), float(level.write_energy))

    def activation_buffer(self) -> OnChipBuffer | None:
        """The outermost on-chip memory serving both inputs and outputs, with its capacity."""
        accelerator, _ = self._load()
        links = self._operand_links()
        best = None
        for level in accelerator.memory_hierarchy.mem_level_list:
            ops = set(level.operands)
            if links["i"] in ops and links["o"] in ops and not DRAM_NAME.search(level.name):
                best = level  # levels are listed innermost first
        if best is None:
            return None
        return OnChipBuffer(best.name, int(best.memory_instance.size * best.unroll_count))

    def _accelerator(self, residency: Residency, geometry: LayerGeometry) -> Any:
        """The accelerator, with the DRAM level removed for the operands that stay on chip."""
        accelerator, _ = self._load()
        if residency == PLAIN:
            return accelerator
        if residency not in self._variants:
            buffer = self.activation_buffer()
            if buffer is None:
                raise UserError(f"energy.residency: accelerator {self.accelerator!r} has no on-chip memory that "
                                f"holds both inputs and outputs, so no activation can stay on chip")
            levels = accelerator.memory_hierarchy.mem_level_list
            index = {lv.name: k for k, lv in enumerate(levels)}
            tops = self._top_memories()
            links = self._operand_links()
            on_chip = index[buffer.name]
            targets = {links["i"]: on_chip if residency.input_on_chip else index[tops["i"].name],
                       links["o"]: on_chip if residency.output_on_chip else index[tops["o"].name]}
            # ZigZag's own transformation; it tells weights from activations by the constant operand
            probe = LayerNodeFactory({**layer_dict(geometry, 8, 8, 8), "operand_source": {"W": 0}},
                                     self._load()[1]).create()
            stage = ExploitInterLayerDataLocalityStage(
                [CostModelStage], accelerator=accelerator, layer=probe, mem_update_list={probe.id: targets},
                mem_update_weight=index[tops["w"].name])
            self._variants[residency] = stage.generate_accelerator_with_removing_unused_memory()
        return self._variants[residency]

    def _layer(self, geometry: LayerGeometry, wb: int, ib: int, ob: int) -> Any:
        _, mapping_data = self._load()
        return LayerNodeFactory(layer_dict(geometry, wb, ib, ob, name=geometry.describe()), mapping_data).create()

    # -- evaluation -------------------------------------------------------------------------------
    def search(self, geometry: LayerGeometry, weight_bits: int, input_bits: int, output_bits: int,
               residency: Residency = PLAIN, *, stock: bool = False) -> Any:
        """Full ZigZag mapping search for one layer; returns the best cost model evaluation (CME).

        `stock=True` runs ZigZag's unmodified stage pipeline (the reference the fast path is tested against).
        """
        layer = self._layer(geometry, weight_bits, input_bits, output_bits)
        accelerator = self._accelerator(residency, geometry)
        fast = (not stock and self.settings.mapping_objective == "energy"
                and metadata.version("zigzag-dse") in FAST_SEARCH_ZIGZAG)
        if fast:
            inner = [EnergyBoundedTemporalSearch]
            reduce = MinimalEnergyStage
        else:
            reduce = MinimalEnergyStage if self.settings.mapping_objective == "energy" else MinimalLatencyStage
            inner = [reduce, TemporalMappingGeneratorStage, CostModelStage]
        extra = {"search_bound": SearchBound()} if fast else {}
        with tempfile.TemporaryDirectory(prefix="zigzag-") as dump:
            main = MainStage(
                [WorkloadStage, reduce, SpatialMappingGeneratorStage, *inner],
                workload=DNNWorkload([layer]), accelerator=accelerator, dump_folder=dump,
                loma_lpf_limit=self.settings.lpf_limit, loma_show_progress_bar=False,
                nb_mappings_generated=self.settings.spatial_mappings,
                enable_mix_spatial_mapping_generation=False, access_same_data_considered_as_no_access=True,
                temporal_mapping_type=TemporalMappingType("uneven"), **extra)
            results = main.run()
        return results[0][0]

    def reevaluate(self, cme: Any, geometry: LayerGeometry, weight_bits: int, input_bits: int,
                   output_bits: int) -> Any:
        """ZigZag's cost model on the mapping of `cme` with other bit widths (no search)."""
        layer = self._layer(geometry, weight_bits, input_bits, output_bits)
        return CostModelEvaluation(
            accelerator=cme.accelerator, layer=layer,
            spatial_mapping=SpatialMappingInternal(cme.spatial_mapping.mapping_dict_origin, layer),
            spatial_mapping_int=SpatialMappingInternal(cme.spatial_mapping_int.mapping_dict_origin, layer),
            temporal_mapping=TemporalMapping(cme.temporal_mapping.mapping_dic_origin, layer, cme.temporal_mapping.type),
            access_same_data_considered_as_no_access=True)

    def evaluate(self, geometry: LayerGeometry, weight_bits: int, input_bits: int, output_bits: Sequence[int],
                 residency: Residency = PLAIN) -> dict[int, Metrics]:
        """Metrics at each output width; with the output on chip, only the widths whose whole output fits
        the buffer (the largest one found by bisection, as fitting is monotone in the width)."""
        output_bits = sorted(set(int(b) for b in output_bits))
        candidates = output_bits if residency.output_on_chip else output_bits[-1:]
        low, high, probe = 0, len(candidates) - 1, len(candidates) - 1
        best, found, error = None, -1, None
        while low <= high:  # the largest width that maps: the largest first, then bisection below a failure
            try:
                best, found = self.search(geometry, weight_bits, input_bits, candidates[probe], residency), probe
                low = probe + 1
            except UserError:
                raise
            except Exception as exc:  # ZigZag reports unmappable layers with asserts, ValueErrors and paragraphs
                error, high = exc, probe - 1
            probe = (low + high + 1) // 2
        if best is None:
            where = {PLAIN: "", Residency(True, False): " with its input on chip",
                     Residency(False, True): " with its output on chip"}.get(residency, " with input and output on chip")
            raise MappingError(f"zigzag finds no mapping for {geometry.describe()} at W{weight_bits}/I{input_bits}/"
                               f"O{output_bits[-1]} bits{where} on accelerator {self.describe()}: "
                               f"{type(error).__name__}: {one_line(error)}")
        top = candidates[found]
        results = {top: self.metrics(best)}
        for ob in output_bits:
            if ob < top:
                results[ob] = self.metrics(self.reevaluate(best, geometry, weight_bits, input_bits, ob))
        return results

    def metrics(self, cme: Any) -> Metrics:
        """Table metrics of one ZigZag cost model evaluation: every memory level of every operand."""
        operands = {"w": Constants.LAYER_OP_W, "i": Constants.LAYER_OP_I, "o": Constants.OUTPUT_LAYER_OP}
        reads = (DataDirection.RD_OUT_TO_LOW, DataDirection.RD_OUT_TO_HIGH)
        writes = (DataDirection.WR_IN_BY_LOW, DataDirection.WR_IN_BY_HIGH)
        n_dims = len(cme.accelerator.operational_array.dimension_sizes)
        records: list[LevelAccess] = []
        word_bits, final_bits = set(), 0.0
        for short, op in operands.items():
            mem_op = cme.memory_operand_links.layer_to_mem_op(op)
            n_levels = cme.mapping.mem_level[op]
            for lv in range(n_levels):
                move = cme.mapping.unit_mem_data_movement[op][lv]
                amount = move.get_attribute(DataMoveAttr.DATA_TRANS_AMOUNT_PER_PERIOD)
                precision = move.get_attribute(DataMoveAttr.DATA_PRECISION)
                periods = move.get_attribute(DataMoveAttr.DATA_TRANS_PERIOD_COUNT)
                units = cme.mapping.spatial_mapping.unit_count[op][lv + 1]
                words = cme.memory_word_access[op][lv]
                level = cme.accelerator.get_memory_level(mem_op, lv)

                def bits(direction) -> float:
                    return float(amount.get(direction) * precision.get(direction) * periods.get(direction) * units)

                dram = lv == n_levels - 1 and DRAM_NAME.search(level.name) is not None
                kind = "dram" if dram else "gb" if len(level.served_dimensions) == n_dims else "rf"
                records.append(LevelAccess(
                    memory=level.name, level=kind, operand=short,
                    read_words=float(sum(words.get(d) for d in reads)),
                    write_words=float(sum(words.get(d) for d in writes)),
                    read_bits=sum(bits(d) for d in reads), write_bits=sum(bits(d) for d in writes),
                    energy_pj=float(cme.mem_energy_breakdown[op][lv])))
                if dram:
                    word_bits.add(level.get_min_bandwidth(mem_op, DataDirection.RD_OUT_TO_LOW) or 0)
                    if short == "o":  # every final output is written to DRAM once, at the precision used there
                        final_bits = float(cme.layer.operand_size_elem[op]
                                           * precision.get(DataDirection.WR_IN_BY_LOW))
        word_bits.discard(0)
        return summarise(records, mac_energy_pj=float(cme.mac_energy), latency_cycles=float(cme.latency_total2),
                         ideal_cycles=float(cme.ideal_cycle), spatial_utilization=float(cme.mac_spatial_utilization),
                         dram_word_bits=float(max(word_bits)) if word_bits else 0.0, dram_o_final_bits=final_bits)
