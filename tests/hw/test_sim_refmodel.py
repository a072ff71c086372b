"""The RTL's reference model (hw/tb/refmodel.py) against pytorch-quantization and torch.

The RTL is checked bit for bit against refmodel in simulation; these tests close the
chain RTL == refmodel == pytorch-quantization on the CPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_quantization import tensor_quant

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hw" / "tb"))

from refmodel import (  # noqa: E402
    QuantConfig,
    bits_to_f32,
    bounds,
    dequantize_bits,
    f32_bits_to_bf16_bits,
    f32_to_bits,
    pack,
    quantize,
    unpack,
)

EPSILON = 1.0 / (1 << 24)  # pytorch-quantization's "amax is zero" threshold


def _inputs(rng: np.random.Generator, scale: float, lo: int, hi: int, n: int = 4000) -> np.ndarray:
    """Random values over the integer range and beyond, exact and near ties, subnormals, zeros."""
    s = np.float32(scale)
    parts = [rng.uniform(lo - 3, hi + 3, n) / scale]
    k = rng.integers(lo - 1, hi + 1, n).astype(np.float64) + 0.5
    ties = (k / scale).astype(np.float32)
    parts += [ties, np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf))]
    exact = ties[(ties * s) == (k.astype(np.float32))]  # products exactly on .5
    parts.append(exact)
    sub = rng.integers(1, 1 << 23, 200).astype(np.uint32).view(np.float32)
    parts += [sub, -sub, np.array([0.0, -0.0], dtype=np.float32)]
    parts.append((rng.standard_normal(n) * 2.0 ** rng.uniform(-30, 30, n)).astype(np.float32))
    x = np.concatenate([np.asarray(p, dtype=np.float32) for p in parts])
    return x[np.isfinite(x)]


WIDTHS = [(b, False) for b in (1, 2, 3, 4, 7, 8, 11, 16)] + [(b, True) for b in (2, 3, 4, 5, 8, 12, 16)]


@pytest.mark.parametrize("bits,signed", WIDTHS)
@pytest.mark.parametrize("narrow", [False, True])
def test_quantize_matches_pytorch_quantization(bits: int, signed: bool, narrow: bool) -> None:
    rng = np.random.default_rng(bits * 7 + signed * 3 + narrow)
    lo, hi = bounds(bits, signed, narrow)
    for amax in [1.0, 0.37, 13.5, float(rng.uniform(1e-3, 1e3)), 2.0**-20, 2.0**-24, 1e-9, 0.0]:
        max_bound = np.float32(2.0 ** (bits - 1 + (0 if signed else 1)) - 1.0)
        zero_amax = amax <= EPSILON
        scale = 0.0 if zero_amax else float(max_bound / np.float32(amax))
        x = _inputs(rng, scale if scale else 1.0, lo, hi)
        if not signed:
            x = np.abs(x)  # pytorch-quantization refuses negative unsigned inputs
        xt = torch.from_numpy(x.copy())
        at = torch.tensor(amax, dtype=torch.float32)
        q_torch, _ = tensor_quant.tensor_quant(xt, at, bits, not signed, narrow)
        cfg = QuantConfig(bits=bits, scale=scale, signed=signed, narrow=narrow)
        q_ref = quantize(x, cfg)
        mism = np.flatnonzero(q_ref != q_torch.numpy().astype(np.int64))
        assert mism.size == 0, (
            f"amax {amax}: {mism.size} codes differ, e.g. x={x[mism[0]]!r} ref {q_ref[mism[0]]} "
            f"torch {q_torch.numpy()[mism[0]]}"
        )
        # fake quantization = dequantized codes; -0.0 == +0.0 (the code 0 has no sign)
        fake = tensor_quant.fake_tensor_quant(xt, at, bits, not signed, narrow).numpy()
        deq = bits_to_f32(dequantize_bits(q_ref, cfg))
        assert np.array_equal(fake, deq), f"amax {amax}: dequantized values differ from fake quant"
        nonzero = deq != 0
        assert np.array_equal(f32_to_bits(fake[nonzero]), f32_to_bits(deq[nonzero]))


def test_dequantize_is_torch_fp32_division_bit_for_bit() -> None:
    """q / scale including subnormal results, overflow to Inf, and huge/tiny scales."""
    rng = np.random.default_rng(5)
    q = rng.integers(-32768, 65536, 20000)
    q[:20] = [0, 1, -1, 65535, -32768, 32767, 2, 3, 5, 7, 11, 13, 100, 255, -128, 127, 4096, -4096, 65534, 9]
    scales = np.concatenate([
        (2.0 ** rng.uniform(-126, 127.9, 300)).astype(np.float32),
        rng.integers(1, 1 << 23, 50).astype(np.uint32).view(np.float32),  # subnormal scales
        np.float32([1.0, 3.0, 127.0 / 5.3, 2.0**127, 1.7e38, 2.0**-149]),
    ])
    for scale in scales:
        cfg = QuantConfig(bits=16, scale=float(scale), signed=True)
        want = (torch.from_numpy(q.astype(np.float32)) / torch.tensor(scale, dtype=torch.float32)).numpy()
        got = dequantize_bits(q, cfg)
        assert np.array_equal(got, f32_to_bits(want)), f"scale {scale!r}"


def test_bf16_rounding_matches_torch() -> None:
    rng = np.random.default_rng(9)
    b32 = rng.integers(0, 1 << 32, 200000, dtype=np.uint64)
    x = b32.astype(np.uint32).view(np.float32)
    finite = ~np.isnan(x)
    want = torch.from_numpy(x[finite].copy()).to(torch.bfloat16).view(torch.int16).numpy().astype(np.uint16)
    got = f32_bits_to_bf16_bits(b32[finite])
    assert np.array_equal(got, want.astype(np.int64))
    assert set(f32_bits_to_bf16_bits(b32[~finite]).tolist()) <= {0x7FC0}


@pytest.mark.parametrize("word_w", [16, 32, 64])
def test_pack_layout_and_round_trip(word_w: int) -> None:
    """Value i occupies stream bits [i*b, i*b+b); ceil(n*b/W) words; zero padding."""
    rng = np.random.default_rng(word_w)
    for bits in range(1, 17):
        for n in (1, 2, 3, word_w, word_w + 1, 97):
            codes = [int(c) for c in rng.integers(0, 1 << bits, n)]
            words = pack(codes, bits, word_w)
            assert len(words) == -(-n * bits // word_w)
            bitstream = "".join(format(w, f"0{word_w}b")[::-1] for w in words)  # LSB first
            for i, c in enumerate(codes):
                assert int(bitstream[i * bits : (i + 1) * bits][::-1], 2) == c
            assert set(bitstream[n * bits :]) <= {"0"}
            assert unpack(words, bits, word_w, n) == codes
