"""Fake quantization of a float32 CPU tensor in one pass, on torch's own threads (a C++ kernel).

pytorch-quantization computes `clamp(round(x * scale), lo, hi) / scale` as four element-wise
passes (plus a `min` pass for unsigned quantizers), each writing or reading the whole tensor.
For the activations of a small model at 32x32 those passes cost as much as the convolutions
around them (mobilenet_v2: ~25 % of a forward). The kernel (`fused_quant.cpp`) does the same
float32 operations, in the same order, element by element in one loop: multiply, round half to
even, clamp (NaN stays NaN, -0.0 stays -0.0, as torch's clamp), divide. The result is
bit-identical to the library's (tested, including -0.0, NaN, inf, denormals and amax <= 2^-24).

It splits the tensor over torch's OpenMP threads as torch splits an element-wise op, so each
thread quantizes the part of the activation that it wrote as the layer before, still in its
core's cache (one thread quantizing everything read half of it from the other core: 1.5x slower
on 2 cores). A ReLU / ReLU6 in front of the quantizer can run in the same pass (`clamp`, used by
`sw.model.inference_graph`).

The kernel is compiled with the system's C++ compiler on first use and kept in
`$SW_KERNEL_CACHE` (default `~/.cache/mpq-codesign`), keyed by its source, compiler and flags.
Without a compiler `available()` is False and the quantizers run the library's torch passes
(same values, slower).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("fused_quant.cpp")
FLAGS = ("-O3", "-ffp-contract=off", "-fPIC", "-shared")  # never -ffast-math: the results must be IEEE's
OPENMP = "-fopenmp"
NEGATIVE, NAN = 1, 2  # the checked loop's flags: a value below the lower bound, a NaN
CHECKED, UNCHECKED, IN_PLACE = 0, 1, 2  # the kernel's modes
NO_CLAMP = (float("-inf"), float("inf"))
GRAIN = 32768  # elements per thread at least, as torch's element-wise ops (at::internal::GRAIN_SIZE)

_library: ctypes.CDLL | None = None
_unavailable: str | None = None  # why the kernel cannot be used, once known


def cache_dir() -> Path:
    """Where compiled kernels are kept."""
    configured = os.environ.get("SW_KERNEL_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mpq-codesign"


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def _compile(compiler: str, flags: tuple[str, ...], target: Path) -> str | None:
    """Compile the kernel to `target` (atomically: concurrent processes may build it at once);
    the compiler's complaint on failure."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        result = subprocess.run([compiler, *flags, str(SOURCE), "-o", partial], capture_output=True, text=True,
                                timeout=300)
        if result.returncode != 0:
            return (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
        os.replace(partial, target)
        return None
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def _build() -> ctypes.CDLL:
    """The compiled kernel, from the cache or built now (with OpenMP where the compiler has it)."""
    compiler = _compiler()
    if compiler is None:
        raise OSError("no C++ compiler (g++ or c++ on PATH, or $CXX)")
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    source = SOURCE.read_text()
    errors = []
    for flags in ((*FLAGS, OPENMP), FLAGS):  # a compiler without OpenMP still fuses, on one thread
        key = hashlib.sha256("\0".join([source, compiler, version, *flags, platform.machine()])
                             .encode()).hexdigest()[:16]
        target = cache_dir() / f"fused_quant-{key}.so"
        if not target.exists():
            log.info("compiling %s -> %s", SOURCE.name, target)
            error = _compile(compiler, flags, target)
            if error is not None:
                errors.append(error)
                continue
        library = ctypes.CDLL(str(target))
        library.sw_fake_quant.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, *[ctypes.c_float] * 6,
                                          ctypes.c_int, ctypes.c_int, ctypes.c_int64]
        library.sw_fake_quant.restype = ctypes.c_int
        library.sw_fake_quant_openmp.restype = ctypes.c_int
        return library
    raise OSError(f"{compiler} could not compile {SOURCE.name}: {'; '.join(errors)}")


def available() -> bool:
    """Whether the kernel is (or can be) built and loaded here; logs why not, once."""
    global _library, _unavailable
    if _library is None and _unavailable is None:
        try:
            _library = _build()
        except (OSError, subprocess.SubprocessError) as error:
            _unavailable = str(error)
            log.warning("fused fake-quant kernel unavailable (%s): quantizers run the library's torch passes "
                        "(same values, slower)", _unavailable)
    return _library is not None


def unavailable_reason() -> str | None:
    """Why the kernel cannot be used here; None where it can."""
    return None if available() else _unavailable


def forget() -> None:
    """Forget the loaded kernel, or why it could not be built, as a new process starts: the next
    `available()` looks in `cache_dir()` again (building it there where it is missing) and logs
    again where it cannot. The kernel's own tests use it to build into an empty cache."""
    global _library, _unavailable
    _library = _unavailable = None


def uses_openmp() -> bool:
    """Whether the kernel was built with OpenMP (else it runs on the calling thread)."""
    return available() and bool(_library.sw_fake_quant_openmp())


def fake_quant(inputs: torch.Tensor, mul: float, div: float, lo: float, hi: float, unsigned: bool,
               clamp: tuple[float, float] | None = None, in_place: bool = False,
               threads: int | None = None) -> torch.Tensor:
    """`clamp(rint(clamp_in(inputs) * mul), lo, hi) / div` in float32 for a contiguous float32 CPU
    tensor, on `threads` threads (default torch's; fewer for small tensors, see GRAIN).

    `mul` and `div` are the library's scale (`max_bound / amax` in float32), or 0 and 1 where
    amax <= 2^-24 (all outputs zero); all four numbers must be float32 values. `clamp` =
    (floor, ceiling) is a ReLU (0, inf) or ReLU6 (0, 6) applied first, or None. Raises TypeError
    as the library does when an unsigned quantizer meets a negative input that no clamp removed
    (`inputs.min() < 0`: a NaN anywhere makes the min NaN and nothing is raised). `in_place`
    writes the result over `inputs` (a tensor nothing else reads; only where nothing can raise:
    a clamp or a signed quantizer). Call `available()` first.
    """
    floor, ceiling = NO_CLAMP if clamp is None else clamp
    if in_place and (clamp is not None or not unsigned):
        out, mode = inputs, IN_PLACE
    else:
        out = torch.empty_like(inputs)
        mode = CHECKED if unsigned and clamp is None else UNCHECKED
    flags = _library.sw_fake_quant(inputs.data_ptr(), out.data_ptr(), inputs.numel(), mul, div, lo, hi, floor,
                                   ceiling, mode, torch.get_num_threads() if threads is None else threads, GRAIN)
    if flags == NEGATIVE:
        raise TypeError("Negative values encountered in unsigned quantization.")
    return out
