"""The packed word layout of b-bit integer codes: the one implementation in Python.

b-bit codes are written LSB-first into one continuous bitstream (code i at stream bits
[i*b, i*b+b), two's complement for signed codes) cut into W-bit words, word k holding stream
bits [k*W, k*W+W); only the last word may be partly filled (zero bits after the last code).
n codes take ceil(n b / W) words. This is what the converter RTL's packer writes
(`hw/rtl/mpconv_packer.v`, modelled independently by `hw/tb/refmodel.py`), what
`energy.packing.dram_words` counts, and what `cosim` reads back out of the RTL's words.

A per-channel tensor is converted one channel at a time (its scale changes at each channel),
so in the `channel` layout each channel is its own bitstream starting on a fresh word
(`energy.packing.channel_dram_words`); `dense` is one bitstream for the whole tensor.
"""

from __future__ import annotations

import numpy as np

from sw.core.errors import DataError

WORD_BITS = (8, 16, 32, 64)
DEFAULT_WORD_BITS = 32  # the RTL's WORD_W default, the workload's energy.word_bits default and cosim's --word-bits
LAYOUTS = ("dense", "channel")
_WORD_DTYPE = {8: "<u1", 16: "<u2", 32: "<u4", 64: "<u8"}


def word_dtype(word_bits: int) -> np.dtype:
    """Little-endian unsigned numpy type of one `word_bits`-bit word."""
    if word_bits not in _WORD_DTYPE:
        raise ValueError(f"word_bits must be one of {', '.join(map(str, WORD_BITS))}, got {word_bits}")
    return np.dtype(_WORD_DTYPE[word_bits])


def words_for(n: int, bits: int, word_bits: int) -> int:
    """Words of n densely packed b-bit codes: ceil(n b / W)."""
    return -(-n * bits // word_bits)


def tensor_words(shape: tuple[int, ...], bits: int, word_bits: int, layout: str, axis: int | None = 0) -> int:
    """Words of a tensor in `layout` (`channel`: each slice along `axis` starts on a fresh word)."""
    n = int(np.prod(shape, dtype=np.int64))
    if layout == "dense" or not shape:
        return words_for(n, bits, word_bits)
    channels = shape[axis or 0]
    return channels * words_for(n // channels, bits, word_bits)


def code_range(bits: int, signed: bool) -> tuple[int, int]:
    """The full range of b-bit codes: [-2^(b-1), 2^(b-1)-1] signed, [0, 2^b-1] unsigned."""
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def narrowest_int(lo: int, hi: int) -> np.dtype:
    """The smallest numpy integer type holding [lo, hi] (unsigned when lo >= 0)."""
    for name in (("uint8", "uint16", "uint32", "uint64") if lo >= 0 else ("int8", "int16", "int32", "int64")):
        info = np.iinfo(name)
        if info.min <= lo and hi <= info.max:
            return np.dtype(name)
    raise ValueError(f"no integer type holds [{lo}, {hi}]")


def narrow(values: np.ndarray) -> np.ndarray:
    """An integer array in the narrowest type holding its values."""
    values = np.asarray(values)
    if values.size == 0:
        return values.astype(np.int8)
    return values.astype(narrowest_int(int(values.min()), int(values.max())))


def pack_codes(codes: np.ndarray, bits: int, word_bits: int = DEFAULT_WORD_BITS) -> np.ndarray:
    """Words (little-endian unsigned, `word_bits` wide) of one dense LSB-first bitstream of b-bit codes."""
    if not 1 <= bits <= 32:
        raise ValueError(f"bits must be 1..32, got {bits}")
    dtype = word_dtype(word_bits)
    flat = np.asarray(codes).reshape(-1).astype(np.int64)
    patterns = (flat & ((1 << bits) - 1)).astype("<u8")
    fields = np.unpackbits(patterns.view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")[:, :bits]
    stream = fields.reshape(-1)
    total = words_for(flat.size, bits, word_bits) * word_bits
    stream = np.concatenate([stream, np.zeros(total - stream.size, np.uint8)])
    return np.packbits(stream, bitorder="little").view(dtype)


def unpack_codes(words: np.ndarray, n: int, bits: int, word_bits: int, signed: bool) -> np.ndarray:
    """The first n b-bit codes (int64) of a dense LSB-first bitstream of `word_bits`-bit words."""
    words = np.asarray(words, dtype=np.uint64)
    stream = np.unpackbits(words.astype("<u8").view(np.uint8).reshape(-1, 8)[:, : word_bits // 8],
                           axis=1, bitorder="little").reshape(-1)
    if stream.size < n * bits:
        raise ValueError(f"{words.size} words hold {stream.size} bits, fewer than {n} x {bits}")
    fields = stream[: n * bits].reshape(n, bits).astype(np.int64)
    codes = fields @ (np.int64(1) << np.arange(bits, dtype=np.int64))
    if signed:
        codes = np.where(codes >= (1 << (bits - 1)), codes - (1 << bits), codes)
    return codes


def pack_tensor(codes: np.ndarray, bits: int, word_bits: int, layout: str, axis: int | None = 0) -> np.ndarray:
    """Words of a tensor's codes in `layout`; `channel` packs each slice along `axis` on its own words."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    codes = np.asarray(codes)
    if layout == "dense" or codes.ndim == 0:
        return pack_codes(codes, bits, word_bits)
    channels = np.moveaxis(codes, axis or 0, 0).reshape(codes.shape[axis or 0], -1)
    return np.concatenate([pack_codes(c, bits, word_bits) for c in channels])


def unpack_tensor(words: np.ndarray, shape: tuple[int, ...], bits: int, word_bits: int, signed: bool, layout: str,
                  axis: int | None = 0) -> np.ndarray:
    """The codes (int64, `shape`) of a tensor packed by `pack_tensor`; DataError if the words do not fit."""
    shape = tuple(int(s) for s in shape)
    expected = tensor_words(shape, bits, word_bits, layout, axis)
    if len(words) != expected:
        raise DataError(f"a {'x'.join(map(str, shape))} tensor at {bits} bits takes {expected} {word_bits}-bit words "
                        f"({layout} layout), got {len(words)}")
    n = int(np.prod(shape, dtype=np.int64))
    if layout == "dense" or not shape:
        return unpack_codes(words, n, bits, word_bits, signed).reshape(shape)
    channels = shape[axis or 0]
    per = n // channels
    step = words_for(per, bits, word_bits)
    rows = [unpack_codes(words[c * step:(c + 1) * step], per, bits, word_bits, signed) for c in range(channels)]
    moved = (channels, *(s for i, s in enumerate(shape) if i != (axis or 0)))
    return np.moveaxis(np.stack(rows).reshape(moved), 0, axis or 0)
