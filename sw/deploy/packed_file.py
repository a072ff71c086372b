"""The packed weights file (`<label>.mpqw`): every weight tensor's codes as the converter's DRAM words.

Layout (docs/PACKED_FORMAT.md has the full description):

    bytes 0-3    magic b"MPQW"
    bytes 4-5    format version, little-endian uint16 (VERSION)
    bytes 6-7    word width W in bits, uint16 (8, 16, 32 or 64)
    bytes 8-11   header length H in bytes, uint32
    bytes 12-15  CRC-32 of the header bytes, uint32
    bytes 16-19  CRC-32 of the payload bytes, uint32
    bytes 20-23  payload length in words, uint32
    24 .. 24+H   header: UTF-8 JSON, space-padded so the payload starts on an 8-byte boundary
    then         payload: the words, little-endian, W/8 bytes each, tensor after tensor

The header lists the tensors in order: name (the layer), shape, bits, signed, lo / hi (the code
range, narrow range included), axis (None: one scale), scale (fp32 values, written as the
shortest decimal that reads back as the same fp32), zero_point, layout (`channel`: each output
channel starts on a fresh word, as the converter writes per-channel weights; `dense`: one
bitstream), offset_words and words. The payload is exactly the words the converter writes for
these weights, so its size is the energy model's weight DRAM words x W/8.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from sw.core.durable import atomic_write
from sw.core.errors import DataError
from sw.deploy.lowering import DeployGraph
from sw.deploy.packing import LAYOUTS, narrowest_int, pack_tensor, tensor_words, unpack_tensor, word_dtype

MAGIC = b"MPQW"
VERSION = 1
SUFFIX = ".mpqw"
_PREFIX = struct.Struct("<4sHHIIII")  # magic, version, word bits, header length, header crc, payload crc, words
_ALIGN = 8


@dataclass
class PackedTensor:
    """One weight tensor: its integer description and its packed words."""

    name: str
    shape: tuple[int, ...]
    bits: int
    lo: int
    hi: int
    axis: int | None
    scale: np.ndarray  # float32, one per channel along axis (or one)
    zero_point: np.ndarray  # integer, same shape as scale
    layout: str
    words: np.ndarray  # unsigned, W bits each
    word_bits: int

    @property
    def signed(self) -> bool:
        return self.lo < 0

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def codes(self) -> np.ndarray:
        """The tensor's integer codes, in the narrowest integer type of its code range."""
        codes = unpack_tensor(self.words, self.shape, self.bits, self.word_bits, self.signed, self.layout, self.axis)
        if codes.size and (codes.min() < self.lo or codes.max() > self.hi):
            raise DataError(f"packed tensor {self.name}: codes outside [{self.lo}, {self.hi}] (corrupt file?)")
        return codes.astype(narrowest_int(self.lo, self.hi))

    @classmethod
    def of(cls, name: str, codes: np.ndarray, bits: int, lo: int, hi: int, axis: int | None, scale: np.ndarray,
           zero_point: np.ndarray, word_bits: int) -> "PackedTensor":
        """Pack `codes`: per-channel tensors (an axis and several scales) in the `channel` layout, others `dense`."""
        scale = np.asarray(scale, dtype=np.float32).reshape(-1)
        codes = np.asarray(codes)
        if codes.size and (codes.min() < lo or codes.max() > hi):
            raise ValueError(f"tensor {name}: codes outside [{lo}, {hi}]")
        layout = "channel" if axis is not None and scale.size > 1 else "dense"
        return cls(name, tuple(int(s) for s in codes.shape), int(bits), int(lo), int(hi),
                   axis if layout == "channel" else None, scale,
                   np.asarray(zero_point, dtype=np.int64).reshape(-1), layout,
                   pack_tensor(codes, bits, word_bits, layout, axis), word_bits)

    def header(self, offset: int) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "bits": self.bits, "signed": self.signed,
                "lo": self.lo, "hi": self.hi, "axis": self.axis,
                "scale": fp32_list(self.scale),
                "zero_point": [int(z) for z in self.zero_point], "layout": self.layout,
                "offset_words": offset, "words": int(self.words.size)}


def fp32_list(values: np.ndarray) -> list[float]:
    """fp32 values for JSON, each as the shortest decimal that reads back as the same fp32 value."""
    return [float(str(v)) for v in np.asarray(values, dtype=np.float32).reshape(-1)]


def graph_weights(graph: DeployGraph, word_bits: int) -> list[PackedTensor]:
    """Every quantized layer's weight codes of a DeployGraph, packed, in graph order."""
    out = []
    for op in graph.ops:
        if op.kind in ("conv", "linear"):
            p = op.attrs["weight_params"]
            out.append(PackedTensor.of(op.attrs["layer"], op.attrs["weight"].numpy(), p.bits, p.lo, p.hi, p.axis,
                                       p.scale.float().numpy(), p.zero_point.numpy(), word_bits))
    return out


def header_of(tensors: Iterable[PackedTensor], word_bits: int) -> dict[str, Any]:
    """The JSON header of a file holding `tensors` (offsets in words from the payload start)."""
    entries, offset = [], 0
    for t in tensors:
        entries.append(t.header(offset))
        offset += int(t.words.size)
    return {"format": "mpq-packed-weights", "version": VERSION, "word_bits": word_bits, "byte_order": "little",
            "bit_order": "lsb-first", "payload_words": offset, "tensors": entries}


def write_packed(path: Path, tensors: list[PackedTensor], word_bits: int) -> Path:
    """Write the file durably; returns its path."""
    if any(t.word_bits != word_bits for t in tensors):
        raise ValueError("every tensor must be packed at the file's word width")
    text = json.dumps(header_of(tensors, word_bits), separators=(",", ":")).encode()
    text += b" " * (-(len(text) + _PREFIX.size) % _ALIGN)
    dtype = word_dtype(word_bits)
    payload = (np.concatenate([t.words.astype(dtype) for t in tensors]) if tensors else np.zeros(0, dtype)).tobytes()
    prefix = _PREFIX.pack(MAGIC, VERSION, word_bits, len(text), zlib.crc32(text), zlib.crc32(payload),
                          len(payload) // dtype.itemsize)
    with atomic_write(path, "wb") as fh:
        fh.write(prefix + text + payload)
    return Path(path)


@dataclass
class PackedWeights:
    """A packed weights file read back: the word width, the header and the tensors by name."""

    path: Path
    word_bits: int
    header: dict[str, Any]
    tensors: dict[str, PackedTensor]
    header_bytes: int  # fixed prefix + JSON header
    payload_bytes: int

    @property
    def file_bytes(self) -> int:
        return self.header_bytes + self.payload_bytes


def read_packed(path: Path) -> PackedWeights:
    """Read and check a packed weights file; any defect is one DataError line naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the packed weights file ({exc.strerror})") from None
    if data[:4] != MAGIC:
        raise DataError(f"{path}: not a packed weights file (no {MAGIC.decode()} signature)")
    if len(data) < _PREFIX.size:
        raise DataError(f"{path}: corrupt packed weights file (truncated: {len(data)} bytes)")
    _, version, word_bits, size, header_crc, payload_crc, n_words = _PREFIX.unpack_from(data)
    if version != VERSION:
        raise DataError(f"{path}: packed weights format version {version}; this reader reads version {VERSION}")
    if word_bits not in (8, 16, 32, 64):
        raise DataError(f"{path}: corrupt packed weights file (word width {word_bits} bits)")
    start = _PREFIX.size + size
    text = data[_PREFIX.size:start]
    payload = data[start:]
    dtype = word_dtype(word_bits)
    if len(text) != size or zlib.crc32(text) != header_crc:
        raise DataError(f"{path}: corrupt packed weights file (header checksum mismatch)")
    if len(payload) != n_words * dtype.itemsize or zlib.crc32(payload) != payload_crc:
        raise DataError(f"{path}: corrupt packed weights file (payload of {len(payload)} bytes, expected "
                        f"{n_words * dtype.itemsize}, or checksum mismatch)")
    try:
        header = json.loads(text)
        words = np.frombuffer(payload, dtype=dtype)
        tensors = {e["name"]: _tensor(e, words, word_bits) for e in header["tensors"]}
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: malformed packed weights header ({type(exc).__name__}: {exc})") from None
    return PackedWeights(path, word_bits, header, tensors, start, len(payload))


def _tensor(e: dict[str, Any], words: np.ndarray, word_bits: int) -> PackedTensor:
    shape = tuple(int(s) for s in e["shape"])
    if e["layout"] not in LAYOUTS:
        raise DataError(f"tensor {e['name']}: unknown layout {e['layout']!r}")
    count = tensor_words(shape, int(e["bits"]), word_bits, e["layout"], e["axis"])
    offset = int(e["offset_words"])
    if count != int(e["words"]) or offset < 0 or offset + count > words.size:
        raise DataError(f"tensor {e['name']}: header says {e['words']} words at {offset}, its shape and bits take "
                        f"{count} of the payload's {words.size}")
    return PackedTensor(e["name"], shape, int(e["bits"]), int(e["lo"]), int(e["hi"]), e["axis"],
                        np.asarray(e["scale"], dtype=np.float32), np.asarray(e["zero_point"], dtype=np.int64),
                        e["layout"], words[offset:offset + count].copy(), word_bits)
