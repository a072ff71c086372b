"""What the hardware must produce: pytorch-quantization's integer codes and fake-quant values.

The codes come from the library's own `tensor_quant` (the function behind every
TensorQuantizer); the dequantized values the hardware must match are the ones the search's
model computed (captured in `cosim.capture`). The scale register value is computed with the
library's fp32 operations (`max_bound / amax`, 0 where amax <= 2^-24), so the RTL receives
exactly the scale the search used.

`fault` deliberately breaks the reference, to prove the comparison can fail:
  * "scale":    the classic off-by-one, 2^(b-1) / amax instead of (2^(b-1) - 1) / amax;
  * "rounding": truncation toward zero instead of round-half-to-even.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from pytorch_quantization.tensor_quant import tensor_quant

FAULTS = ("scale", "rounding")
_EPSILON = 1.0 / (1 << 24)


@dataclass
class Expected:
    """Per-element expectations for one captured tensor, shape (segments, n)."""

    codes: np.ndarray  # int64
    values: np.ndarray  # float32, dequantized
    scale: np.ndarray  # float32 per segment: the SCALE register (0 for amax <= 2^-24)


def bounds(bits: int, unsigned: bool, narrow_range: bool) -> tuple[float, float]:
    max_bound = 2.0 ** (bits - 1 + int(unsigned)) - 1.0
    if unsigned:
        return 0.0, max_bound
    return (-max_bound if narrow_range else -max_bound - 1.0), max_bound


def scale_register(amax: np.ndarray, bits: int, unsigned: bool) -> np.ndarray:
    """fp32 scale per segment exactly as pytorch-quantization computes it."""
    amax_t = torch.from_numpy(np.ascontiguousarray(amax, dtype=np.float32))
    scale = torch.tensor(2.0 ** (bits - 1 + int(unsigned)) - 1.0) / amax_t
    scale[amax_t <= _EPSILON] = 0.0
    return scale.numpy()


def expected(values: np.ndarray, amax: np.ndarray, bits: int, unsigned: bool, narrow_range: bool,
             search_output: np.ndarray, fault: str | None = None) -> Expected:
    """Codes from the library (or from a faulty formula) and the values the hardware must return."""
    x = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    amax_t = torch.from_numpy(np.ascontiguousarray(amax, dtype=np.float32)).reshape(-1, 1)
    scale = scale_register(amax, bits, unsigned)
    if fault is None:
        codes, _ = tensor_quant(x, amax_t, bits, unsigned, narrow_range)
        return Expected(codes.numpy().astype(np.int64), np.asarray(search_output, dtype=np.float32), scale)
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; expected one of {', '.join(FAULTS)}")
    lo, hi = bounds(bits, unsigned, narrow_range)
    wrong_scale = torch.from_numpy(scale).reshape(-1, 1)
    if fault == "scale":
        wrong_scale = torch.tensor(2.0 ** (bits - 1 + int(unsigned))) / amax_t
    product = x * wrong_scale
    rounded = torch.trunc(product) if fault == "rounding" else torch.round(product)
    codes = torch.clamp(rounded, lo, hi)
    dequant_scale = torch.where(wrong_scale == 0, torch.ones_like(wrong_scale), wrong_scale)
    return Expected(codes.numpy().astype(np.int64), (codes / dequant_scale).numpy().astype(np.float32), scale)
