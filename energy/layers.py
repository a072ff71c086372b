"""Layer geometry of a network, traced from a real forward pass.

Every `nn.Conv2d` (grouped and depthwise included) and `nn.Linear` is recorded under its
qualified module name (`model.named_modules()`), in the order the forward pass first calls it.
That is the same naming and order as `sw.model.quantized_model.QuantizedModel.layer_names`, so the
energy table and the search agree on layer identity. A Linear is a 1x1 convolution on a 1x1
feature map, so both kinds share one geometry record.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Sequence

from sw.core.errors import UserError

if TYPE_CHECKING:  # torch is imported lazily: engine worker processes only need the geometry
    import torch
    from torch import nn


@dataclass(frozen=True)
class LayerGeometry:
    """Loop bounds of one layer for batch 1; everything a cost model needs except bit widths."""

    kind: str  # "conv" or "linear"
    in_channels: int
    out_channels: int
    groups: int
    in_h: int
    in_w: int
    out_h: int
    out_w: int
    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    dilation_h: int
    dilation_w: int
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int
    batch: int = 1

    @property
    def n_weights(self) -> int:
        return self.out_channels * (self.in_channels // self.groups) * self.kernel_h * self.kernel_w

    @property
    def n_inputs(self) -> int:
        return self.batch * self.in_channels * self.in_h * self.in_w

    @property
    def n_outputs(self) -> int:
        return self.batch * self.out_channels * self.out_h * self.out_w

    @property
    def reduction_size(self) -> int:
        """Products summed into one output: (input channels per group) x kernel area."""
        return (self.in_channels // self.groups) * self.kernel_h * self.kernel_w

    @property
    def macs(self) -> int:
        return self.n_outputs * self.reduction_size

    def key(self) -> str:
        """Stable identity for caching: a short hash of every field."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def describe(self) -> str:
        if self.kind == "linear":
            return f"linear {self.in_channels}->{self.out_channels}"
        g = f" g{self.groups}" if self.groups > 1 else ""
        return (f"conv {self.in_channels}->{self.out_channels} {self.kernel_h}x{self.kernel_w}/s{self.stride_h}{g} "
                f"@{self.in_h}x{self.in_w}")


def _pair(value) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (tuple, list)) else (int(value), int(value))


def _conv_geometry(module: "nn.Conv2d", x: "torch.Tensor", y: "torch.Tensor") -> LayerGeometry:
    if isinstance(module.padding, str):  # "same" / "valid": derive the total padding from the shapes
        (kh, kw), (sh, sw), (dh, dw) = module.kernel_size, module.stride, module.dilation
        total_h = max(0, (y.shape[2] - 1) * sh + dh * (kh - 1) + 1 - x.shape[2])
        total_w = max(0, (y.shape[3] - 1) * sw + dw * (kw - 1) + 1 - x.shape[3])
        pads = (total_h // 2, total_h - total_h // 2, total_w // 2, total_w - total_w // 2)
    else:
        ph, pw = _pair(module.padding)
        pads = (ph, ph, pw, pw)
    (kh, kw), (sh, sw), (dh, dw) = _pair(module.kernel_size), _pair(module.stride), _pair(module.dilation)
    return LayerGeometry(
        kind="conv", in_channels=module.in_channels, out_channels=module.out_channels, groups=module.groups,
        in_h=int(x.shape[2]), in_w=int(x.shape[3]), out_h=int(y.shape[2]), out_w=int(y.shape[3]),
        kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw, dilation_h=dh, dilation_w=dw,
        pad_top=pads[0], pad_bottom=pads[1], pad_left=pads[2], pad_right=pads[3])


def _linear_geometry(module: "nn.Linear", x: "torch.Tensor") -> LayerGeometry:
    # Rows of a batched or sequence input are independent vectors: they become the output pixels.
    rows = int(x.numel() // x.shape[-1]) if x.dim() > 1 else 1
    return LayerGeometry(
        kind="linear", in_channels=module.in_features, out_channels=module.out_features, groups=1,
        in_h=1, in_w=rows, out_h=1, out_w=rows, kernel_h=1, kernel_w=1, stride_h=1, stride_w=1,
        dilation_h=1, dilation_w=1, pad_top=0, pad_bottom=0, pad_left=0, pad_right=0)


def trace_layers(model: "nn.Module", input_shape: Sequence[int]) -> dict[str, LayerGeometry]:
    """{qualified name: geometry} of every Conv2d / Linear, in forward order, for one input of `input_shape`.

    `input_shape` is C x H x W (no batch); the forward pass runs on zeros with batch 1.
    """
    import torch
    from torch import nn

    names = {module: name for name, module in model.named_modules()}
    found: dict[str, LayerGeometry] = {}

    def hook(module: "nn.Module", inputs, output) -> None:
        name = names[module]
        if name in found:  # a module called twice keeps its first geometry
            return
        x = inputs[0]
        if isinstance(module, nn.Conv2d):
            found[name] = _conv_geometry(module, x, output)
        else:
            found[name] = _linear_geometry(module, x)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *[int(s) for s in input_shape]))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"model.input_shape {list(input_shape)}: the model's forward pass fails on it ({first})") from None
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not found:
        raise UserError("the model has no Conv2d or Linear layer to evaluate")
    return found


def workload_layers(workload) -> dict[str, LayerGeometry]:
    """Trace the workload's model architecture at the workload's input shape."""
    from sw.nets.models import build_architecture

    return trace_layers(build_architecture(workload), workload.model.input_shape)
