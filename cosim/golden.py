"""Replay the golden test vectors `python -m sw export` writes (`sw.deploy.vectors`), bit for bit.

Three checks, each element by element:

- **rtl**: every quantized tensor of the vectors through the simulated converter. The model
  input (the fp32 images) must quantize to the recorded model-input codes; every layer's input
  and weight codes, sent in as their fp32 values code / scale, must come back as the same codes
  out of the RTL's packed words and dequantize to the same fp32 values; the words the RTL writes
  for each weight (one channel at a time for per-channel scales) must be the packed weights
  file's words (`sw.deploy.packed_file`), word for word.
- **packed**: the packed weights file's codes equal the recorded weight codes.
- **arithmetic**: every layer's output recomputed with numpy from the recorded input, weight
  and bias integers (an implementation independent of the integer model's torch one) equals the
  recorded output; the logits equal float32((logits_int - zp) * step).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from cosim.simulation import WORD_WIDTHS, Stream, simulate
from sw.core.errors import DataError, UserError
from sw.deploy.packed_file import PackedWeights, read_packed
from sw.deploy.packing import DEFAULT_WORD_BITS, unpack_codes
from sw.deploy.vectors import load_array, read_manifest


@dataclass
class ReplayRow:
    """One replayed tensor: what was checked, how many elements, how many differ."""

    tensor: str
    check: str  # rtl | packed | arithmetic
    elements: int
    mismatches: int
    words_rtl: int = 0
    words_file: int = 0

    @property
    def ok(self) -> bool:
        return self.mismatches == 0 and self.words_rtl == self.words_file

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


@dataclass
class ReplayResult:
    rows: list[ReplayRow]
    word_bits: int
    sim: str | None
    wall_s: float

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(r.ok for r in self.rows)


def conv_int(x: np.ndarray, w: np.ndarray, stride, padding, dilation, groups: int) -> np.ndarray:
    """Integer 2-D convolution (int64, zero padding) by sliding windows and einsum."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    x = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oc, cg, kh, kw = w.shape
    windows = sliding_window_view(x, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]
    per = oc // groups
    return np.concatenate([np.einsum("ncijkl,ockl->noij", windows[:, g * cg:(g + 1) * cg],
                                     w[g * per:(g + 1) * per].astype(np.int64)) for g in range(groups)], axis=1)


def layer_output(entry: dict[str, Any], x: np.ndarray, w: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """A layer's integer output from its recorded integers: ((x - zp_in)(w - zp_w) summed) << frac_bits + bias."""
    zp_in = int(entry["input_params"]["zero_point"][0])
    wzp = np.asarray(entry["weight_params"]["zero_point"], dtype=np.int64)
    w = w.astype(np.int64) - np.broadcast_to(wzp, (w.shape[0],)).reshape(-1, *([1] * (w.ndim - 1)))
    x = x.astype(np.int64) - zp_in
    if entry["kind"] == "conv":
        acc = conv_int(x, w, entry["stride"], entry["padding"], entry["dilation"], entry["groups"])
        return (acc << entry["frac_bits"]) + bias.astype(np.int64).reshape(1, -1, 1, 1)
    return ((x @ w.T) << entry["frac_bits"]) + bias.astype(np.int64)


def arithmetic_rows(manifest: dict[str, Any]) -> list[ReplayRow]:
    """Every layer's output and the logits recomputed from the recorded integers."""
    rows = []
    for entry in manifest["layers"]:
        files = entry["files"]
        got = layer_output(entry, load_array(manifest, files["input"]), load_array(manifest, files["weight"]),
                           load_array(manifest, files["bias"]))
        want = load_array(manifest, files["output"])
        bad = int(np.count_nonzero(got != want)) if got.shape == want.shape else want.size
        rows.append(ReplayRow(f"{entry['name']}.output", "arithmetic", int(want.size), bad))
    out = manifest["output"]
    value = load_array(manifest, out["int"]).astype(np.int64)
    shape = (1, -1, *([1] * (value.ndim - 2)))
    step = np.asarray(out["step"], dtype=np.float64).reshape(shape)
    zp = np.asarray(out["zero_point"], dtype=np.int64).reshape(shape)
    logits = ((value - zp).astype(np.float64) * step).astype(np.float32)
    want = load_array(manifest, out["logits"])
    rows.append(ReplayRow("logits", "arithmetic", int(want.size),
                          int(np.count_nonzero(logits.view(np.uint32) != want.view(np.uint32)))))
    last = next((e for e in manifest["layers"] if e.get("value") == out["value"]), None)
    if last is not None:  # the model's output is that layer's output
        layer = load_array(manifest, last["files"]["output"])
        rows.append(ReplayRow("logits_int", "arithmetic", int(value.size), int(np.count_nonzero(layer != value))))
    return rows


def packed_rows(manifest: dict[str, Any], packed: PackedWeights) -> list[ReplayRow]:
    """The packed weights file's codes against the recorded weight codes."""
    rows = []
    for entry in manifest["layers"]:
        want = load_array(manifest, entry["files"]["weight"])
        t = packed.tensors.get(entry["name"])
        got = t.codes() if t is not None else None
        bad = want.size if got is None or got.shape != want.shape else int(np.count_nonzero(got != want))
        rows.append(ReplayRow(f"{entry['name']}.weight", "packed", int(want.size), bad))
    return rows


@dataclass
class _Tensor:
    name: str
    values: np.ndarray  # float32, (segments, n)
    codes: np.ndarray  # int64, (segments, n)
    params: dict[str, Any]
    words: np.ndarray | None  # the packed file's words, when it has this tensor


def _register(params: dict[str, Any], name: str) -> tuple[np.ndarray, bool, bool]:
    """(fp32 scales, signed, narrow range) of a quantizer; UserError when the RTL cannot express it."""
    if any(int(z) != 0 for z in params["zero_point"]):
        raise UserError(f"{name}: a zero point (asymmetric quantization); the converter RTL is symmetric only")
    lo, hi, bits = int(params["lo"]), int(params["hi"]), int(params["bits"])
    signed = lo < 0
    if not signed and (lo, hi) != (0, (1 << bits) - 1) or signed and hi != (1 << (bits - 1)) - 1:
        raise UserError(f"{name}: code range [{lo}, {hi}] at {bits} bits is not one the converter RTL has")
    return np.asarray(params["scale"], dtype=np.float32), signed, signed and lo == -hi


def _dequantized(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """fp32 code / scale per segment (scale 0: the codes are 0 and so is the value)."""
    safe = np.where(scale == 0, np.float32(1), scale).astype(np.float32).reshape(-1, 1)
    return (codes.astype(np.float32) / safe).astype(np.float32)


def rtl_tensors(manifest: dict[str, Any], packed: PackedWeights | None) -> list[_Tensor]:
    """The tensors the RTL replays: the model input (fp32 images), each layer's input and weight codes."""
    inp = manifest["input"]
    images = load_array(manifest, inp["file"]).astype(np.float32)
    codes = load_array(manifest, inp["codes"]).reshape(1, -1).astype(np.int64)
    out = [_Tensor("model_input", images.reshape(1, -1), codes, inp["params"], None)]
    for entry in manifest["layers"]:
        name = entry["name"]
        codes = load_array(manifest, entry["files"]["input"]).reshape(1, -1).astype(np.int64)
        scale = np.asarray(entry["input_params"]["scale"], dtype=np.float32)
        out.append(_Tensor(f"{name}.input", _dequantized(codes, scale), codes, entry["input_params"], None))
        w = load_array(manifest, entry["files"]["weight"]).astype(np.int64)
        wscale = np.asarray(entry["weight_params"]["scale"], dtype=np.float32)
        segments = w.shape[0] if wscale.size > 1 else 1
        w = w.reshape(segments, -1)
        t = packed.tensors.get(name) if packed is not None else None
        out.append(_Tensor(f"{name}.weight", _dequantized(w, wscale), w, entry["weight_params"],
                           t.words if t is not None else None))
    return out


def rtl_rows(tensors: list[_Tensor], *, sim: str, word_bits: int, work_dir: Path) -> list[ReplayRow]:
    """Every tensor through the simulated converter: codes, dequantized values and words."""
    streams, plan = [], []
    for t in tensors:
        scale, signed, narrow = _register(t.params, t.name)
        scales = np.broadcast_to(scale, (t.values.shape[0],))
        for k in range(t.values.shape[0]):
            streams.append(Stream(t.values[k], int(t.params["bits"]), np.float32(scales[k]), signed, narrow))
        plan.append((t, scales, signed))
    results, _ = simulate(streams, work_dir=work_dir, sim=sim, word_bits=word_bits)
    rows, pos = [], 0
    for t, scales, signed in plan:
        bits = int(t.params["bits"])
        bad, words = 0, []
        for k in range(t.values.shape[0]):
            r = results[pos + k]
            codes = unpack_codes(r.words, t.codes.shape[1], bits, word_bits, signed)
            expect = _dequantized(t.codes[k:k + 1], scales[k:k + 1]).reshape(-1)
            bad += int(np.count_nonzero(codes != t.codes[k])) + int(np.count_nonzero(r.dequantized != expect))
            words.append(r.words)
        pos += t.values.shape[0]
        rtl_words = np.concatenate(words)
        row = ReplayRow(t.name, "rtl", int(t.codes.size), bad, int(rtl_words.size), int(rtl_words.size))
        if t.words is not None:  # the packed file's words, word for word
            row.words_file = int(t.words.size)
            if t.words.size == rtl_words.size:
                row.mismatches += int(np.count_nonzero(t.words.astype(np.uint64) != rtl_words))
        rows.append(row)
    return rows


def replay(vectors: Path, *, sim: str | None = "icarus", word_bits: int | None = None,
           work_dir: Path | None = None) -> ReplayResult:
    """Replay a golden-vector folder (or its manifest); `sim=None` skips the RTL (arithmetic and packed only).

    The word width is the packed weights file's (so the RTL's words can be compared with it), else
    `word_bits` or the default."""
    start = time.perf_counter()
    manifest = read_manifest(vectors)
    folder = Path(manifest["folder"])
    packed = read_packed(folder / manifest["packed_weights"]) if manifest.get("packed_weights") else None
    if packed is not None:
        if word_bits is not None and word_bits != packed.word_bits:
            raise UserError(f"--word-bits {word_bits}: the packed weights file {packed.path} has "
                            f"{packed.word_bits}-bit words")
        word_bits = packed.word_bits
    word_bits = word_bits or DEFAULT_WORD_BITS
    if word_bits not in WORD_WIDTHS:
        raise DataError(f"{folder}: {word_bits}-bit words; the converter RTL has {', '.join(map(str, WORD_WIDTHS))}")
    rows = arithmetic_rows(manifest)
    if packed is not None:
        rows += packed_rows(manifest, packed)
    if sim is not None:
        rows += rtl_rows(rtl_tensors(manifest, packed), sim=sim, word_bits=word_bits,
                         work_dir=work_dir or folder.parent / "sim_build")  # the vectors folder stays as written
    return ReplayResult(rows, word_bits, sim, time.perf_counter() - start)


def format_rows(result: ReplayResult) -> str:
    """The replay as an aligned text table."""
    head = ("tensor", "check", "elements", "differ", "words rtl", "words file", "")
    body = [(r.tensor, r.check, f"{r.elements:,}", str(r.mismatches), str(r.words_rtl or ""),
             str(r.words_file or ""), "ok" if r.ok else "MISMATCH") for r in result.rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    def line(cells) -> str:
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join(line(cells) for cells in [head, *body])
