"""pyuvm tests of the single blocks: quantizer, dequantizer, packer, unpacker.

Each test runs on its own HDL toplevel (see regression.py): tb_quantizer, tb_dequantizer,
mpconv_packer, mpconv_unpacker. Configuration inputs are driven directly, only while
the block is idle, which is the contract mpconv_lane keeps.
"""

from __future__ import annotations

import numpy as np
import pyuvm

from axi import AxisPorts
from uvm_env import ConvItem, ConvTestBase, PathSpec, wait_signal
from refmodel import (
    QuantConfig,
    bf16_bits_to_f32,
    bits_to_f32,
    dequantize_bits,
    from_pattern,
    pack,
    quantize,
    to_pattern,
    unpack,
)
from sequences import dequantizer_items, packer_items, quantizer_items, unpacker_items


def _poke_common(dut, cfg: QuantConfig) -> None:
    dut.cfg_bits.value = cfg.bits
    if hasattr(dut, "cfg_signed"):
        dut.cfg_signed.value = int(cfg.signed)


def _ports(dut):
    return AxisPorts.of(dut, "s_axis"), AxisPorts.of(dut, "m_axis")


@pyuvm.test()
class QuantizerTest(ConvTestBase):
    """Every width, every value class, every scale kind, random stalls on both sides."""

    def setup(self, dut, settings):
        bf16 = settings["params"].get("FLOAT_W", 32) == 16

        def predict(cfg: QuantConfig, frame: list[int]) -> list[int]:
            x = bf16_bits_to_f32(frame) if bf16 else bits_to_f32(frame)
            return [int(c) for c in to_pattern(quantize(x, cfg), cfg.bits)]

        async def configure(item: ConvItem) -> None:
            await wait_signal(dut.clk, lambda: not int(dut.busy.value), "the quantizer to drain (busy low)")
            _poke_common(dut, item.cfg)
            dut.cfg_narrow.value = int(item.cfg.narrow)
            dut.cfg_scale.value = item.cfg.scale_bits

        s_in, s_out = _ports(dut)
        spec = PathSpec("quant", "quantizer", s_in, s_out, predict, bf16=bf16)
        rng = np.random.default_rng(settings["seed"])
        return [spec], configure, quantizer_items(rng, settings, bf16)


@pyuvm.test()
class DequantizerTest(ConvTestBase):
    """Every width, extreme and random codes, normal/subnormal/overflowing/special results."""

    def setup(self, dut, settings):
        bf16 = settings["params"].get("FLOAT_W", 32) == 16

        def predict(cfg: QuantConfig, frame: list[int]) -> list[int]:
            q = from_pattern(frame, cfg.bits, cfg.signed)
            return [int(v) for v in dequantize_bits(q, cfg, bf16=bf16)]

        async def configure(item: ConvItem) -> None:
            await wait_signal(dut.clk, lambda: not int(dut.busy.value), "the dequantizer to drain (busy low)")
            _poke_common(dut, item.cfg)
            dut.cfg_scale.value = item.cfg.scale_bits

        s_in, s_out = _ports(dut)
        spec = PathSpec("dequant", "dequantizer", s_in, s_out, predict, bf16=bf16)
        rng = np.random.default_rng(settings["seed"] + 1)
        return [spec], configure, dequantizer_items(rng, settings)


@pyuvm.test()
class PackerTest(ConvTestBase):
    """Every width at this build's word width; lengths ending on, before and after word edges."""

    def setup(self, dut, settings):
        word_w = settings["params"]["WORD_W"]

        def predict(cfg: QuantConfig, frame: list[int]) -> list[int]:
            return pack(frame, cfg.bits, word_w)  # pack() keeps the low b bits of each input

        async def configure(item: ConvItem) -> None:
            await wait_signal(dut.clk, lambda: int(dut.idle.value) == 1, "the packer to flush (idle high)")
            dut.cfg_bits.value = item.cfg.bits

        s_in, s_out = _ports(dut)
        spec = PathSpec("pack", "packer", s_in, s_out, predict, word_w=word_w)
        rng = np.random.default_rng(settings["seed"] + 2)
        return [spec], configure, packer_items(rng, settings, word_w)


@pyuvm.test()
class UnpackerTest(ConvTestBase):
    """Every width at this build's word width; framing by the value count, no frame errors."""

    def setup(self, dut, settings):
        word_w = settings["params"]["WORD_W"]
        self.frame_errors = 0

        def predict(cfg: QuantConfig, frame: list[int]) -> list[int]:
            return unpack(frame, cfg.bits, word_w, cfg.count)

        async def configure(item: ConvItem) -> None:
            await wait_signal(dut.clk, lambda: int(dut.at_start.value) == 1,
                              "the unpacker to finish its tensor (at_start high)")
            dut.cfg_bits.value = item.cfg.bits
            dut.cfg_count.value = item.cfg.count

        s_in, s_out = _ports(dut)
        spec = PathSpec("unpack", "unpacker", s_in, s_out, predict, word_w=word_w, steady="out")
        rng = np.random.default_rng(settings["seed"] + 3)
        return [spec], configure, unpacker_items(rng, settings, word_w)

    def start_of_simulation_phase(self) -> None:
        import cocotb
        from cocotb.triggers import FallingEdge

        async def count_frame_errors() -> None:
            while True:
                await FallingEdge(self.dut.clk)
                if str(self.dut.frame_err.value) == "1":
                    self.frame_errors += 1

        cocotb.start_soon(count_frame_errors())

    async def after_drain(self, dut) -> None:
        if self.frame_errors:
            self.extra_errors.append(f"frame_err pulsed {self.frame_errors} times on well-framed input")
