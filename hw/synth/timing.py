"""Critical path of the converter from yosys' static timing analysis (`sta`).

OpenSTA is not available here, so the open flow estimates timing with yosys itself: one
lane (LANES=1) of a configuration is synthesized flat for Xilinx 7-series, the cell
library with its timing annotations (`+/xilinx/cells_sim.v`, specify blocks) is read, and
`sta` reports the latest arrival time and its path. That figure counts cell delays only
(clock buffer, clock-to-Q, LUTs, MUXF7/8, carry chains), no routing and no setup time, so
`fmax_cells` is an upper bound. `levels` counts logic cells the way Vivado's "logic levels"
do (every LUT, MUXF7/8 and CARRY4). `fmax_est` adds an assumed NET_NS of routing for each
connection through general routing (into every LUT, into a carry chain or a DSP/RAM from
outside, and into the endpoint; not LUT->MUXF7->MUXF8 or CARRY4->CARRY4, which are
dedicated), a rough 7-series (-1 speed grade) figure; only Vivado's routed timing
(`make synth-vivado -impl`) is a number to publish. A lane's critical path does not depend
on the number of lanes, so one timing run serves every lane count of a configuration.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

NET_NS = 0.4  # assumed routing delay per cell-to-cell connection (ns)

_ARRIVAL = re.compile(r"Latest arrival time in '(\S+)' is (\d+):")
_STEP = re.compile(r"^\s+(\d+) (\S+) \((\w+)\.(\w+)(?:->(\w+))?\)\s*$")
_LOGIC = re.compile(r"LUT[1-6]|MUXF[78]|CARRY4|DSP48E1|RAMB\d+E1|SRL\w*|INV")
_CLOCK_PINS = ("C", "CLK", "CLKARDCLK", "CLKBWRCLK")


class TimingError(ValueError):
    """No usable `sta` result."""


@dataclass
class Timing:
    """The latest-arriving path of one design."""

    arrival_ps: int
    cells: list[str] = field(default_factory=list)  # cell types on the path, start to end
    endpoint: str = ""  # "<cell type>.<pin> of <cell name>"
    startpoint: str = ""
    launch: int = 0  # cells[:launch] are the clock path and the launching cell (clock -> Q)

    @property
    def logic(self) -> list[str]:
        """Cell types after the launching cell: the data path."""
        return self.cells[self.launch:]

    @property
    def levels(self) -> int:
        """Logic cells on the data path (LUTs, muxes, carry chains, ...), not the launching
        flip-flop, shift register or RAM, and not buffers."""
        return sum(1 for c in self.logic if _LOGIC.fullmatch(c))

    @property
    def net_hops(self) -> int:
        """Connections on the path that go through general routing (see the module docstring)."""
        hops = 1  # into the endpoint
        prev = ""
        for c in self.logic:
            if c.startswith(("LUT", "INV", "DSP", "RAMB", "SRL")):
                hops += 1
            elif c == "CARRY4" and prev != "CARRY4" and not prev.startswith(("LUT", "INV")):
                hops += 1
            prev = c
        return hops

    @property
    def crit_ns(self) -> float:
        return self.arrival_ps / 1000.0

    @property
    def fmax_cells_mhz(self) -> float:
        return 1000.0 / self.crit_ns

    @property
    def fmax_est_mhz(self) -> float:
        return 1000.0 / (self.crit_ns + NET_NS * self.net_hops)

    def summary(self) -> str:
        kinds = Counter(re.sub(r"^LUT[1-6]$", "LUT", c) for c in self.logic if _LOGIC.fullmatch(c))
        text = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        return f"{self.crit_ns:.2f} ns of cells, {self.levels} levels ({text}); ends at {self.endpoint}"


def timing_script(sources: list[Path], top: str, params: dict[str, int]) -> str:
    """yosys commands: flat synth_xilinx of one configuration, then sta into sta.txt."""
    chparams = " ".join(f"-chparam {name} {value}" for name, value in params.items())
    reads = "\n".join(f'read_verilog "{file}"' for file in sources)
    return (f"{reads}\n"
            f"hierarchy -check -top {top} {chparams}\n"
            f"synth_xilinx -family xc7 -top {top} -noiopad -flatten\n"
            "read_verilog -lib -specify +/xilinx/cells_sim.v\n"
            "tee -q -o sta.txt sta\n")


def parse_sta(text: str, source: str = "<sta>") -> Timing:
    """The latest arrival and its path from yosys `sta` output."""
    found = _ARRIVAL.search(text)
    if not found:
        raise TimingError(f"{source}: no 'Latest arrival time' in the sta output")
    timing = Timing(int(found.group(2)))
    steps = []
    for line in text[found.end():].splitlines()[1:]:
        match = _STEP.match(line)
        if match:
            steps.append(match)
        elif line.strip() and not line.startswith(" " * 11):  # the path ends at the first other line
            break
    if not steps:
        raise TimingError(f"{source}: the critical path is empty")
    end = steps[0]
    timing.endpoint = f"{end.group(3)}.{end.group(4)} of {end.group(2)}"
    clocked = [m for m in steps if m.group(4) in _CLOCK_PINS]
    start = clocked[-1] if clocked else steps[-1]
    timing.startpoint = f"{start.group(3)} {start.group(2)}"
    arcs = [m for m in reversed(steps) if m.group(5)]  # cells with an arc in->out, start to end
    timing.cells = [m.group(3) for m in arcs]
    if clocked:  # else the path starts at an input port: every cell is on the data path
        timing.launch = next((i + 1 for i, m in enumerate(arcs) if m is start), 0)
    return timing
