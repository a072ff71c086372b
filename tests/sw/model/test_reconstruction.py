"""Learned rounding on real layers and a real (tiny) study: it beats nearest rounding where it can,
leaves an already optimal layer alone, survives on disk, and every command sees its codes."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

from sw.cli import main
from sw.core.errors import DataError
from sw.model.reconstruction import RoundingSettings, RoundingStore, learn_rounding, reconstruction_error
from sw.quant.adaround import nearest_up, rounded_weight
from sw.quant.adapter import weight_quantizer
from sw.quant.presets import QuantParams, quant_params
from sw.study.study import Study

SETTINGS = RoundingSettings(method="adaround", iterations=1000, batch_size=64)


def _planted_linear(seed: int = 0) -> tuple[nn.Linear, torch.Tensor, torch.Tensor, QuantParams]:
    """A linear layer, correlated inputs (where rounding errors can cancel) and a 3-bit per-channel grid."""
    g = torch.Generator().manual_seed(seed)
    layer = nn.Linear(24, 8)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(8, 24, generator=g) * 0.4)
    mixing = torch.randn(24, 24, generator=g) * 0.3 + torch.eye(24)
    inputs = torch.randn(512, 24, generator=g) @ mixing
    with torch.no_grad():
        targets = layer(inputs)
    amax = layer.weight.detach().abs().amax(dim=1)
    params = QuantParams(3, (3.0 / amax).float(), torch.zeros(8, dtype=torch.int64), -4, 3, 0)
    return layer, inputs, targets, params


def test_learned_rounding_beats_nearest_on_the_calibration_data_and_decides_every_weight():
    layer, inputs, targets, params = _planted_linear()
    up, report = learn_rounding(layer, layer.weight, layer.bias, params, inputs, targets, SETTINGS)
    assert report.kept == "learned"
    assert report.learned_error < 0.8 * report.nearest_error
    assert report.undecided < 0.02  # the annealed regulariser pushed (almost) every h to 0 or 1
    w = layer.weight.detach()
    error = float(reconstruction_error(layer, inputs, rounded_weight(w, params, up.float()), layer.bias.detach(), targets))
    assert error == pytest.approx(report.learned_error)
    assert int((params.codes(rounded_weight(w, params, up.float())) - params.codes(w)).abs().max()) <= 1


def test_a_layer_whose_nearest_rounding_is_exact_is_left_unchanged():
    layer, inputs, _, params = _planted_linear(1)
    with torch.no_grad():  # weights on the grid: nearest rounding reproduces the layer exactly
        layer.weight.copy_(params.dequantize(params.codes(layer.weight)))
        targets = layer(inputs)
    up, report = learn_rounding(layer, layer.weight, layer.bias, params, inputs, targets, SETTINGS)
    assert report.kept == "nearest" and report.nearest_error == pytest.approx(0.0, abs=1e-10)
    assert torch.equal(up, nearest_up(layer.weight.detach(), params))


def test_a_learned_rounding_worse_than_nearest_is_not_kept():
    layer, inputs, targets, params = _planted_linear(2)
    diverged = RoundingSettings(method="adaround", iterations=20, learning_rate=50.0, regulariser_weight=0.0)
    up, report = learn_rounding(layer, layer.weight, layer.bias, params, inputs, targets, diverged)
    assert report.learned_error > report.nearest_error  # the planted failure happened
    assert report.kept == "nearest" and torch.equal(up, nearest_up(layer.weight.detach(), params))


def test_the_store_round_trips_and_refuses_corrupt_files_and_other_identities(tmp_path):
    store = RoundingStore(tmp_path / "r", {"model": "a"})
    up = torch.randint(0, 2, (5, 3, 3, 3), dtype=torch.uint8)
    store.save("features.0.0", 3, up)
    assert torch.equal(store.load("features.0.0", 3, up.shape), up)
    assert store.load("features.0.0", 4, up.shape) is None
    store.path("features.0.0", 3).write_bytes(b"not numpy")
    with pytest.raises(DataError, match="features.0.0.w3.npy"):
        store.load("features.0.0", 3, up.shape)
    np.save(store.path("x", 2), np.zeros(3, dtype=np.uint8))
    with pytest.raises(DataError, match="expected 17 bytes"):
        store.load("x", 2, (9, 15))
    with pytest.raises(DataError, match="another model"):
        RoundingStore(tmp_path / "r", {"model": "b"})


@pytest.fixture(scope="module")
def adaround_workload(tmp_path_factory):
    from workload_files import write_tiny_workload  # lazy: a test helper module, as the other fixtures

    return write_tiny_workload(tmp_path_factory.mktemp("ada"), {
        "name": "ada", "search": {"bits": {"lower": 4, "upper": 5}},
        "calibration": {"rounding": "adaround", "rounding_iterations": 60}})


def test_a_study_learns_once_resumes_from_disk_and_freezes_the_learned_codes(adaround_workload):
    study = Study(adaround_workload)
    qmodel = study.quantized_model
    files = sorted((study.results_dir / "rounding").glob("*/*.npy"))
    assert len(files) == 3 * len(qmodel.layer_names)  # bits 4, 5 and the baseline's 8 per layer
    qmodel.set_uniform_bits(4)
    changed = 0
    for name, layer in qmodel.layers().items():
        wq = weight_quantizer(layer)
        params = quant_params(wq)
        master = qmodel.fp32_weight(name)
        expected = rounded_weight(master, params, wq.learned_rounding.get(4).float())
        assert torch.equal(layer.weight.detach(), expected)
        changed += int((params.codes(layer.weight.detach()) != params.codes(master)).sum())
    assert changed > 0  # some codes differ from nearest rounding
    files[0].unlink()  # as if killed before that one was written: only it is learned again
    again = Study(adaround_workload)
    again.quantized_model.set_uniform_bits(4)
    assert len(sorted((again.results_dir / "rounding").glob("*/*.npy"))) == len(files)
    for (name, a), b in zip(qmodel.layers().items(), again.quantized_model.layers().values()):
        assert torch.equal(a.weight, b.weight), name


def test_export_and_checkpoints_carry_the_learned_codes(adaround_workload, capsys):
    assert main(["export", str(adaround_workload), "--uniform", "4"]) == 0
    study = Study(adaround_workload)
    folder = study.results_dir / "deploy"
    with open(folder / "deploy.csv") as fh:
        row = next(r for r in csv.DictReader(fh) if r["label"] == "uniform4")
    details = json.loads((folder / "uniform4.json").read_text())
    assert row["onnx_within_tolerance"] == "True" and row["int_fits_int32"] == "True"
    assert float(row["int_top1"]) == pytest.approx(float(row["fakequant_top1"]), abs=1 / 120)
    assert set(details["int"]["comparison"]["tensors"])
    capsys.readouterr()
    assert main(["evaluate", str(adaround_workload), "--checkpoint", str(folder / "uniform4_state")]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1].split("top1")[1].strip()
    assert printed == f"{float(row['fakequant_top1']):.4f}"


def test_learned_rounding_with_per_channel_bit_allocation_is_one_workload_error(write_workload, capsys):
    path = write_workload({"calibration": {"rounding": "adaround", "bit_allocation": True}}, name="bad.yaml")
    assert main(["evaluate", str(path), "--uniform", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.yaml" in err[0] and "calibration.rounding" in err[0] and "bit_allocation" in err[0]
