"""The AXI4-Lite register map of mpconv_top (hw/README.md) and a register-level driver.

Shared by the top-level tests (test_top.py) and the co-simulation (cosim/rtl_test.py).
"""

from __future__ import annotations

from axi import AxiLiteMaster
from refmodel import QuantConfig

# AXI4-Lite register addresses (hw/README.md)
ID, PARAMS, BITS, SCALE, MODE, COUNT, STATUS, CONTROL = 0x00, 0x04, 0x08, 0x0C, 0x10, 0x14, 0x18, 0x1C
CYCLES, Q_VALUES_IN, Q_WORDS_OUT, Q_IN_STALLS, Q_OUT_STALLS = 0x20, 0x24, 0x28, 0x2C, 0x30
D_WORDS_IN, D_VALUES_OUT, D_IN_STALLS, D_OUT_STALLS = 0x34, 0x38, 0x3C, 0x40
ST_IDLE, ST_CFG_ERR, ST_FRAME_ERR, ST_NAN, ST_PENDING = 1, 2, 4, 8, 16
OKAY, SLVERR = 0, 2


class Regs:
    """Register-level access to mpconv_top, keeping BITS/MODE writes in a valid order."""

    def __init__(self, dut) -> None:
        self.clk = dut.clk
        self.axil = AxiLiteMaster(dut.clk, dut, "s_axil")
        self.bits, self.signed = 8, True  # reset values

    async def configure(self, cfg: QuantConfig) -> list[str]:
        """Write a whole configuration; returns error messages for unexpected responses."""
        errors = []
        writes = [(SCALE, cfg.scale_bits), (COUNT, cfg.count)]
        mode = int(cfg.signed) | (int(cfg.narrow) << 1)
        if self.signed and cfg.bits == 1:  # bits=1 is only valid once MODE is unsigned
            writes += [(MODE, mode), (BITS, cfg.bits)]
        else:
            writes += [(BITS, cfg.bits), (MODE, mode)]
        for addr, value in writes:
            resp = await self.axil.write(addr, value)
            if resp != OKAY:
                errors.append(f"write 0x{value:x} to 0x{addr:02x} answered {resp}")
        self.bits, self.signed = cfg.bits, cfg.signed
        return errors

    async def read(self, addr: int) -> int:
        data, resp = await self.axil.read(addr)
        assert resp == OKAY, f"read of 0x{addr:02x} answered {resp}"
        return data

    async def wait_idle(self, limit: int = 100_000) -> None:
        for _ in range(limit):
            if await self.read(STATUS) & ST_IDLE:
                return
        raise AssertionError("STATUS.idle never rose")
