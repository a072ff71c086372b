"""Reconstruction PTQ: each layer's weight rounding learned on calibration data (AdaRound).

For a layer at a weight bit width, AdaRound (`sw.quant.adaround`) minimises the squared error
between the layer's fp32 output and its output with learned-rounding weights, on the layer's
fp32 inputs over the calibration data, with the annealed rounding regulariser. The fp32 inputs
depend on no layer's bits, so a result is valid for every candidate of a search that gives the
layer this weight bit width: a search pays for each (layer, weight bits) once, before it starts
(`ensure_rounding`: every weight bit width the search allows and the baseline's).

The hard rounding kept is the learned one, or round-to-nearest where that reconstructs the
calibration data at least as well (so learned rounding never makes a layer worse on the data
it was learned on, and a layer whose nearest rounding is already optimal is left unchanged).

`RoundingStore` keeps every result durably in the study's results folder as it is produced
(one bit-packed .npy per (layer, bits), no pickle; a JSON identity): a killed precompute resumes.
`QuantizedModel` applies the choices whenever it quantizes frozen weights (`learned_rounding` on
each weight quantizer), so evaluation, export and cosim all see the learned codes.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from sw.core.durable import atomic_write, write_text
from sw.core.errors import DataError
from sw.core.limits import ROUNDINGS
from sw.model.calibration import calibration_identity
from sw.model.layer_kinds import forward_with
from sw.model.quantized_model import QuantizedModel
from sw.quant import adapter
from sw.quant.adaround import (
    LearnedRounding,
    beta_schedule,
    initial_v,
    nearest_up,
    rectified_sigmoid,
    rounded_weight,
    rounding_regulariser,
)
from sw.quant.clipping import apply_clipping
from sw.quant.presets import quant_params


FORMAT = "mpq-rounding/1"


@dataclass(frozen=True)
class RoundingSettings:
    """How learned rounding is run (the workload's `calibration.rounding*` keys)."""

    method: str = "nearest"
    iterations: int = 1000
    batch_size: int = 32
    learning_rate: float = 1e-2
    regulariser_weight: float = 1.0
    seed: int = 0

    @classmethod
    def from_workload(cls, workload) -> "RoundingSettings":
        c = workload.calibration
        return cls(method=c.rounding, iterations=c.rounding_iterations, batch_size=c.rounding_batch_size,
                   learning_rate=c.rounding_learning_rate, regulariser_weight=c.rounding_regulariser)

    def __post_init__(self) -> None:
        if self.method not in ROUNDINGS:
            raise ValueError(f"unknown rounding {self.method!r}, expected one of {', '.join(ROUNDINGS)}")

    @property
    def learned(self) -> bool:
        return self.method != "nearest"


def reconstruction_error(layer: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         target: torch.Tensor) -> torch.Tensor:
    """Squared output error summed over output channels, averaged over the rest (AdaRound's loss)."""
    return ((forward_with(layer, x, weight, bias) - target) ** 2).sum(dim=1).mean()


@dataclass(frozen=True)
class RoundingReport:
    """What one reconstruction did: its loss, how decided the soft rounding ended, which rounding was kept."""

    first_loss: float  # relative reconstruction loss of the first step (soft rounding at the fp32 weight)
    last_loss: float  # of the last step
    undecided: float  # share of weights whose soft rounding ended strictly between 0.01 and 0.99
    learned_error: float  # on all of `inputs`, hard learned rounding
    nearest_error: float  # on all of `inputs`, round-to-nearest
    kept: str  # "learned" or "nearest"
    seconds: float


def learn_rounding(layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None, params, inputs: torch.Tensor,
                   targets: torch.Tensor, settings: RoundingSettings) -> tuple[torch.Tensor, RoundingReport]:
    """AdaRound of one weight tensor on its grid `params`: the hard up/down choice (uint8), the
    learned one or nearest rounding, whichever reconstructs `targets` from `inputs` better."""
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(settings.seed)
    weight, bias = weight.detach().float(), None if bias is None else bias.detach().float()
    v = initial_v(weight, params).requires_grad_(True)
    optimizer = torch.optim.Adam([v], lr=settings.learning_rate)
    n = inputs.shape[0]
    # both terms scale-free, so one regulariser weight fits every layer: the output error relative to
    # the output's energy, the regulariser averaged over the weights
    energy = float((targets.float() ** 2).sum(dim=1).mean()) or 1.0
    losses = []
    for step in range(settings.iterations):
        batch = torch.randint(n, (min(settings.batch_size, n),), generator=generator)
        h = rectified_sigmoid(v)
        loss = reconstruction_error(layer, inputs[batch], rounded_weight(weight, params, h), bias, targets[batch]) / energy
        if step in (0, settings.iterations - 1):
            losses.append(float(loss.detach()))
        beta = beta_schedule(step, settings.iterations)
        if beta is not None:
            loss = loss + settings.regulariser_weight * rounding_regulariser(h, beta) / h.numel()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    h = rectified_sigmoid(v.detach())
    learned = (v.detach() >= 0).to(torch.uint8)
    nearest = nearest_up(weight, params)
    with torch.no_grad():
        errors = [float(reconstruction_error(layer, inputs, rounded_weight(weight, params, up.float()), bias, targets))
                  for up in (learned, nearest)]
    keep_learned = errors[0] < errors[1]
    report = RoundingReport(losses[0], losses[-1], float(((h > 0.01) & (h < 0.99)).float().mean()), errors[0],
                            errors[1], "learned" if keep_learned else "nearest", time.perf_counter() - start)
    return (learned if keep_learned else nearest), report


class RoundingStore:
    """Learned roundings of one model and calibration, one file per (layer, weight bits)."""

    def __init__(self, folder: Path, identity: dict[str, Any]):
        self.folder = Path(folder)
        marker = self.folder / "identity.json"
        expected = {"format": FORMAT, **identity}
        if marker.exists():
            try:
                saved = json.loads(marker.read_text())
            except (OSError, ValueError) as exc:
                raise DataError(f"{marker}: unreadable ({exc}); delete {self.folder} to learn the rounding again") from None
            if saved != json.loads(json.dumps(expected)):
                raise DataError(f"{marker}: learned for another model, calibration or rounding setting; "
                                f"delete {self.folder} to learn the rounding again")
        else:
            write_text(marker, json.dumps(expected, indent=1, sort_keys=True))

    def path(self, layer: str, bits: int) -> Path:
        return self.folder / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', layer)}.w{bits}.npy"

    def load(self, layer: str, bits: int, shape: Sequence[int]) -> torch.Tensor | None:
        path = self.path(layer, bits)
        if not path.exists():
            return None
        count = int(np.prod(shape))
        try:
            packed = np.load(path, allow_pickle=False)
            if packed.dtype != np.uint8 or packed.size != (count + 7) // 8:
                raise ValueError(f"expected {(count + 7) // 8} bytes of packed bits, got {packed.size} {packed.dtype}")
            bits_ = np.unpackbits(packed, count=count)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: unreadable learned rounding of layer {layer!r} ({exc}); "
                            f"delete it to learn it again") from None
        return torch.from_numpy(bits_.reshape(tuple(shape)).copy())

    def save(self, layer: str, bits: int, up: torch.Tensor) -> None:
        packed = np.packbits(up.flatten().cpu().numpy().astype(np.uint8))
        with atomic_write(self.path(layer, bits), "wb") as fh:
            np.save(fh, packed, allow_pickle=False)


@torch.no_grad()
def _layer_inputs(qmodel: QuantizedModel, name: str, data: Iterable) -> torch.Tensor:
    """The fp32 inputs of one layer on `data` (the caller has every quantizer off, fp32 weights)."""
    seen: list[torch.Tensor] = []
    handle = qmodel.layers()[name].register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    device = qmodel.device
    try:
        for x, _ in data:
            qmodel(x.to(device, non_blocking=True))
    finally:
        handle.remove()
    return torch.cat(seen)


def prepare_rounding(qmodel: QuantizedModel, data: Iterable, bit_widths: Iterable[int], settings: RoundingSettings,
                     store: RoundingStore, progress: bool = False) -> list[tuple[str, int, RoundingReport]]:
    """Give every layer's weight quantizer its learned rounding at each of `bit_widths`: from
    `store`, or learned on `data` (calibration batches) and stored at once. Returns what was
    learned (layer, bits, report). The model's bits, quantizer states and frozen weights are restored."""
    widths = sorted({int(b) for b in bit_widths})
    modules = qmodel.layers()
    todo: dict[str, list[int]] = {}
    for name, layer in modules.items():
        wq = adapter.weight_quantizer(layer)
        if getattr(wq, "learned_rounding", None) is None:
            wq.learned_rounding = LearnedRounding()
        for bits in widths:
            if wq.learned_rounding.get(bits) is None:
                stored = store.load(name, bits, layer.weight.shape)
                if stored is None:
                    todo.setdefault(name, []).append(bits)
                else:
                    wq.learned_rounding.set(bits, stored.to(layer.weight.device))
    if not todo:
        return []
    learned: list[tuple[str, int, RoundingReport]] = []
    layer_bits, frozen = qmodel.layer_bits(), qmodel.weights_frozen
    enabled = {a: adapter.is_enabled(q) for a, q in qmodel.iter_quantizers()}
    qmodel.unfreeze_weights()
    bar = tqdm(total=sum(map(len, todo.values())), desc=f"learning rounding ({settings.method})",
               disable=not progress, leave=False)
    try:
        for address, q in qmodel.iter_quantizers():
            adapter.set_enabled(q, False)
        for name, widths_todo in todo.items():
            layer = modules[name]
            inputs = _layer_inputs(qmodel, name, data)
            weight = layer.weight.detach().clone()
            bias = None if layer.bias is None else layer.bias.detach().clone()
            with torch.no_grad():
                targets = forward_with(layer, inputs, weight, bias)
            wq = adapter.weight_quantizer(layer)
            for bits in widths_todo:
                wq.num_bits = bits
                apply_clipping(wq)
                up, report = learn_rounding(layer, weight, bias, quant_params(wq), inputs, targets, settings)
                store.save(name, bits, up)
                learned.append((name, bits, report))
                wq.learned_rounding.set(bits, up)
                bar.update()
    finally:
        bar.close()
        for address, q in qmodel.iter_quantizers():
            adapter.set_enabled(q, enabled[address])
        if frozen:
            qmodel.freeze_weights()
        qmodel.set_layer_bits(layer_bits)
    return learned


def ensure_rounding(qmodel: QuantizedModel, study, bit_widths: Iterable[int]) -> list[tuple[str, int, RoundingReport]]:
    """The workload's learned rounding (`calibration.rounding`) at `bit_widths` on `qmodel`, from
    the study's rounding folder or learned on its calibration data; nothing for `nearest`."""
    settings = RoundingSettings.from_workload(study.workload)
    widths = {int(b) for b in bit_widths}
    if not settings.learned or all(
            getattr(adapter.weight_quantizer(layer), "learned_rounding", None) is not None
            and all(adapter.weight_quantizer(layer).learned_rounding.get(b) is not None for b in widths)
            for layer in qmodel.layers().values()):
        return []
    identity = {"calibration": calibration_identity(study), "rounding": asdict(settings)}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    store = RoundingStore(study.results_dir / "rounding" / f"{settings.method}-{digest}", identity)
    return prepare_rounding(qmodel, study.batches("calibration"), widths, settings, store, progress=True)
