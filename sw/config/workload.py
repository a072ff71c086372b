"""The workload: one YAML file that describes a whole study, validated against one schema.

`load_workload(path)` returns a `Workload` whose sections are `Config` objects with every
default filled in. Relative paths in a workload are relative to the working directory.
`python -m sw schema` prints every key with its type and default.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

import yaml

from sw.core.device import DEVICES, valid_device_name
from sw.core.errors import WorkloadError
from sw.core.limits import CALIBRATION_METHODS, MAX_BITS, MAX_SEED, ROUNDINGS
from sw.core.schema import AnyOf, Config, ListOf, MapOf, PathSpec, Scalar, Section
from sw.data import corruptions  # registers the conditions
from sw.data.datasets import DATASETS
from sw.evaluation.metrics import METRICS
from sw.model.weighting import WEIGHTINGS
from sw.nets.models import MODELS, is_torchvision_model
from sw.search.plugin import PROBLEMS

PHASES = ("calibration", "exploration", "baseline", "retraining", "reevaluation")
DEFAULT_WORKLOAD = "digits_cnn.yaml"


def seed(default: int) -> Scalar:
    """A random seed: every library the project seeds accepts 0 .. 2^32 - 1."""
    return Scalar(int, default=default, min=0, max=MAX_SEED)


def _check_corruption(cfg: Config, file: Any, key: str) -> None:
    if cfg.condition not in corruptions.CONDITIONS:
        raise WorkloadError(file, f"{key}.condition",
                            f"one of {', '.join(sorted(corruptions.CONDITIONS))}", cfg.condition)


CORRUPTION = Section({
    "condition": Scalar(str, doc="weather/corruption name, e.g. fog, snow, rain"),
    "severity": Scalar(int, min=1, max=5),
    "seed": seed(0),
}, default=None, nullable=True, check=_check_corruption,
    doc="apply a corruption on the fly (cached on disk)")


def _check_dataset(cfg: Config, file: Any, key: str) -> None:
    DATASETS.get(cfg.name, file=file, key=f"{key}.name")
    if DATASETS.get(cfg.name).needs_path and cfg.path is None:
        raise WorkloadError(file, f"{key}.path", f"a dataset path for dataset '{cfg.name}'", None)
    if cfg.name == "imagenet_c" and cfg.corruption is None:
        raise WorkloadError(file, f"{key}.corruption", "{condition, severity} selecting the ImageNet-C folder", None)


DATASET = Section({
    "name": Scalar(str, doc="registered dataset: digits, imagefolder, cifar10, imagenet_c"),
    "path": PathSpec(default=None, must_exist=True, nullable=True),
    "split": Scalar(str, default=None, choices=("train", "val", "test", "all"), nullable=True,
                    doc="null: the dataset's own (digits, cifar10: test; imagefolder, imagenet_c: the whole "
                        "folder); train/val/test of a folder: a fixed seeded stratified 60/20/20 partition"),
    "sample_limit": Scalar(int, default=None, min=1, nullable=True),
    "batch_size": Scalar(int, default=128, min=1),
    "randomize": Scalar(bool, default=False, doc="draw a random subset (seeded) instead of the first samples"),
    "seed": seed(0),
    "image_size": Scalar(int, default=32, min=8),
    "corruption": CORRUPTION,
}, check=_check_dataset)


def _check_model(cfg: Config, file: Any, key: str) -> None:
    if cfg.name not in MODELS and not is_torchvision_model(cfg.name) and ":" not in cfg.name:
        raise WorkloadError(file, f"{key}.name",
                            f"a registered model ({', '.join(MODELS.names())}) or a torchvision model name",
                            cfg.name)


MODEL = Section({
    "name": Scalar(str, doc="registered model (digits_cnn), torchvision name (resnet18), or module:function"),
    "num_classes": Scalar(int, default=10, min=1),
    "input_shape": ListOf(Scalar(int, min=1), default=[3, 32, 32], min_len=3),
    "weights": PathSpec(default=None, must_exist=True, nullable=True,
                        doc="state_dict file; null trains one and caches it"),
    "train": Section({
        "epochs": Scalar(int, default=30, min=1),
        "lr": Scalar(float, default=0.05, min=0.0, exclusive_min=True),
        "momentum": Scalar(float, default=0.9, min=0.0, max=1.0),
        "weight_decay": Scalar(float, default=5e-4, min=0.0),
        "batch_size": Scalar(int, default=64, min=1),
        "seed": seed(0),
    }, default={}),
}, check=_check_model)


def _check_metrics(cfg: Config, file: Any, key: str) -> None:
    for i, name in enumerate(cfg.metrics):
        METRICS.get(name, file=file, key=f"{key}.metrics[{i}]")


ACCURACY = Section({
    "metrics": ListOf(Scalar(str), default=["top1"], min_len=1, doc="first one is the search objective"),
    "chance_level": Scalar(str, default="warn", choices=("warn", "error"),
                           doc="when the fp32 model is no better than chance: warn, or stop with an error"),
}, default={}, check=_check_metrics)

QUANTIZATION = Section({
    "explore": Scalar(str, default="tied", choices=("tied", "separate"),
                      doc="tied: one bit width per layer; separate: weight and activation bits per layer"),
    "per_channel_weights": Scalar(bool, default=True),
    "narrow_range": Scalar(bool, default=False),
    "unsigned_activations": Scalar(str, default="auto", choices=("auto", "never"),
                                   doc="auto: unsigned where calibration shows non-negative inputs"),
    "activation_quantizers": Scalar(str, default="none", choices=("none", "relu"),
                                    doc="extra activation quantizers after modules of this kind"),
    "baseline_bits": Scalar(int, default=8, min=2, max=MAX_BITS),
    "graph": Scalar(str, default="fx", choices=("fx", "modules"),
                    doc="fx: trace the model, quantizers also after residual adds, concatenations and functional "
                        "activations (sw/model/graph.py); modules: swap Conv2d/Linear only"),
    "fold_bn": Scalar(bool, default=False, doc="fold batch norm into the conv/linear before it, before calibration"),
    "preset": Scalar(str, default="hw", choices=("hw", "tensorrt", "snpe", "pow2"),
                     doc="backend rules for every quantizer (sw/quant/presets.py); hw: what the converter RTL implements"),
}, default={})

CALIBRATION = Section({
    "method": Scalar(str, default="percentile", choices=CALIBRATION_METHODS,
                     doc="activation clipping; entropy, mse and aciq follow each candidate's bits"),
    "weight_method": Scalar(str, default="max", choices=("max", "aciq"), doc="weight clipping (per channel if enabled)"),
    "prior": Scalar(str, default="laplace", choices=("laplace", "gauss"), doc="ACIQ's fitted distribution"),
    "bit_allocation": Scalar(bool, default=False,
                             doc="ACIQ per-output-channel weight bits, mean <= the layer's weight bits"),
    "bias_correction": Scalar(str, default="none", choices=("none", "mean", "mean_variance"),
                              doc="per-channel correction of quantized weights: mean (a bias), mean_variance "
                                  "(and a per-channel scale: the ACIQ paper's)"),
    "search_methods": ListOf(Scalar(str, choices=CALIBRATION_METHODS), default=None,
                             nullable=True, min_len=2,
                             doc="the search also picks each layer's input clipping among these (decision "
                                 "variable <layer>.clipping = index in this list); null: `method` everywhere"),
    "percentile": Scalar(float, default=99.99, min=50.0, max=100.0),
    "num_bins": Scalar(int, default=2048, min=16),
    "rounding": Scalar(str, default="nearest", choices=ROUNDINGS,
                       doc="weight rounding: nearest, or adaround (learned per layer and bit width on the "
                           "calibration data, cached in the results folder; sw/model/reconstruction.py)"),
    "rounding_iterations": Scalar(int, default=1000, min=1, doc="optimiser steps per layer and bit width"),
    "rounding_batch_size": Scalar(int, default=32, min=1, doc="calibration samples per step"),
    "rounding_learning_rate": Scalar(float, default=1e-2, min=0.0, doc="Adam's step size on the rounding variables"),
    "rounding_regulariser": Scalar(float, default=1.0, min=0.0,
                                   doc="weight of the annealed rounding regulariser (per weight, against the relative output error)"),
    "file": PathSpec(default=None, nullable=True, doc="calibration file (JSON); default under results.dir"),
}, default={})


def _check_bits(cfg: Config, file: Any, key: str) -> None:
    if cfg.lower > cfg.upper:
        raise WorkloadError(file, f"{key}.lower", f"a lower bound <= upper bound ({cfg.upper})", cfg.lower)


def _check_search(cfg: Config, file: Any, key: str) -> None:
    WEIGHTINGS.get(cfg.weighting, file=file, key=f"{key}.weighting")


SEARCH = Section({
    "pop_size": Scalar(int, default=16, min=2),
    "offsprings": Scalar(int, default=None, min=1, nullable=True, doc="per generation; default pop_size"),
    "generations": Scalar(int, default=8, min=1),
    "crossover_prob": Scalar(float, default=0.9, min=0.0, max=1.0),
    "crossover_eta": Scalar(float, default=15.0, min=0.0),
    "mutation_prob": Scalar(float, default=None, min=0.0, max=1.0, nullable=True,
                            doc="per variable; default 1/n_var"),
    "mutation_eta": Scalar(float, default=20.0, min=0.0),
    "seed": seed(1),
    "init": Scalar(str, default="random", choices=("random", "ilp"),
                   doc="first population: uniform bits then random (random), or uniform bits, the ILP front over "
                       "the sensitivity table and its neighbours (ilp; README, 'Sensitivity and ILP allocation')"),
    "init_sensitivity": Scalar(str, default="fit_proxy", choices=("fit_proxy", "hessian_proxy", "loss_increase"),
                               doc="what the ILP of search.init: ilp minimises"),
    "bits": Section({
        "lower": Scalar(int, default=2, min=2, max=MAX_BITS, doc="signed integers need >= 2 bits"),
        "upper": Scalar(int, default=8, min=2, max=MAX_BITS),
    }, default={}, check=_check_bits),
    "weighting": Scalar(str, default="params_weighted", doc="bit-weighting function for the cost objective"),
    "minimum_accuracy": AnyOf((
        Scalar(float, min=0.0, max=1.0),
        ListOf(Scalar(float, min=0.0, max=1.0), min_len=1),
        Section({"relative_drop": Scalar(float, min=0.0, max=1.0)}),
    ), default=Config(relative_drop=0.02),
        doc="a float (first metric), a list (one per metric) or {relative_drop: d} of the fp32 baseline"),
    "runner": Section({
        "kind": Scalar(str, default="serial", choices=("serial", "processes", "dask")),
        "workers": Scalar(int, default=2, min=1),
        "address": Scalar(str, default=None, nullable=True, doc="dask scheduler address; null starts a local cluster"),
    }, default={}),
}, default={}, check=_check_search)

LOADING = Section({
    "memory_mb": Scalar(int, default=4096, min=1,
                        doc="bound on the decoded images a study holds in memory (on its device), all phases and "
                            "corrupted copies together: uint8 where the images are 8-bit (1 byte a value), float32 "
                            "otherwise; the least recently used set goes first, a single set above it is an error"),
    "workers": Scalar(int, default=None, min=0, nullable=True,
                      doc="DataLoader processes decoding image files once per set; null: up to 4 (one per core) "
                          "for image folders of >= 1000 images, else 0"),
}, default={})

RESULTS = Section({
    "dir": PathSpec(default="results"),
}, default={})


def _check_energy(cfg: Config, file: Any, key: str) -> None:
    if cfg.residency and cfg.elementwise != "fused":
        raise WorkloadError(file, f"{key}.elementwise", "fused when energy.residency is true (a tensor that stays "
                            "on chip is pooled and added on chip)", cfg.elementwise)


ENERGY = Section({
    "engine": Scalar(str, default="zigzag", choices=("zigzag", "timeloop")),
    "accelerator": Scalar(str, default="eyeriss_like", doc="shipped accelerator name or a path to a definition file"),
    "objective": Scalar(str, default="dram_energy", doc="table column minimised by energy_aware_quant_problem"),
    "word_bits": Scalar(int, default=32, choices=(16, 32, 64), doc="DRAM word width of the packed layout"),
    "mapping_objective": Scalar(str, default="energy", choices=("energy", "latency")),
    "workers": Scalar(int, default=2, min=1),
    "cache": PathSpec(default=None, nullable=True, doc="SQLite cache; default results/energy_cache.sqlite"),
    "batch_size": Scalar(int, default=1, min=1, doc="images per evaluated batch (weights are reused across it)"),
    "residency": Scalar(bool, default=False,
                        doc="activations that fit the on-chip buffer at their bits stay there for the next layer"),
    "elementwise": Scalar(str, default="ignored", choices=("ignored", "fused", "separate"),
                          doc="pooling and residual adds: not modelled, fused into the producing layer, or own DRAM passes"),
    "mapping": Scalar(str, default=None, nullable=True,
                      doc="mapping / spatial-unrolling file of the accelerator (path or shipped name)"),
    "lpf_limit": Scalar(int, default=6, min=1, max=12, doc="loop prime factors the temporal mapping search permutes"),
    "spatial_mappings": Scalar(int, default=3, min=1, doc="spatial mappings generated and searched per layer"),
}, default=None, nullable=True, check=_check_energy)


def _check_problem(config: Config, file: Any) -> None:
    PROBLEMS.get(config.problem, file=file, key="problem", trust_custom_code=config.trust_custom_code)


def _check_calibration(config: Config, file: Any) -> None:
    if config.calibration.bit_allocation and not config.quantization.per_channel_weights:
        raise WorkloadError(file, "calibration.bit_allocation",
                            "false unless quantization.per_channel_weights is true (bits are allocated per channel)",
                            True)
    if config.calibration.rounding != "nearest" and config.calibration.bit_allocation:
        raise WorkloadError(file, "calibration.rounding",
                            "nearest with calibration.bit_allocation (rounding is learned on one bit width per tensor)",
                            config.calibration.rounding)


def _check_preset(config: Config, file: Any) -> None:
    if config.calibration.bit_allocation and config.quantization.preset in ("snpe", "pow2"):
        raise WorkloadError(file, "calibration.bit_allocation",
                            f"false with quantization.preset {config.quantization.preset} (its quantizers have one bit "
                            f"width per tensor; presets hw and tensorrt allocate per channel)", True)


def _check_data_fits_model(config: Config, file: Any) -> None:
    """Every dataset yields what the model takes: 3 x S x S images with S = `model.input_shape`'s
    side, and labels of `model.num_classes` classes."""
    shape = config.model.input_shape
    if len(shape) != 3 or shape[0] != 3 or shape[1] != shape[2]:
        raise WorkloadError(file, "model.input_shape", "[3, S, S]: datasets yield RGB images of image_size x image_size",
                            shape)
    for phase, spec in config.datasets.items():
        if spec.image_size != shape[1]:
            raise WorkloadError(file, f"datasets.{phase}.image_size",
                                f"{shape[1]}, the side of model.input_shape {shape}", spec.image_size)
        classes = DATASETS.get(spec.name).classes(spec)
        if classes is not None and classes != config.model.num_classes:
            where = f" at {spec.path}" if spec.get("path") else ""
            raise WorkloadError(file, "model.num_classes",
                                f"{classes}, the number of classes of datasets.{phase} ({spec.name}{where})",
                                config.model.num_classes)


WORKLOAD = Section({
    "name": Scalar(str, doc="study name: names results files"),
    "problem": Scalar(str, default="quantization_problem"),
    "trust_custom_code": Scalar(bool, default=False, doc="allow 'module:function' names"),
    "model": MODEL,
    "accuracy": ACCURACY,
    "datasets": MapOf(DATASET, keys=PHASES),
    "quantization": QUANTIZATION,
    "calibration": CALIBRATION,
    "search": SEARCH,
    "results": RESULTS,
    "energy": ENERGY,
    "device": Scalar(str, default="auto", doc=f"where models, data and training run: {' | '.join(DEVICES)}; auto "
                                               "takes the current CUDA device when torch sees one, else the CPU"),
    "loading": LOADING,
})


class Workload:
    """A validated study description; sections are attribute-accessible `Config`s."""

    def __init__(self, config: Config, path: Path):
        self.config = config
        self.path = path
        for key, value in config.items():
            setattr(self, key, value)

    @property
    def results_dir(self) -> Path:
        return Path(self.results.dir) / self.name

    @property
    def calibration_file(self) -> Path:
        return Path(self.calibration.file) if self.calibration.file else self.results_dir / "calibration.json"

    def dataset(self, phase: str) -> Config:
        """The dataset spec of a phase; exploration falls back to baseline and vice versa."""
        fallbacks = {
            "exploration": ("exploration", "baseline", "reevaluation"),
            "baseline": ("baseline", "exploration", "reevaluation"),
            "reevaluation": ("reevaluation", "baseline", "exploration"),
            "calibration": ("calibration", "retraining", "exploration"),
            "retraining": ("retraining", "calibration"),
        }[phase]
        for name in fallbacks:
            if name in self.datasets:
                return self.datasets[name]
        raise WorkloadError(self.path, f"datasets.{phase}", "a dataset for this phase", None, show_got=False)


def default_workload_path() -> Path:
    """The embedded default study (`workloads/digits_cnn.yaml` in the repository)."""
    repo = Path(__file__).resolve().parents[2] / "workloads" / DEFAULT_WORKLOAD
    if repo.exists():
        return repo
    return Path(str(importlib.resources.files("sw.config") / DEFAULT_WORKLOAD))


def load_workload(path: str | Path | None = None) -> Workload:
    """Read and validate a workload YAML; raise `WorkloadError` with file and key on any problem."""
    path = Path(path) if path else default_workload_path()
    if not path.is_file():
        raise WorkloadError(path, "<file>", "an existing workload YAML file", str(path), show_got=False)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "<file>"
        raise WorkloadError(path, where, f"valid YAML ({getattr(exc, 'problem', exc)})", show_got=False) from None
    if not isinstance(raw, dict):
        raise WorkloadError(path, "", "a mapping at the top level", raw)
    if isinstance(raw.get("workload"), dict) and len(raw) == 1:
        raw = raw["workload"]
    config = WORKLOAD.validate(raw, path, "")
    _check_problem(config, path)
    if not config.datasets:
        raise WorkloadError(path, "datasets", f"at least one of {', '.join(PHASES)}", {})
    _check_data_fits_model(config, path)
    _check_calibration(config, path)
    _check_preset(config, path)
    if not valid_device_name(config.device):
        raise WorkloadError(path, "device", f"one of {', '.join(DEVICES)}", config.device)
    return Workload(config, path)
