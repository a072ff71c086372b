"""The packed word layout and the packed weights file: against the RTL's reference packer and the
energy model's word counts, read back by the integer model, and refused in one line when broken."""

from __future__ import annotations

import csv
import json
import re
import struct
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from tiny_graph_net import images
from tiny_quantized import calibrated_residual

from energy.packing import channel_dram_words, dram_words
from sw.cli import main
from sw.config.workload import ENERGY
from sw.core.errors import DataError
from sw.deploy.export import onnx_weight_codes, weight_code_mismatches
from sw.deploy.integer_model import IntegerModel
from sw.deploy.lowering import lower
from sw.deploy.onnx_export import to_onnx
from sw.deploy.packed_file import VERSION, PackedTensor, graph_weights, read_packed, write_packed
from sw.deploy.packing import (DEFAULT_WORD_BITS, WORD_BITS, code_range, pack_codes, pack_tensor, tensor_words,
                               unpack_codes, unpack_tensor, word_dtype)
from sw.deploy.vectors import read_manifest
from sw.study.study import Study

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "hw" / "tb"))
import refmodel  # noqa: E402  (hw/tb: the RTL's reference packer, written independently)

MIXED = {"stem.0": (3, 8), "conv1": (5, 4), "conv2": (4, 3), "side": (8, 5), "head": (6, 6), "fc": (2, 8)}


# -- the word layout ------------------------------------------------------------------------------
@pytest.mark.parametrize("word_bits", WORD_BITS)
def test_pack_unpack_round_trip_at_every_width_with_extremes(word_bits):
    """Every width 1..16, signed and unsigned, the range's ends included: the words are the RTL
    reference packer's, as many as the energy model counts, and unpack to the same codes."""
    rng = np.random.default_rng(word_bits)
    for bits in range(1, 17):
        for signed in (False, True):
            lo, hi = code_range(bits, signed)
            codes = np.concatenate([[lo, hi, lo, hi, 0, lo], rng.integers(lo, hi + 1, size=rng.integers(0, 90))])
            words = pack_codes(codes, bits, word_bits)
            assert words.dtype == word_dtype(word_bits)
            assert words.size == dram_words(codes.size, bits, word_bits)
            assert [int(w) for w in words] == refmodel.pack(refmodel.to_pattern(codes, bits), bits, word_bits)
            assert np.array_equal(unpack_codes(words, codes.size, bits, word_bits, signed), codes), (bits, signed)


def test_channel_layout_starts_every_channel_on_a_fresh_word():
    rng = np.random.default_rng(0)
    codes = rng.integers(-4, 4, size=(5, 3, 3))  # 27 bits a channel at 3 bits: 2 words of 16 bits
    words = pack_tensor(codes, 3, 16, "channel", 0)
    assert words.size == channel_dram_words(5, 9, 3, 16) == tensor_words(codes.shape, 3, 16, "channel", 0) == 10
    for c in range(5):
        assert np.array_equal(words[2 * c:2 * c + 2], pack_codes(codes[c], 3, 16))
    assert np.array_equal(unpack_tensor(words, codes.shape, 3, 16, True, "channel", 0), codes)
    dense = pack_tensor(codes, 3, 16, "dense")
    assert dense.size == dram_words(45, 3, 16) == 9
    assert np.array_equal(unpack_tensor(dense, codes.shape, 3, 16, True, "dense"), codes)
    along1 = pack_tensor(codes, 3, 16, "channel", 1)
    assert np.array_equal(unpack_tensor(along1, codes.shape, 3, 16, True, "channel", 1), codes)
    with pytest.raises(DataError, match="takes 10 16-bit words"):
        unpack_tensor(words[:-1], codes.shape, 3, 16, True, "channel", 0)


def test_the_default_word_width_is_the_rtls_the_energy_models_and_cosims():
    top = (REPO / "hw" / "rtl" / "mpconv_top.v").read_text()
    assert int(re.search(r"parameter\s+WORD_W\s*=\s*(\d+)", top).group(1)) == DEFAULT_WORD_BITS
    assert ENERGY.fields["word_bits"].default == DEFAULT_WORD_BITS


# -- the file -------------------------------------------------------------------------------------
def _tensors(word_bits: int = 32) -> list[PackedTensor]:
    rng = np.random.default_rng(7)
    conv = rng.integers(-16, 16, size=(6, 3, 3, 3))
    conv[0, 0, 0, 0], conv[1, 0, 0, 0] = -16, 15
    scales = rng.uniform(1, 100, size=6).astype(np.float32)
    return [PackedTensor.of("conv", conv, 5, -16, 15, 0, scales, np.zeros(6), word_bits),
            PackedTensor.of("fc", rng.integers(0, 8, size=(10, 7)), 3, 0, 7, None, np.float32([3.3]), [0], word_bits),
            PackedTensor.of("narrow", rng.integers(-1, 2, size=(4, 5)), 2, -1, 1, None, np.float32([0.1]), [0],
                            word_bits)]


@pytest.mark.parametrize("word_bits", WORD_BITS)
def test_packed_file_round_trip(tmp_path, word_bits):
    tensors = _tensors(word_bits)
    path = write_packed(tmp_path / "w.mpqw", tensors, word_bits)
    packed = read_packed(path)
    assert packed.word_bits == word_bits and list(packed.tensors) == ["conv", "fc", "narrow"]
    words = sum(tensor_words(t.shape, t.bits, word_bits, t.layout, t.axis) for t in tensors)
    assert packed.payload_bytes == words * word_bits // 8 == path.stat().st_size - packed.header_bytes
    assert packed.header_bytes % 8 == 0 and packed.header_bytes < 1024
    for t in tensors:
        got = packed.tensors[t.name]
        assert (got.layout, got.axis, got.lo, got.hi, got.bits, got.shape) == (t.layout, t.axis, t.lo, t.hi, t.bits,
                                                                               t.shape)
        assert np.array_equal(got.scale.view(np.uint32), t.scale.view(np.uint32))  # fp32 bit for bit
        assert np.array_equal(got.codes(), t.codes()) and np.array_equal(got.words, t.words)
        assert got.codes().dtype == (np.int8 if t.lo < 0 else np.uint8)
    assert packed.tensors["conv"].layout == "channel" and packed.tensors["fc"].layout == "dense"
    header = json.loads(path.read_bytes()[24:packed.header_bytes])
    assert header["tensors"][1]["offset_words"] == packed.tensors["conv"].words.size


def _one_line(exc: pytest.ExceptionInfo, path: Path, *words: str) -> None:
    message = str(exc.value)
    assert "\n" not in message and str(path) in message, message
    for w in words:
        assert w in message, message


def test_a_version_mismatch_is_one_error_line(tmp_path):
    path = write_packed(tmp_path / "w.mpqw", _tensors(), 32)
    data = bytearray(path.read_bytes())
    struct.pack_into("<H", data, 4, VERSION + 1)
    path.write_bytes(bytes(data))
    with pytest.raises(DataError) as exc:
        read_packed(path)
    _one_line(exc, path, f"version {VERSION + 1}", f"reads version {VERSION}")


@pytest.mark.parametrize("damage, words", [
    (lambda d: d[:-3], ("corrupt", "payload")),  # truncated
    (lambda d: d[:-1] + bytes([d[-1] ^ 0x10]), ("corrupt", "checksum")),  # one payload bit
    (lambda d: d[:30] + bytes([d[30] ^ 0x01]) + d[31:], ("corrupt", "header checksum")),  # one header bit
    (lambda d: b"PK\x03\x04" + d[4:], ("not a packed weights file",)),
    (lambda d: d[:10], ("corrupt",)),
])
def test_a_corrupt_file_is_one_data_error_line(tmp_path, damage, words):
    path = write_packed(tmp_path / "w.mpqw", _tensors(), 32)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError) as exc:
        read_packed(path)
    _one_line(exc, path, *words)


def test_a_missing_file_is_one_data_error_line(tmp_path):
    with pytest.raises(DataError) as exc:
        read_packed(tmp_path / "none.mpqw")
    _one_line(exc, tmp_path / "none.mpqw", "cannot read")


# -- read back by the integer model; narrow integer types ------------------------------------------
@pytest.fixture(scope="module")
def graph():
    qmodel = calibrated_residual("max", images(32, seed=1))
    qmodel.set_layer_bits(MIXED)
    qmodel.freeze_weights()
    return lower(qmodel)


def test_the_integer_model_takes_its_weights_from_the_packed_file(graph, tmp_path):
    model = IntegerModel.from_graph(graph)
    model.save(tmp_path / "m")
    saved = torch.load(tmp_path / "m.pt", weights_only=True)
    layers = {op.ints["layer"]: i for i, op in enumerate(model.ops) if op.kind in ("conv", "linear")}
    assert {saved[f"{i}.weight"].dtype for i in layers.values()} == {torch.int8}  # codes of <= 8 bits
    assert all(t.dtype != torch.int64 or t.abs().max() > 2 ** 31 - 1 for t in saved.values())
    tensors = graph_weights(graph, 32)
    path = write_packed(tmp_path / "w.mpqw", tensors, 32)
    x = images(8, seed=4)
    again = IntegerModel.load(tmp_path / "m", packed=path)
    assert torch.equal(again(x), model(x))
    # the weights really come from the file: a file with other codes gives another model
    changed = [PackedTensor.of(t.name, -t.codes() if t.name == "side" else t.codes(), t.bits, t.lo, t.hi, t.axis,
                               t.scale, t.zero_point, 32) for t in tensors]
    other = IntegerModel.load(tmp_path / "m", packed=write_packed(tmp_path / "x.mpqw", changed, 32))
    assert torch.equal(other.layer_ops()["side"].tensors["weight"], -model.layer_ops()["side"].tensors["weight"])
    assert not torch.equal(other(x), model(x))
    some = tensors[1:2] + tensors[-1:]
    with pytest.raises(DataError, match=f"holds weights of {', '.join(sorted(t.name for t in some))};"):
        IntegerModel.load(tmp_path / "m", packed=write_packed(tmp_path / "y.mpqw", some, 32))


def test_onnx_weights_at_four_bits_or_fewer_take_half_a_byte(graph):
    model = to_onnx(graph)
    inits = {t.name: t for t in model.graph.initializer}
    for layer, (wbits, _) in MIXED.items():
        t = inits[f"{layer}.weight_codes"]
        n = int(np.prod(t.dims))
        assert len(t.raw_data) == (-(-n // 2) if wbits <= 4 else n), layer
        assert np.array_equal(onnx.numpy_helper.to_array(t).astype(np.int64),
                              next(op.attrs["weight"].numpy() for op in graph.ops if op.attrs.get("layer") == layer))


def test_weight_codes_read_back_from_a_file_are_counted_when_they_differ(graph):
    codes = onnx_weight_codes(to_onnx(graph))
    assert set(codes) == set(MIXED) and weight_code_mismatches(graph, codes) == 0
    codes["conv2"] = codes["conv2"].copy()
    codes["conv2"].reshape(-1)[:3] += 1
    assert weight_code_mismatches(graph, codes) == 3
    del codes["fc"]
    assert weight_code_mismatches(graph, codes) == 3 + next(op.attrs["weight"].numel() for op in graph.ops
                                                            if op.attrs.get("layer") == "fc")


# -- the export command ---------------------------------------------------------------------------
def test_export_writes_packed_weights_the_size_the_energy_model_counts(tiny_workload, capsys):
    assert main(["export", str(tiny_workload), "--uniform", "4", "--vectors", "2"]) == 0
    out = capsys.readouterr().out
    assert "packed weights:" in out and "0 weight codes and 0 activation codes differ" in out
    study = Study(tiny_workload)
    folder = study.results_dir / "deploy"
    row = next(r for r in csv.DictReader(open(folder / "deploy.csv")) if r["label"] == "uniform4")
    path = folder / "uniform4.mpqw"
    packed = read_packed(path)
    words = 0
    for name, layer in study.quantized_model.layers().items():
        w = layer.weight
        words += channel_dram_words(w.shape[0], w[0].numel(), 4, 32)  # per-channel weights, 32-bit words
        assert packed.tensors[name].shape == tuple(w.shape)
    ideal = sum(layer.weight.numel() for layer in study.quantized_model.layers().values()) * 4 / 8
    assert packed.payload_bytes == words * 4 == int(row["packed_payload_bytes"])
    assert packed.payload_bytes <= 1.05 * ideal and float(row["weights_bytes_ideal"]) == ideal
    assert int(row["packed_bytes"]) == path.stat().st_size
    assert row["packed_top1"] == row["fakequant_top1"] == row["int_top1"]
    assert row["packed_weight_code_mismatches"] == row["onnx_weight_code_mismatches"] == "0"
    assert row["packed_code_mismatches"] == "0"
    assert int(row["onnx_bytes"]) == (folder / "uniform4.onnx").stat().st_size
    manifest = read_manifest(folder / "uniform4_vectors")
    assert manifest["samples"] == 2 and manifest["packed_weights"] == "../uniform4.mpqw"
    for entry in manifest["layers"]:
        for kind, name in entry["files"].items():
            array = np.load(folder / "uniform4_vectors" / name, allow_pickle=False)
            assert array.dtype != np.int64, (name, array.dtype)
            if kind in ("input", "weight"):
                assert array.dtype.itemsize == 1, name  # 4-bit codes: one byte
