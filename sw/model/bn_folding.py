"""Fold eval-mode batch normalisation into the convolution (or linear layer) before it.

    conv(x; W, b) -> BN(gamma, beta, mean, var, eps)
 == conv(x; W * a, (b - mean) * a + beta),   a = gamma / sqrt(var + eps)   (per output channel)

Folding happens on the fp32 model, before quantizers are inserted and calibrated, so the
quantized weights are the ones the deployed model multiplies with (TensorRT, SNPE and most
accelerators fold BN). The arithmetic is done in float64 and rounded once to fp32;
`check_folding` proves on a forward pass that no fp32 output moved by more than
`TOLERANCE` relative to the output's magnitude.

On a torch.fx graph a BN folds when its only input is a conv/linear whose only user is
that BN. Without a graph (models fx cannot trace), pairs that sit next to each other in an
`nn.Sequential` fold; any other BN stays.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from sw.core.errors import DataError

TOLERANCE = 1e-5  # max |folded - original| / max |original| over a forward pass
_FOLDABLE = {nn.Conv2d: (nn.BatchNorm2d,), nn.Conv1d: (nn.BatchNorm1d,), nn.Linear: (nn.BatchNorm1d,)}


def can_fold(layer: nn.Module, bn: nn.Module) -> bool:
    return (type(layer) in _FOLDABLE and isinstance(bn, _FOLDABLE[type(layer)]) and bn.track_running_stats
            and bn.running_mean is not None and layer.weight.shape[0] == bn.num_features)


@torch.no_grad()
def fold_into(layer: nn.Module, bn: nn.Module) -> None:
    """Absorb `bn` (eval mode: running statistics) into `layer`'s weight and bias, in place."""
    a = bn.weight.double() if bn.affine else torch.ones_like(bn.running_var, dtype=torch.float64)
    a = a / torch.sqrt(bn.running_var.double() + bn.eps)
    beta = bn.bias.double() if bn.affine else torch.zeros_like(a)
    bias = layer.bias.double() if layer.bias is not None else torch.zeros_like(a)
    weight = layer.weight.double() * a.reshape(-1, *([1] * (layer.weight.dim() - 1)))
    layer.weight.copy_(weight.to(layer.weight.dtype))
    new_bias = ((bias - bn.running_mean.double()) * a + beta).to(layer.weight.dtype)
    if layer.bias is None:
        layer.bias = nn.Parameter(new_bias, requires_grad=layer.weight.requires_grad)
    else:
        layer.bias.copy_(new_bias)


def fold_graph(gm: fx.GraphModule) -> list[tuple[str, str]]:
    """Fold every conv/linear -> BN pair of a traced graph; returns the (layer, bn) names folded."""
    modules = dict(gm.named_modules())
    folded = []
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or len(node.args) != 1 or not isinstance(node.args[0], fx.Node):
            continue
        prev = node.args[0]
        if prev.op != "call_module" or len(prev.users) != 1:
            continue
        layer, bn = modules[prev.target], modules[node.target]
        if not can_fold(layer, bn) or sum(n.target == prev.target for n in gm.graph.nodes if n.op == "call_module") != 1:
            continue  # a layer called twice cannot absorb one BN
        fold_into(layer, bn)
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
        folded.append((prev.target, node.target))
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return folded


def fold_sequential(model: nn.Module) -> list[tuple[str, str]]:
    """Fold conv/linear -> BN pairs that are neighbours in an nn.Sequential (no graph needed)."""
    folded = []
    for parent_name, parent in model.named_modules():
        if not isinstance(parent, nn.Sequential):
            continue
        children = list(parent.named_children())
        for (name, layer), (bn_name, bn) in zip(children, children[1:]):
            if can_fold(layer, bn):
                fold_into(layer, bn)
                setattr(parent, bn_name, nn.Identity())
                prefix = f"{parent_name}." if parent_name else ""
                folded.append((prefix + name, prefix + bn_name))
    return folded


def count_batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def check_folding(original: nn.Module, folded: nn.Module, input_shape: tuple[int, ...], *, seed: int = 0,
                  batch: int = 4) -> float:
    """Relative max output change of folding on a seeded batch in [0, 1); DataError beyond TOLERANCE."""
    x = torch.rand((batch, *input_shape), generator=torch.Generator().manual_seed(seed))
    reference = original(x)
    change = float((folded(x) - reference).abs().max() / reference.abs().max().clamp_min(1e-30))
    if not change <= TOLERANCE:
        raise DataError(f"batch-norm folding changed the fp32 outputs by {change:.2e} relative "
                        f"(more than {TOLERANCE:.0e}); set quantization.fold_bn: false")
    return change
