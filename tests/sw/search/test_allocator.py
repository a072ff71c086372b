"""sw.search.allocator: freed memory stays in the process (no page faults when it is reused)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sw.search.allocator import keep_freed_memory

# One 16 MiB tensor freed sets glibc's adaptive thresholds (heap below 16 MiB, trim above 32 MiB);
# then three 12 MiB tensors alive at once and freed: 36 MiB free at the top of the heap is above
# the trim threshold, so by default every round gives the pages back.
SCRIPT = """
import resource, sys, torch
from sw.search.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def round_():
    ts = [torch.ones(3 << 20) for _ in range(3)]
    del ts
torch.ones(4 << 20)  # allocated and freed at once
for _ in range(8):  # glibc settles its heap layout in the first rounds
    round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    round_()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip().splitlines()[-1])


def test_keep_freed_memory_stops_page_faults_on_reuse():
    if not keep_freed_memory():  # this process too: harmless, and tells whether malloc is glibc
        pytest.skip("the C library is not glibc (no mallopt)")
    pages = 10 * 3 * (12 << 20) // 4096  # what ten rounds touch
    # glibc's default gives it all back in most runs (~92,000 faults), in some not: three runs
    kept = [faults("keep") for _ in range(3)]
    assert max(kept) < pages // 50, (kept, faults("default"))
