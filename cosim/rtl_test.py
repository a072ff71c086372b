"""cocotb test that streams a job's tensors through `mpconv_top` (runs inside the simulator).

For each stream (a tensor, or one channel of a per-channel tensor): write BITS, SCALE, MODE
and COUNT over AXI4-Lite where they changed, send the fp32 values into the quantize path,
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

from axi import AxiLiteMaster, AxisMonitor, AxisPorts, AxisSink, AxisSource, Throttle  # hw/tb on sys.path

CLOCK_NS = 10
REG_BITS, REG_SCALE, REG_MODE, REG_COUNT, REG_STATUS = 0x08, 0x0C, 0x10, 0x14, 0x18
STATUS_CFG_ERR, STATUS_FRAME_ERR = 1 << 1, 1 << 2
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


async def _configure(axil: AxiLiteMaster, current: dict, bits: int, scale_bits: int, mode: int, count: int) -> None:
    # BITS and MODE must never form an invalid pair: going to signed, widen BITS first.
    order = [(REG_MODE, mode), (REG_BITS, bits)] if not mode & 1 else [(REG_BITS, bits), (REG_MODE, mode)]
    for addr, value in [*order, (REG_SCALE, scale_bits), (REG_COUNT, count)]:
        if current.get(addr) != value:
            resp = await axil.write(addr, value)
            assert resp == AxiLiteMaster.OKAY, f"register 0x{addr:02x} <- 0x{value:x} refused (SLVERR)"
            current[addr] = value


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
    axil = AxiLiteMaster(dut.clk, dut, "s_axil")
    await ClockCycles(dut.clk, 4)
    dut.rst_n.value = 1
    await ClockCycles(dut.clk, 2)
    AxisSink(dut.clk, AxisPorts.of(dut, "m_axis_qout", 0, word_w), Throttle(kind, random.Random(rng.random())))
    AxisSink(dut.clk, AxisPorts.of(dut, "m_axis_dout", 0, 32), Throttle(kind, random.Random(rng.random())))
    qout = AxisMonitor(dut.clk, AxisPorts.of(dut, "m_axis_qout", 0, word_w))
    dout = AxisMonitor(dut.clk, AxisPorts.of(dut, "m_axis_dout", 0, 32))

    registers: dict[int, int] = {}
    words, floats, cycles, walls = [], [], [], []
    for k in range(len(bits)):
        stream = [int(v) for v in values[offsets[k]:offsets[k + 1]]]
        start, wall = get_sim_time("ns"), time.perf_counter()
        await _configure(axil, registers, int(bits[k]), int(scales[k]), int(modes[k]), len(stream))
        await qin.send(stream)
        await _wait_frames(dut.clk, qout, k + 1, f"packed words for stream {k}")
        packed = qout.frames[k].data
        await din.send(packed)
        await _wait_frames(dut.clk, dout, k + 1, f"dequantized values for stream {k}")
        words.append(np.asarray(packed, dtype=np.uint64))
        floats.append(np.asarray(dout.frames[k].data, dtype=np.uint32))
        cycles.append((get_sim_time("ns") - start) / CLOCK_NS)
        walls.append(time.perf_counter() - wall)

    status = int((await axil.read(REG_STATUS))[0])
    assert not status & STATUS_CFG_ERR, "STATUS.cfg_err set"
    assert not status & STATUS_FRAME_ERR, "STATUS.frame_err set"
    word_offsets = np.cumsum([0] + [len(w) for w in words])
    np.savez(os.environ["COSIM_OUT"], words=np.concatenate(words) if words else np.zeros(0, np.uint64),
             word_offsets=word_offsets, dout=np.concatenate(floats) if floats else np.zeros(0, np.uint32),
             cycles=np.asarray(cycles, dtype=np.float64), walls=np.asarray(walls, dtype=np.float64))
