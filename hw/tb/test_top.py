"""pyuvm tests of mpconv_top: both paths of every lane, AXI4-Lite configuration and status.

TopTest      every bit width, value classes, stalls on all streams, reconfiguration
             between tensors (sometimes without waiting for idle), counters checked
RegisterTest register map: reset values, invalid writes (SLVERR), strobes, W1C, counters clear
FramingTest  word tlast disagreeing with COUNT sets frame_err; NaN input sets nan_seen
BenchTest    steady-state throughput, latency and simulation speed (regression.py bench)
"""

from __future__ import annotations

import json
import os
import time

import cocotb
import numpy as np
import pyuvm
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge

from axi import AxisMonitor, AxisPorts, AxisSink, AxisSource
from uvm_env import CLOCK_NS, ConvItem, ConvTestBase, PathSpec, reset_dut, suite_settings
from refmodel import (
    QuantConfig,
    bf16_bits_to_f32,
    bits_to_f32,
    dequantize_bits,
    f32_to_bits,
    from_pattern,
    pack,
    quantize,
    to_pattern,
    unpack,
)
from registers import (
    BITS, CONTROL, COUNT, CYCLES, D_IN_STALLS, D_OUT_STALLS, D_VALUES_OUT, D_WORDS_IN, ID, MODE, OKAY, PARAMS,
    Q_IN_STALLS, Q_OUT_STALLS, Q_VALUES_IN, Q_WORDS_OUT, SCALE, SLVERR, ST_CFG_ERR, ST_FRAME_ERR, ST_IDLE, ST_NAN,
    ST_PENDING, STATUS, Regs,
)
from sequences import top_items

def build_params() -> dict:
    p = {"LANES": 1, "WORD_W": 32, "BF16": 0, "FIFO_DEPTH": 512}
    p.update(suite_settings()["params"])
    return p


def float_width(params: dict) -> int:
    return 16 if params["BF16"] else 32


def lane_specs(dut, params: dict) -> list[PathSpec]:
    lanes, word_w, fw = params["LANES"], params["WORD_W"], float_width(params)
    bf16 = bool(params["BF16"])

    def predict_q(cfg: QuantConfig, frame: list[int]) -> list[int]:
        x = bf16_bits_to_f32(frame) if bf16 else bits_to_f32(frame)
        return pack(to_pattern(quantize(x, cfg), cfg.bits), cfg.bits, word_w)

    def predict_d(cfg: QuantConfig, frame: list[int]) -> list[int]:
        codes = from_pattern(unpack(frame, cfg.bits, word_w, cfg.count), cfg.bits, cfg.signed)
        return [int(v) for v in dequantize_bits(codes, cfg, bf16=bf16)]

    specs = []
    for lane in range(lanes):
        specs.append(PathSpec(f"q{lane}", "top.quant", AxisPorts.of(dut, "s_axis_qin", lane, fw),
                              AxisPorts.of(dut, "m_axis_qout", lane, word_w), predict_q, word_w))
        specs.append(PathSpec(f"d{lane}", "top.dequant", AxisPorts.of(dut, "s_axis_din", lane, word_w),
                              AxisPorts.of(dut, "m_axis_dout", lane, fw), predict_d, word_w))
    return specs


@pyuvm.test()
class TopTest(ConvTestBase):
    """Every width on both paths of every lane, with stalls and live reconfiguration."""

    overlap = True  # write each configuration while the previous tensor still streams

    def setup(self, dut, settings):
        params = build_params()
        self.params = params
        self.regs = Regs(dut)
        self.nan_expected = False

        async def configure(item: ConvItem) -> None:
            if item.settle:
                await self.regs.wait_idle()
            self.extra_errors.extend(await self.regs.configure(item.cfg))

        rng = np.random.default_rng(settings["seed"] + 10)
        items = top_items(rng, settings, params["LANES"], params["WORD_W"], bool(params["BF16"]))
        return lane_specs(dut, params), configure, items

    async def after_drain(self, dut) -> None:
        """The performance counters must equal what the monitors saw."""
        env = self.env
        sums = {}
        for key, mons in (("q_in", env.in_mons), ("q_out", env.out_mons), ("d_in", env.in_mons),
                          ("d_out", env.out_mons)):
            prefix = key[0]
            sel = [m.mon for name, m in mons.items() if name.startswith(prefix)]
            sums[key] = (sum(m.beats for m in sel), sum(m.stalls for m in sel))
        expect = {
            Q_VALUES_IN: sums["q_in"][0], Q_IN_STALLS: sums["q_in"][1],
            Q_WORDS_OUT: sums["q_out"][0], Q_OUT_STALLS: sums["q_out"][1],
            D_WORDS_IN: sums["d_in"][0], D_IN_STALLS: sums["d_in"][1],
            D_VALUES_OUT: sums["d_out"][0], D_OUT_STALLS: sums["d_out"][1],
        }
        for addr, want in expect.items():
            got = await self.regs.read(addr)
            if got != want:
                self.extra_errors.append(f"counter 0x{addr:02x} reads {got}, monitors saw {want}")
        status = await self.regs.read(STATUS)
        if status & (ST_CFG_ERR | ST_FRAME_ERR):
            self.extra_errors.append(f"STATUS 0x{status:x}: unexpected error flag")
        if not status & ST_IDLE or status & ST_PENDING:
            self.extra_errors.append(f"STATUS 0x{status:x}: not idle after draining")
        self.logger.info(f"counters: {dict((hex(k), v) for k, v in expect.items())}")


class DirectedTest(pyuvm.uvm_test):
    """Base of the directed tests: clock, reset, register access, one stream set for lane 0."""

    async def start(self):
        dut = cocotb.top
        self.dut = dut
        self.params = build_params()
        Clock(dut.clk, CLOCK_NS, unit="ns").start()
        self.regs = Regs(dut)
        fw, word_w = float_width(self.params), self.params["WORD_W"]
        self.ports = {
            "qin": AxisPorts.of(dut, "s_axis_qin", 0, fw), "qout": AxisPorts.of(dut, "m_axis_qout", 0, word_w),
            "din": AxisPorts.of(dut, "s_axis_din", 0, word_w), "dout": AxisPorts.of(dut, "m_axis_dout", 0, fw),
        }
        for lane in range(self.params["LANES"]):  # idle inputs, always-ready outputs on every lane
            for name, prefix, width in (("qin", "s_axis_qin", fw), ("din", "s_axis_din", word_w)):
                AxisSource(dut.clk, AxisPorts.of(dut, prefix, lane, width))
            for prefix, width in (("m_axis_qout", word_w), ("m_axis_dout", fw)):
                AxisSink(dut.clk, AxisPorts.of(dut, prefix, lane, width))
        self.src = {k: AxisSource(dut.clk, self.ports[k]) for k in ("qin", "din")}
        self.mon = {k: AxisMonitor(dut.clk, self.ports[k]) for k in ("qout", "dout")}
        await reset_dut(dut)

    async def frames_out(self, key: str, count: int, limit: int = 10_000) -> None:
        for _ in range(limit):
            if len(self.mon[key].frames) >= count:
                return
            await RisingEdge(self.dut.clk)
        raise AssertionError(f"{key}: {len(self.mon[key].frames)} of {count} frames came out")


@pyuvm.test()
class RegisterTest(DirectedTest):
    async def run_phase(self):
        self.raise_objection()
        await self.start()
        r, p = self.regs, self.params
        ax = r.axil
        assert await r.read(ID) == 0x4D505143
        params = await r.read(PARAMS)
        assert params & 0xFF == p["LANES"] and (params >> 8) & 0xFF == p["WORD_W"]
        assert (params >> 16) & 1 == p["BF16"] and 1 << ((params >> 24) & 0x1F) == p["FIFO_DEPTH"]
        # reset values
        assert [await r.read(a) for a in (BITS, SCALE, MODE, COUNT)] == [8, 0x3F800000, 1, 1]
        assert await r.read(STATUS) == ST_IDLE
        # invalid configuration writes are refused and flagged
        for addr, value in ((BITS, 0), (BITS, 17), (BITS, 1), (COUNT, 0), (MODE, 4)):
            assert await ax.write(addr, value) == SLVERR, f"0x{value:x} to 0x{addr:02x} accepted"
            assert await r.read(STATUS) & ST_CFG_ERR
            assert await ax.write(STATUS, ST_CFG_ERR) == OKAY  # write 1 to clear
            assert not await r.read(STATUS) & ST_CFG_ERR
        assert [await r.read(a) for a in (BITS, MODE, COUNT)] == [8, 1, 1]
        # unsigned 1-bit is valid; signed 1-bit is not, in either order
        assert await ax.write(MODE, 0) == OKAY and await ax.write(BITS, 1) == OKAY
        assert await ax.write(MODE, 1) == SLVERR and await r.read(MODE) == 0
        assert await ax.write(BITS, 16) == OKAY and await ax.write(MODE, 3) == OKAY
        await ax.write(STATUS, ST_CFG_ERR)
        # byte strobes
        assert await ax.write(SCALE, 0x11223344) == OKAY
        assert await ax.write(SCALE, 0xAABBCCDD, strb=0b0101) == OKAY
        assert await r.read(SCALE) == 0x11BB33DD
        # read-only and unmapped addresses
        assert await ax.write(ID, 0) == SLVERR and await ax.write(CYCLES, 0) == SLVERR
        assert (await ax.read(0x44))[1] == SLVERR and (await ax.read(0xFC))[1] == SLVERR
        await ax.write(STATUS, ST_CFG_ERR)
        # counters run and clear
        c1 = await r.read(CYCLES)
        c2 = await r.read(CYCLES)
        assert c2 > c1 > 0
        assert await ax.write(CONTROL, 1) == OKAY
        assert await r.read(CYCLES) < c2 - c1 + 8
        self.drop_objection()


@pyuvm.test()
class FramingTest(DirectedTest):
    async def run_phase(self):
        self.raise_objection()
        await self.start()
        r, word_w = self.regs, self.params["WORD_W"]
        bf16 = bool(self.params["BF16"])
        cfg = QuantConfig(bits=4, scale=2.0, signed=True, count=10)
        assert not await r.configure(cfg)
        codes = [(i * 3) & 15 for i in range(10)]
        words = pack(codes, 4, word_w)
        want = [int(v) for v in dequantize_bits(from_pattern(codes, 4, True), cfg, bf16=bf16)]
        # words without tlast: values still come out (framing is by COUNT) and frame_err is set
        await self.src["din"].send(words, last=False)
        await self.frames_out("dout", 1)
        assert self.mon["dout"].frames[0].data == want
        assert await r.read(STATUS) & ST_FRAME_ERR, "missing tlast not flagged"
        await r.axil.write(STATUS, ST_FRAME_ERR)
        assert not await r.read(STATUS) & ST_FRAME_ERR
        # a well-framed tensor leaves no error
        await self.src["din"].send(words)
        await self.frames_out("dout", 2)
        assert self.mon["dout"].frames[1].data == want
        assert not await r.read(STATUS) & ST_FRAME_ERR
        # tlast too early: on the first of several words
        if len(words) > 1:
            for i, w in enumerate(words):
                await self.src["din"].send([w], last=(i == 0))
            await self.frames_out("dout", 3)
            assert self.mon["dout"].frames[2].data == want
            assert await r.read(STATUS) & ST_FRAME_ERR, "early tlast not flagged"
            await r.axil.write(STATUS, ST_FRAME_ERR)
        # NaN through the quantize path: code 0 and nan_seen
        assert not await r.read(STATUS) & ST_NAN
        nan = 0x7FC0 if bf16 else 0x7FC00000
        one = 0x3F80 if bf16 else 0x3F800000
        await self.src["qin"].send([one, nan, one])
        await self.frames_out("qout", 1)
        x = bf16_bits_to_f32([one, nan, one]) if bf16 else bits_to_f32([one, nan, one])
        assert self.mon["qout"].frames[0].data == pack(to_pattern(quantize(x, cfg), 4), 4, word_w)
        assert await r.read(STATUS) & ST_NAN
        self.drop_objection()


@pyuvm.test()
class BenchTest(DirectedTest):
    """No stalls: one long tensor per lane on both paths; writes bench.json."""

    async def run_phase(self):
        self.raise_objection()
        await self.start()
        p = self.params
        lanes, word_w, fw = p["LANES"], p["WORD_W"], float_width(p)
        n = int(os.environ.get("MPCONV_BENCH_VALUES", "4096"))
        cfg = QuantConfig(bits=8, scale=127.0 / 3.0, signed=True, count=n)
        assert not await self.regs.configure(cfg)
        rng = np.random.default_rng(7)
        srcs, mons = [], {}
        frames = []
        for lane in range(lanes):
            x = rng.uniform(-3, 3, size=n).astype(np.float32)
            codes = [int(c) for c in rng.integers(0, 256, size=n)]
            frames.append(([int(b) for b in f32_to_bits(x)], pack(codes, 8, word_w)))
            qin = AxisPorts.of(self.dut, "s_axis_qin", lane, fw)
            din = AxisPorts.of(self.dut, "s_axis_din", lane, word_w)
            srcs.append((AxisSource(self.dut.clk, qin), AxisSource(self.dut.clk, din)))
            mons[lane] = {k: AxisMonitor(self.dut.clk, AxisPorts.of(self.dut, pre, lane, w))
                          for k, pre, w in (("qin", "s_axis_qin", fw), ("qout", "m_axis_qout", word_w),
                                            ("din", "s_axis_din", word_w), ("dout", "m_axis_dout", fw))}
        t0 = time.time()
        tasks = []
        for lane in range(lanes):
            tasks.append(cocotb.start_soon(srcs[lane][0].send(frames[lane][0])))
            tasks.append(cocotb.start_soon(srcs[lane][1].send(frames[lane][1])))
        for t in tasks:
            await t
        for _ in range(100_000):
            if all(len(mons[lane][k].frames) >= 1 for lane in range(lanes) for k in mons[lane]):
                break
            await RisingEdge(self.dut.clk)
        wall = time.time() - t0
        m = mons[0]
        cyc = lambda a, b: round((b - a) / CLOCK_NS)  # noqa: E731
        q_in, q_out = m["qin"].frames[0], m["qout"].frames[0]
        d_in, d_out = m["din"].frames[0], m["dout"].frames[0]
        result = {
            "lanes": lanes, "values": n,
            "q_vpc": (n - 1) / max(1, cyc(q_in.first_ns, q_in.last_ns)),
            "d_vpc": (n - 1) / max(1, cyc(d_out.first_ns, d_out.last_ns)),
            "q_latency": cyc(q_in.last_ns, q_out.last_ns),
            "d_latency": cyc(d_in.first_ns, d_out.first_ns),
            "values_per_s": 2 * n * lanes / wall,
        }
        ok = (m["qout"].frames[0].data == pack(to_pattern(quantize(bits_to_f32(frames[0][0]), cfg), 8), 8, word_w))
        assert ok, "benchmark output differs from the reference model"
        out = os.environ.get("MPCONV_BENCH_OUT")
        if out:
            with open(out, "w") as fh:
                json.dump(result, fh)
        self.logger.info(f"bench: {result}")
        self.drop_objection()
