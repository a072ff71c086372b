"""The AXI4-Lite register map of mpconv_top (hw/README.md) and a register-level driver.

Shared by the top-level tests (test_top.py) and the co-simulation (cosim/rtl_test.py).
"""

from __future__ import annotations

from cocotb.utils import get_sim_time

from axi import AxiLiteMaster
from refmodel import QuantConfig
from watchdog import CLOCK_NS, Stall, default_cycles

# AXI4-Lite register addresses (hw/README.md)
ID, PARAMS, BITS, SCALE, MODE, COUNT, STATUS, CONTROL = 0x00, 0x04, 0x08, 0x0C, 0x10, 0x14, 0x18, 0x1C
CYCLES, Q_VALUES_IN, Q_WORDS_OUT, Q_IN_STALLS, Q_OUT_STALLS = 0x20, 0x24, 0x28, 0x2C, 0x30
D_WORDS_IN, D_VALUES_OUT, D_IN_STALLS, D_OUT_STALLS, COMMIT = 0x34, 0x38, 0x3C, 0x40, 0x44
ST_IDLE, ST_CFG_ERR, ST_FRAME_ERR, ST_NAN, ST_PENDING, ST_UNCOMMITTED = 1, 2, 4, 8, 16, 32
OKAY, SLVERR = 0, 2


def config_writes(cfg: QuantConfig) -> list[tuple[int, int]]:
    """(address, value) of the shadow registers that hold a configuration (any order works)."""
    mode = int(cfg.signed) | (int(cfg.narrow) << 1)
    return [(BITS, cfg.bits), (SCALE, cfg.scale_bits), (MODE, mode), (COUNT, cfg.count)]


class Regs:
    """Register-level access to mpconv_top."""

    def __init__(self, dut) -> None:
        self.clk = dut.clk
        self.axil = AxiLiteMaster(dut.clk, dut, "s_axil")

    async def write(self, addr: int, value: int) -> list[str]:
        """One register write; returns an error message if it was not answered OKAY."""
        resp = await self.axil.write(addr, value)
        return [] if resp == OKAY else [f"write 0x{value:x} to 0x{addr:02x} answered {resp}"]

    async def configure(self, cfg: QuantConfig) -> list[str]:
        """Write a whole configuration to the shadow registers, then COMMIT it at once.

        Returns error messages for unexpected responses.
        """
        errors = []
        for addr, value in config_writes(cfg):
            errors += await self.write(addr, value)
        errors += await self.write(COMMIT, 1)
        return errors

    async def read(self, addr: int) -> int:
        data, resp = await self.axil.read(addr)
        assert resp == OKAY, f"read of 0x{addr:02x} answered {resp}"
        return data

    async def wait_idle(self, cycles: int | None = None) -> None:
        """Poll STATUS until idle; fail after `cycles` clock cycles (default: the watchdog bound)."""
        bound = default_cycles() if cycles is None else cycles
        start = get_sim_time("ns")
        while not await self.read(STATUS) & ST_IDLE:
            if get_sim_time("ns") - start > bound * CLOCK_NS:
                raise Stall(f"watchdog: STATUS.idle did not rise within {bound} clock cycles (DUT stalled?)")
