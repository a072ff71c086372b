"""Layer geometry of a network: the loop bounds of one Conv2d / Linear (`energy.trace` reads them
from a real forward pass).

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
