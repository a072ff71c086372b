"""An exact, faster replacement for ZigZag's temporal-mapping search under the energy objective.

ZigZag's stock pipeline evaluates every temporal mapping LOMA generates with the full cost model
(two `Mapping` objects, energy and latency), then keeps the one with the least energy, ties
broken by latency (`MinimalEnergyStage`). Here each candidate's energy is computed first; its
latency (and the integer-unrolling `Mapping` only the latency needs) only when the candidate can
still be chosen, i.e. its energy is not above the best found so far for this layer -- over all
spatial mappings, since the outer reduction picks the least energy among them with the same rule.
The chosen mapping, and every number of it, are the stock pipeline's (checked by
tests/energy/test_zigzag_search.py); typically 2x fewer cost-model seconds.
"""

from __future__ import annotations

from typing import Any

from zigzag.cost_model.cost_model import CostModelEvaluation
from zigzag.mapping.mapping import Mapping
from zigzag.stages.mapping.temporal_mapping_generator_stage import TemporalMappingGeneratorStage
from zigzag.stages.stage import Stage


class SearchBound:
    """The least energy of any completed candidate of one layer search (shared by its spatial mappings)."""

    def __init__(self) -> None:
        self.energy = float("inf")


class EnergyFirstCME(CostModelEvaluation):
    """ZigZag's cost model evaluation in two steps: energy on construction, the rest by `complete()`.

    The constructor sets the same attributes as `CostModelEvaluation.__init__` but defers what the
    energy does not use: the memory utilisation, the second (integer-unrolling) `Mapping` and
    `calc_latency`.
    """

    def __init__(self, *, accelerator: Any, layer: Any, spatial_mapping: Any, spatial_mapping_int: Any,
                 temporal_mapping: Any, access_same_data_considered_as_no_access: bool = True,
                 cycles_per_op: float = 1.0):
        self.accelerator = accelerator
        self.layer = layer
        self.spatial_mapping = spatial_mapping
        self.spatial_mapping_int = spatial_mapping_int
        self.temporal_mapping = temporal_mapping
        self.access_same_data_considered_as_no_access = access_same_data_considered_as_no_access
        self.mem_level_list = accelerator.memory_hierarchy.mem_level_list
        self.mem_hierarchy_dict = accelerator.mem_hierarchy_dict
        self.mem_size_dict = accelerator.mem_size_dict
        self.mem_sharing_tuple = tuple(tuple(i.items()) for i in accelerator.mem_sharing_list)
        self.memory_operand_links = layer.memory_operand_links
        self.cumulative_layer_ids: list[int] = []
        self.spatial_mapping_dict_int = spatial_mapping_int.mapping_dict_origin
        self.mapping = Mapping(accelerator, spatial_mapping, temporal_mapping, layer,
                               access_same_data_considered_as_no_access)
        self.active_mem_level = self.mapping.mem_level
        self.cycles_per_op = cycles_per_op
        self.completed = False
        self.calc_memory_word_access()
        self.calc_energy()

    def complete(self) -> "EnergyFirstCME":
        if not self.completed:
            self.calc_memory_utilization()  # reported, not used by the energy
            self.mapping_int = Mapping(self.accelerator, self.spatial_mapping_dict_int, self.temporal_mapping,
                                       self.layer, self.access_same_data_considered_as_no_access)
            self.calc_latency()
            self.completed = True
        return self


class EnergyBoundedTemporalSearch(Stage):
    """Leaf stage replacing [MinimalEnergyStage, TemporalMappingGeneratorStage, CostModelStage]."""

    def __init__(self, list_of_callables, *, accelerator: Any, layer: Any, spatial_mapping: Any,
                 spatial_mapping_int: Any, search_bound: SearchBound,
                 access_same_data_considered_as_no_access: bool = True, **kwargs: Any):
        super().__init__(list_of_callables, **kwargs)
        self.accelerator, self.layer = accelerator, layer
        self.spatial_mapping, self.spatial_mapping_int = spatial_mapping, spatial_mapping_int
        self.bound = search_bound
        self.same_data = access_same_data_considered_as_no_access

    def is_leaf(self) -> bool:
        return True

    def run(self):
        generator = TemporalMappingGeneratorStage(
            [None], accelerator=self.accelerator, layer=self.layer, spatial_mapping=self.spatial_mapping,
            **self.kwargs)
        best: EnergyFirstCME | None = None
        first: EnergyFirstCME | None = None
        for temporal_mapping in generator.generate_temporal_mappings():
            cme = EnergyFirstCME(accelerator=self.accelerator, layer=self.layer,
                                 spatial_mapping=self.spatial_mapping, spatial_mapping_int=self.spatial_mapping_int,
                                 temporal_mapping=temporal_mapping, access_same_data_considered_as_no_access=self.same_data)
            first = first or cme
            if cme.energy_total > self.bound.energy:
                continue  # more energy than a completed candidate: never chosen, here or by the outer reduction
            cme.complete()
            if (best is None or cme.energy_total < best.energy_total
                    or (cme.energy_total == best.energy_total and cme.latency_total2 < best.latency_total2)):
                best = cme
                self.bound.energy = min(self.bound.energy, cme.energy_total)
        if best is None:
            # Every candidate of this spatial mapping lost to another spatial mapping's best: yield one
            # (complete, and above the bound) so the outer reduction keeps the better one.
            if first is None:
                return
            best = first.complete()
        yield best, None
