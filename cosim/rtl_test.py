"""cocotb test that streams a job's tensors through `mpconv_top` (runs inside the simulator).

For each stream (a tensor, or one channel of a per-channel tensor): write BITS, SCALE, MODE
and COUNT over AXI4-Lite, send the fp32 values into the quantize path,
collect the packed words, send those words into the dequantize path and collect the floats.
The job and the results are numpy `.npz` files (no pickle) named by environment variables;
`cosim.simulation` writes and reads them.
"""

from __future__ import annotations

import os
import random
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotb.utils import get_sim_time

# hw/tb is on sys.path: the verification's drivers, monitors and register map
from axi import AxisMonitor, AxisPorts, AxisSink, AxisSource, Throttle
from refmodel import QuantConfig, bits_to_f32
from registers import ST_CFG_ERR, ST_FRAME_ERR, STATUS, Regs

CLOCK_NS = 10
TIMEOUT_CYCLES = 10_000


async def _wait_frames(clk, monitor: AxisMonitor, count: int, what: str) -> None:
    idle = 0
    last_beats = monitor.beats
    while len(monitor.frames) < count:
        await RisingEdge(clk)
        idle = idle + 1 if monitor.beats == last_beats else 0
        last_beats = monitor.beats
        if idle > TIMEOUT_CYCLES:
            raise AssertionError(f"no {what} for {TIMEOUT_CYCLES} cycles")


@cocotb.test()
async def convert_tensors(dut):
    job = np.load(os.environ["COSIM_JOB"])
    word_w = int(os.environ["COSIM_WORD_W"])
    rng = random.Random(int(os.environ.get("COSIM_SEED", "0")))
    kind = os.environ.get("COSIM_STALLS", "none")
    values, offsets = job["values"], job["offsets"]
    bits, scales, modes = job["bits"], job["scale_bits"], job["mode"]

    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    dut.rst_n.value = 0
    qin = AxisSource(dut.clk, AxisPorts.of(dut, "s_axis_qin", 0, 32), Throttle(kind, random.Random(rng.random())))
    din = AxisSource(dut.clk, AxisPorts.of(dut, "s_axis_din", 0, word_w), Throttle(kind, random.Random(rng.random())))
    regs = Regs(dut)
    await ClockCycles(dut.clk, 4)
    dut.rst_n.value = 1
    await ClockCycles(dut.clk, 2)
    AxisSink(dut.clk, AxisPorts.of(dut, "m_axis_qout", 0, word_w), Throttle(kind, random.Random(rng.random())))
    AxisSink(dut.clk, AxisPorts.of(dut, "m_axis_dout", 0, 32), Throttle(kind, random.Random(rng.random())))
    qout = AxisMonitor(dut.clk, AxisPorts.of(dut, "m_axis_qout", 0, word_w))
    dout = AxisMonitor(dut.clk, AxisPorts.of(dut, "m_axis_dout", 0, 32))

    words, floats, cycles, walls = [], [], [], []
    for k in range(len(bits)):
        stream = [int(v) for v in values[offsets[k]:offsets[k + 1]]]
        start, wall = get_sim_time("ns"), time.perf_counter()
        cfg = QuantConfig(bits=int(bits[k]), scale=float(bits_to_f32(int(scales[k]))), signed=bool(modes[k] & 1),
                          narrow=bool(modes[k] & 2), count=len(stream))
        errors = await regs.configure(cfg)
        assert not errors, f"stream {k}: " + "; ".join(errors)
        await qin.send(stream)
        await _wait_frames(dut.clk, qout, k + 1, f"packed words for stream {k}")
        packed = qout.frames[k].data
        await din.send(packed)
        await _wait_frames(dut.clk, dout, k + 1, f"dequantized values for stream {k}")
        words.append(np.asarray(packed, dtype=np.uint64))
        floats.append(np.asarray(dout.frames[k].data, dtype=np.uint32))
        cycles.append((get_sim_time("ns") - start) / CLOCK_NS)
        walls.append(time.perf_counter() - wall)

    status = await regs.read(STATUS)
    assert not status & ST_CFG_ERR, "STATUS.cfg_err set"
    assert not status & ST_FRAME_ERR, "STATUS.frame_err set"
    word_offsets = np.cumsum([0] + [len(w) for w in words])
    np.savez(os.environ["COSIM_OUT"], words=np.concatenate(words) if words else np.zeros(0, np.uint64),
             word_offsets=word_offsets, dout=np.concatenate(floats) if floats else np.zeros(0, np.uint32),
             cycles=np.asarray(cycles, dtype=np.float64), walls=np.asarray(walls, dtype=np.float64))
