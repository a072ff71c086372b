"""Dense packing word counts against a bit-by-bit reference packer."""

import random

import pytest

from energy.packing import dram_words


def reference_words(n_values: int, bits: int, word_bits: int) -> int:
    """Pack LSB-first into words one bit at a time and count the words touched."""
    words_touched = set()
    position = 0
    for _ in range(n_values):
        for _ in range(bits):
            words_touched.add(position // word_bits)
            position += 1
    return len(words_touched)


@pytest.mark.parametrize("word_bits", [16, 32, 64])
def test_dram_words_matches_bitwise_packer(word_bits):
    rng = random.Random(word_bits)
    for _ in range(200):
        n, b = rng.randint(0, 300), rng.randint(1, 16)
        assert dram_words(n, b, word_bits) == reference_words(n, b, word_bits), (n, b, word_bits)


def test_dram_words_exact_fill_and_partial_word():
    assert dram_words(8, 4, 32) == 1   # exactly one full word
    assert dram_words(9, 4, 32) == 2   # one nibble spills into a flushed partial word
    assert dram_words(0, 8, 32) == 0


@pytest.mark.parametrize("args", [(-1, 4, 32), (4, 0, 32), (4, 4, 0), (4.0, 4, 32), (True, 4, 32)])
def test_dram_words_rejects_bad_input(args):
    with pytest.raises((ValueError, TypeError)):
        dram_words(*args)


def test_channel_layout_pads_each_channel_to_a_word():
    from energy.packing import channel_dram_words

    rng = random.Random(7)
    for _ in range(100):
        c, n, b, w = rng.randint(1, 20), rng.randint(1, 100), rng.randint(1, 16), rng.choice([16, 32, 64])
        # each channel is its own bitstream, packed and flushed on its own
        assert channel_dram_words(c, n, b, w) == sum(reference_words(n, b, w) for _ in range(c))
    assert channel_dram_words(1, 27, 8, 32) == dram_words(27, 8, 32)
    with pytest.raises(ValueError):
        channel_dram_words(0, 27, 8, 32)
