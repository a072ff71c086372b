"""Quantizers for quantization-aware training: straight-through (STE) and learned step size (LSQ).

`LsqQuantizer` computes exactly pytorch-quantization's forward (`scale = max_bound / amax`,
`clamp(round(x * scale)) / scale` in fp32, round half to even) with `amax = step * max_bound`,
so a trained model is the search's fake-quant model with new weights and new amax. Backward:

- input: straight-through inside the code range, 0 where the code saturates (clipped STE);
- step (LSQ, Esser et al., ICLR 2020, eq. 3), per tensor or per output channel:
  `d out / d step = round(x/s) - x/s` inside the range, `lo` below it, `hi` above it,
  times the gradient scale `g = 1 / sqrt(N * hi)` (N: elements per step; for activations
  the elements of one sample).

With `learn=False` the step is fixed (plain STE QAT). `swap_in` replaces the symmetric
quantizers of a QuantizedModel by LsqQuantizers for training; `swap_out` writes the learned
amax back into the original quantizers and pins it (no bit-dependent re-clipping), so the
result is an ordinary QuantizedModel that evaluate, cosim and export use unchanged.

The project's `ActivationQuantizer` rounds in place for speed: its gradient is zero, so
training must go through these quantizers (or the library's path), never through it.
"""

from __future__ import annotations

import math

import torch
from pytorch_quantization.nn import TensorQuantizer
from pytorch_quantization.tensor_quant import QuantDescriptor
from torch import nn

from sw.quant.adapter import is_enabled, set_amax, set_enabled
from sw.quant.presets import AffineQuantizer, Pow2Quantizer


class LsqFunction(torch.autograd.Function):
    """out = clamp(round(x * scale), lo, hi) / scale with scale = max_bound / (step * max_bound)."""

    @staticmethod
    def forward(ctx, x, step, max_bound: float, lo: float, hi: float, grad_scale: float):
        bound = torch.tensor(max_bound, dtype=torch.float32)
        scale = bound / (step * bound)
        v = x * scale
        q = torch.clamp(torch.round(v), lo, hi)
        ctx.save_for_backward(v, q)
        ctx.config = (lo, hi, grad_scale, step.shape)
        return q / scale

    @staticmethod
    def backward(ctx, grad):
        v, q = ctx.saved_tensors
        lo, hi, grad_scale, step_shape = ctx.config
        below, above = v < lo, v > hi
        grad_x = grad * ~(below | above)
        grad_step = None
        if ctx.needs_input_grad[1]:
            d_step = torch.where(below, torch.full_like(v, lo), torch.where(above, torch.full_like(v, hi), q - v))
            grad_step = (grad * d_step).sum_to_size(step_shape) * grad_scale
        return grad_x, grad_step, None, None, None, None


class LsqQuantizer(TensorQuantizer):
    """A symmetric quantizer with a trainable (LSQ) or fixed (STE) step, initialised from `source`."""

    def __init__(self, source: TensorQuantizer, *, learn: bool = True):
        super().__init__(QuantDescriptor(num_bits=source.num_bits, axis=source.axis, unsigned=source.unsigned,
                                         narrow_range=source.narrow_range))
        set_enabled(self, is_enabled(source))
        amax = source.amax.detach().float().clone()
        self.step = nn.Parameter(amax / self.max_bound, requires_grad=learn)
        self.learn = learn

    @property
    def max_bound(self) -> float:
        return 2.0 ** (self.num_bits - 1 + int(self.unsigned)) - 1.0

    @property
    def bounds(self) -> tuple[float, float]:
        hi = self.max_bound
        return (0.0 if self.unsigned else (-hi if self.narrow_range else -hi - 1.0)), hi

    @property
    def amax(self):
        return (self.step.detach() * torch.tensor(self.max_bound, dtype=torch.float32)).float()

    @amax.setter
    def amax(self, value):
        raise AttributeError("an LsqQuantizer's amax is step * max_bound; set its step")

    def forward(self, inputs):
        if not is_enabled(self):
            return inputs
        lo, hi = self.bounds
        per_step = inputs.numel() / self.step.numel() if self.step.numel() > 1 else inputs[0].numel()
        grad_scale = 1.0 / math.sqrt(max(per_step, 1) * hi)
        with torch.no_grad():
            self.step.clamp_(min=1e-8)  # a step may never reach 0 or change sign
        return LsqFunction.apply(inputs, self.step, self.max_bound, lo, hi, grad_scale)


def pin_amax(q: TensorQuantizer, amax: torch.Tensor) -> None:
    """Set a quantizer's amax for good: neither bit-dependent clipping nor a per-layer clipping
    choice (`sw.quant.clipping`, applied by `set_layer_bits`) moves it any more."""
    q.clipping = q.clippings = None
    set_amax(q, amax)


def check_trainable(qmodel, method: str) -> None:
    """ValueError (one line) if `method` cannot train this model's quantizers.

    Asymmetric (snpe) and power-of-two quantizers train with STE through their own forward
    (their scale rule is not a free step); LSQ is for the symmetric fp32-scale presets. Weights
    with per-channel bits (calibration.bit_allocation) are refused: QAT quantizers have one bit
    width per tensor.
    """
    if method not in ("ste", "lsq"):
        raise ValueError(f"--method: unknown QAT method {method!r}; expected ste or lsq")
    for address, q in qmodel.quantizers().items():
        if getattr(q, "channel_bits", None) is not None:
            raise ValueError(f"calibration.bit_allocation: quantizer {address} has per-channel bits; QAT trains one "
                             f"bit width per tensor: retrain with bit_allocation: false")
        if method == "lsq" and isinstance(q, (AffineQuantizer, Pow2Quantizer)):
            raise ValueError(f"--method lsq learns a free fp32 step; quantizer {address} follows the "
                             f"{type(q).__name__} rule of the preset: use --method ste")


def swap_in(qmodel, method: str) -> dict[str, TensorQuantizer]:
    """Put trainable quantizers in place for `method` ("ste" or "lsq"); returns the originals by address
    (`check_trainable` first; preset quantizers with their own scale rule train through their forward)."""
    check_trainable(qmodel, method)
    originals = {}
    for address, q in list(qmodel.quantizers().items()):
        if isinstance(q, (AffineQuantizer, Pow2Quantizer)):
            continue
        originals[address] = qmodel.replace_quantizer(address, LsqQuantizer(q, learn=method == "lsq"))
    return originals


def swap_out(qmodel, originals: dict[str, TensorQuantizer]) -> None:
    """Restore the original quantizers, each with the amax its LsqQuantizer ended with."""
    for address, original in originals.items():
        trained = qmodel.replace_quantizer(address, original)
        pin_amax(original, trained.amax)
