"""Accuracy metrics, by name. A metric maps (logits, labels) to the number of hits in the batch."""

from __future__ import annotations

from typing import Callable

import torch

from sw.registry import Registry

Metric = Callable[[torch.Tensor, torch.Tensor], int]
METRICS: Registry[Metric] = Registry("metric")


def _topk(k: int) -> Metric:
    def hits(logits: torch.Tensor, labels: torch.Tensor) -> int:
        k_eff = min(k, logits.shape[1])
        top = logits.topk(k_eff, dim=1).indices
        return int((top == labels.unsqueeze(1)).any(dim=1).sum())

    hits.__name__ = f"top{k}"
    return hits


METRICS.add("top1", _topk(1))
METRICS.add("top5", _topk(5))
