"""Golden test vectors of an exported point replayed by cosim: layer arithmetic, the packed weights
file and every quantized tensor through the simulated RTL (Icarus), bit for bit."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys

import numpy as np
import pytest

from cosim.golden import replay
from energy.packing import channel_dram_words
from sw.cli import main
from sw.deploy.packed_file import PackedTensor, read_packed, write_packed
from sw.study.study import Study


@pytest.fixture(scope="module")
def exported(tiny_workload):
    """The tiny workload at 4 bits exported with its packed weights and one image of golden vectors."""
    assert main(["export", str(tiny_workload), "--uniform", "4", "--format", "packed", "int", "--vectors", "1"]) == 0
    study = Study(tiny_workload)
    return study, study.results_dir / "deploy"


def test_golden_vectors_replay_bit_exact_through_the_rtl(exported, tmp_path):
    study, folder = exported
    result = replay(folder / "uniform4_vectors", work_dir=tmp_path / "sim")
    assert result.ok, [r.as_dict() for r in result.rows if not r.ok]
    layers = study.quantized_model.layers()
    rows = {(r.tensor, r.check): r for r in result.rows}
    for name, layer in layers.items():
        w = layer.weight
        rtl = rows[(f"{name}.weight", "rtl")]
        assert rtl.words_rtl == rtl.words_file == channel_dram_words(w.shape[0], w[0].numel(), 4, 32)
        assert rows[(f"{name}.weight", "packed")].elements == w.numel()
        assert rows[(f"{name}.input", "rtl")].elements > 0 and rows[(f"{name}.output", "arithmetic")].elements > 0
    assert rows[("model_input", "rtl")].elements == 3 * 32 * 32
    assert rows[("logits", "arithmetic")].elements == 10


def test_a_changed_vector_or_packed_code_fails_the_replay(exported, tmp_path):
    _, folder = exported
    copy = tmp_path / "uniform4_vectors"
    shutil.copytree(folder / "uniform4_vectors", copy)
    output = np.load(copy / "features.2.0.output.npy")
    output.reshape(-1)[17] += 1
    np.save(copy / "features.2.0.output.npy", output)
    packed = read_packed(folder / "uniform4.mpqw")
    changed = []
    for t in packed.tensors.values():
        codes = t.codes().copy()
        if t.name == "classifier":
            codes.reshape(-1)[5] = t.hi if codes.reshape(-1)[5] != t.hi else t.lo
        changed.append(PackedTensor.of(t.name, codes, t.bits, t.lo, t.hi, t.axis, t.scale, t.zero_point, t.word_bits))
    write_packed(tmp_path / "uniform4.mpqw", changed, packed.word_bits)
    result = replay(copy, work_dir=tmp_path / "sim")
    bad = {(r.tensor, r.check): r.mismatches for r in result.rows if not r.ok}
    assert bad.keys() == {("features.2.0.output", "arithmetic"), ("classifier.weight", "packed"),
                          ("classifier.weight", "rtl")}, bad
    assert bad[("features.2.0.output", "arithmetic")] == 1 and bad[("classifier.weight", "packed")] == 1
    assert bad[("classifier.weight", "rtl")] >= 1  # the RTL's words are not the file's any more


@pytest.mark.parametrize("damage, message", [
    (lambda folder: (folder / "uniform4.mpqw").write_bytes((folder / "uniform4.mpqw").read_bytes()[:-2]),
     "corrupt packed weights file"),
    (lambda folder: (folder / "uniform4_vectors" / "manifest.json").write_text("{}"),
     "expected a golden-vector manifest"),
    (lambda folder: (folder / "uniform4_vectors" / "classifier.bias.npy").unlink(),
     "cannot read the golden vector"),
])
def test_broken_vectors_are_one_error_line(exported, tmp_path, damage, message):
    _, folder = exported
    shutil.copytree(folder / "uniform4_vectors", tmp_path / "uniform4_vectors")
    shutil.copy(folder / "uniform4.mpqw", tmp_path / "uniform4.mpqw")
    damage(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "cosim", "--vectors", str(tmp_path / "uniform4_vectors")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr


ONNX_BYTES_BEFORE = 32_265  # the default best point's QDQ ONNX with int8 weight containers (issue 24)


@pytest.mark.slow
def test_default_study_best_point_ships_its_searched_size(tmp_path):
    """Acceptance (on demand: `pytest -m slow tests/cosim/test_golden.py`; needs `make explore`): the
    default study's best point exports a packed file of the energy model's words, an ONNX file at
    most 0.6 x its int8 size, both reloading with the same held-out accuracy and 0 codes differing,
    and golden vectors the RTL replays bit-exact."""
    study = Study()
    if not study.db_path.exists():
        pytest.skip("run `make explore` first: no Pareto front of the default workload yet")
    assert main(["export", "--point", "best", "--out", str(tmp_path)]) == 0
    row = next(csv.DictReader(open(tmp_path / "deploy.csv")))
    label = row["label"]
    words = ideal = 0
    bits = [int(b.split("/")[0]) for b in row["bits"].split()]
    for (name, layer), b in zip(study.quantized_model.layers().items(), bits):
        w = layer.weight
        words += channel_dram_words(w.shape[0], w[0].numel(), b, 32)
        ideal += w.numel() * b / 8
    packed = read_packed(tmp_path / f"{label}.mpqw")
    assert packed.payload_bytes == words * 4 <= 1.05 * ideal
    assert int(row["onnx_bytes"]) <= 0.6 * ONNX_BYTES_BEFORE
    assert row["packed_top1"] == row["onnx_top1"] == row["fakequant_top1"] == row["int_top1"]
    for column in ("packed_weight_code_mismatches", "onnx_weight_code_mismatches", "packed_code_mismatches",
                   "onnx_code_mismatches"):
        assert row[column] == "0", column
    result = replay(tmp_path / f"{label}_vectors", work_dir=tmp_path / "sim")
    assert result.ok, [r.as_dict() for r in result.rows if not r.ok]
    assert sum(r.words_file for r in result.rows if r.check == "rtl" and r.tensor.endswith(".weight")) == words
