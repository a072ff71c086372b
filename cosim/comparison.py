"""Element-by-element comparison of the RTL's outputs with the Python numerics, per tensor.

Codes are read back out of the packed words the RTL wrote (`sw.deploy.packing.unpack_codes`), with
the bit layout the hardware documents (value i at stream bits [i*b, i*b+b), LSB first), so a packing error shows up as
code mismatches. Dequantized values are compared with float equality: the integer code 0 has
no sign, so the hardware returns +0.0 where fake quantization may return -0.0; every other
value must be the same fp32 number. Word counts are compared with the energy package's DRAM
word count for the tensor's layout (`channel_dram_words`: per-channel weights are converted
one channel at a time, so each channel starts on a fresh word); `words_dense` is the count
if the whole tensor were one bitstream, what a per-tensor scale would give.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from cosim.capture import CapturedTensor
from cosim.reference import Expected
from cosim.simulation import StreamResult
from energy.packing import channel_dram_words, dram_words
from sw.deploy.packing import unpack_codes  # the one implementation of the layout (also the packed weights file's)

__all__ = ["TensorReport", "compare", "unpack_codes"]


@dataclass
class TensorReport:
    """One row of the co-simulation report."""

    layer: str
    tensor: str  # "weight" or "input"
    quantizer: str
    bits: int
    signed: bool
    segments: int
    elements: int
    code_mismatches: int
    value_mismatches: int
    words_rtl: int
    words_model: int
    words_dense: int
    cycles: float
    wall_s: float

    @property
    def ok(self) -> bool:
        return self.code_mismatches == 0 and self.value_mismatches == 0 and self.words_rtl == self.words_model

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def compare(tensor: CapturedTensor, expect: Expected, results: list[StreamResult], word_bits: int) -> TensorReport:
    """Compare the RTL's outputs for one tensor (one result per segment) with the expectations."""
    signed = not tensor.unsigned
    n = tensor.values.shape[1]
    code_bad = value_bad = words_rtl = 0
    cycles = wall_s = 0.0
    for k, r in enumerate(results):
        codes = unpack_codes(r.words, n, tensor.bits, word_bits, signed)
        code_bad += int(np.count_nonzero(codes != expect.codes[k]))
        value_bad += int(np.count_nonzero(r.dequantized != expect.values[k]))
        words_rtl += int(r.words.size)
        cycles += r.cycles
        wall_s += r.wall_s
    return TensorReport(layer=tensor.layer, tensor=tensor.role, quantizer=tensor.quantizer, bits=tensor.bits,
                        signed=signed, segments=tensor.segments, elements=tensor.elements,
                        code_mismatches=code_bad, value_mismatches=value_bad, words_rtl=words_rtl,
                        words_model=channel_dram_words(tensor.segments, n, tensor.bits, word_bits),
                        words_dense=dram_words(tensor.elements, tensor.bits, word_bits), cycles=cycles, wall_s=wall_s)
