"""A problem plugin with its own decision vector, for the tests: one global bit width, then one
offset in [-2, 2] per layer (a layer gets global + offset bits, clipped to the search's bounds).

Named in a workload as `global_offset_problem:plugin` with `trust_custom_code: true`.
"""

from __future__ import annotations

import sys

from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.operators.sampling.rnd import IntegerRandomSampling

from sw.problems import quantization_problem as base

OFFSET = 2


def variable_names_function(study) -> list[str]:
    return ["global_bits"] + [f"{name}.offset" for name in study.quantized_model.layer_names]


def layer_bits(x, layer_names, lower: int, upper: int) -> dict[str, tuple[int, int]]:
    """The vector's meaning: layer i gets x[0] + x[i + 1] bits (weights and inputs), clipped."""
    return {name: (b, b) for name, offset in zip(layer_names, x[1:], strict=True)
            for b in [min(upper, max(lower, int(x[0]) + int(offset)))]}


def update_params_function(qmodel, x, study) -> None:
    bits = study.workload.search.bits
    qmodel.set_layer_bits(layer_bits(x, qmodel.layer_names, bits.lower, bits.upper))


def prepare_exploration_function(qmodel, study, thresholds, elementwise_runner=None):
    bits, n = study.workload.search.bits, len(qmodel.layer_names)
    return base.QuantizationProblem(study, qmodel, study.weighted_bits, study.workload.search.weighting, thresholds,
                                    elementwise_runner, var_names=variable_names_function(study),
                                    xl=[bits.lower] + [-OFFSET] * n, xu=[bits.upper] + [OFFSET] * n)


def sampling_method(study):
    return IntegerRandomSampling()


def repair_method(study):
    return RoundingRepair()


init_function = base.init_function
plugin = sys.modules[__name__]
