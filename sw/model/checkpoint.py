"""Quantized-model checkpoints: weights + quantizer state, reloadable without pickle.

A checkpoint is two files with one stem:

- `<stem>.pt`: a flat dict of tensors (`QuantizedModel.state_dict()` with the fp32 master
  weights: parameters, BN statistics, every quantizer's amax), written with `torch.save` and
  read with `torch.load(weights_only=True)`;
- `<stem>.json`: format, the workload and model it belongs to, the quantization settings
  (graph mode, BN folding, preset, ...), bits per layer, every quantizer's bits, signedness and
  amax (readable without torch), and what produced it (QAT method and metrics, or an export).

`python -m sw retrain` writes one; `evaluate --checkpoint`, `cosim --checkpoint` and
`export --checkpoint` load it into the workload's quantized model (same architecture and
settings, checked), with its amax pinned so changing nothing else moves it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping

import torch

from sw.core.durable import atomic_write, write_text
from sw.core.errors import DataError, first_line
from sw.quant.adapter import is_enabled
from sw.quant.lsq import pin_amax

FORMAT = "mpq-quantized-checkpoint/1"


def _paths(stem: Path) -> tuple[Path, Path]:
    stem = Path(stem)
    if stem.suffix in (".pt", ".json"):
        stem = stem.with_suffix("")
    return stem.with_suffix(".pt"), stem.with_suffix(".json")


def _bias_correction(q) -> str | None:
    """The calibration's bias correction of a weight quantizer (sw.quant.bias_correction): applied on load too."""
    correction = getattr(q, "bias_correction", None)
    return None if correction is None else "mean_variance" if correction.variance else "mean"


def _quantizer_json(q) -> dict[str, Any]:
    amax = q.amax
    return {"class": type(q).__name__, "bits": int(q.num_bits), "unsigned": bool(q.unsigned),
            "narrow_range": bool(q.narrow_range), "enabled": is_enabled(q),
            "amax": None if amax is None else amax.detach().float().reshape(-1).tolist(),
            "amax_shape": None if amax is None else list(amax.shape), "bias_correction": _bias_correction(q),
            "learned_rounding": _learned_rounding(q)}


def _learned_rounding(q) -> bool:
    """Whether a weight quantizer rounds with learned rounding at its bits (sw.model.reconstruction)."""
    rounding = getattr(q, "learned_rounding", None)
    return rounding is not None and rounding.get(q.num_bits) is not None


def save_checkpoint(qmodel, stem: Path, *, workload, info: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write `<stem>.pt` and `<stem>.json` (each atomically); returns both paths."""
    pt, js = _paths(stem)
    frozen = qmodel.weights_frozen
    if frozen:
        qmodel.unfreeze_weights()  # the fp32 master weights, not their fake-quantized copies
    try:
        state = {k: v.detach().clone() for k, v in qmodel.state_dict().items()}
    finally:
        if frozen:
            qmodel.freeze_weights()
    with atomic_write(pt, "wb") as fh:
        torch.save(state, fh)
    payload = {
        "format": FORMAT,
        "workload": workload.name,
        "model": workload.model.name,
        "settings": dataclasses.asdict(qmodel.settings),
        "layer_bits": {n: list(b) for n, b in qmodel.layer_bits().items()},
        "quantizers": {a: _quantizer_json(q) for a, q in qmodel.quantizers().items()},
        "info": dict(info),
    }
    write_text(js, json.dumps(payload, indent=1))
    return pt, js


def read_checkpoint(stem: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(JSON description, tensors); one clear error if either file is not a checkpoint."""
    pt, js = _paths(stem)
    try:
        meta = json.loads(js.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{js}: expected a checkpoint description (JSON) next to {pt.name} ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{js}: expected a checkpoint of format {FORMAT}")
    try:
        state = torch.load(pt, map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable, not a torch file, or pickled code
        first = first_line(exc)
        raise DataError(f"{pt}: expected tensors loadable with torch.load(weights_only=True) ({first})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{pt}: expected a flat dict of tensors")
    return meta, state


def load_checkpoint(qmodel, stem: Path, *, model_name: str | None = None) -> dict[str, tuple[int, int]]:
    """Load a checkpoint into a calibrated QuantizedModel of the same architecture and settings.

    Returns its bits per layer (already set on the model). Weights end frozen, as the search has them.
    """
    meta, state = read_checkpoint(stem)
    js = _paths(stem)[1]
    if model_name is not None and meta["model"] != model_name:
        raise DataError(f"{js}: checkpoint of model {meta['model']!r}, the workload's model is {model_name!r}")
    ours = dataclasses.asdict(qmodel.settings)
    theirs = meta.get("settings", {})
    differ = [k for k in ("graph", "fold_bn", "preset", "per_channel_weights", "narrow_range", "activation_quantizers")
              if theirs.get(k) != ours.get(k)]
    if differ:
        k = differ[0]
        raise DataError(f"{js}: checkpoint made with quantization {k}={theirs.get(k)!r}, the workload has "
                        f"{ours.get(k)!r}; use the workload it was made with")
    quantizers = qmodel.quantizers()
    if set(meta["quantizers"]) != set(quantizers):
        missing = sorted(set(meta["quantizers"]) ^ set(quantizers))[0]
        raise DataError(f"{js}: quantizer {missing!r} is in only one of the checkpoint and the model")
    for address, q in quantizers.items():
        saved, current = meta["quantizers"][address].get("bias_correction"), _bias_correction(q)
        if saved != current:  # the correction is re-derived from the weights whenever they are frozen
            raise DataError(f"{js}: checkpoint made with calibration.bias_correction {saved or 'none'} on {address}, "
                            f"the workload has {current or 'none'}; use the workload it was made with")
    layer_bits = {n: (int(b[0]), int(b[1])) for n, b in meta["layer_bits"].items()}
    for address, q in quantizers.items():
        if not address.endswith(".weight"):
            continue
        entry = meta["quantizers"][address]
        if not entry.get("learned_rounding", False):
            q.learned_rounding = None  # e.g. retrained weights: rounding learned for other weights does not apply
        elif getattr(q, "learned_rounding", None) is None or q.learned_rounding.get(entry["bits"]) is None:
            raise DataError(f"{js}: checkpoint made with learned rounding on {address} (calibration.rounding), "
                            f"the workload rounds to nearest; use the workload it was made with")
    qmodel.unfreeze_weights()
    qmodel.set_layer_bits(layer_bits)
    for address, q in quantizers.items():
        entry = meta["quantizers"][address]
        q.num_bits = entry["bits"]
        q.unsigned = entry["unsigned"]
        if entry["amax"] is not None:
            pin_amax(q, torch.tensor(entry["amax"], dtype=torch.float32).reshape(entry["amax_shape"]))
    try:
        qmodel.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = first_line(exc)
        raise DataError(f"{_paths(stem)[0]}: tensors do not match the workload's quantized model ({first})") from None
    qmodel.freeze_weights()
    return layer_bits
