"""Calibration of a QuantizedModel's ranges (amax) and its safe, reloadable file format.

Methods: `max`, `percentile`, `entropy`, `mse` (pytorch-quantization's histogram calibrator;
its `mse` calls `.cuda()`, so the MSE search over the histogram is done here on the CPU) and
`aciq` (analytical clipping for a Laplace fit, recomputed for every bit width). Weights always
use max calibration (per tensor or per channel).

The calibration file is JSON: the model identity and settings it was made for, and each
quantizer's amax and signedness. No pickle; loading works on the CPU (the buffer is created
with the right shape before it is filled, avoiding pytorch-quantization's `.cuda()` path).
"""

from __future__ import annotations

import hashlib
import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from pytorch_quantization.nn import TensorQuantizer
from tqdm import tqdm

from sw.durable import write_text
from sw.errors import DataError
from sw.quantized_model import QuantizedModel

FORMAT = "mpq-calibration/1"
METHODS = ("max", "percentile", "entropy", "mse", "aciq")


class _RangeStats:
    """Running min, |max| and mean |x| of a quantizer's inputs during calibration."""

    def __init__(self) -> None:
        self.min = math.inf
        self.absmax = 0.0
        self.abs_sum = 0.0
        self.count = 0

    def __call__(self, module, inputs) -> None:
        x = inputs[0].detach()
        self.min = min(self.min, float(x.min()))
        self.absmax = max(self.absmax, float(x.abs().max()))
        self.abs_sum += float(x.abs().sum(dtype=torch.float64))
        self.count += x.numel()


def _mse_amax(calibrator, num_bits: int, unsigned: bool, start_bin: int = 128) -> torch.Tensor:
    """amax minimising the histogram-weighted quantization MSE (CPU version of the library's)."""
    from pytorch_quantization.tensor_quant import fake_tensor_quant

    hist, edges = calibrator._calib_hist, calibrator._calib_bin_edges
    counts = torch.as_tensor(np.asarray(hist), dtype=torch.float32)
    edges = torch.as_tensor(np.asarray(edges), dtype=torch.float32)
    centers = (edges[1:] + edges[:-1]) / 2
    best, best_mse = centers[-1], math.inf
    for i in range(min(start_bin, len(centers) - 1), len(centers)):
        amax = centers[i]
        mse = float(((fake_tensor_quant(centers, amax, num_bits, unsigned) - centers) ** 2 * counts).mean())
        if mse < best_mse:
            best, best_mse = amax, mse
    return best.clone()


@lru_cache(maxsize=None)
def _laplace_clip_factor(bits: int) -> float:
    """alpha/b minimising clipping + rounding MSE for a Laplace(b) source (Banner et al., ACIQ)."""
    alphas = np.linspace(0.5, 40.0, 40000)
    mse = 2.0 * np.exp(-alphas) + alphas ** 2 / (3.0 * 4.0 ** bits)
    return float(alphas[int(np.argmin(mse))])


def aciq_amax(laplace_b: float, absmax: float, bits: int, unsigned: bool) -> float:
    """ACIQ clipping value for `bits` (one more effective bit when unsigned), never above absmax."""
    if laplace_b <= 0:
        return max(absmax, 0.0)
    return float(min(absmax, _laplace_clip_factor(bits + int(unsigned)) * laplace_b))


def _is_weight(name: str) -> bool:
    return name.endswith(".weight")


@torch.no_grad()
def calibrate(qmodel: QuantizedModel, data: Iterable, method: str = "max", *, percentile: float = 99.99,
              unsigned_activations: str = "auto", progress: bool = False) -> None:
    """Collect ranges on `data` and set every quantizer's amax (and signedness)."""
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}")
    qmodel.unfreeze_weights()
    stats: dict[str, _RangeStats] = {}
    handles = []
    for name, q in qmodel.iter_quantizers():
        q.disable_quant()
        q.enable_calib()
        if q._calibrator is not None:
            q._calibrator.reset()
        if not _is_weight(name):
            stats[name] = _RangeStats()
            handles.append(q.register_forward_pre_hook(stats[name]))
    try:
        for x, _ in tqdm(data, desc="calibrating", disable=not progress, leave=False):
            qmodel(x)
    finally:
        for h in handles:
            h.remove()
    for name, q in qmodel.iter_quantizers():
        q.disable_calib()
        q.enable_quant()
        if _is_weight(name):
            q.load_calib_amax()
            continue
        s = stats[name]
        if s.count == 0:  # never reached by the data (unused branch): keep it harmless
            q.amax = 1.0
            continue
        if unsigned_activations == "auto" and s.min >= 0.0:
            q.unsigned = True
            q._calibrator._unsigned = True
        if method == "max":
            q.load_calib_amax()
        elif method in ("percentile", "entropy"):
            q.load_calib_amax(method, percentile=percentile)
        elif method == "mse":
            _set_amax(q, _mse_amax(q._calibrator, q.num_bits, q.unsigned))
        else:  # aciq
            q.aciq_stats = {"laplace_b": s.abs_sum / s.count, "absmax": s.absmax}
            q.amax = aciq_amax(s.abs_sum / s.count, s.absmax, q.num_bits, q.unsigned)


def _set_amax(q: TensorQuantizer, value: torch.Tensor) -> None:
    value = torch.as_tensor(value, dtype=torch.float32)
    if hasattr(q, "_amax"):
        if q._amax.shape != value.shape:
            raise DataError(f"amax shape {tuple(value.shape)} does not match the quantizer's {tuple(q._amax.shape)}")
        q._amax.data.copy_(value)
    else:
        q.register_buffer("_amax", value.clone())


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
        if getattr(q, "aciq_stats", None):
            entry["aciq"] = q.aciq_stats
        if hasattr(q, "extra_calibration"):  # e.g. the asymmetric range of sw.presets.AffineQuantizer
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
        if "aciq" in entry:
            q.aciq_stats = entry["aciq"]
        if hasattr(q, "load_extra_calibration"):
            q.load_extra_calibration(entry)


def calibration_identity(study) -> dict[str, Any]:
    """What a calibration file is valid for: these weights, these settings, this data."""
    w = study.workload
    return {"model": w.model.name, "weights_sha256": model_fingerprint(study.fp32_model),
            "quantization": w.quantization.to_dict(),
            "calibration": {k: w.calibration[k] for k in ("method", "percentile", "num_bins")},
            "data": w.dataset("calibration").to_dict()}


def ensure_calibrated(qmodel: QuantizedModel, study, *, force: bool = False) -> Path:
    """Load the workload's calibration file if it matches; otherwise calibrate and write it."""
    path = study.workload.calibration_file
    identity = calibration_identity(study)
    if not force and path.exists():
        if read_calibration(path).get("identity") == identity:
            load_calibration(qmodel, path, identity)
            return path
    c = study.workload.calibration
    calibrate(qmodel, study.batches("calibration"), c.method, percentile=c.percentile,
              unsigned_activations=qmodel.settings.unsigned_activations, progress=study.progress)
    return save_calibration(qmodel, path, identity)
