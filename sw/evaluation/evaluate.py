"""Evaluate a model's metrics on a dataset.

The search evaluates hundreds of candidates on the same images, so the images are decoded
and batched once (`Batches`) and every evaluation only runs forward passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import nn
from tqdm import tqdm

from sw.evaluation.metrics import METRICS


@dataclass
class Batches:
    """A dataset materialised as a list of (images, labels) batches held in memory."""

    batches: list[tuple[torch.Tensor, torch.Tensor]]

    @classmethod
    def from_loader(cls, loader: Iterable, *, progress: bool = False, desc: str = "loading") -> "Batches":
        items = []
        for x, y in tqdm(loader, desc=desc, disable=not progress, leave=False):
            items.append((x.contiguous(), torch.as_tensor(y)))
        return cls(items)

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    @property
    def num_samples(self) -> int:
        return sum(len(y) for _, y in self.batches)


@torch.no_grad()
def evaluate(model: nn.Module, data: Iterable, metrics: Sequence[str] = ("top1",), *,
             progress: bool = False, desc: str = "evaluating") -> dict[str, float]:
    """Fraction of samples each metric counts as correct (no_grad: keeps later QAT possible)."""
    fns = [METRICS.get(m) for m in metrics]
    hits = [0] * len(fns)
    seen = 0
    was_training = model.training
    model.eval()
    try:
        for x, y in tqdm(data, desc=desc, disable=not progress, leave=False):
            logits = model(x)
            for i, fn in enumerate(fns):
                hits[i] += fn(logits, y)
            seen += len(y)
    finally:
        model.train(was_training)
    if seen == 0:
        return {m: float("nan") for m in metrics}
    return {m: h / seen for m, h in zip(metrics, hits)}
