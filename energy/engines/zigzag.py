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
- The mapping objective (energy or latency) is pinned per table, because the chosen mapping,
  and so the DRAM traffic, depends on it.
- "DRAM" is the outermost memory level of each operand; ZigZag counts its accesses in words of
  that memory's port width (`dram_word_bits`), rounding up per transfer period.
"""

from __future__ import annotations

import hashlib
import math
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

from energy.engines import Engine, Metrics
from energy.layers import LayerGeometry
from sw.errors import UserError

# Bump when the way layers are modelled changes: cached results of older revisions are not reused.
MODEL_REVISION = 2
MAX_PSUM_BITS = 32


def _zigzag_root() -> Path:
    try:
        import zigzag
    except ImportError:
        raise UserError("engine 'zigzag' needs the zigzag-dse package: pip install zigzag-dse six") from None
    return Path(zigzag.__file__).resolve().parent


def shipped_accelerators() -> list[str]:
    """Names of the accelerator definitions ZigZag ships."""
    return sorted(p.stem for p in (_zigzag_root() / "inputs" / "hardware").glob("*.yaml"))


def psum_bits(geometry: LayerGeometry, weight_bits: int, input_bits: int) -> int:
    """Width of an accumulator that cannot overflow, capped at 32 bits."""
    growth = math.ceil(math.log2(geometry.reduction_size)) if geometry.reduction_size > 1 else 0
    return min(MAX_PSUM_BITS, weight_bits + input_bits + growth)


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
        "operand_precision": {"W": weight_bits, "I": input_bits, "O": psum_bits(g, weight_bits, input_bits),
                              "O_final": output_bits},
        "operand_source": {"I": 0},
        "pr_loop_dims": ["IX", "IY"],
        "pr_loop_sizes": [g.in_w, g.in_h],
        "padding": [[g.pad_left, g.pad_right], [g.pad_top, g.pad_bottom]],
    }


class ZigZagEngine(Engine):
    """ZigZag with LOMA temporal mapping search; accelerators by shipped name or YAML file."""

    name = "zigzag"

    def __init__(self, accelerator: str, mapping_objective: str = "energy"):
        super().__init__(accelerator, mapping_objective)
        if mapping_objective not in ("energy", "latency"):
            raise UserError(f"energy.mapping_objective: expected one of energy, latency, got {mapping_objective!r}")
        self._parsed: Any = None  # per-process cache of (accelerator, mapping data)

    # -- identity ---------------------------------------------------------------------------------
    def version(self) -> str:
        return f"zigzag-dse {metadata.version('zigzag-dse')} model r{MODEL_REVISION} map={self.mapping_objective}"

    def _paths(self) -> tuple[Path, Path]:
        """(hardware YAML, mapping YAML) of the accelerator."""
        root = _zigzag_root()
        candidate = Path(self.accelerator)
        if candidate.suffix in (".yaml", ".yml") or candidate.exists():
            if not candidate.is_file():
                raise UserError(f"energy.accelerator: expected an existing ZigZag accelerator YAML file, "
                                f"got {self.accelerator!r} (not found)")
            return candidate, root / "inputs" / "mapping" / "default.yaml"
        hardware = root / "inputs" / "hardware" / f"{self.accelerator}.yaml"
        if not hardware.is_file():
            raise UserError(f"energy.accelerator: expected a ZigZag accelerator ({', '.join(shipped_accelerators())}) "
                            f"or a path to an accelerator YAML file, got {self.accelerator!r}")
        mapping = root / "inputs" / "mapping" / f"{self.accelerator}.yaml"
        return hardware, mapping if mapping.is_file() else root / "inputs" / "mapping" / "default.yaml"

    def accelerator_id(self) -> str:
        hardware, mapping = self._paths()
        digest = hashlib.sha256(hardware.read_bytes() + b"\0" + mapping.read_bytes()).hexdigest()[:16]
        return f"{self.accelerator if not Path(self.accelerator).suffix else hardware.stem}:{digest}"

    # -- set-up -----------------------------------------------------------------------------------
    def _load(self) -> tuple[Any, list[dict[str, Any]]]:
        if self._parsed is None:
            from zigzag.stages.parser.accelerator_parser import AcceleratorParserStage
            from zigzag.stages.parser.workload_parser import WorkloadParserStage

            hardware, mapping = self._paths()
            try:
                accelerator = AcceleratorParserStage.parse_accelerator(str(hardware))
                mapping_data = WorkloadParserStage.parse_mapping_data(str(mapping))
            except Exception as exc:  # ZigZag raises ValueError/KeyError/AssertionError on bad YAML
                raise UserError(f"{hardware}: not a valid ZigZag accelerator definition ({exc})") from None
            self._parsed = (accelerator, mapping_data)
        return self._parsed

    def check(self) -> None:
        from zigzag.hardware.architecture.imc_array import ImcArray

        accelerator, _ = self._load()
        if isinstance(accelerator.operational_array, ImcArray):
            raise UserError(f"energy.accelerator: expected a digital accelerator, got the in-memory-computing "
                            f"accelerator {self.accelerator!r} (not supported by the energy table)")

    def __getstate__(self) -> dict:  # parsed ZigZag objects stay in their process
        return {"accelerator": self.accelerator, "mapping_objective": self.mapping_objective, "_parsed": None}

    # -- evaluation -------------------------------------------------------------------------------
    def search(self, geometry: LayerGeometry, weight_bits: int, input_bits: int, output_bits: int) -> Any:
        """Full ZigZag mapping search for one layer; returns the best cost model evaluation (CME)."""
        from zigzag.mapping.temporal_mapping import TemporalMappingType
        from zigzag.parser.workload_factory import LayerNodeFactory
        from zigzag.stages.evaluation.cost_model_evaluation import CostModelStage
        from zigzag.stages.main import MainStage
        from zigzag.stages.mapping.spatial_mapping_generation import SpatialMappingGeneratorStage
        from zigzag.stages.mapping.temporal_mapping_generator_stage import TemporalMappingGeneratorStage
        from zigzag.stages.results.reduce_stages import MinimalEnergyStage, MinimalLatencyStage
        from zigzag.stages.workload_iterator import WorkloadStage
        from zigzag.workload.dnn_workload import DNNWorkload

        accelerator, mapping_data = self._load()
        reduce = MinimalEnergyStage if self.mapping_objective == "energy" else MinimalLatencyStage
        layer = LayerNodeFactory(layer_dict(geometry, weight_bits, input_bits, output_bits), mapping_data).create()
        with tempfile.TemporaryDirectory(prefix="zigzag-") as dump:
            main = MainStage(
                [WorkloadStage, reduce, SpatialMappingGeneratorStage, reduce, TemporalMappingGeneratorStage,
                 CostModelStage],
                workload=DNNWorkload([layer]), accelerator=accelerator, dump_folder=dump,
                loma_lpf_limit=6, loma_show_progress_bar=False, nb_mappings_generated=3,
                enable_mix_spatial_mapping_generation=False, access_same_data_considered_as_no_access=True,
                temporal_mapping_type=TemporalMappingType("uneven"))
            results = main.run()
        return results[0][0]

    def reevaluate(self, cme: Any, geometry: LayerGeometry, weight_bits: int, input_bits: int,
                   output_bits: int) -> Any:
        """ZigZag's cost model on the mapping of `cme` with other bit widths (no search)."""
        from zigzag.cost_model.cost_model import CostModelEvaluation
        from zigzag.mapping.spatial_mapping_internal import SpatialMappingInternal
        from zigzag.mapping.temporal_mapping import TemporalMapping
        from zigzag.parser.workload_factory import LayerNodeFactory

        accelerator, mapping_data = self._load()
        layer = LayerNodeFactory(layer_dict(geometry, weight_bits, input_bits, output_bits), mapping_data).create()
        return CostModelEvaluation(
            accelerator=cme.accelerator, layer=layer,
            spatial_mapping=SpatialMappingInternal(cme.spatial_mapping.mapping_dict_origin, layer),
            spatial_mapping_int=SpatialMappingInternal(cme.spatial_mapping_int.mapping_dict_origin, layer),
            temporal_mapping=TemporalMapping(cme.temporal_mapping.mapping_dic_origin, layer, cme.temporal_mapping.type),
            access_same_data_considered_as_no_access=True)

    def evaluate(self, geometry: LayerGeometry, weight_bits: int, input_bits: int,
                 output_bits: Sequence[int]) -> dict[int, Metrics]:
        output_bits = sorted(set(int(b) for b in output_bits))
        try:
            best = self.search(geometry, weight_bits, input_bits, output_bits[-1])
            results = {output_bits[-1]: metrics(best)}
            for ob in output_bits[:-1]:
                results[ob] = metrics(self.reevaluate(best, geometry, weight_bits, input_bits, ob))
        except UserError:
            raise
        except Exception as exc:  # ZigZag reports unmappable layers with asserts and ValueErrors
            raise UserError(f"zigzag cannot map {geometry.describe()} at W{weight_bits}/I{input_bits} bits on "
                            f"accelerator {self.accelerator!r}: {type(exc).__name__}: {exc}") from None
        return results


def metrics(cme: Any) -> Metrics:
    """Table metrics of one ZigZag cost model evaluation."""
    from zigzag.datatypes import Constants
    from zigzag.hardware.architecture.memory_port import DataDirection
    from zigzag.mapping.data_movement import DataMoveAttr

    operands = {"w": Constants.LAYER_OP_W, "i": Constants.LAYER_OP_I, "o": Constants.OUTPUT_LAYER_OP}
    # At the outermost level, data read out goes down into the chip; data written comes up from it.
    directions = {"read": DataDirection.RD_OUT_TO_LOW, "write": DataDirection.WR_IN_BY_LOW}
    out: Metrics = {}
    dram_energy = 0.0
    word_bits = set()
    for short, op in operands.items():
        top = cme.mapping.mem_level[op] - 1
        move = cme.mapping.unit_mem_data_movement[op][top]
        amount = move.get_attribute(DataMoveAttr.DATA_TRANS_AMOUNT_PER_PERIOD)
        precision = move.get_attribute(DataMoveAttr.DATA_PRECISION)
        periods = move.get_attribute(DataMoveAttr.DATA_TRANS_PERIOD_COUNT)
        units = cme.mapping.spatial_mapping.unit_count[op][top + 1]
        mem_op = cme.memory_operand_links.layer_to_mem_op(op)
        level = cme.accelerator.get_memory_level(mem_op, top)
        word_bits.add(level.get_min_bandwidth(mem_op, DataDirection.RD_OUT_TO_LOW) or 0)
        for name, direction in directions.items():
            out[f"dram_{short}_{name}_bits"] = float(amount.get(direction) * precision.get(direction)
                                                     * periods.get(direction) * units)
            out[f"dram_{short}_{name}_words"] = float(cme.memory_word_access[op][top].get(direction))
        out[f"dram_{short}_energy_pj"] = float(cme.mem_energy_breakdown[op][top])
        dram_energy += out[f"dram_{short}_energy_pj"]
    word_bits.discard(0)
    out["dram_word_bits"] = float(max(word_bits)) if word_bits else 0.0
    out["energy_total_pj"] = float(cme.energy_total)
    out["dram_energy_pj"] = dram_energy
    out["mac_energy_pj"] = float(cme.mac_energy)
    out["latency_cycles"] = float(cme.latency_total2)
    return out
