"""Bias correction of quantized weights (Banner et al., ACIQ paper, section 4.3), in a form hardware computes.

Quantization shifts each output channel's weight mean and changes its spread. The paper
restores both per output channel c: the spread with `xi_c = ||W_c - mean W_c|| / ||Wq_c - mean Wq_c||`
and the mean by shifting every weight by `mean W_c - xi_c mean Wq_c`. Here (`mean_variance`;
`mean` alone keeps xi_c = 1)

- `xi_c` multiplies the quantized weights of channel c: the integer codes are unchanged, only
  the channel's dequantization scale is (`SCALE / xi_c`);
- the mean correction goes into the layer's bias as its effect on the output averaged over
  the calibration data: `bias_c += sum_i (W - xi Wq)_{c,i} * E[input patch_i]`. When every
  input of the patch has the same mean this is exactly the paper's weight shift; in general
  it makes the per-channel mean output error zero on the calibration data. Shifted weights
  would leave the integer grid; a bias is an add the accelerator already has.

The correction depends on the weight bits, so `QuantizedModel` applies it whenever it
re-quantizes frozen weights (the search and evaluation path), cached per (layer, bits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.conv import _ConvNd

CORRECTIONS = ("none", "mean", "mean_variance")


class InputMean:
    """Forward pre-hook: the mean input of a Conv2d/Linear over every calibration sample."""

    def __init__(self) -> None:
        self.sum: torch.Tensor | None = None
        self.count = 0

    def __call__(self, module: nn.Module, inputs) -> None:
        x = inputs[0].detach().double()
        x = x.reshape(-1, x.shape[-1]) if isinstance(module, nn.Linear) else x
        total = x.sum(dim=0)
        self.sum = total if self.sum is None else self.sum + total
        self.count += x.shape[0]

    @property
    def mean(self) -> torch.Tensor | None:
        return None if self.sum is None else self.sum / self.count


@dataclass
class BiasCorrection:
    """The mean input patch of each group of a layer (groups x inputs per output channel)."""

    patch_mean: torch.Tensor
    variance: bool = True  # also restore each channel's spread (xi_c); False: mean only

    @classmethod
    def for_layer(cls, layer: nn.Module, mean_input: torch.Tensor, variance: bool = True) -> "BiasCorrection":
        """From a layer's mean input (C x H x W for a conv, features for a linear layer)."""
        x = mean_input.double()
        if isinstance(layer, nn.Linear):
            return cls(x.reshape(1, -1), variance)
        if not cls.supports(layer):
            raise ValueError(f"bias correction supports Conv1d, Conv2d and Linear layers, not {type(layer).__name__}")
        mode = "constant" if layer.padding_mode == "zeros" else layer.padding_mode
        padded = F.pad(x[None], layer._reversed_padding_repeated_twice, mode=mode)
        kernel, dilation, stride = layer.kernel_size, layer.dilation, layer.stride
        if len(kernel) == 1:  # a Conv1d: a 1 x L image
            padded, kernel, dilation, stride = padded[:, :, None, :], (1, *kernel), (1, *dilation), (1, *stride)
        patches = F.unfold(padded, kernel, dilation=dilation, stride=stride)
        return cls(patches.mean(dim=2)[0].reshape(layer.groups, -1), variance)

    @staticmethod
    def supports(layer: nn.Module) -> bool:
        """Linear and (1d/2d) convolutions; a transposed convolution's output mixes patches differently."""
        return isinstance(layer, nn.Linear) or (isinstance(layer, _ConvNd) and not layer.transposed
                                                 and len(layer.kernel_size) in (1, 2))

    def correct(self, weight: torch.Tensor, quantized: torch.Tensor, bias: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(corrected quantized weights, corrected bias) for fp32 `weight` quantized to `quantized`."""
        w, wq = weight.detach().double().flatten(1), quantized.detach().double().flatten(1)
        spread = (w - w.mean(dim=1, keepdim=True)).norm(dim=1)
        spread_q = (wq - wq.mean(dim=1, keepdim=True)).norm(dim=1)
        xi = torch.where(spread_q > 0, spread / torch.where(spread_q > 0, spread_q, 1.0), 1.0)
        if not self.variance:
            xi = torch.ones_like(xi)
        corrected = xi[:, None] * wq
        groups = self.patch_mean.shape[0]
        error = (w - corrected).reshape(groups, w.shape[0] // groups, -1)
        shift = torch.einsum("gof,gf->go", error, self.patch_mean.to(w.device)).reshape(-1)
        base = torch.zeros(w.shape[0], dtype=torch.float64, device=w.device) if bias is None else bias.detach().double()
        return corrected.to(weight.dtype).reshape(weight.shape), (base + shift).to(weight.dtype)

    def to_json(self) -> dict[str, Any]:
        return {"shape": list(self.patch_mean.shape), "patch_mean": self.patch_mean.flatten().tolist(),
                "variance": self.variance}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "BiasCorrection":
        return cls(torch.tensor(data["patch_mean"], dtype=torch.float64).reshape(data["shape"]), bool(data["variance"]))
