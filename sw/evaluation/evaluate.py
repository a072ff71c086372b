"""Evaluate a model's metrics on a dataset.

The search evaluates hundreds of candidates on the same images, so the images are decoded
and batched once (`Batches`) and every evaluation only runs forward passes. 8-bit images
(image folders, CIFAR, corrupted copies) are held as uint8, a quarter of float32's memory, and
expanded per batch to exactly the float32 values the dataset yields (`k / 255`); a study holds
its sets within a memory bound (`BatchCache`).
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Hashable, Iterable, Iterator, Sequence

import torch
from torch import nn
from tqdm import tqdm

from sw.core.device import module_device
from sw.core.errors import DataError
from sw.evaluation.metrics import METRICS

# k / 255 for k = 0..255 as the CPU computes it (the datasets' own division): the values a uint8
# image stands for, the same on every device (a CUDA division by a scalar multiplies by its reciprocal)
_UNIT = torch.arange(256, dtype=torch.float32) / 255.0


def compact(x: torch.Tensor) -> torch.Tensor:
    """`x` as uint8 codes when every value is exactly `k / 255` (an 8-bit image), else `x` itself."""
    if x.dtype != torch.float32 or x.numel() == 0:
        return x
    codes = (x * 255.0).round_().clamp_(0.0, 255.0).to(torch.uint8)
    return codes if torch.equal(expand(codes.to(x.device)), x) else x


def expand(x: torch.Tensor) -> torch.Tensor:
    """float32 images from `compact`'s uint8 codes (`k / 255`, bit for bit); other tensors as they are."""
    if x.dtype != torch.uint8:
        return x
    if x.is_cpu:
        return x.to(torch.float32).div_(255.0)
    return _unit_on(x.device)[x.long()]


@functools.lru_cache(maxsize=None)
def _unit_on(device: torch.device) -> torch.Tensor:
    return _UNIT.to(device)


@dataclass
class Batches:
    """A dataset materialised as a list of (images, labels) batches held in memory on one device.

    Images are stored compacted (uint8 where 8-bit) and iterate as float32 in [0, 1]."""

    batches: list[tuple[torch.Tensor, torch.Tensor]]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def from_loader(cls, loader: Iterable, *, progress: bool = False, desc: str = "loading",
                    device: torch.device | str = "cpu", max_bytes: int | None = None, what: str = "data",
                    ) -> "Batches":
        """Decode `loader` once onto `device`. More than `max_bytes` held (or foreseeable from the
        first batch and the loader's length) is a `DataError` naming `what`."""
        device = torch.device(device)
        total = len(loader.dataset) if hasattr(loader, "dataset") else None  # type: ignore[attr-defined]
        items, held, seen = [], 0, 0
        for x, y in tqdm(loader, desc=desc, disable=not progress, leave=False):
            x = compact(torch.as_tensor(x).contiguous()).to(device, non_blocking=True)
            y = torch.as_tensor(y).to(device, non_blocking=True)
            items.append((x, y))
            held += _nbytes(x, y)
            seen += len(y)
            if max_bytes is not None:
                need = held if total is None else held * max(total, seen) // seen
                if need > max_bytes:
                    shape = "x".join(map(str, x.shape[1:]))
                    raise DataError(f"{what}: {max(total or 0, seen)} images of {shape} ({x.dtype}) need "
                                    f"{need / 2**20:.0f} MiB decoded, more than loading.memory_mb "
                                    f"({max_bytes >> 20}); raise loading.memory_mb or set a sample_limit")
        return cls(items, device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return ((expand(x), y) for x, y in self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    @property
    def num_samples(self) -> int:
        return sum(len(y) for _, y in self.batches)

    @property
    def nbytes(self) -> int:
        """Memory the stored batches take (images as stored, labels)."""
        return sum(_nbytes(x, y) for x, y in self.batches)


def _nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class BatchCache:
    """Decoded sets by key within `max_bytes` in all: adding one evicts the least recently used
    first (a set alone above the bound is refused by `Batches.from_loader`)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._sets: OrderedDict[Hashable, Batches] = OrderedDict()

    def get(self, key: Hashable) -> Batches | None:
        found = self._sets.get(key)
        if found is not None:
            self._sets.move_to_end(key)
        return found

    def put(self, key: Hashable, batches: Batches) -> None:
        self._sets.pop(key, None)
        while self._sets and self.used + batches.nbytes > self.max_bytes:
            self._sets.popitem(last=False)
        self._sets[key] = batches

    @property
    def used(self) -> int:
        return sum(b.nbytes for b in self._sets.values())

    def __contains__(self, key: Any) -> bool:
        return key in self._sets

    def __len__(self) -> int:
        return len(self._sets)


@torch.no_grad()
def evaluate(model: nn.Module, data: Iterable, metrics: Sequence[str] = ("top1",), *,
             progress: bool = False, desc: str = "evaluating") -> dict[str, float]:
    """Fraction of samples each metric counts as correct (no_grad: keeps later QAT possible).

    Batches go to the model's device (a no-op where they are already there)."""
    fns = [METRICS.get(m) for m in metrics]
    hits = [0] * len(fns)
    seen = 0
    was_training = model.training
    device = module_device(model) if isinstance(model, nn.Module) else torch.device("cpu")
    model.eval()
    try:
        for x, y in tqdm(data, desc=desc, disable=not progress, leave=False):
            logits = model(torch.as_tensor(x).to(device, non_blocking=True))
            y = torch.as_tensor(y).to(logits.device, non_blocking=True)
            for i, fn in enumerate(fns):
                hits[i] += fn(logits, y)
            seen += len(y)
    finally:
        model.train(was_training)
    if seen == 0:
        return {m: float("nan") for m in metrics}
    return {m: h / seen for m, h in zip(metrics, hits)}
