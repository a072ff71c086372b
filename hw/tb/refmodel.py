"""Reference model of the converter, written from the specification and not from the RTL.

Quantization follows pytorch-quantization's formula computed in fp32 with numpy:
``q = clip(rint(float32(x) * float32(scale)), min_bound, max_bound)``. numpy's float32
multiply rounds to nearest even (IEEE-754) and ``np.rint`` rounds half to even, which is
what ``torch.round`` does. Dequantization is numpy's correctly rounded float32 division.
Packing works on one arbitrary-precision Python integer holding the whole bitstream, a
different construction from the RTL's shift register.

Cases the formula leaves open are fixed here, and the RTL implements the same:
  * a NaN product (NaN input or scale, 0 * Inf) quantizes to code 0;
  * +-Inf products saturate like any out-of-range value;
  * unsigned quantization saturates negative inputs to 0 (pytorch-quantization raises);
  * dequantization with scale +-0 divides by 1.0 (pytorch-quantization's rule for
    amax <= 2^-24), and every NaN result is the canonical 0x7fc00000 (bf16: 0x7fc0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CANONICAL_NAN32 = 0x7FC00000
CANONICAL_NAN16 = 0x7FC0


@dataclass(frozen=True)
class QuantConfig:
    """The converter's configuration registers, as plain values."""

    bits: int
    scale: float  # read as float32
    signed: bool = True
    narrow: bool = False
    count: int = 1  # values per tensor on the dequantize path

    def __post_init__(self) -> None:
        low = 2 if self.signed else 1
        if not low <= self.bits <= 16:
            raise ValueError(f"bits must be {low}..16 for signed={self.signed}, got {self.bits}")

    @property
    def scale_bits(self) -> int:
        return f32_to_bits(self.scale)


def bounds(bits: int, signed: bool, narrow: bool) -> tuple[int, int]:
    """(min_bound, max_bound) of pytorch-quantization's integer range."""
    if not signed:
        return 0, (1 << bits) - 1
    max_bound = (1 << (bits - 1)) - 1
    return (-max_bound if narrow else -max_bound - 1), max_bound


def f32_to_bits(x: float | np.ndarray) -> int | np.ndarray:
    arr = np.asarray(x, dtype=np.float32)
    out = arr.view(np.uint32)
    return int(out) if out.ndim == 0 else out.astype(np.int64)


def bits_to_f32(b: int | np.ndarray) -> np.ndarray:
    return np.asarray(b, dtype=np.uint64).astype(np.uint32).view(np.float32)


def bf16_bits_to_f32(b: int | np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns widened exactly to float32."""
    return (np.asarray(b, dtype=np.uint64).astype(np.uint32) << np.uint32(16)).view(np.float32)


def f32_bits_to_bf16_bits(b32: np.ndarray) -> np.ndarray:
    """Round float32 bit patterns to bfloat16 bit patterns, nearest even; NaN -> canonical."""
    b32 = np.asarray(b32, dtype=np.uint64)
    is_nan = ((b32 & 0x7F800000) == 0x7F800000) & ((b32 & 0x007FFFFF) != 0)
    rounded = (b32 + 0x7FFF + ((b32 >> 16) & 1)) >> 16
    return np.where(is_nan, CANONICAL_NAN16, rounded & 0xFFFF).astype(np.int64)


def quantize(x_f32: np.ndarray, cfg: QuantConfig) -> np.ndarray:
    """Integer codes (as signed int64 values, not bit patterns) of float32 inputs."""
    x = np.asarray(x_f32, dtype=np.float32)
    lo, hi = bounds(cfg.bits, cfg.signed, cfg.narrow)
    with np.errstate(all="ignore"):
        product = x * np.float32(cfg.scale)  # float32 * float32 -> float32, RNE
        rounded = np.rint(product)  # ties to even
        clipped = np.clip(rounded, np.float32(lo), np.float32(hi))
    clipped = np.where(np.isnan(product), np.float32(0), clipped)
    return clipped.astype(np.int64)


def dequantize_bits(q: np.ndarray, cfg: QuantConfig, bf16: bool = False) -> np.ndarray:
    """Bit patterns (fp32, or bf16 when bf16=True) of float32(q) / float32(scale)."""
    scale = np.float32(cfg.scale)
    if scale == 0:
        scale = np.float32(1.0)
    with np.errstate(all="ignore"):
        out = np.asarray(q, dtype=np.int64).astype(np.float32) / scale
    b32 = np.where(np.isnan(out), CANONICAL_NAN32, out.view(np.uint32).astype(np.int64))
    return f32_bits_to_bf16_bits(b32) if bf16 else b32.astype(np.int64)


def to_pattern(q: np.ndarray, bits: int) -> np.ndarray:
    """b-bit two's complement (or plain binary) patterns of integer codes."""
    return np.asarray(q, dtype=np.int64) & ((1 << bits) - 1)


def from_pattern(p: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """Integer codes of b-bit patterns."""
    p = np.asarray(p, dtype=np.int64) & ((1 << bits) - 1)
    if signed:
        p = np.where(p >= (1 << (bits - 1)), p - (1 << bits), p)
    return p


def word_count(n: int, bits: int, word_w: int) -> int:
    return -(-n * bits // word_w)


def pack(patterns: list[int] | np.ndarray, bits: int, word_w: int) -> list[int]:
    """Dense LSB-first bitstream of b-bit patterns cut into word_w-bit words."""
    stream = 0
    for i, p in enumerate(patterns):
        stream |= (int(p) & ((1 << bits) - 1)) << (i * bits)
    mask = (1 << word_w) - 1
    return [(stream >> (k * word_w)) & mask for k in range(word_count(len(patterns), bits, word_w))]


def unpack(words: list[int], bits: int, word_w: int, n: int) -> list[int]:
    """The first n b-bit patterns of a packed word list."""
    stream = 0
    for k, w in enumerate(words):
        stream |= int(w) << (k * word_w)
    mask = (1 << bits) - 1
    return [(stream >> (i * bits)) & mask for i in range(n)]
