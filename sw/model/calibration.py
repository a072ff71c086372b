"""Calibration of a QuantizedModel's ranges (amax) and its safe, reloadable file format.

A `Recipe` (the workload's `calibration` section as data) says how:

- activations (`method`): `max`, `percentile`, `entropy`, `mse` (pytorch-quantization's
  histogram calibrator collects the histogram; `sw.quant.clipping` derives amax from it for every
  bit width) or `aciq` (analytical clipping on the centred distribution, Laplace or Gauss
  `prior`, recomputed for every bit width);
- weights (`weight_method`): `max` (per tensor or per output channel) or `aciq`;
- `bit_allocation`: per-output-channel weight bits (`sw.quant.bit_allocation`);
- `bias_correction`: `mean` or `mean_variance` per-channel correction of quantized weights
  (`sw.quant.bias_correction`).

Every bit-dependent choice is kept as a `Clipping` on its quantizer (`q.clipping`), applied
whenever `QuantizedModel.set_layer_bits` changes the bits.

The calibration file is JSON: the model identity and settings it was made for, and each
quantizer's amax, signedness and clipping (histograms as lists of counts and edges). No
pickle; loading works on the CPU (the buffer is created with the right shape before it is
filled, avoiding pytorch-quantization's `.cuda()` path).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
from pytorch_quantization.nn import TensorQuantizer
from tqdm import tqdm

from sw.core.durable import write_text
from sw.core.errors import DataError
from sw.core.limits import CALIBRATION_METHODS as METHODS
from sw.core.limits import MAX_BITS, MIN_BITS
from sw.model.quantized_model import QuantizedModel
from sw.quant import adapter
from sw.quant.bias_correction import CORRECTIONS, BiasCorrection, InputMean
from sw.quant.bit_allocation import ChannelBitAllocation
from sw.quant.clipping import (
    HISTOGRAM_METHODS,
    PRIORS,
    AciqClipping,
    Clipping,
    Histogram,
    HistogramClipping,
    MaxClipping,
    Moments,
    RunningMoments,
    apply_clipping,
    clipping_from_json,
)
from sw.quant.presets import Pow2Quantizer, squared_error

log = logging.getLogger(__name__)

FORMAT = "mpq-calibration/1"
WEIGHT_METHODS = ("max", "aciq")


@dataclass(frozen=True)
class Recipe:
    """How every quantizer is calibrated (defaults: plain max calibration)."""

    method: str = "max"
    weight_method: str = "max"
    prior: str = "laplace"
    percentile: float = 99.99
    bit_allocation: bool = False
    bias_correction: str = "none"  # none, mean, mean_variance
    search_methods: tuple[str, ...] = ()  # input clippings the search may pick per layer (besides `method`)

    def __post_init__(self) -> None:
        for value, allowed, what in ((self.method, METHODS, "calibration method"),
                                     *((m, METHODS, "search method") for m in self.search_methods),
                                     (self.weight_method, WEIGHT_METHODS, "weight calibration method"),
                                     (self.prior, PRIORS, "ACIQ prior"),
                                     (self.bias_correction, CORRECTIONS, "bias correction")):
            if value not in allowed:
                raise ValueError(f"unknown {what} {value!r}, expected one of {', '.join(allowed)}")

    @classmethod
    def from_workload(cls, workload) -> "Recipe":
        c = workload.calibration
        return cls(method=c.method, weight_method=c.weight_method, prior=c.prior, percentile=c.percentile,
                   bit_allocation=c.bit_allocation, bias_correction=c.bias_correction,
                   search_methods=tuple(c.search_methods or ()))


def _is_weight(name: str) -> bool:
    return name.endswith(".weight")


def _activation_clipping(method: str, recipe: Recipe, q: TensorQuantizer, stats: RunningMoments) -> Clipping:
    if method in HISTOGRAM_METHODS:
        histogram = Histogram.from_calibrator(adapter.calibrator(q))
        if histogram is None:
            raise ValueError(f"{method} calibration needs the histogram calibrator (QuantSettings.calib_method)")
        return HistogramClipping(method, histogram, recipe.percentile)
    if method == "aciq":
        return AciqClipping(stats.moments(), recipe.prior)
    return MaxClipping(torch.tensor(stats.absmax))


def _weight_clipping(recipe: Recipe, q: TensorQuantizer, weight: torch.Tensor) -> Clipping | None:
    axis = adapter.channel_axis(q)
    if recipe.bit_allocation and axis is None:
        raise ValueError("bit allocation needs per-channel weight quantizers (quantization.per_channel_weights: true)")
    if recipe.weight_method == "aciq":
        clipping: Clipping | None = AciqClipping(Moments.of(weight, axis), recipe.prior)
    else:
        clipping = MaxClipping(q.amax.detach().double()) if recipe.bit_allocation else None
    return ChannelBitAllocation(clipping) if recipe.bit_allocation else clipping


@torch.no_grad()
def calibrate(qmodel: QuantizedModel, data: Iterable, method: str | Recipe = "max", *, percentile: float = 99.99,
              unsigned_activations: str = "auto", progress: bool = False) -> None:
    """Collect statistics on `data` and set every quantizer's clipping, amax and signedness.

    `method` is an activation method name (with `percentile`; weights max) or a whole `Recipe`.
    """
    recipe = method if isinstance(method, Recipe) else Recipe(method=method, percentile=percentile)
    qmodel.unfreeze_weights()
    layers = qmodel.layers()
    stats: dict[str, RunningMoments] = {}
    input_means: dict[str, InputMean] = {}
    handles = []
    for name, q in qmodel.iter_quantizers():
        adapter.start_calibration(q)
        q.clipping = q.clippings = None
        q.bias_correction = None
        if hasattr(q, "channel_bits"):
            q.channel_bits = None
        if not _is_weight(name):
            stats[name] = RunningMoments()
            handles.append(q.register_forward_pre_hook(stats[name]))
    if recipe.bias_correction != "none":
        for name, layer in layers.items():
            if not BiasCorrection.supports(layer):
                log.warning("%s (%s): no bias correction (Conv1d, Conv2d and Linear only)", name, type(layer).__name__)
                continue
            input_means[name] = InputMean()
            handles.append(layer.register_forward_pre_hook(input_means[name]))
    device = qmodel.device
    try:
        for x, _ in tqdm(data, desc="calibrating", disable=not progress, leave=False):
            qmodel(x.to(device, non_blocking=True))
    finally:
        for h in handles:
            h.remove()
    for name, q in tqdm(list(qmodel.iter_quantizers()), desc="clipping", disable=not progress, leave=False):
        adapter.stop_calibration(q)
        if _is_weight(name):
            layer_name = name[: -len(".weight")]
            layer = layers[layer_name]
            q.load_calib_amax()
            q.clipping = _weight_clipping(recipe, q, layer.weight)
            if layer_name in input_means and input_means[layer_name].mean is not None:
                q.bias_correction = BiasCorrection.for_layer(layer, input_means[layer_name].mean,
                                                             variance=recipe.bias_correction == "mean_variance")
        else:
            s = stats[name]
            if s.count == 0:  # never reached by the data (unused branch): keep it harmless
                q.amax = 1.0
                continue
            if unsigned_activations == "auto" and s.lo >= 0.0:
                q.unsigned = True
                adapter.set_calibrator_unsigned(q, True)
            if recipe.search_methods:
                q.clippings = {m: _activation_clipping(m, recipe, q, s) for m in dict.fromkeys(
                    (recipe.method, *recipe.search_methods))}
                q.clipping_default = recipe.method
                q.clipping = q.clippings[recipe.method]
            elif recipe.method == "max":
                q.load_calib_amax()
            else:
                q.clipping = _activation_clipping(recipe.method, recipe, q, s)
        apply_clipping(q)
        if isinstance(q, Pow2Quantizer) and _is_weight(name):
            _choose_pow2_rounding(q, layers[name[: -len(".weight")]].weight.detach())
    qmodel.to(device)  # amax buffers made from CPU statistics join the model's device


def _choose_pow2_rounding(q: Pow2Quantizer, weight: torch.Tensor) -> None:
    """Round each power-of-two weight scale up or down, whichever gives the smaller error on the
    weight itself. (Activation scales round down: an estimate of the clipping error from the
    calibration histogram chose worse than never clipping beyond the calibrated amax.)"""
    clipping = getattr(q, "clipping", None)
    fixed = adapter.amax_buffer(q).detach().clone()
    axis = adapter.channel_axis(q)

    def raw_amax(bits: int) -> torch.Tensor:
        return fixed if clipping is None else clipping.amax(bits, q.unsigned).reshape(fixed.shape)

    q.choose_rounding(range(MIN_BITS, MAX_BITS + 1), raw_amax,
                      lambda amax, bits: squared_error(weight, amax, bits, q.unsigned, q.narrow_range, axis))


def _set_amax(q: TensorQuantizer, value: torch.Tensor) -> None:
    """`adapter.set_amax`, refusing a file's amax of another shape than the quantizer's."""
    current = adapter.amax_buffer(q)
    if current is not None and current.shape != value.shape:
        raise DataError(f"amax shape {tuple(value.shape)} does not match the quantizer's {tuple(current.shape)}")
    adapter.set_amax(q, value)


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 over the fp32 parameters and buffers: calibration is only valid for these weights."""
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def save_calibration(qmodel: QuantizedModel, path: Path, identity: dict[str, Any]) -> Path:
    """Write amax and signedness of every quantizer as JSON (atomically)."""
    quantizers = {}
    for name, q in qmodel.iter_quantizers():
        entry = {"amax": q.amax.tolist() if q.amax is not None else None,
                 "shape": list(q.amax.shape) if q.amax is not None else None,
                 "unsigned": bool(q.unsigned)}
        if getattr(q, "clippings", None):
            entry["clippings"] = {m: c.to_json() for m, c in q.clippings.items()}
            entry["clipping_default"] = q.clipping_default
        elif getattr(q, "clipping", None) is not None:
            entry["clipping"] = q.clipping.to_json()
        if getattr(q, "bias_correction", None) is not None:
            entry["bias_correction"] = q.bias_correction.to_json()
        if hasattr(q, "extra_calibration"):  # e.g. the asymmetric range of sw.quant.presets.AffineQuantizer
            entry.update(q.extra_calibration())
        quantizers[name] = entry
    payload = {"format": FORMAT, "identity": identity, "quantizers": quantizers}
    return write_text(path, json.dumps(payload, indent=1))


def read_calibration(path: Path) -> dict[str, Any]:
    """Parse a calibration file; one clear error if it is not one."""
    try:
        payload = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: expected a calibration JSON file ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or "quantizers" not in payload:
        raise DataError(f"{path}: expected a calibration file of format {FORMAT}")
    return payload


def load_calibration(qmodel: QuantizedModel, path: Path, identity: dict[str, Any] | None = None) -> None:
    """Restore amax and signedness; if `identity` is given it must match the file's."""
    payload = read_calibration(path)
    if identity is not None and payload.get("identity") != identity:
        raise DataError(f"{path}: calibration was made for another model or settings; recalibrate "
                        f"(python -m sw calibrate WORKLOAD) or delete the file")
    quantizers = qmodel.quantizers()
    missing = set(quantizers) - set(payload["quantizers"])
    if missing:
        raise DataError(f"{path}: no calibration for quantizer {sorted(missing)[0]!r}")
    for name, q in quantizers.items():
        entry = payload["quantizers"][name]
        try:
            _set_amax(q, torch.tensor(entry["amax"], dtype=torch.float32).reshape(entry["shape"]))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise DataError(f"{path}: quantizer {name!r}: expected amax of shape {entry.get('shape')} ({exc})") from None
        q.unsigned = bool(entry["unsigned"])
        try:
            q.clipping = clipping_from_json(entry["clipping"]) if "clipping" in entry else None
            q.clippings = {m: clipping_from_json(c) for m, c in entry["clippings"].items()} if "clippings" in entry else None
            if q.clippings:
                q.clipping_default = entry["clipping_default"]
                q.clipping = q.clippings[q.clipping_default]
            q.bias_correction = BiasCorrection.from_json(entry["bias_correction"]) if "bias_correction" in entry else None
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise DataError(f"{path}: quantizer {name!r}: unreadable clipping or bias correction ({exc!r})") from None
        if hasattr(q, "load_extra_calibration"):
            q.load_extra_calibration(entry)
        apply_clipping(q)
    qmodel.to(qmodel.device)  # the file's amax buffers join the model's device


def calibration_identity(study) -> dict[str, Any]:
    """What a calibration file is valid for: these weights, these settings, this data."""
    w = study.workload
    return {"model": w.model.name, "weights_sha256": model_fingerprint(study.fp32_model),
            "quantization": w.quantization.to_dict(),
            "calibration": {k: v for k, v in w.calibration.to_dict().items()
                            if k != "file" and not k.startswith("rounding")},  # rounding: sw.model.reconstruction
            "data": w.dataset("calibration").to_dict()}


def ensure_calibrated(qmodel: QuantizedModel, study, *, force: bool = False) -> Path:
    """Load the workload's calibration file if it matches; otherwise calibrate and write it."""
    path = study.workload.calibration_file
    identity = calibration_identity(study)
    if not force and path.exists():
        if read_calibration(path).get("identity") == identity:
            load_calibration(qmodel, path, identity)
            return path
    calibrate(qmodel, study.batches("calibration"), Recipe.from_workload(study.workload),
              unsigned_activations=qmodel.settings.unsigned_activations, progress=study.progress)
    return save_calibration(qmodel, path, identity)
