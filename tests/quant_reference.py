"""pytorch-quantization's symmetric fake quantization written out in numpy, independent of the
project and of the library: the reference the quantizer and preset tests compare against."""

from __future__ import annotations

import numpy as np


def symmetric_reference(x: np.ndarray, amax: np.ndarray, bits: int, unsigned: bool,
                        narrow: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, fp32 scale, codes): scale = (2^(b-1+u) - 1) / amax, codes = clip(rint(x * scale))
    (round half to even; narrow range drops the lowest signed code), values = codes / scale."""
    x = x.astype(np.float32)
    max_bound = np.float32(2.0 ** (bits - 1 + int(unsigned)) - 1.0)
    lo = np.float32(0.0) if unsigned else (-max_bound if narrow else -max_bound - np.float32(1.0))
    scale = (max_bound / amax.astype(np.float32)).astype(np.float32)
    codes = np.clip(np.rint((x * scale).astype(np.float32)), lo, max_bound).astype(np.float32)
    return (codes / scale).astype(np.float32), scale, codes
