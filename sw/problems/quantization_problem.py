"""`quantization_problem`: per-layer bit widths, maximise accuracy, minimise weighted bits.

Decision vector: one integer per quantized layer (`explore: tied`: weights and inputs share
it) or two (`explore: separate`: weight bits, then input bits); with
`calibration.search_methods`, then one more per layer, `<layer>.clipping`: the index of its
input clipping method in that list. Objectives (minimised by
pymoo): `-accuracy` of the first metric and a cost, named after the workload's
`search.weighting` (e.g. `params_weighted`). Constraints: `threshold_k - metric_k <= 0`
for every metric with a minimum accuracy.

Other problems reuse `QuantizationProblem` with another cost function (see
`energy_aware_quant_problem`) or another decision vector (`var_names`, `xl`, `xu`: their
`update_params_function` gives the vector its meaning).
"""

from __future__ import annotations

import time
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from pymoo.core.problem import ElementwiseProblem
from pymoo.core.sampling import Sampling
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.operators.sampling.rnd import IntegerRandomSampling

from sw.model.calibration import ensure_calibrated
from sw.model.reconstruction import ensure_rounding
from sw.model.quantized_model import QuantizedModel, QuantSettings
from sw.search.allocation import seed_vectors
from sw.search.allocator import keep_freed_memory
from sw.search.vector import clipping_names, default_variable_names, split, variable_names
from sw.study.study import Study

CostFunction = Callable[[Mapping[str, tuple[int, int]]], float]


class QuantizationProblem(ElementwiseProblem):
    """Elementwise pymoo problem over integer decision vectors (bit widths by default).

    A candidate is applied with the study's plugin (`update_params_function`); the cost is a
    function of the resulting bits per layer. Picklable for process/dask runners: only the
    workload path and thresholds travel; a worker rebuilds the calibrated model once from the
    workload (and its calibration file).
    """

    def __init__(self, study, qmodel, cost: CostFunction, cost_name: str, thresholds: Sequence[float],
                 elementwise_runner=None, *, var_names: Sequence[str] | None = None,
                 xl: Sequence[int] | None = None, xu: Sequence[int] | None = None):
        w = study.workload
        self.study, self.qmodel, self.cost, self.cost_name = study, qmodel, cost, cost_name
        self.thresholds = [float(t) for t in thresholds]
        self.metric_names = list(w.accuracy.metrics)
        self.mode = w.quantization.explore
        if var_names is None:
            bit_names = variable_names(qmodel.layer_names, self.mode)
            var_names = bit_names + clipping_names(qmodel.layer_names, w)
            n_bits, n_clip = len(bit_names), len(var_names) - len(bit_names)
            methods = w.calibration.search_methods or []
            xl = [w.search.bits.lower] * n_bits + [0] * n_clip
            xu = [w.search.bits.upper] * n_bits + [len(methods) - 1] * n_clip
            default = methods.index(w.calibration.method) if w.calibration.method in methods else 0
            self.uniform_tail = [default] * n_clip  # what uniform rows of the first population use
        self.var_names = list(var_names)
        n_var = len(self.var_names)
        kwargs = {} if elementwise_runner is None else {"elementwise_runner": elementwise_runner}
        super().__init__(n_var=n_var, n_obj=2, n_ieq_constr=len(self.thresholds),
                         xl=np.full(n_var, w.search.bits.lower) if xl is None else np.asarray(xl),
                         xu=np.full(n_var, w.search.bits.upper) if xu is None else np.asarray(xu),
                         vtype=int, **kwargs)

    @property
    def objective_names(self) -> list[str]:
        return [f"-{self.metric_names[0]}", self.cost_name]

    def evaluate_one(self, x: Sequence[int]) -> dict:
        """Metrics, objectives and constraints of one candidate."""
        start = time.perf_counter()
        self.study.plugin.update_params_function(self.qmodel, x, self.study)
        metrics = self.study.evaluate(self.qmodel, "exploration")
        cost = float(self.cost(self.qmodel.layer_bits()))
        return {
            "F": np.array([-metrics[self.metric_names[0]], cost]),
            "G": np.array([t - metrics[m] for t, m in zip(self.thresholds, self.metric_names)]),
            "metrics": np.array([metrics[m] for m in self.metric_names]),
            "wall_time": time.perf_counter() - start,
        }

    def _evaluate(self, x, out, *args, **kwargs):
        out.update(self.evaluate_one(x))

    def __getstate__(self):
        return {"workload_path": str(self.study.workload.path), "thresholds": self.thresholds}

    def __setstate__(self, state):
        self.__dict__.update(worker_problem(state["workload_path"], tuple(state["thresholds"])).__dict__)


_WORKER_PROBLEMS: dict = {}


def worker_problem(workload_path: str, thresholds: tuple[float, ...]) -> QuantizationProblem:
    """Rebuild (once per process) the problem a parent process sent as a path.

    What an unpickled problem becomes in a worker process (`__setstate__`); `sw.bench` calls it
    to warm a worker before timing it."""
    key = (workload_path, thresholds)
    if key not in _WORKER_PROBLEMS:
        torch.set_num_threads(1)
        keep_freed_memory()
        study = Study(workload_path)
        _WORKER_PROBLEMS[key] = study.plugin.prepare_exploration_function(study.quantized_model, study, list(thresholds))
    return _WORKER_PROBLEMS[key]


class UniformFirstSampling(Sampling):
    """Initial population: every uniform configuration (all-b bits, high to low), then `seeds` (a
    function of the problem and the number of places left, e.g. `IlpSeeds`), then random."""

    def __init__(self, seeds: Callable[[ElementwiseProblem, int], Sequence[Sequence[int]]] | None = None):
        super().__init__()
        self.seeds = seeds

    def _do(self, problem, n_samples, **kwargs):
        lower, upper = int(problem.xl[0]), int(problem.xu[0])
        tail = list(getattr(problem, "uniform_tail", []))  # non-bit variables (clipping methods) at their default
        uniform = [np.array([b] * (problem.n_var - len(tail)) + tail) for b in range(upper, lower - 1, -1)]
        known = {tuple(x) for x in uniform}
        seeds = self.seeds(problem, n_samples - len(uniform)) if self.seeds and n_samples > len(uniform) else []
        first = (uniform + [np.asarray(x, dtype=int) for x in seeds if tuple(x) not in known])[:n_samples]
        rest = IntegerRandomSampling()._do(problem, n_samples - len(first), **kwargs) if n_samples > len(first) else []
        return np.vstack([*first, *rest]).astype(int) if len(rest) else np.vstack(first).astype(int)


class IlpSeeds:
    """`search.init: ilp`: the ILP sweep's allocations around the predicted constraint boundary and
    their neighbours (`sw.search.allocation.seed_vectors`); the boundary is predicted from the fp32
    accuracy `explore` stored and the problem's first threshold."""

    def __init__(self, study: Study):
        self.study = study

    def __call__(self, problem: ElementwiseProblem, count: int) -> list[list[int]]:
        study, search = self.study, self.study.workload.search
        with study.open_db() as db:
            fp32 = db.baseline(study.config_hash, "fp32")
            thresholds = list(getattr(problem, "thresholds", []))
            metric = study.workload.accuracy.metrics[0]
            allowed = fp32[metric] - thresholds[0] if fp32 and thresholds and metric in fp32 else None
            return seed_vectors(study, db, count, search.init_sensitivity, allowed_drop=allowed)


# -- the plugin functions --------------------------------------------------------------------------
variable_names_function = default_variable_names


def init_function(model, study):
    """Wrap the fp32 model, calibrate it (or load the calibration file), learn the weight rounding
    where the workload asks for it (or load it), quantize weights once."""
    qmodel = QuantizedModel(model, study.workload.model.input_shape, QuantSettings.from_workload(study.workload))
    ensure_calibrated(qmodel, study)
    w = study.workload
    ensure_rounding(qmodel, study, {*range(w.search.bits.lower, w.search.bits.upper + 1), w.quantization.baseline_bits})
    qmodel.set_uniform_bits(w.quantization.baseline_bits)
    qmodel.freeze_weights()
    return qmodel


def update_params_function(qmodel, x, study) -> None:
    qmodel.set_layer_bits(*split(x, qmodel.layer_names, study.workload))


def prepare_exploration_function(qmodel, study, thresholds, elementwise_runner=None) -> QuantizationProblem:
    return QuantizationProblem(study, qmodel, study.weighted_bits, study.workload.search.weighting, thresholds,
                               elementwise_runner)


def sampling_method(study) -> Sampling:
    """Uniform bit widths first, then (`search.init: ilp`) ILP allocations and their neighbours, then random."""
    return UniformFirstSampling(IlpSeeds(study) if study.workload.search.init == "ilp" else None)


def repair_method(study):
    return RoundingRepair()

