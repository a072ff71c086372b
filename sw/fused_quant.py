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

A ReLU / ReLU6 in front of the quantizer can run in the same pass (`clamp`, used by
`sw.inference_graph`): `min(max(x, floor), ceiling)` first, NaN kept, as torch's relu and
hardtanh compute it. Signed quantizers and clamped inputs cannot raise, so their loop carries no
checks (it vectorises better).

Compiled on first use (cached on disk by numba), so importing `sw` stays fast.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

_kernels: tuple | None = None
_pool: ThreadPoolExecutor | None = None  # helpers for the chunks the calling thread does not run
_pool_size = 0
NEGATIVE, NAN = 1, 2  # the checked kernel's flags: a value below the lower bound, a NaN
NO_CLAMP = (np.float32(-np.inf), np.float32(np.inf))


def _compiled() -> tuple:
    """(checked, clamped, clamped_in_place): the loop with the unsigned checks, the one with a
    clamp in front, and that one writing over its input."""
    global _kernels
    if _kernels is None:
        import numba

        @numba.njit(inline="always")
        def quantize(v, mul, div, lo, hi, floor, ceiling):  # pragma: no cover  (runs compiled)
            v = floor if v < floor else v  # selects, not branches: NaN stays NaN, -0.0 stays -0.0
            v = ceiling if v > ceiling else v
            y = np.rint(v * mul)
            y = lo if y < lo else y
            y = hi if y > hi else y
            return y / div

        @numba.njit(nogil=True, cache=True, error_model="numpy")
        def checked(x, out, mul, div, lo, hi, floor, ceiling):  # pragma: no cover  (runs compiled)
            negative = 0
            nan = 0
            for i in range(x.size):
                v = x[i]
                negative += v < lo  # lo is 0 for unsigned quantizers, where negatives are an error
                nan += v != v
                out[i] = quantize(v, mul, div, lo, hi, floor, ceiling)
            return (NEGATIVE if negative else 0) | (NAN if nan else 0)

        @numba.njit(nogil=True, cache=True, error_model="numpy")
        def clamped(x, out, mul, div, lo, hi, floor, ceiling):  # pragma: no cover  (runs compiled)
            for i in range(x.size):
                out[i] = quantize(x[i], mul, div, lo, hi, floor, ceiling)
            return 0

        @numba.njit(nogil=True, cache=True, error_model="numpy")
        def clamped_in_place(x, mul, div, lo, hi, floor, ceiling):  # pragma: no cover  (runs compiled)
            # `clamped(x, x, ...)` would give the same values, but numba's overlap check then
            # falls back to a scalar loop (measured 7x slower); one array vectorises
            for i in range(x.size):
                x[i] = quantize(x[i], mul, div, lo, hi, floor, ceiling)
            return 0

        _kernels = (checked, clamped, clamped_in_place)
    return _kernels


def fake_quant(inputs: torch.Tensor, mul: np.float32, div: np.float32, lo: np.float32, hi: np.float32,
               unsigned: bool, threads: int = 1, clamp: tuple[np.float32, np.float32] | None = None,
               in_place: bool = False) -> torch.Tensor:
    """`clamp(rint(clamp_in(inputs) * mul), lo, hi) / div` in float32 for a contiguous float32 CPU
    tensor, on `threads` threads (contiguous chunks).

    `mul` and `div` are the library's scale (`max_bound / amax` in float32), or 0 and 1 where
    amax <= 2^-24 (all outputs zero). `clamp` = (floor, ceiling) is a ReLU (0, inf) or ReLU6
    (0, 6) applied first, or None. Raises TypeError as the library does when an unsigned
    quantizer meets a negative input that no clamp removed (`inputs.min() < 0`: a NaN anywhere
    makes the min NaN and nothing is raised). `in_place` writes the result over `inputs` (a
    tensor nothing else reads; only where nothing can raise: a clamp or a signed quantizer).
    """
    global _pool, _pool_size
    checked, clamped, clamped_in_place = _compiled()
    floor, ceiling = NO_CLAMP if clamp is None else clamp
    x = inputs.detach().numpy().reshape(-1)
    if in_place and (clamp is not None or not unsigned):
        out, kernel, arrays = inputs, clamped_in_place, (x,)
    else:
        out = torch.empty_like(inputs)
        kernel = checked if unsigned and clamp is None else clamped
        arrays = (x, out.numpy().reshape(-1))
    if threads <= 1 or x.size < 2 * threads:
        flags = kernel(*arrays, mul, div, lo, hi, floor, ceiling)
    else:
        if _pool_size < threads - 1:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool, _pool_size = ThreadPoolExecutor(threads - 1, thread_name_prefix="fused_quant"), threads - 1
        cuts = np.linspace(0, x.size, threads + 1).astype(np.int64)
        chunks = [(*(a[lo_:hi_] for a in arrays), mul, div, lo, hi, floor, ceiling)
                  for lo_, hi_ in zip(cuts[:-1], cuts[1:])]
        helpers = [_pool.submit(kernel, *args) for args in chunks[1:]]
        flags = kernel(*chunks[0])  # the calling thread takes the first chunk
        for helper in helpers:
            flags |= helper.result()
    if flags == NEGATIVE:
        raise TypeError("Negative values encountered in unsigned quantization.")
    return out
