"""A `Study`: one workload with everything derived from it, built lazily and cached.

It is the single entry point the commands (explore, evaluate, weather-sweep, cosim) use to get
the fp32 model, the calibrated quantized model, the data of each phase, the results database
and the Pareto points of an exploration.

Decision vectors mean whatever the workload's problem plugin says: every candidate is applied
to the model through the plugin's `update_params_function` (`apply`), and its bits per layer
are read back from the model (`decode`), so a plugin with its own decision vector works in
every command. `select_point` is the one way to pick a Pareto point ("best" is chosen on
held-out data, see `sw.search.heldout`).
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from sw.config.workload import WORKLOAD, Workload, load_workload
from sw.core.device import resolve_device
from sw.core.errors import DataError, UserError, WorkloadError
from sw.data.corrupted_dataset import cache_dir_for
from sw.data.datasets import build_loader
from sw.evaluation.evaluate import Batches, BatchCache, evaluate
from sw.evaluation.metrics import at_chance, chance_accuracy
from sw.model.quantized_model import QuantizedModel
from sw.model.reconstruction import ensure_rounding
from sw.model.weighting import WEIGHTINGS
from sw.nets.models import build_model
from sw.search.heldout import PHASE, best_index, reevaluate
from sw.search.pareto import front_rows, pareto_front
from sw.search.plugin import PROBLEMS, check_plugin, variable_names_of
from sw.search.results import ILP, Individual, ResultsDB, Run


class Study:
    """Lazily built, cached artefacts of one workload."""

    def __init__(self, workload: Workload | str | Path | None = None, *, progress: bool = False,
                 shared_with: "Study | None" = None):
        """`shared_with`: a study of the same model and data whose fp32 model and decoded
        batches this one reuses (see `variant`)."""
        self.workload = workload if isinstance(workload, Workload) else load_workload(workload)
        self.progress = progress
        self._batches = (BatchCache(self.workload.loading.memory_mb << 20) if shared_with is None
                         else shared_with._batches)
        self._qmodel: QuantizedModel | None = None
        if shared_with is not None:
            self.__dict__["fp32_model"] = shared_with.fp32_model  # fills the cached_property

    # -- identity -------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.workload.name

    @property
    def results_dir(self) -> Path:
        return self.workload.results_dir

    @cached_property
    def config_hash(self) -> str:
        """Hash of everything that changes results (not where they go or how they are run).

        A weights file counts by its contents, not its name: new weights under the same name
        are a new configuration, the same weights moved elsewhere are not.
        """
        return _hash(self._hashed_config())

    @cached_property
    def model_hash(self) -> str:
        """`config_hash` without the search section: what a per-layer measurement of the quantized
        model depends on (the sensitivity table, `sw.search.sensitivity_store`)."""
        config = self._hashed_config()
        config.pop("search", None)
        return _hash(config)

    def _hashed_config(self) -> dict:
        config = self.workload.config.to_dict()
        for key in ("results", "device", "loading"):  # where results go and where / how they are computed
            config.pop(key, None)
        config.get("search", {}).pop("runner", None)
        if config.get("search", {}).get("init", "random") == "random":  # hashes of runs before search.init stay
            for key in ("init", "init_sensitivity"):
                config["search"].pop(key, None)
        config.get("accuracy", {}).pop("chance_level", None)
        calibration = config.get("calibration", {})
        if calibration.get("rounding", "nearest") == "nearest":  # its settings change nothing then
            for key in [k for k in calibration if k.startswith("rounding")]:
                calibration.pop(key)
        model = config.get("model", {})
        if model.get("weights"):
            model["weights"] = {"sha256": _file_sha256(Path(model["weights"]))}
        return config

    @cached_property
    def plugin(self) -> Any:
        w = self.workload
        return check_plugin(PROBLEMS.get(w.problem, file=w.path, key="problem", trust_custom_code=w.trust_custom_code),
                            w.problem)

    # -- models ---------------------------------------------------------------------------------
    @cached_property
    def device(self) -> torch.device:
        """Where this study's models and batches live (the workload's `device`; a one-line error
        when it names a CUDA device that is not there)."""
        return resolve_device(self.workload.device, where=self.workload.path)

    @cached_property
    def fp32_model(self) -> nn.Module:
        """The fp32 model in eval mode, on `device` (trained there first if it has no weights yet)."""
        return build_model(self.workload, progress=self.progress).to(self.device)

    @property
    def quantized_model(self) -> QuantizedModel:
        """The calibrated quantized model (through the problem plugin's `init_function`)."""
        if self._qmodel is None:
            self._qmodel = self.plugin.init_function(self.fp32_model, self)
        return self._qmodel

    def variant(self, changes: Mapping[str, Mapping[str, Any]]) -> "Study":
        """This study with some workload sections changed (validated), sharing its fp32 model and
        data (so `changes` must leave `model` and `datasets` alone), e.g. other calibration settings."""
        if {"model", "datasets"} & set(changes):
            raise ValueError("a variant shares the model and the data: change other sections")
        raw = self.workload.config.to_dict()
        for section, values in changes.items():
            raw[section] = {**(raw.get(section) or {}), **values}
        return Study(Workload(WORKLOAD.validate(raw, self.workload.path, ""), self.workload.path),
                     progress=self.progress, shared_with=self)

    # -- data -------------------------------------------------------------------------------------
    def batches(self, phase: str, corruption: Mapping[str, Any] | None = None) -> Batches:
        """The dataset of a phase (optionally corrupted), decoded once and kept on `device` (uint8
        where the images are 8-bit) within `loading.memory_mb` (`sw.evaluation.evaluate.BatchCache`)."""
        key = (phase, json.dumps(dict(corruption), sort_keys=True) if corruption else None)
        cached = self._batches.get(key)
        if cached is None:
            spec = self.workload.dataset(phase)
            if corruption is not None:
                spec = spec.__class__({**spec, "corruption": spec.__class__(corruption)})
            loading = self.workload.loading
            loader = build_loader(spec, cache_dir=cache_dir_for(self.results_dir), workers=loading.workers)
            cached = Batches.from_loader(loader, progress=self.progress, desc=f"loading {phase}", device=self.device,
                                         max_bytes=self._batches.max_bytes,
                                         what=f"{self.workload.path}: datasets.{phase}")
            self._batches.put(key, cached)
        return cached

    def evaluate(self, model: nn.Module, phase: str = "exploration", corruption: Mapping[str, Any] | None = None,
                 ) -> dict[str, float]:
        return evaluate(model, self.batches(phase, corruption), self.workload.accuracy.metrics)

    def evaluate_bits(self, layer_bits: Mapping[str, tuple[int, int]], phase: str = "exploration",
                      corruption: Mapping[str, Any] | None = None) -> dict[str, float]:
        """Metrics of the quantized model at one bit configuration."""
        qmodel = self.quantized_model
        ensure_rounding(qmodel, self, {wb for wb, _ in layer_bits.values()})  # bits outside the search's range
        qmodel.set_layer_bits(layer_bits)
        return self.evaluate(qmodel, phase, corruption)

    def evaluate_point(self, x: Sequence[int], phase: str = "exploration",
                       corruption: Mapping[str, Any] | None = None) -> dict[str, float]:
        """Metrics of the quantized model at one decision vector (applied through the plugin)."""
        return self.evaluate(self.apply(x), phase, corruption)

    def check_above_chance(self, fp32: Mapping[str, float], phase: str = "baseline") -> str | None:
        """A warning when the fp32 model scores no better than guessing on `phase` (None if it does);
        with `accuracy.chance_level: error` a `WorkloadError` instead."""
        w = self.workload
        samples = self.batches(phase).num_samples
        for metric in w.accuracy.metrics:
            chance = chance_accuracy(metric, w.model.num_classes)
            if chance is None or not at_chance(fp32[metric], chance, samples):
                continue
            problem = (f"the fp32 model's {metric} on the {phase} data is {fp32[metric]:.4f}, no better than chance "
                       f"({chance:.4f} for {w.model.num_classes} classes, {samples} images): check model.weights, "
                       f"model.num_classes and the datasets")
            if w.accuracy.chance_level == "error":
                raise WorkloadError(w.path, "accuracy.chance_level", f"an fp32 model above chance ({problem})",
                                    show_got=False)
            return f"{w.path}: {problem} (accuracy.chance_level: error stops here)"
        return None

    # -- bit configurations -------------------------------------------------------------------------
    def uniform_bits(self, bits: int) -> dict[str, tuple[int, int]]:
        return {name: (bits, bits) for name in self.quantized_model.layer_names}

    def weighted_bits(self, layer_bits: Mapping[str, tuple[int, int]]) -> float:
        weighting = WEIGHTINGS.get(self.workload.search.weighting)
        return float(weighting(self.quantized_model.layer_sizes, layer_bits))

    @cached_property
    def variable_names(self) -> list[str]:
        """Names of the decision vector's entries, from the problem plugin."""
        return variable_names_of(self.plugin, self)

    def apply(self, x: Sequence[int]) -> QuantizedModel:
        """The quantized model set to decision vector `x` by the problem plugin."""
        qmodel = self.quantized_model
        self.plugin.update_params_function(qmodel, [int(v) for v in x], self)
        return qmodel

    def decode(self, x: Sequence[int]) -> dict[str, tuple[int, int]]:
        """(weight bits, input bits) per layer of decision vector `x`, as the plugin sets them."""
        return dict(self.apply(x).layer_bits())

    def point_vector(self, row: Mapping[str, Any]) -> list[int]:
        """The decision vector of a front row (front.csv / front.json / `select_point`)."""
        return [int(row[name]) for name in self.variable_names]

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
        if not self.db_path.exists():
            raise DataError(f"{self.db_path}: no results database; run `python -m sw explore {self.workload.path}` first")
        with self.open_db() as db:
            run = db.run(run_id) if run_id is not None else self.latest_run(db)
            front = pareto_front(db.individuals(run.id))
        if run.var_names != self.variable_names:
            raise DataError(f"{self.db_path}: run {run.id} searched other decision variables than {self.workload.path} "
                            f"defines ({len(run.var_names)} vs {len(self.variable_names)}); run "
                            f"`python -m sw explore {self.workload.path}` again")
        return run, front

    def ilp_run_id(self) -> int:
        """The latest ILP run of this configuration (`python -m sw allocate`)."""
        with self.open_db() as db:
            run = db.latest_run(self.config_hash, method=ILP)
        if run is None:
            raise DataError(f"{self.db_path}: no ILP allocation of this configuration yet; run "
                            f"`python -m sw allocate {self.workload.path} --sweep` first")
        return run.id

    def pareto_bits(self, run_id: int | None = None) -> list[dict[str, tuple[int, int]]]:
        run, front = self.pareto_points(run_id)
        return [self.decode(ind.x) for ind in front]

    def front(self, run_id: int | None = None) -> tuple[Run, list[dict]]:
        """The Pareto front rows of a run with their held-out metrics (evaluating, durably, any missing)."""
        run, front = self.pareto_points(run_id)
        with self.open_db() as db:
            heldout = reevaluate(self, db, front)
        return run, front_rows(run, front, heldout)

    def select_point(self, point: str | int, run_id: int | None = None) -> tuple[dict, dict[str, tuple[int, int]]]:
        """(front row, bits per layer) of a Pareto point: "best" (the cheapest point that meets the
        constraint on held-out data) or a row index of the front; "ilp:best" / "ilp:N" the same of the
        latest ILP run's front (`python -m sw allocate`, `sw.search.allocation`)."""
        if isinstance(point, str) and point.startswith(ILP):
            point, run_id = point.removeprefix(ILP), self.ilp_run_id()
        if point != "best":
            try:
                point = int(point)
            except (TypeError, ValueError):
                raise UserError(f"--point: expected best, N, ilp:best or ilp:N (N a Pareto point index), "
                                f"got {point!r}") from None
        run, rows = self.front(run_id)
        if not rows:
            raise DataError(f"{self.db_path}: exploration run {run.id} has no feasible point")
        if point == "best":
            index = best_index(rows)
            if index is None:
                raise DataError(f"{self.db_path}: no point of run {run.id}'s Pareto front meets the constraint on "
                                f"held-out ({PHASE}) data (see front.csv, column heldout_feasible); pick one with "
                                f"--point N or relax search.minimum_accuracy")
        elif not 0 <= point < len(rows):
            raise UserError(f"--point: expected 0..{len(rows) - 1} (the Pareto front has {len(rows)} points), got {point}")
        else:
            index = point
        row = rows[index]
        return row, self.decode(self.point_vector(row))

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


def _hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the weights file ({exc})") from None
    return digest.hexdigest()
