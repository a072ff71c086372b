"""cocotb drivers and monitors for the converter's AXI4-Stream and AXI4-Lite ports.

These classes only need a clock and signal handles, so other testbenches (the
co-simulation in cosim/) can reuse them on mpconv_top or on any single block.

Multi-lane buses are packed vectors (lane i owns bits [i*W +: W]); `LaneSignal` gives each
lane its own view and merges writes from several lanes in the same time step.

Timing convention (the same on Icarus and Verilator): inputs change just after a rising
edge, handshakes are sampled at the falling edge before the rising edge where they take
effect, so no reader depends on the order of events inside one time step.

Every wait for the DUT is bounded (watchdog.py): a stalled port fails the test with a
message naming the port instead of hanging the simulation.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import cocotb
from cocotb.triggers import Event, FallingEdge, RisingEdge
from cocotb.utils import get_sim_time

from watchdog import Stall, wait_until


class LaneSignal:
    """The slice of a packed signal that belongs to one lane."""

    _shadow: dict[int, int] = {}  # id(handle) -> last value written by any lane

    def __init__(self, handle, lane: int = 0, width: int = 1) -> None:
        self.handle = handle
        self.lane = lane
        self.width = width
        self.shift = lane * width
        self.mask = (1 << width) - 1
        self.full_width = len(handle)
        self.whole = self.shift == 0 and width == self.full_width
        LaneSignal._shadow.setdefault(id(handle), 0)

    def write(self, value: int) -> None:
        if self.whole:
            self.handle.value = value
            return
        key = id(self.handle)
        merged = (LaneSignal._shadow[key] & ~(self.mask << self.shift)) | ((value & self.mask) << self.shift)
        LaneSignal._shadow[key] = merged
        self.handle.value = merged

    def read(self) -> int | None:
        """The lane's value, or None while any of its bits is X or Z."""
        value = self.handle.value
        try:
            return (int(value) >> self.shift) & self.mask
        except ValueError:
            text = str(value)  # MSB first
            lo = self.full_width - self.shift - self.width
            part = text[lo : lo + self.width]
            return int(part, 2) if set(part) <= {"0", "1"} else None

    def is_high(self) -> bool:
        return self.read() == 1


class Throttle:
    """Per-cycle yes/no pattern used for tvalid bubbles and tready back-pressure.

    kinds: "none" (always yes), "random" (yes with probability p), "bursty" (runs of
    1-16 yes cycles and 1-8 no cycles), "heavy" (yes with probability 0.25).
    """

    KINDS = ("none", "random", "bursty", "heavy")

    def __init__(self, kind: str = "none", rng: random.Random | None = None, p: float = 0.7) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown throttle kind {kind!r}; expected one of {self.KINDS}")
        self.kind = kind
        self.rng = rng or random.Random(0)
        self.p = 0.25 if kind == "heavy" else p
        self._run = 0
        self._state = True

    @property
    def always(self) -> bool:
        return self.kind == "none"

    def __call__(self) -> bool:
        if self.kind == "none":
            return True
        if self.kind == "bursty":
            if self._run <= 0:
                self._state = not self._state
                self._run = self.rng.randint(1, 16) if self._state else self.rng.randint(1, 8)
            self._run -= 1
            return self._state
        return self.rng.random() < self.p


@dataclass
class AxisPorts:
    """Handles of one AXI4-Stream port (one lane of it)."""

    tdata: LaneSignal
    tvalid: LaneSignal
    tready: LaneSignal
    tlast: LaneSignal | None = None

    @classmethod
    def of(cls, dut, prefix: str, lane: int = 0, data_width: int | None = None) -> "AxisPorts":
        """Ports named <prefix>_tdata/_tvalid/_tready/_tlast; data_width defaults to the whole bus."""
        tdata = getattr(dut, f"{prefix}_tdata")
        width = data_width or len(tdata)
        tlast = getattr(dut, f"{prefix}_tlast", None)
        return cls(
            tdata=LaneSignal(tdata, lane, width),
            tvalid=LaneSignal(getattr(dut, f"{prefix}_tvalid"), lane, 1),
            tready=LaneSignal(getattr(dut, f"{prefix}_tready"), lane, 1),
            tlast=LaneSignal(tlast, lane, 1) if tlast is not None else None,
        )


class AxisSource:
    """Drives frames into a slave AXI4-Stream port, inserting tvalid bubbles.

    Each beat waits at most `stall_cycles` (default: the watchdog bound) for tready.
    """

    def __init__(self, clk, ports: AxisPorts, throttle: Throttle | None = None,
                 stall_cycles: int | None = None) -> None:
        self.clk = clk
        self.ports = ports
        self.throttle = throttle or Throttle("none")
        self.stall_cycles = stall_cycles
        ports.tvalid.write(0)
        if ports.tlast is not None:
            ports.tlast.write(0)

    async def send(self, frame: list[int], last: bool = True, started: Event | None = None) -> None:
        """Send one frame; tlast marks its final beat (never, with last=False).

        `started` is set once the first beat has been accepted. Returns just after the
        last handshake.
        """
        p = self.ports
        if not int(self.clk.value):  # re-align to "just after a rising edge"
            await RisingEdge(self.clk)
        n = len(frame)
        for i, data in enumerate(frame):
            while not self.throttle():
                p.tvalid.write(0)
                await RisingEdge(self.clk)
            p.tdata.write(data)
            if p.tlast is not None:
                p.tlast.write(1 if last and i == n - 1 else 0)
            p.tvalid.write(1)
            await wait_until(self.clk, p.tready.is_high,
                             f"tready on {p.tready.handle._name}[lane {p.tready.lane}] for beat {i} of {n}",
                             self.stall_cycles)
            if i == 0 and started is not None:
                started.set()
        p.tvalid.write(0)


class AxisSink:
    """Drives tready of a master AXI4-Stream port with a back-pressure pattern."""

    def __init__(self, clk, ports: AxisPorts, throttle: Throttle | None = None) -> None:
        self.clk = clk
        self.ports = ports
        self.throttle = throttle or Throttle("none")
        self._task = None
        self.start()

    def start(self) -> None:
        self.stop()
        self.ports.tready.write(1 if self.throttle.always else 0)
        if not self.throttle.always:
            self._task = cocotb.start_soon(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def set_throttle(self, throttle: Throttle) -> None:
        self.throttle = throttle
        self.start()

    async def _run(self) -> None:
        while True:
            self.ports.tready.write(1 if self.throttle() else 0)
            await RisingEdge(self.clk)


@dataclass
class Frame:
    """One tlast-delimited frame seen by a monitor: its beats and how they were observed.

    first_ns/last_ns: sim times of the first and last beat. bubbles: cycles between the
    first and last beat with tvalid low. stalls: cycles with tvalid high and tready low
    since the previous frame ended. gap: cycles from the previous frame's last beat to this
    frame's first beat (1 = back to back; 0 for the first frame).
    """

    data: list[int]
    first_ns: float
    last_ns: float
    bubbles: int = 0
    stalls: int = 0
    gap: int = 0


@dataclass
class AxisMonitor:
    """Passively records handshakes on one AXI4-Stream port, grouped into frames by tlast.

    Also counts cycles with tvalid high and tready low (stalls), in total and per frame.
    `callback(frame)` is called for each completed frame; frames also queue up in `frames`.
    """

    clk: object
    ports: AxisPorts
    callback: Callable[[Frame], None] | None = None
    frames: deque = field(default_factory=deque)
    beats: int = 0
    stalls: int = 0

    def __post_init__(self) -> None:
        self._current: list[int] = []
        self._first_ns = 0.0
        self._cycle = 0
        self._last_beat_cycle: int | None = None
        self._first_cycle = 0
        self._bubbles = self._stalls = 0
        self._task = cocotb.start_soon(self._run())

    async def _run(self) -> None:
        p = self.ports
        while True:
            await FallingEdge(self.clk)
            self._cycle += 1
            if not p.tvalid.is_high():
                if self._current:
                    self._bubbles += 1
                continue
            if not p.tready.is_high():
                self.stalls += 1
                self._stalls += 1
                continue
            data = p.tdata.read()
            if data is None:
                raise AssertionError(f"X/Z on {p.tdata.handle._name} during a handshake")
            now = get_sim_time("ns")
            if not self._current:
                self._first_ns = now
                self._first_cycle = self._cycle
            self._current.append(data)
            self.beats += 1
            if p.tlast is None or p.tlast.is_high():
                gap = 0 if self._last_beat_cycle is None else self._first_cycle - self._last_beat_cycle
                frame = Frame(self._current, self._first_ns, now, self._bubbles, self._stalls, gap)
                self._current = []
                self._bubbles = self._stalls = 0
                self._last_beat_cycle = self._cycle
                self.frames.append(frame)
                if self.callback is not None:
                    self.callback(frame)

    @property
    def open_beats(self) -> int:
        """Beats of a frame whose tlast has not been seen yet."""
        return len(self._current)


class AxiLiteMaster:
    """AXI4-Lite master for ports named <prefix>_awaddr, _wdata, ... (no prot signals).

    Each handshake waits at most `handshake_cycles` for the slave.
    """

    OKAY, SLVERR = 0, 2

    def __init__(self, clk, dut, prefix: str = "s_axil", handshake_cycles: int = 1000) -> None:
        self.clk = clk
        self.handshake_cycles = handshake_cycles
        s = lambda name: getattr(dut, f"{prefix}_{name}")  # noqa: E731
        self.awaddr, self.awvalid, self.awready = s("awaddr"), s("awvalid"), s("awready")
        self.wdata, self.wstrb, self.wvalid, self.wready = s("wdata"), s("wstrb"), s("wvalid"), s("wready")
        self.bresp, self.bvalid, self.bready = s("bresp"), s("bvalid"), s("bready")
        self.araddr, self.arvalid, self.arready = s("araddr"), s("arvalid"), s("arready")
        self.rdata, self.rresp, self.rvalid, self.rready = s("rdata"), s("rresp"), s("rvalid"), s("rready")
        for sig in (self.awvalid, self.wvalid, self.arvalid, self.bready, self.rready):
            sig.value = 0
        self.awaddr.value = 0
        self.araddr.value = 0
        self.wdata.value = 0
        self.wstrb.value = 0
        self._busy = False

    async def _acquire(self) -> None:
        if self._busy:  # another coroutine's access must end first
            await wait_until(self.clk, lambda: not self._busy, "the previous AXI4-Lite access to end",
                             100 * self.handshake_cycles, align=True)
        self._busy = True

    async def _handshake(self, signal, what: str) -> None:
        """Wait (sampling at falling edges) for signal high; stay before the rising edge."""
        await wait_until(self.clk, lambda: bool(int(signal.value)), f"AXI4-Lite {what}",
                         self.handshake_cycles, align=False)

    async def write(self, addr: int, data: int, strb: int = 0xF) -> int:
        """Write one register; returns BRESP (0 OKAY, 2 SLVERR)."""
        await self._acquire()
        try:
            self.awaddr.value = addr
            self.wdata.value = data & 0xFFFFFFFF
            self.wstrb.value = strb
            self.awvalid.value = 1
            self.wvalid.value = 1
            self.bready.value = 1
            aw_done = w_done = False
            for _ in range(self.handshake_cycles):
                await FallingEdge(self.clk)
                aw_now = not aw_done and bool(int(self.awready.value))
                w_now = not w_done and bool(int(self.wready.value))
                await RisingEdge(self.clk)
                if aw_now:
                    aw_done = True
                    self.awvalid.value = 0
                if w_now:
                    w_done = True
                    self.wvalid.value = 0
                if aw_done and w_done:
                    break
            else:
                raise Stall(f"watchdog: AXI4-Lite awready/wready for a write to 0x{addr:02x} did not happen "
                            f"within {self.handshake_cycles} clock cycles (DUT stalled?)")
            await self._handshake(self.bvalid, f"bvalid after a write to 0x{addr:02x}")
            resp = int(self.bresp.value)
            await RisingEdge(self.clk)
            self.bready.value = 0
            return resp
        finally:
            self._busy = False

    async def read(self, addr: int) -> tuple[int, int]:
        """Read one register; returns (data, RRESP)."""
        await self._acquire()
        try:
            self.araddr.value = addr
            self.arvalid.value = 1
            self.rready.value = 1
            await self._handshake(self.arready, f"arready for a read of 0x{addr:02x}")
            await RisingEdge(self.clk)
            self.arvalid.value = 0
            await self._handshake(self.rvalid, f"rvalid for a read of 0x{addr:02x}")
            data, resp = int(self.rdata.value), int(self.rresp.value)
            await RisingEdge(self.clk)
            self.rready.value = 0
            return data, resp
        finally:
            self._busy = False
