"""DRAM words of the dense packing used by the hw converter.

The converter packs b-bit integers LSB-first into a continuous bitstream split into W-bit
memory words, with no padding between values; only the last word may be partly filled
(the converter flushes it). So n values take ceil(n * b / W) words.
"""

from __future__ import annotations


def dram_words(n_values: int, bits: int, word_bits: int) -> int:
    """Number of `word_bits`-wide DRAM words holding `n_values` values of `bits` bits, densely packed."""
    for name, value in (("n_values", n_values), ("bits", bits), ("word_bits", word_bits)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if n_values < 0:
        raise ValueError(f"n_values must be >= 0, got {n_values}")
    if bits < 1 or word_bits < 1:
        raise ValueError(f"bits and word_bits must be >= 1, got {bits} and {word_bits}")
    return -(-n_values * bits // word_bits)


def packed_bits(n_values: int, bits: int) -> int:
    """Payload bits of `n_values` values at `bits` bits (no padding)."""
    return n_values * bits


def channel_dram_words(channels: int, values_per_channel: int, bits: int, word_bits: int) -> int:
    """DRAM words of a tensor stored channel by channel, each channel starting on a fresh word.

    This is the layout of per-channel quantized weights on the converter: the scale changes
    only between tensors, so each output channel is converted (and flushed) as its own tensor.
    With one channel it is `dram_words`.
    """
    if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
        raise ValueError(f"channels must be an int >= 1, got {channels!r}")
    return channels * dram_words(values_per_channel, bits, word_bits)
