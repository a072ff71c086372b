"""Per-channel bit allocation (Banner et al., ACIQ paper, section 4.2) and the quantizer that realises it.

Given a tensor's average budget of `bits` per channel and each channel's clipping range
alpha_i, the paper minimises the total rounding noise `sum alpha_i^2 / (3 * 4^M_i)` for a
fixed number of quantization bins: `2^M_i` proportional to `alpha_i^(2/3)`. Here that rule is
rounded to integers in [2, 16] and shifted (as the cnn-quantization project does with its
"fixed target") to the largest allocation whose mean is <= `bits`, so a layer never costs
more memory than the search prices it at.

Hardware: the converter (hw/README.md) takes one BITS and one SCALE per tensor stream and
weights are already converted one output channel at a time (each channel starts on a fresh
word, `energy.packing.channel_dram_words`), so per-output-channel weight bits cost one
register write per channel. Activations are one stream with one scale and keep one bit width.
"""

from __future__ import annotations

from typing import Any

import torch

from sw.core.limits import MAX_BITS, MIN_BITS
from sw.quant.adapter import QuantizerBase, uses_fake_quant_formula
from sw.quant.clipping import Clipping, clipping_from_json, register_clipping


def allocate_channel_bits(alpha: torch.Tensor, bits: int, lower: int = MIN_BITS, upper: int | None = None) -> torch.Tensor:
    """Integer bits per channel: `round(t + log2(alpha_i^(2/3) / mean alpha^(2/3)))` clamped to
    [lower, upper], with the largest shift t whose mean allocation is <= `bits`."""
    upper = MAX_BITS if upper is None else upper
    if not lower <= bits <= upper:
        raise ValueError(f"bits {bits} outside [{lower}, {upper}]")
    weight = alpha.detach().double().flatten().clamp(min=0) ** (2.0 / 3.0)
    if weight.sum() <= 0:
        return torch.full_like(alpha, bits, dtype=torch.long)
    ratio = torch.log2(weight / weight.mean())  # -inf for a dead channel: it gets `lower`
    budget = bits * weight.numel()

    def allocation(shift: float) -> torch.Tensor:
        return torch.round(shift + ratio).clamp(lower, upper).long()

    low, high = float(lower - 1) - 64.0, float(upper) + 64.0  # allocation(low) = lower, allocation(high) = upper
    for _ in range(100):  # bisection on the shift: the total is a non-decreasing step function of it
        mid = (low + high) / 2
        if int(allocation(mid).sum()) <= budget:
            low = mid
        else:
            high = mid
    return allocation(low).reshape(alpha.shape)


@register_clipping
class ChannelBitAllocation(Clipping):
    """Wraps a per-channel clipping: a tensor budget of b bits becomes per-channel bits, and each
    channel gets its clipping at its own bits. alpha_i is the wrapped clipping's range at b bits."""

    kind = "bit_allocation"

    def __init__(self, inner: Clipping):
        super().__init__()
        if not inner.per_channel_bits:
            raise ValueError(f"bit allocation needs a per-channel clipping, not {inner.kind!r}")
        self.inner = inner
        self._bits: dict[tuple[int, bool], torch.Tensor] = {}

    def channel_bits(self, bits: int, unsigned: bool = False) -> torch.Tensor:
        key = (int(bits), bool(unsigned))
        if key not in self._bits:
            self._bits[key] = allocate_channel_bits(self.inner.amax(int(bits), unsigned), int(bits))
        return self._bits[key]

    def _amax(self, bits, unsigned: bool) -> torch.Tensor:
        if not isinstance(bits, torch.Tensor):
            bits = self.channel_bits(bits, unsigned)
        return self.inner.amax(bits, unsigned)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "inner": self.inner.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ChannelBitAllocation":
        return cls(clipping_from_json(data["inner"]))


def fake_quant_channel_bits(x: torch.Tensor, amax: torch.Tensor, bits: torch.Tensor, unsigned: bool = False,
                            narrow_range: bool = False) -> torch.Tensor:
    """pytorch-quantization's fake quant with one bit width per channel (bits shaped like amax).

    The same fp32 operations in the same order (`scale = max_bound / amax`, `round(x * scale)`,
    clamp, `/ scale`, amax <= 2^-24 quantizes to 0), so each channel is bit-identical to the
    library at that channel's bits.
    """
    max_bound = (2.0 ** (bits.to(torch.float32) - 1 + int(unsigned)) - 1.0).to(torch.float32)
    if unsigned:
        min_bound = torch.zeros_like(max_bound)
    else:
        min_bound = -max_bound if narrow_range else -max_bound - 1.0
    amax = amax.to(torch.float32)
    tiny = amax <= 1.0 / (1 << 24)
    scale = torch.where(tiny, torch.zeros_like(amax), max_bound / amax)
    q = torch.clamp((x * scale).round_(), min_bound, max_bound)
    return q / torch.where(tiny, torch.ones_like(scale), scale)


class ChannelBitsQuantizer(QuantizerBase):
    """The weight quantizer: a TensorQuantizer that can give each output channel its own bits.

    `channel_bits` (a long tensor shaped like amax) is set by `ChannelBitAllocation.apply`;
    None (the default) is the library's behaviour unchanged. Gradients pass straight through
    where |x| <= amax, as in the library's fake quant.
    """

    channel_bits: torch.Tensor | None = None

    def quant_forward(self, inputs):
        bits = self.channel_bits
        if bits is None or not uses_fake_quant_formula(self):
            return super().quant_forward(inputs)
        amax = self.forward_amax(inputs)
        unsigned = self.unsigned
        if unsigned and inputs.min() < 0.0:
            raise TypeError("Negative values encountered in unsigned quantization.")
        with torch.no_grad():
            outputs = fake_quant_channel_bits(inputs, amax, bits, unsigned, self.narrow_range)
        if not inputs.requires_grad:
            return outputs
        return outputs + (inputs - inputs.detach()) * (inputs.abs() <= amax)
