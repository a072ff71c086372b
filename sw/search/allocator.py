"""Keep freed memory in the process (glibc malloc) while evaluating many candidates.

A fake-quantized forward allocates one more activation-sized tensor per quantizer than the fp32
model. With glibc's default, adaptive thresholds that pattern makes malloc hand memory back to
the kernel (heap trim, munmap) and fetch it again on the next batch: measured on mobilenet_v2
(32x32, batch 32), ~23,000 page faults per 8 batches against ~800 for fp32, the convolutions
that first touch the new pages 30-40 % slower. Fixed thresholds keep the freed memory for reuse.
Process-wide, so call it where a process is about to evaluate (search runners, benchmarks).
It covers the main thread's arena; a process that evaluates in another thread (a dask worker)
needs one arena from its start (`MALLOC_ARENA_MAX=1`, `sw.search.runner.DaskBackend`).
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest mmap threshold on 64-bit: bigger tensors still use mmap
KEEP_FREED_BYTES = 256 << 20


def keep_freed_memory(trim_threshold: int = KEEP_FREED_BYTES) -> bool:
    """Fix glibc's thresholds: allocations up to 32 MiB come from the heap, which is trimmed only
    above `trim_threshold` bytes free. Returns False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
