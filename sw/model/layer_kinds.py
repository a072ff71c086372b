"""Which layer types are quantized, how, and which compute stays fp32 (named, never silent).

Quantized (an input and a weight quantizer, searched like any layer): `nn.Conv1d`, `nn.Conv2d`,
`nn.ConvTranspose1d`, `nn.ConvTranspose2d` and `nn.Linear`, each swapped for its
pytorch-quantization counterpart. Weights are quantized per *output* channel: axis 0 of a
convolution's or linear layer's weight, axis 1 of a transposed convolution's (its weight is
in x out / groups x k...), so the scale folds into the output requantization as in hardware.

Everything else that multiplies tensors is listed by `not_quantized`: modules with weights of
other types (Conv3d, Embedding, LSTM, MultiheadAttention, ...) and, in a torch.fx graph, matrix
products and functional convolutions / linear layers (`torch.matmul`, `@`, `torch.bmm`,
`F.linear`, `F.scaled_dot_product_attention`, ...): attention's Q.K^T and softmax.V among them.
"""

from __future__ import annotations

import math
import operator

import torch
import torch.nn.functional as F
from pytorch_quantization import nn as qnn
from torch import fx, nn

# fp32 type -> its quantized counterpart (exact types: a subclass may change the forward)
QUANTIZED: dict[type, type] = {nn.Conv1d: qnn.QuantConv1d, nn.Conv2d: qnn.QuantConv2d,
                               nn.ConvTranspose1d: qnn.QuantConvTranspose1d,
                               nn.ConvTranspose2d: qnn.QuantConvTranspose2d, nn.Linear: qnn.QuantLinear}
QUANT_LAYER_TYPES: tuple[type, ...] = tuple(QUANTIZED.values())
TRANSPOSED: tuple[type, ...] = (nn.ConvTranspose1d, nn.ConvTranspose2d)
# what each layer computes, for fp32 and quantized modules alike (QuantConv2d is no nn.Conv2d)
KINDS: dict[type, str] = {nn.Conv1d: "conv1d", nn.Conv2d: "conv2d", nn.ConvTranspose1d: "conv_transpose1d",
                          nn.ConvTranspose2d: "conv_transpose2d", nn.Linear: "linear"}
KINDS |= {QUANTIZED[fp32]: kind for fp32, kind in KINDS.items()}

# graph nodes that multiply tensors outside any quantized layer
PRODUCT_FUNCTIONS: dict = {torch.matmul: "matmul", operator.matmul: "matmul", torch.bmm: "bmm", torch.mm: "mm",
                           torch.einsum: "einsum", torch.baddbmm: "baddbmm", F.linear: "linear",
                           F.bilinear: "bilinear", F.conv1d: "conv1d", F.conv2d: "conv2d", F.conv3d: "conv3d",
                           F.conv_transpose1d: "conv_transpose1d", F.conv_transpose2d: "conv_transpose2d",
                           F.scaled_dot_product_attention: "scaled_dot_product_attention"}
PRODUCT_METHODS = {"matmul": "matmul", "bmm": "bmm", "mm": "mm", "__matmul__": "matmul"}


def kind(module: nn.Module) -> str | None:
    """"conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d", "linear", or None (not a layer we quantize)."""
    return next((KINDS[t] for t in type(module).__mro__ if t in KINDS), None)


def weight_axis(module: nn.Module) -> int:
    """The output-channel axis of the module's weight (1 for transposed convolutions, else 0)."""
    return 1 if (kind(module) or "").startswith("conv_transpose") else 0


def macs(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Multiply-accumulates of one sample through a quantized layer (x, y: batched input and output)."""
    if kind(module) == "linear":
        return int(y[0].numel()) * module.in_features
    kernel = math.prod(module.kernel_size)
    if weight_axis(module) == 1:  # every input element meets out/groups x kernel weights
        return int(x[0].numel()) * module.out_channels // module.groups * kernel
    return int(y[0].numel()) * module.in_channels // module.groups * kernel


def _has_weights(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def not_quantized(model: nn.Module) -> list[str]:
    """`name (kind)` of every multiplying module or graph node that stays fp32, in model order.

    Quantized layers and their own submodules (quantizers) are skipped; normalisation layers
    (BatchNorm, LayerNorm, GroupNorm) are elementwise affine maps and are not listed.
    """
    skip = (*QUANT_LAYER_TYPES, nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.PReLU)
    found: list[str] = []
    for name, module in model.named_modules():
        if name and not isinstance(module, skip) and (_has_weights(module) or isinstance(module, nn.MultiheadAttention)):
            if not any(name.startswith(prefix + ".") for prefix in _listed_modules(found)):
                found.append(f"{name} ({type(module).__name__})")
    if isinstance(model, fx.GraphModule):
        for node in model.graph.nodes:
            kind = (PRODUCT_FUNCTIONS.get(node.target) if node.op == "call_function" else
                    PRODUCT_METHODS.get(node.target) if node.op == "call_method" else None)
            if kind is not None:
                found.append(f"{node.name} ({kind})")
    return found


def _listed_modules(found: list[str]) -> list[str]:
    return [entry.split(" (")[0] for entry in found]


def forward_with(layer: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The layer's operation on `x` with the given weight (its own geometry, no quantizers)."""
    what = kind(layer)
    if what == "linear":
        return F.linear(x, weight, bias)
    if what is None:
        raise ValueError(f"{type(layer).__name__} is not a layer type this toolkit quantizes")
    if layer.padding_mode != "zeros":
        raise ValueError(f"zero-padded convolutions only, not padding_mode {layer.padding_mode!r}")
    if what in ("conv1d", "conv2d"):
        conv = F.conv1d if what == "conv1d" else F.conv2d
        return conv(x, weight, bias, layer.stride, layer.padding, layer.dilation, layer.groups)
    transposed = F.conv_transpose1d if what == "conv_transpose1d" else F.conv_transpose2d
    return transposed(x, weight, bias, layer.stride, layer.padding, layer.output_padding, layer.groups, layer.dilation)
