"""Bounds on every wait of the testbench: a stalled DUT fails with a message, never hangs.

Every loop that waits for the DUT (a `tready`, an AXI4-Lite handshake, a status bit, the
first beat of a frame, the last output frame) goes through `wait_until` or `wait_event`
with a bound in clock cycles. When the bound runs out, `Stall` (an AssertionError, so the
cocotb test fails) is raised with what was awaited and for how long. A raise inside any
cocotb task fails the running test at once, so a deadlocked DUT ends the simulation within
one bound.

`start_wall_clock_limit` is the last resort for a simulator that stops advancing time:
after the limit it prints one line and ends the process (the build then has no results
file and is reported as failed).

Bounds: `MPCONV_WATCHDOG_CYCLES` (default 20,000 cycles of no progress; the longest
legitimate wait in the suites is a tensor draining under heavy back-pressure, a few
thousand cycles) and `MPCONV_WALL_LIMIT_S` (seconds, unset = no limit).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable

from cocotb.triggers import Event, FallingEdge, RisingEdge, SimTimeoutError, with_timeout

CLOCK_NS = 10  # the testbench clock period (every test uses it)


def default_cycles() -> int:
    """The no-progress bound of every wait, in clock cycles."""
    return int(os.environ.get("MPCONV_WATCHDOG_CYCLES", "20000"))


class Stall(AssertionError):
    """The DUT did not do what a wait expected within its bound."""


def _message(what: str, cycles: int) -> str:
    return f"watchdog: {what} did not happen within {cycles} clock cycles (DUT stalled?)"


async def wait_until(clk, predicate: Callable[[], bool], what: str, cycles: int | None = None,
                     align: bool = True) -> int:
    """Sample predicate() at falling edges until it holds; returns the cycles waited.

    align: then step to the next rising edge (where the sampled handshake takes effect).
    """
    bound = default_cycles() if cycles is None else cycles
    for n in range(bound):
        await FallingEdge(clk)
        if predicate():
            if align:
                await RisingEdge(clk)
            return n
    raise Stall(_message(what, bound))


async def wait_event(event: Event, what: str, cycles: int | None = None) -> None:
    """Wait for a cocotb Event, at most `cycles` clock periods."""
    bound = default_cycles() if cycles is None else cycles
    try:
        await with_timeout(event.wait(), bound * CLOCK_NS, "ns")
    except SimTimeoutError:
        raise Stall(_message(what, bound)) from None


def start_wall_clock_limit(seconds: float | None = None) -> None:
    """End this simulator process after `seconds` of wall time (MPCONV_WALL_LIMIT_S)."""
    if seconds is None:
        text = os.environ.get("MPCONV_WALL_LIMIT_S")
        if not text:
            return
        seconds = float(text)

    def expire() -> None:
        print(f"watchdog: the simulation ran longer than {seconds:.0f} s of wall time; stopping it",
              file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(3)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
