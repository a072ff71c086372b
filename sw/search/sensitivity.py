"""How sensitive each layer is to quantization: second-order proxies and the measured drop.

- `hutchinson_traces`: the trace of each layer's weight Hessian of the loss, estimated with
  Hutchinson's estimator (E[v^T H v] = tr(H) for Rademacher v; HAWQ-V2), from Hessian-vector
  products by double backpropagation;
- `fisher_traces`: the trace of each layer's empirical Fisher information (the summed squared
  per-batch gradients; FIT, Zandonati et al.);
- `weight_perturbation`: ||Q_b(W) - W||^2 of a layer's weight at b bits with its quantizer;
- a proxy is a trace per weight times the perturbation: the loss increase a quadratic model of
  the loss predicts when only that layer is quantized to b bits;
- `spearman`: the rank correlation of a proxy with the measured per-layer drop.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from sw.quant import adapter
from sw.quant.adaround import rounded_weight
from sw.quant.clipping import apply_clipping
from sw.quant.presets import quant_params

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _weights(model: nn.Module, layers: Sequence[str]) -> list[torch.Tensor]:
    modules = dict(model.named_modules())
    return [modules[name].weight for name in layers]


@contextmanager
def _differentiable(weights: list[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    """The weights with gradients on for the block, as they were after it."""
    flags = [w.requires_grad for w in weights]
    for w in weights:
        w.requires_grad_(True)
    try:
        yield weights
    finally:
        for w, flag in zip(weights, flags):
            w.requires_grad_(flag)


def hutchinson_traces(model: nn.Module, layers: Sequence[str], batches: Iterable, loss_fn: LossFunction,
                      samples: int = 16, seed: int = 0) -> list[float]:
    """tr(H) of the loss with respect to each layer's weight, averaged over `batches` and `samples`
    Rademacher probes per batch (the model in eval mode; gradients of the weights only)."""
    generator = torch.Generator().manual_seed(seed)
    count = 0
    with _differentiable(_weights(model, layers)) as weights:
        totals = [0.0] * len(weights)
        for x, y in batches:
            loss = loss_fn(model(x), y)
            grads = torch.autograd.grad(loss, weights, create_graph=True)
            for _ in range(samples):
                probes = [torch.randint(0, 2, w.shape, generator=generator).to(w.dtype) * 2 - 1 for w in weights]
                products = torch.autograd.grad(grads, weights, grad_outputs=probes, retain_graph=True)
                for i, (v, hv) in enumerate(zip(probes, products)):
                    totals[i] += float((v * hv).sum())
                count += 1
    return [t / max(1, count) for t in totals]


def fisher_traces(model: nn.Module, layers: Sequence[str], batches: Iterable, loss_fn: LossFunction) -> list[float]:
    """tr(F) of each layer's weight: the mean over batches of the squared gradient's sum."""
    count = 0
    with _differentiable(_weights(model, layers)) as weights:
        totals = [0.0] * len(weights)
        for x, y in batches:
            grads = torch.autograd.grad(loss_fn(model(x), y), weights)
            for i, g in enumerate(grads):
                totals[i] += float((g.double() ** 2).sum())
            count += 1
    return [t / max(1, count) for t in totals]


@torch.no_grad()
def weight_perturbation(qmodel, layer: str, bits: int) -> float:
    """||Q_b(W) - W||^2 of a layer's fp32 weight through its weight quantizer at `bits` (learned
    rounding where the layer has it at those bits); the quantizer's state is restored."""
    module = qmodel.layers()[layer]
    wq = adapter.weight_quantizer(module)
    saved_bits, enabled = wq.num_bits, adapter.is_enabled(wq)
    master = qmodel.fp32_weight(layer)
    try:
        wq.num_bits = bits
        apply_clipping(wq)
        adapter.set_enabled(wq, True)
        rounding = getattr(wq, "learned_rounding", None)
        up = None if rounding is None else rounding.get(bits)
        quantized = wq(master) if up is None else rounded_weight(master, quant_params(wq), up.float())
    finally:
        wq.num_bits = saved_bits
        apply_clipping(wq)
        adapter.set_enabled(wq, enabled)
    return float(((quantized.double() - master.double()) ** 2).sum())


def proxy(trace: float, parameters: int, perturbation: float) -> float:
    """The predicted loss increase: the average curvature per weight times ||Q_b(W) - W||^2."""
    return trace / max(1, parameters) * perturbation


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); nan when either side is constant."""
    ra, rb = _ranks(np.asarray(a, dtype=float)), _ranks(np.asarray(b, dtype=float))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=float)
    for value in np.unique(values):  # ties share their average rank
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks
