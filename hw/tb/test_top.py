"""pyuvm tests of mpconv_top: both paths of every lane, AXI4-Lite configuration and status.

TopTest         every bit width, value classes, stalls on all streams, reconfiguration
                between tensors (sometimes without waiting for idle), counters checked
RegisterTest    register map: reset values, invalid writes (SLVERR), shadow and COMMIT,
                strobes, W1C, counters clear
FramingTest     word tlast disagreeing with COUNT sets frame_err; NaN input sets nan_seen
ConfigRaceTest  configuration writes racing a queued tensor: every tensor sees one whole
                configuration (the committed one when its first beat was accepted)
BenchTest       streams of tensors: throughput, per-tensor overhead, latency, simulation
                speed (regression.py bench)
"""

from __future__ import annotations

import json
import os
import time

import random

import cocotb
import numpy as np
import pyuvm
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Event, RisingEdge

from axi import AxisMonitor, AxisPorts, AxisSink, AxisSource, Throttle
from stimulus import all_widths, gen_codes, gen_values, make_config, straddling_length
from uvm_env import CLOCK_NS, ConvItem, ConvTestBase, PathSpec, reset_dut, suite_settings
from watchdog import wait_event, wait_until
from refmodel import (
    QuantConfig,
    bf16_bits_to_f32,
    bits_to_f32,
    dequantize_bits,
    f32_bits_to_bf16_bits,
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
    ST_PENDING, ST_UNCOMMITTED, STATUS, COMMIT, Regs, config_writes,
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
                              AxisPorts.of(dut, "m_axis_qout", lane, word_w), predict_q, word_w, bf16))
        specs.append(PathSpec(f"d{lane}", "top.dequant", AxisPorts.of(dut, "s_axis_din", lane, word_w),
                              AxisPorts.of(dut, "m_axis_dout", lane, fw), predict_d, word_w, bf16, steady="out"))
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

    async def frames_out(self, key: str, count: int) -> None:
        await wait_until(self.dut.clk, lambda: len(self.mon[key].frames) >= count,
                         f"frame {count} on {key} (have {len(self.mon[key].frames)})", align=False)


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
        # invalid field values are refused and flagged; the shadow keeps its value
        for addr, value in ((BITS, 0), (BITS, 17), (COUNT, 0), (MODE, 4)):
            assert await ax.write(addr, value) == SLVERR, f"0x{value:x} to 0x{addr:02x} accepted"
            assert await r.read(STATUS) & ST_CFG_ERR
            assert await ax.write(STATUS, ST_CFG_ERR) == OKAY  # write 1 to clear
            assert not await r.read(STATUS) & ST_CFG_ERR
        assert [await r.read(a) for a in (BITS, MODE, COUNT)] == [8, 1, 1]
        assert not await r.read(STATUS) & ST_UNCOMMITTED
        # writes fill the shadow in any order; COMMIT checks the combination: signed 1-bit is refused
        assert await ax.write(BITS, 1) == OKAY and await r.read(STATUS) & ST_UNCOMMITTED
        assert await ax.write(COMMIT, 1) == SLVERR and await r.read(STATUS) & ST_CFG_ERR
        assert await r.read(STATUS) & ST_UNCOMMITTED, "a refused COMMIT must leave the shadow uncommitted"
        await ax.write(STATUS, ST_CFG_ERR)
        assert await ax.write(MODE, 0) == OKAY and await ax.write(COMMIT, 1) == OKAY  # unsigned 1-bit
        assert not await r.read(STATUS) & (ST_UNCOMMITTED | ST_CFG_ERR)
        assert await ax.write(MODE, 3) == OKAY and await ax.write(BITS, 16) == OKAY
        assert await ax.write(COMMIT, 0) == OKAY and await r.read(STATUS) & ST_UNCOMMITTED  # bit 0 clear: no-op
        assert await ax.write(COMMIT, 1) == OKAY and not await r.read(STATUS) & ST_UNCOMMITTED
        assert [await r.read(a) for a in (BITS, MODE)] == [16, 3]
        # byte strobes
        assert await ax.write(SCALE, 0x11223344) == OKAY
        assert await ax.write(SCALE, 0xAABBCCDD, strb=0b0101) == OKAY
        assert await r.read(SCALE) == 0x11BB33DD
        # read-only and unmapped addresses; CONTROL and COMMIT are write-only and read 0
        assert await ax.write(ID, 0) == SLVERR and await ax.write(CYCLES, 0) == SLVERR
        assert (await ax.read(0x48))[1] == SLVERR and (await ax.read(0xFC))[1] == SLVERR
        assert await ax.read(COMMIT) == (0, OKAY) and await ax.read(CONTROL) == (0, OKAY)
        assert not await r.read(STATUS) & ST_CFG_ERR
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
        cfg = QuantConfig(bits=4, scale=2.0, signed=True, count=40)  # 3 words or more at every W
        assert not await r.configure(cfg)
        codes = [(i * 3) & 15 for i in range(40)]
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
        # an extra tlast too early (on the first word; the last word has its tlast too)
        for i, w in enumerate(words):
            await self.src["din"].send([w], last=(i in (0, len(words) - 1)))
        await self.frames_out("dout", 3)
        assert self.mon["dout"].frames[2].data == want
        assert await r.read(STATUS) & ST_FRAME_ERR, "early tlast not flagged"
        await r.axil.write(STATUS, ST_FRAME_ERR)
        # ... on the word before the last when the last value straddles the two
        n5 = straddling_length(5, word_w, 64)
        cfg5 = QuantConfig(bits=5, scale=2.0, signed=True, count=n5)
        assert not await r.configure(cfg5)
        codes5 = [(i * 7) & 31 for i in range(n5)]
        words5 = pack(codes5, 5, word_w)
        for i, w in enumerate(words5):
            await self.src["din"].send([w], last=(i >= len(words5) - 2))
        await self.frames_out("dout", 4)
        assert self.mon["dout"].frames[3].data == [
            int(v) for v in dequantize_bits(from_pattern(codes5, 5, True), cfg5, bf16=bf16)]
        assert await r.read(STATUS) & ST_FRAME_ERR, "tlast before a straddling last value not flagged"
        await r.axil.write(STATUS, ST_FRAME_ERR)
        assert not await r.read(STATUS) & ST_FRAME_ERR
        # NaN through the quantize path: code 0 and nan_seen
        assert not await r.read(STATUS) & ST_NAN
        nan = 0x7FC0 if bf16 else 0x7FC00000
        one = 0x3F80 if bf16 else 0x3F800000
        await self.src["qin"].send([one, nan, one])
        await self.frames_out("qout", 1)
        x = bf16_bits_to_f32([one, nan, one]) if bf16 else bits_to_f32([one, nan, one])
        assert self.mon["qout"].frames[0].data == pack(to_pattern(quantize(x, cfg5), 5), 5, word_w)
        assert await r.read(STATUS) & ST_NAN
        self.drop_objection()


@pyuvm.test()
class ConfigRaceTest(DirectedTest):
    """Configuration writes racing a queued tensor (lane 0, both paths, heavy back-pressure).

    Per trial: commit C0; stream tensor A and, right behind it, tensor B; while they are in
    flight, write C1 into the shadow registers one field at a time, at random moments
    (before, during and after A drains out of the path); commit C1 only once B's first beat
    has been accepted; then stream tensor C. A and B must be converted entirely with C0 and C
    entirely with C1: no tensor may see some fields of each.
    """

    async def run_phase(self):
        self.raise_objection()
        await self.start()
        settings = suite_settings()
        word_w, bf16 = self.params["WORD_W"], bool(self.params["BF16"])
        rng = np.random.default_rng(settings["seed"] + 20)
        for lane_sink in ("qout", "dout"):
            AxisSink(self.dut.clk, self.ports[lane_sink], Throttle("heavy", random.Random(int(rng.integers(1 << 30)))))
        trials = 6 if settings["suite"] == "reduced" else 24
        widths = all_widths()
        for trial in range(trials):
            c0, c1 = (make_config(rng, *widths[int(rng.integers(0, len(widths)))], "typical", bf16,
                                  count=int(rng.integers(4, 40))) for _ in range(2))
            assert not await self.regs.configure(c0)
            tensors = []  # (config, quantize frame, dequantize frame)
            for cfg in (c0, c0, c1):
                n = int(rng.integers(4, 40))
                x = gen_values(rng, cfg, n, bf16=bf16)
                floats = [int(b) for b in f32_to_bits(x)]
                if bf16:
                    floats = [int(b) for b in f32_bits_to_bf16_bits(np.asarray(floats))]
                tensors.append((cfg, floats, pack(gen_codes(rng, cfg.bits, cfg.signed, cfg.count), cfg.bits, word_w)))
            started = {"q": Event(), "d": Event()}
            sends = [cocotb.start_soon(self._send_two(self.src["qin"], tensors[0][1], tensors[1][1], started["q"])),
                     cocotb.start_soon(self._send_two(self.src["din"], tensors[0][2], tensors[1][2], started["d"]))]
            for addr, value in [config_writes(c1)[i] for i in rng.permutation(4)]:
                await ClockCycles(self.dut.clk, int(rng.integers(0, 30)))
                assert not await self.regs.write(addr, value)
            for key, ev in started.items():
                await wait_event(ev, f"the first beat of tensor B on the {key} path")
            assert not await self.regs.write(COMMIT, 1)
            for t in sends:
                await t
            sends = [cocotb.start_soon(self.src["qin"].send(tensors[2][1])),
                     cocotb.start_soon(self.src["din"].send(tensors[2][2]))]
            for t in sends:
                await t
            base = 3 * trial
            await self.frames_out("qout", base + 3)
            await self.frames_out("dout", base + 3)
            for k, (cfg, floats, words) in enumerate(tensors):
                x = bf16_bits_to_f32(floats) if bf16 else bits_to_f32(floats)
                want_q = pack(to_pattern(quantize(x, cfg), cfg.bits), cfg.bits, word_w)
                codes = from_pattern(unpack(words, cfg.bits, word_w, cfg.count), cfg.bits, cfg.signed)
                want_d = [int(v) for v in dequantize_bits(codes, cfg, bf16=bf16)]
                name = "ABC"[k]
                assert self.mon["qout"].frames[base + k].data == want_q, \
                    f"trial {trial}: tensor {name} quantized with a configuration other than {cfg}"
                assert self.mon["dout"].frames[base + k].data == want_d, \
                    f"trial {trial}: tensor {name} dequantized with a configuration other than {cfg}"
        self.drop_objection()

    @staticmethod
    async def _send_two(src: AxisSource, first: list[int], second: list[int], started: Event) -> None:
        await src.send(first)
        await src.send(second, started=started)


# Streams of the benchmark: (tensors, values per tensor, bits). The first is the steady state
# of one long tensor; (7, 5) on 32-bit words ends every tensor inside a word (its last value
# straddles two words), (8, 4) ends every tensor on a word boundary, (1, 8) is one value
# per tensor, (100, 3) a mid-sized tensor.
BENCH_STREAMS = ((1, 4096, 8), (64, 7, 5), (64, 8, 4), (64, 1, 8), (16, 100, 3))


@pyuvm.test()
class BenchTest(DirectedTest):
    """No stalls: streams of tensors with tlast, one configuration, on both paths of every lane.

    Per stream, lane 0: values per cycle over the whole stream (quantize: input values
    accepted, dequantize: output values delivered) and the cycles each tensor costs beyond
    one per value (per-tensor overhead). Writes bench.json.
    """

    async def run_phase(self):
        self.raise_objection()
        await self.start()
        p = self.params
        lanes, word_w, fw = p["LANES"], p["WORD_W"], float_width(p)
        long_n = int(os.environ.get("MPCONV_BENCH_VALUES", "4096"))
        streams = [(1, long_n, 8)] + list(BENCH_STREAMS[1:])
        rng = np.random.default_rng(7)
        mons, srcs = [], []
        for lane in range(lanes):
            srcs.append({k: AxisSource(self.dut.clk, AxisPorts.of(self.dut, pre, lane, w))
                         for k, pre, w in (("qin", "s_axis_qin", fw), ("din", "s_axis_din", word_w))})
            mons.append({k: AxisMonitor(self.dut.clk, AxisPorts.of(self.dut, pre, lane, w))
                         for k, pre, w in (("qin", "s_axis_qin", fw), ("qout", "m_axis_qout", word_w),
                                           ("din", "s_axis_din", word_w), ("dout", "m_axis_dout", fw))})
        rows = []
        t0 = time.time()
        total_values = 0
        for tensors, n, bits in streams:
            cfg = QuantConfig(bits=bits, scale=float(np.float32((2 ** (bits - 1) - 1) / 3.0)), signed=True, count=n)
            await self.regs.wait_idle()
            errors = await self.regs.configure(cfg)
            if os.environ.get("MPCONV_BENCH_PRE_COMMIT") == "1":
                # an RTL from before COMMIT (regression.py bench --rtl): each register write took
                # effect at once, and the COMMIT write is refused
                errors = [e for e in errors if not e.endswith(f"to 0x{COMMIT:02x} answered {SLVERR}")]
            assert not errors, errors
            first = len(mons[0]["qin"].frames)
            want_q, tasks = [], []
            for lane in range(lanes):
                xs = [rng.uniform(-3, 3, size=n).astype(np.float32) for _ in range(tensors)]
                qframes = [[int(b) for b in f32_to_bits(x)] for x in xs]
                dframes = [pack([int(c) for c in rng.integers(0, 1 << bits, size=n)], bits, word_w)
                           for _ in range(tensors)]
                if lane == 0:
                    want_q = [pack(to_pattern(quantize(x, cfg), bits), bits, word_w) for x in xs]
                tasks.append(cocotb.start_soon(self._send_all(srcs[lane]["qin"], qframes)))
                tasks.append(cocotb.start_soon(self._send_all(srcs[lane]["din"], dframes)))
            for t in tasks:
                await t
            for key in ("qout", "dout"):
                await self.frames_out_of(mons[0][key], first + tensors, key)
            total_values += 2 * lanes * n * tensors
            seen = {k: list(m.frames)[first:first + tensors] for k, m in mons[0].items()}
            q_in, d_out = seen["qin"], seen["dout"]
            got_q = [f.data for f in seen["qout"]]
            assert got_q == want_q, "benchmark output differs from the reference model"
            values = n * tensors
            q_cycles = round((q_in[-1].last_ns - q_in[0].first_ns) / CLOCK_NS) + 1
            d_cycles = round((d_out[-1].last_ns - d_out[0].first_ns) / CLOCK_NS) + 1
            rows.append({
                "tensors": tensors, "n": n, "bits": bits,
                "q_vpc": values / q_cycles, "d_vpc": values / d_cycles,
                "q_overhead": (q_cycles - values) / tensors, "d_overhead": (d_cycles - values) / tensors,
                # last value in -> last word out; first word in -> first value out
                "q_latency": round((seen["qout"][-1].last_ns - q_in[-1].last_ns) / CLOCK_NS),
                "d_latency": round((d_out[0].first_ns - seen["din"][0].first_ns) / CLOCK_NS),
            })
        wall = time.time() - t0
        result = {"lanes": lanes, "word_w": word_w, "streams": rows, "values_per_s": total_values / wall}
        out = os.environ.get("MPCONV_BENCH_OUT")
        if out:
            with open(out, "w") as fh:
                json.dump(result, fh)
        self.logger.info(f"bench: {result}")
        self.drop_objection()

    @staticmethod
    async def _send_all(src: AxisSource, frames: list[list[int]]) -> None:
        for f in frames:  # send() returns right after the last handshake: frames follow back to back
            await src.send(f)

    async def frames_out_of(self, mon: AxisMonitor, count: int, what: str) -> None:
        await wait_until(self.dut.clk, lambda: len(mon.frames) >= count, f"{count} frames on {what}", align=False)
