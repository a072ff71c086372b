"""Deterministic fp32 training (with a checkpoint cache) and quantization-aware retraining.

The project trains its own models so that nothing is downloaded: for a given workload the
same seed gives the same weights, cached under `<results.dir>/checkpoints/` by a hash of the
model and training settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from sw.core.device import module_device, resolve_device
from sw.core.durable import atomic_write
from sw.data.datasets import build_loader
from sw.evaluation.evaluate import evaluate
from sw.quant.lsq import swap_in, swap_out

log = logging.getLogger(__name__)


def _shift_augment(x: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translation by up to `max_shift` pixels (zero fill): cheap, label-preserving."""
    n, _, h, w = x.shape
    padded = nn.functional.pad(x, (max_shift,) * 4)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    out = torch.empty_like(x)
    for i in range(n):
        out[i] = padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
    return out


def train(model: nn.Module, loader, *, epochs: int, lr: float, momentum: float = 0.9,
          weight_decay: float = 5e-4, seed: int = 0, progress: bool = False, desc: str = "training") -> nn.Module:
    """SGD with a cosine schedule and shift augmentation, on the model's device (the batches go there;
    the augmentation draws on the CPU, so a seed gives the same shifts everywhere); returns the model
    in eval mode."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * len(loader)))
    loss_fn = nn.CrossEntropyLoss()
    device = module_device(model)
    model.train()
    for _ in tqdm(range(epochs), desc=desc, disable=not progress, leave=False):
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = loss_fn(model(_shift_augment(x, generator)), y)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def _training_key(workload) -> str:
    cfg = workload.model
    spec = workload.dataset("retraining")
    blob = json.dumps({"model": {k: cfg[k] for k in ("name", "num_classes", "input_shape")},
                       "train": cfg.train.to_dict(), "data": spec.to_dict()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def cached_checkpoint(workload) -> Path:
    """Where the trained fp32 weights of this workload's model are cached."""
    return Path(workload.results.dir) / "checkpoints" / f"{workload.model.name.replace(':', '_')}-{_training_key(workload)}.pt"


def train_and_cache(workload, model: nn.Module, *, progress: bool = False) -> Path:
    """Train the workload's model from scratch on the workload's `device`, report its test accuracy,
    cache the weights (as CPU tensors: the checkpoint loads anywhere)."""
    cfg = workload.model.train
    model.to(resolve_device(workload.device, where=workload.path))
    spec = workload.dataset("retraining")
    loader = build_loader(spec.__class__({**spec, "batch_size": cfg.batch_size}), shuffle=True)
    print(f"Training {workload.model.name} ({cfg.epochs} epochs, seed {cfg.seed}); cached for later runs...")
    train(model, loader, epochs=cfg.epochs, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
          seed=cfg.seed, progress=progress)
    test = evaluate(model, build_loader(workload.dataset("reevaluation")), workload.accuracy.metrics)
    print("fp32 test accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in test.items()))
    path = cached_checkpoint(workload)
    with atomic_write(path, "wb") as fh:  # a killed run never leaves a half-written checkpoint
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, fh)
    return path


def quantization_aware_training(qmodel, loader, *, epochs: int, lr: float, method: str = "ste", seed: int = 0,
                                progress: bool = False) -> None:
    """Fine-tune a QuantizedModel at its current bit widths: `ste` (fixed ranges, straight-through
    rounding) or `lsq` (learned step size per tensor / per channel, `sw.quant.lsq`).

    Weights are quantized on every forward while training, then frozen again for evaluation;
    every quantizer ends with its trained amax pinned (no bit-dependent re-clipping). Layers with
    learned rounding start from their learned codes (`QuantizedModel.adopt_learned_rounding`).
    """
    qmodel.adopt_learned_rounding()
    qmodel.unfreeze_weights()
    originals = swap_in(qmodel, method)
    qmodel.to(module_device(qmodel))  # the swapped-in quantizers' parameters join the model's device
    try:
        train(qmodel, loader, epochs=epochs, lr=lr, seed=seed, progress=progress, desc=f"QAT ({method})")
    finally:
        swap_out(qmodel, originals)
    qmodel.freeze_weights()
