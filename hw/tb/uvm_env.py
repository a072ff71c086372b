"""pyuvm environment shared by the block tests and the top-level test.

A converter under test is a set of *paths*: an input AXI4-Stream port, an output
AXI4-Stream port and a prediction (reference model) from an input frame to the output
frame. A block has one path; mpconv_top has a quantize and a dequantize path per lane.

    sequence --> sequencer --> ConvDriver --(configure, then drive every path)--> DUT
                                   |  ap: the item as driven
                                   v
    AxisMonitor(in)  --> PathScoreboard <-- AxisMonitor(out)
                               |  (configuration, observed input frame, observed output frame)
                               v
                         CoverageCollector: labels computed from the observed frames

Every wait is bounded (watchdog.py): a stalled DUT fails the test with a message.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import Event, RisingEdge
from pyuvm import (
    ConfigDB,
    uvm_analysis_port,
    uvm_component,
    uvm_driver,
    uvm_env,
    uvm_sequence,
    uvm_sequence_item,
    uvm_sequencer,
    uvm_subscriber,
    uvm_test,
)

from axi import AxisMonitor, AxisPorts, AxisSink, AxisSource, Frame, Throttle
from classify import stream_labels, tensor_labels
from functional_coverage import COVERAGE, bp_label
from refmodel import QuantConfig
from watchdog import CLOCK_NS, Stall, default_cycles, start_wall_clock_limit, wait_event, wait_until


def suite_settings() -> dict:
    """Run-size knobs from the environment (set by regression.py)."""
    suite = os.environ.get("MPCONV_SUITE", "reduced")
    return {
        "suite": suite,
        "seed": int(os.environ.get("MPCONV_SEED", "1")),
        "params": json.loads(os.environ.get("MPCONV_PARAMS", "{}")),
        "repeats": 1 if suite == "reduced" else 8,
        "max_len": 24 if suite == "reduced" else 96,
        # extra no-stall values through the quantizer and dequantizer arithmetic
        "soak": int(os.environ.get("MPCONV_SOAK") or (0 if suite == "reduced" else 60000)),
    }


@dataclass
class PathSpec:
    """One stream path through the DUT and how to predict its output.

    steady: which port must never stall inside a stream of tensors with one configuration
    and no stalls from the testbench: "in" (the input keeps tready high: one value or word
    per cycle in) or "out" (the output delivers one value per cycle, also across the
    boundary from the previous tensor, whose input was offered in time).
    """

    name: str
    unit: str  # coverage unit, e.g. "packer" or "top.quant"
    in_ports: AxisPorts
    out_ports: AxisPorts
    predict: Callable[[QuantConfig, list[int]], list[int]]
    word_w: int = 0  # word width seen by this path, 0 when it has none
    bf16: bool = False  # float side is bfloat16
    steady: str = "in"


class ConvItem(uvm_sequence_item):
    """One tensor: a configuration, one input frame per path and the stall patterns to drive.

    settle: wait until the DUT is idle before configuring. steady: the tensor continues a
    stream (same configuration as the previous item, no stalls on either): the path's
    steady port must not stall (PathSpec.steady).
    """

    def __init__(self, name: str, cfg: QuantConfig, frames: dict[str, list[int]], src_bp: str = "none",
                 sink_bp: str = "none", settle: bool = False, steady: bool = False) -> None:
        super().__init__(name)
        self.cfg = cfg
        self.frames = frames
        self.src_bp = src_bp
        self.sink_bp = sink_bp
        self.settle = settle
        self.steady = steady

    def __str__(self) -> str:
        sizes = {k: len(v) for k, v in self.frames.items()}
        return f"{self.get_name()} {self.cfg} frames={sizes} bp={self.src_bp}/{self.sink_bp}"


class ListSequence(uvm_sequence):
    """Plays a prepared list of items, in order."""

    def __init__(self, name: str, items: list[ConvItem]) -> None:
        super().__init__(name)
        self.items = items

    async def body(self) -> None:
        for item in self.items:
            await self.start_item(item)
            await self.finish_item(item)


class Collector(uvm_subscriber):
    """Keeps everything written to it, in order."""

    def __init__(self, name, parent):
        super().__init__(name, parent)
        self.items: list = []

    def write(self, t) -> None:
        self.items.append(t)


class StreamMonitor(uvm_component):
    """UVM wrapper of AxisMonitor: publishes every completed frame on `ap`."""

    def __init__(self, name, parent, clk, ports: AxisPorts):
        super().__init__(name, parent)
        self.clk = clk
        self.ports = ports
        self.ap = uvm_analysis_port("ap", self)
        self.mon: AxisMonitor | None = None

    def start_of_simulation_phase(self) -> None:
        self.mon = AxisMonitor(self.clk, self.ports, callback=self.ap.write)


class PathScoreboard(uvm_component):
    """Compares each output frame of one path with the reference model's prediction."""

    def __init__(self, name, parent, spec: PathSpec):
        super().__init__(name, parent)
        self.spec = spec
        self.errors: list[str] = []
        self.checked_values = 0

    def build_phase(self) -> None:
        self.expected = Collector("expected", self)
        self.inputs = Collector("inputs", self)
        self.outputs = Collector("outputs", self)

    def compare(self) -> None:
        """Check everything received so far (called once the DUT has drained)."""
        name = self.spec.name
        exp: list[ConvItem] = self.expected.items
        ins: list[Frame] = self.inputs.items
        outs: list[Frame] = self.outputs.items
        if len(ins) != len(exp):
            self.errors.append(f"{name}: {len(exp)} frames driven but {len(ins)} accepted")
        if len(outs) != len(exp):
            self.errors.append(f"{name}: {len(exp)} frames driven but {len(outs)} came out")
        for k, (item, fin, fout) in enumerate(zip(exp, ins, outs)):
            sent = item.frames[name]
            if fin.data != sent:
                self.errors.append(f"{name} frame {k}: accepted input differs from the driven one")
                continue
            if item.steady:
                self._check_steady(k, item, fin, fout)
            want = self.spec.predict(item.cfg, sent)
            got = fout.data
            self.checked_values += len(want)
            if got != want:
                bad = [i for i in range(min(len(got), len(want))) if got[i] != want[i]]
                detail = (f"{name} frame {k} ({item.cfg}, scale bits 0x{item.cfg.scale_bits:08x}): "
                          f"{len(want)} beats expected, {len(got)} received")
                for i in bad[:4]:
                    src = f" input 0x{sent[i]:x}" if i < len(sent) else ""
                    detail += f"; beat {i}:{src} want 0x{want[i]:x} got 0x{got[i]:x}"
                self.errors.append(detail)

    def _check_steady(self, k: int, item: ConvItem, fin: Frame, fout: Frame) -> None:
        """Inside a stream of one configuration without stalls: one value per cycle, no lost cycle."""
        name = self.spec.name
        where = f"{name} frame {k} ({item.cfg}, {len(fin.data)} input beats, stream continued)"
        if self.spec.steady == "in" and fin.stalls:
            self.errors.append(f"{where}: input stalled {fin.stalls} cycles (want 0: one value per cycle)")
        if self.spec.steady == "out" and (fout.bubbles or fout.gap != 1):
            self.errors.append(f"{where}: output had {fout.bubbles} bubbles, first beat {fout.gap} cycles "
                               f"after the previous tensor's last (want 0 and 1: one value per cycle)")


class CoverageCollector(uvm_component):
    """Samples functional coverage from what the monitors observed on every path.

    For each tensor: its configuration, the input frame and the output frame as recorded on
    the DUT's ports. Labels come from the observed input values (classify.tensor_labels;
    rounding boundaries and result classes also from the observed output values),
    the stall pattern from the observed handshakes (input bubbles inside the frame, output
    tvalid high with tready low), and tensor boundaries from the observed gap on the path's
    steady port (PathSpec.steady): back_to_back when the tensor's first beat followed the
    previous tensor's last beat in the next cycle.
    """

    def sample(self, board: "PathScoreboard") -> None:
        spec = board.spec
        prev_straddled = False
        triples = zip(board.expected.items, board.inputs.items, board.outputs.items)
        for k, (item, fin, fout) in enumerate(triples):
            cfg = item.cfg
            labels = tensor_labels(spec.unit, cfg, fin.data, spec.word_w, spec.bf16, out=fout.data)
            boundary = fin if spec.steady == "in" else fout
            if k and boundary.gap == 1:
                labels.add("back_to_back")
                if prev_straddled:
                    labels.add("b2b_after_straddle")
            if spec.word_w:
                n = len(fin.data) if spec.unit in ("packer", "top.quant") else cfg.count
                prev_straddled = "last_straddles" in stream_labels(n, cfg.bits, spec.word_w)
            bp = bp_label(fin.bubbles > 0, fout.stalls > 0)
            COVERAGE.sample(spec.unit, cfg.bits, cfg.signed, spec.word_w, bp, labels)


class ConvDriver(uvm_driver):
    """Applies an item's configuration, sets the stall patterns, then drives all its frames.

    With overlap=True the next item's configuration is written as soon as the first beat
    of the current item has been accepted on every path, while the rest still streams:
    the earliest moment mpconv_top allows, which stresses its per-tensor switch-over.
    """

    def __init__(self, name, parent, clk, specs: list[PathSpec],
                 configure: Callable[[ConvItem], Awaitable[None]], rng_seed: int, overlap: bool = False):
        super().__init__(name, parent)
        self.clk = clk
        self.specs = specs
        self.configure = configure
        self.rng_seed = rng_seed
        self.overlap = overlap
        self.ap = uvm_analysis_port("ap", self)
        self.sources: dict[str, AxisSource] = {}
        self.sinks: dict[str, AxisSink] = {}

    def start_of_simulation_phase(self) -> None:
        for spec in self.specs:
            self.sources[spec.name] = AxisSource(self.clk, spec.in_ports)
            self.sinks[spec.name] = AxisSink(self.clk, spec.out_ports)

    async def run_phase(self) -> None:
        import random

        rng = random.Random(self.rng_seed)
        pending: list = []  # send tasks of the previous item
        last_cfg = None
        while True:
            item = await self.seq_item_port.get_next_item()
            if not self.overlap:
                for t in pending:
                    await t
            if item.cfg != last_cfg or item.settle:  # a stream keeps its configuration: no write
                await self.configure(item)
                last_cfg = item.cfg
            for t in pending:
                await t
            for spec in self.specs:
                self.sources[spec.name].throttle = Throttle(item.src_bp, random.Random(rng.random()))
                self.sinks[spec.name].set_throttle(Throttle(item.sink_bp, random.Random(rng.random())))
            self.ap.write(item)
            started = []
            pending = []
            for s in self.specs:
                if s.name in item.frames:
                    started.append(Event())
                    pending.append(cocotb.start_soon(self.sources[s.name].send(item.frames[s.name],
                                                                               started=started[-1])))
            for ev in started:
                await wait_event(ev, f"the first beat of {item.get_name()} to be accepted")
            self.seq_item_port.item_done()


class ConvEnv(uvm_env):
    """Sequencer, driver, monitors, scoreboards and coverage for a list of paths.

    ConfigDB keys: "CLK", "SPECS" (list[PathSpec]), "CONFIGURE" (async fn(item)), "SEED",
    "OVERLAP" (bool, see ConvDriver).
    """

    def build_phase(self) -> None:
        self.clk = ConfigDB().get(self, "", "CLK")
        self.specs: list[PathSpec] = ConfigDB().get(self, "", "SPECS")
        configure = ConfigDB().get(self, "", "CONFIGURE")
        seed = ConfigDB().get(self, "", "SEED")
        overlap = ConfigDB().get(self, "", "OVERLAP")
        self.seqr = uvm_sequencer("seqr", self)
        self.driver = ConvDriver("driver", self, self.clk, self.specs, configure, seed, overlap)
        self.coverage = CoverageCollector("coverage", self)
        self.in_mons = {s.name: StreamMonitor(f"in_{s.name}", self, self.clk, s.in_ports) for s in self.specs}
        self.out_mons = {s.name: StreamMonitor(f"out_{s.name}", self, self.clk, s.out_ports) for s in self.specs}
        self.boards = {s.name: PathScoreboard(f"sb_{s.name}", self, s) for s in self.specs}

    def connect_phase(self) -> None:
        self.driver.seq_item_port.connect(self.seqr.seq_item_export)
        for s in self.specs:
            self.driver.ap.connect(self.boards[s.name].expected.analysis_export)
            self.in_mons[s.name].ap.connect(self.boards[s.name].inputs.analysis_export)
            self.out_mons[s.name].ap.connect(self.boards[s.name].outputs.analysis_export)

    async def wait_drained(self, stall_cycles: int | None = None) -> None:
        """Wait until every path has delivered one output frame per driven item.

        Fails when no output beat arrives for `stall_cycles` (default: the watchdog bound).
        """
        bound = default_cycles() if stall_cycles is None else stall_cycles
        mons = [m.mon for m in self.out_mons.values()]
        idle, beats = 0, -1
        while not all(len(b.outputs.items) >= len(b.expected.items) for b in self.boards.values()):
            now = sum(m.beats for m in mons)
            idle = idle + 1 if now == beats else 0
            beats = now
            if idle > bound:
                raise Stall(f"watchdog: no output beat for {bound} clock cycles while frames are missing: "
                            + ", ".join(f"{k}: {len(b.outputs.items)}/{len(b.expected.items)}"
                                        for k, b in self.boards.items()))
            await RisingEdge(self.clk)
        for _ in range(20):  # anything extra would show up as an extra frame
            await RisingEdge(self.clk)

    def check(self) -> tuple[int, list[str]]:
        errors: list[str] = []
        values = 0
        for b in self.boards.values():
            b.compare()
            self.coverage.sample(b)
            errors += b.errors
            values += b.checked_values
        return values, errors


class ConvTestBase(uvm_test):
    """Clock, reset, one sequence of items, drain, compare.

    Subclasses implement `setup(dut) -> (specs, configure, items)` and may extend
    `after_drain(dut)` with extra checks (errors go to self.extra_errors).
    """

    overlap = False  # see ConvDriver

    def setup(self, dut, settings: dict):  # pragma: no cover - abstract
        raise NotImplementedError

    def build_phase(self) -> None:
        start_wall_clock_limit()
        self.dut = cocotb.top
        self.settings = suite_settings()
        self.extra_errors: list[str] = []
        specs, configure, items = self.setup(self.dut, self.settings)
        self.items = items
        ConfigDB().set(None, "*", "CLK", self.dut.clk)
        ConfigDB().set(None, "*", "SPECS", specs)
        ConfigDB().set(None, "*", "CONFIGURE", configure)
        ConfigDB().set(None, "*", "SEED", self.settings["seed"])
        ConfigDB().set(None, "*", "OVERLAP", self.overlap)
        self.env = ConvEnv("env", self)

    async def reset(self) -> None:
        await reset_dut(self.dut)

    async def after_drain(self, dut) -> None:
        return None

    async def run_phase(self) -> None:
        self.raise_objection()
        Clock(self.dut.clk, CLOCK_NS, unit="ns").start()
        await self.reset()
        seq = ListSequence("seq", self.items)
        await seq.start(self.env.seqr)
        await self.env.wait_drained()
        await self.after_drain(self.dut)
        self.drop_objection()

    def check_phase(self) -> None:
        values, errors = self.env.check()
        errors = errors + self.extra_errors
        self.logger.info(f"{len(self.items)} tensors, {values} output beats compared, {len(errors)} errors")
        COVERAGE.dump()
        for e in errors[:12]:
            self.logger.error(e)
        assert not errors, f"{len(errors)} mismatches (first: {errors[0]})"


async def reset_dut(dut, cycles: int = 5) -> None:
    """Synchronous reset: rst_n (mpconv_top) low or rst (blocks) high for a few cycles."""
    active_low = hasattr(dut, "rst_n")
    sig = dut.rst_n if active_low else dut.rst
    sig.value = 0 if active_low else 1
    for _ in range(cycles):
        await RisingEdge(dut.clk)
    sig.value = 1 if active_low else 0
    for _ in range(2):  # mpconv_top registers its reset
        await RisingEdge(dut.clk)


async def wait_signal(clk, predicate: Callable[[], bool], what: str, timeout_cycles: int | None = None) -> None:
    """Wait (sampling at falling edges) until predicate() holds, then align to a rising edge."""
    await wait_until(clk, predicate, what, timeout_cycles)
