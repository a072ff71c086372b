"""Accuracy metrics, by name. A metric maps (logits, labels) to the number of hits in the batch."""

from __future__ import annotations

import math
from typing import Callable

import torch

from sw.core.registry import Registry

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


def chance_accuracy(metric: str, num_classes: int) -> float | None:
    """What guessing scores on a top-k metric: k / classes (None for a metric of another kind)."""
    if not (metric.startswith("top") and metric[3:].isdigit()):
        return None
    return min(int(metric[3:]), num_classes) / num_classes


def at_chance(accuracy: float, chance: float, samples: int, sigmas: float = 3.0) -> bool:
    """True unless `accuracy` is more than `sigmas` binomial standard errors above `chance`."""
    if samples <= 0:
        return False
    return accuracy <= chance + sigmas * math.sqrt(chance * (1.0 - chance) / samples)
