"""A `Study`: one workload with everything derived from it, built lazily and cached.

It is the single entry point the commands (explore, evaluate, weather-sweep, cosim) use to get
the fp32 model, the calibrated quantized model, the data of each phase, the results database
and the Pareto points of an exploration.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping, Sequence

from torch import nn

from sw.datasets import build_loader
from sw.errors import DataError, WorkloadError
from sw.evaluation import Batches, evaluate
from sw.problems import PROBLEMS, check_plugin
from sw.quantized_model import QuantizedModel
from sw.results import Individual, ResultsDB, Run
from sw.workload import Workload, load_workload
from sw.weighting import WEIGHTINGS


class Study:
    """Lazily built, cached artefacts of one workload."""

    def __init__(self, workload: Workload | str | Path | None = None, *, progress: bool = False):
        self.workload = workload if isinstance(workload, Workload) else load_workload(workload)
        self.progress = progress
        self._batches: dict[Any, Batches] = {}
        self._qmodel: QuantizedModel | None = None

    # -- identity -------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.workload.name

    @property
    def results_dir(self) -> Path:
        return self.workload.results_dir

    @cached_property
    def config_hash(self) -> str:
        """Hash of everything that changes results (not where they go or how they are run)."""
        config = self.workload.config.to_dict()
        config.pop("results", None)
        config.get("search", {}).pop("runner", None)
        return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]

    @cached_property
    def plugin(self) -> Any:
        w = self.workload
        return check_plugin(PROBLEMS.get(w.problem, file=w.path, key="problem", trust_custom_code=w.trust_custom_code),
                            w.problem)

    # -- models ---------------------------------------------------------------------------------
    @cached_property
    def fp32_model(self) -> nn.Module:
        from sw.models import build_model

        return build_model(self.workload, progress=self.progress)

    @property
    def quantized_model(self) -> QuantizedModel:
        """The calibrated quantized model (through the problem plugin's `init_function`)."""
        if self._qmodel is None:
            self._qmodel = self.plugin.init_function(self.fp32_model, self)
        return self._qmodel

    # -- data -------------------------------------------------------------------------------------
    def batches(self, phase: str, corruption: Mapping[str, Any] | None = None) -> Batches:
        """The dataset of a phase, decoded once and kept in memory (optionally corrupted)."""
        key = (phase, json.dumps(dict(corruption), sort_keys=True) if corruption else None)
        if key not in self._batches:
            spec = self.workload.dataset(phase)
            if corruption is not None:
                spec = spec.__class__({**spec, "corruption": spec.__class__(corruption)})
            from sw.corrupted_dataset import cache_dir_for

            loader = build_loader(spec, cache_dir=cache_dir_for(self.results_dir))
            self._batches[key] = Batches.from_loader(loader, progress=self.progress, desc=f"loading {phase}")
        return self._batches[key]

    def evaluate(self, model: nn.Module, phase: str = "exploration", corruption: Mapping[str, Any] | None = None,
                 ) -> dict[str, float]:
        return evaluate(model, self.batches(phase, corruption), self.workload.accuracy.metrics)

    def evaluate_bits(self, layer_bits: Mapping[str, tuple[int, int]], phase: str = "exploration",
                      corruption: Mapping[str, Any] | None = None) -> dict[str, float]:
        """Metrics of the quantized model at one bit configuration."""
        qmodel = self.quantized_model
        qmodel.set_layer_bits(layer_bits)
        return self.evaluate(qmodel, phase, corruption)

    # -- bit configurations -------------------------------------------------------------------------
    def uniform_bits(self, bits: int) -> dict[str, tuple[int, int]]:
        return {name: (bits, bits) for name in self.quantized_model.layer_names}

    def weighted_bits(self, layer_bits: Mapping[str, tuple[int, int]]) -> float:
        weighting = WEIGHTINGS.get(self.workload.search.weighting)
        return float(weighting(self.quantized_model.layer_sizes, layer_bits))

    def decode(self, x: Sequence[int]) -> dict[str, tuple[int, int]]:
        from sw.problems.quantization_problem import decode

        return decode(x, self.quantized_model.layer_names, self.workload.quantization.explore)

    # -- results -----------------------------------------------------------------------------------
    @property
    def db_path(self) -> Path:
        return self.results_dir / "results.sqlite"

    def open_db(self) -> ResultsDB:
        return ResultsDB(self.db_path)

    def latest_run(self, db: ResultsDB) -> Run:
        run = db.latest_run(self.config_hash) or db.latest_run()
        if run is None:
            raise DataError(f"{self.db_path}: no exploration run yet; run `python -m sw explore {self.workload.path}` first")
        return run

    def pareto_points(self, run_id: int | None = None) -> tuple[Run, list[Individual]]:
        """The Pareto front of a run (the latest run of this configuration by default)."""
        from sw.pareto import pareto_front

        if not self.db_path.exists():
            raise DataError(f"{self.db_path}: no results database; run `python -m sw explore {self.workload.path}` first")
        with self.open_db() as db:
            run = db.run(run_id) if run_id is not None else self.latest_run(db)
            return run, pareto_front(db.individuals(run.id))

    def pareto_bits(self, run_id: int | None = None) -> list[dict[str, tuple[int, int]]]:
        run, front = self.pareto_points(run_id)
        return [self.decode(ind.x) for ind in front]

    # -- the accuracy constraint ------------------------------------------------------------------
    def thresholds(self, fp32: Mapping[str, float]) -> list[float]:
        """Minimum accuracy per metric: absolute, per-metric list, or relative to the fp32 baseline."""
        w = self.workload
        metrics = w.accuracy.metrics
        minimum = w.search.minimum_accuracy
        if isinstance(minimum, dict):
            return [fp32[m] * (1.0 - minimum["relative_drop"]) for m in metrics]
        if isinstance(minimum, list):
            if len(minimum) > len(metrics):
                raise WorkloadError(w.path, "search.minimum_accuracy",
                                    f"at most one value per metric ({len(metrics)}: {', '.join(metrics)})", minimum)
            return list(minimum)
        return [float(minimum)]
