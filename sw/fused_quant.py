"""Fake quantization of a float32 CPU tensor in one pass on the calling thread (numba).

pytorch-quantization computes `clamp(round(x * scale), lo, hi) / scale` as four element-wise
passes (plus a `min` pass for unsigned quantizers), each writing or reading the whole tensor.
For the activations of a small model at 32x32 those passes cost as much as the convolutions
around them (mobilenet_v2: ~25 % of a forward). This kernel does the same float32 operations,
in the same order, element by element in one loop: multiply, round half to even (`rint`),
clamp (NaN stays NaN, -0.0 stays -0.0, as torch's clamp), divide. The result is bit-identical
to the library's (tested, including -0.0, NaN, inf, denormals and amax <= 2^-24).

Large tensors are cut into one contiguous chunk per thread; the compiled loop releases the GIL,
so the chunks run at once on a small pool of Python threads (one synchronisation per tensor,
where torch's thread pool has one per pass). Element-wise results do not depend on the split.

Compiled on first use (cached on disk by numba), so importing `sw` stays fast.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

_kernel = None
_pool: ThreadPoolExecutor | None = None  # helpers for the chunks the calling thread does not run
_pool_size = 0
NEGATIVE, NAN = 1, 2  # the kernel's flags: a value below the lower bound, a NaN


def _compiled():
    global _kernel
    if _kernel is None:
        import numba

        @numba.njit(nogil=True, cache=True, error_model="numpy")
        def fake_quant(x, out, mul, div, lo, hi):  # pragma: no cover  (runs compiled)
            negative = False
            nan = False
            for i in range(x.size):
                v = x[i]
                negative |= v < lo  # lo is 0 for unsigned quantizers, where negatives are an error
                nan |= v != v
                y = np.rint(v * mul)
                if y < lo:
                    y = lo
                elif y > hi:
                    y = hi
                out[i] = y / div
            return (1 if negative else 0) | (2 if nan else 0)

        _kernel = fake_quant
    return _kernel


def fake_quant(inputs: torch.Tensor, mul: np.float32, div: np.float32, lo: np.float32, hi: np.float32,
               unsigned: bool, threads: int = 1) -> torch.Tensor:
    """`clamp(rint(inputs * mul), lo, hi) / div` in float32 for a contiguous float32 CPU tensor,
    on `threads` threads (contiguous chunks).

    `mul` and `div` are the library's scale (`max_bound / amax` in float32), or 0 and 1 where
    amax <= 2^-24 (all outputs zero). Raises TypeError as the library does when an unsigned
    quantizer meets a negative input (`inputs.min() < 0`: a NaN anywhere makes the min NaN and
    nothing is raised).
    """
    global _pool, _pool_size
    out = torch.empty_like(inputs)
    x, y = inputs.detach().numpy().reshape(-1), out.numpy().reshape(-1)
    kernel = _compiled()
    if threads <= 1 or x.size < 2 * threads:
        flags = kernel(x, y, mul, div, lo, hi)
    else:
        if _pool_size < threads - 1:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool, _pool_size = ThreadPoolExecutor(threads - 1, thread_name_prefix="fused_quant"), threads - 1
        cuts = np.linspace(0, x.size, threads + 1).astype(np.int64)
        chunks = [(x[a:b], y[a:b], mul, div, lo, hi) for a, b in zip(cuts[:-1], cuts[1:])]
        helpers = [_pool.submit(kernel, *args) for args in chunks[1:]]
        flags = kernel(*chunks[0])  # the calling thread takes the first chunk
        for helper in helpers:
            flags |= helper.result()
    if unsigned and flags == NEGATIVE:
        raise TypeError("Negative values encountered in unsigned quantization.")
    return out
