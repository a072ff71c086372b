"""Calibration methods and the calibration file: round trip, CPU reload, refusal of wrong files."""

from __future__ import annotations

import json

import pytest
import torch

from sw.calibration import METHODS, aciq_amax, calibrate, load_calibration, read_calibration, save_calibration
from sw.errors import DataError
from sw.models import DigitsCNN
from sw.quantized_model import QuantizedModel, QuantSettings


def _calibrated(method: str, seed: int = 0) -> tuple[QuantizedModel, torch.Tensor]:
    torch.manual_seed(seed)
    model = DigitsCNN(10).eval()
    settings = QuantSettings(calib_method="max" if method in ("max", "aciq") else "histogram", num_bins=256)
    qmodel = QuantizedModel(model, (3, 32, 32), settings)
    data = torch.rand(32, 3, 32, 32)
    calibrate(qmodel, [(data[:16], None), (data[16:], None)], method, percentile=99.9)
    return qmodel, data


@pytest.mark.parametrize("method", METHODS)
def test_every_method_sets_a_positive_amax_within_the_observed_range(method):
    qmodel, data = _calibrated(method)
    observed = {}
    handles = [q.register_forward_pre_hook(lambda m, i, n=n: observed.__setitem__(n, float(i[0].abs().max())))
               for n, q in qmodel.iter_quantizers() if not n.endswith(".weight")]
    qmodel.unfreeze_weights()
    for q in qmodel.quantizers().values():
        q.disable()
    with torch.no_grad():
        qmodel(data)
    for h in handles:
        h.remove()
    for name, q in qmodel.iter_quantizers():
        if name.endswith(".weight"):
            continue
        amax = float(q.amax)
        assert 0 < amax <= observed[name] * 1.01 + 1e-6, (name, amax, observed[name])
        if method == "max":
            assert amax == pytest.approx(observed[name], rel=1e-6)


def test_max_weight_calibration_is_per_channel_absmax():
    qmodel, _ = _calibrated("max")
    conv = qmodel.layers()[qmodel.layer_names[1]]
    expected = conv.weight.detach().abs().flatten(1).max(dim=1).values
    torch.testing.assert_close(conv._weight_quantizer.amax.flatten(), expected, rtol=0, atol=0)


def test_round_trip_restores_outputs_exactly_on_a_fresh_cpu_model(tmp_path):
    qmodel, data = _calibrated("percentile")
    qmodel.set_uniform_bits(5)
    with torch.no_grad():
        expected = qmodel(data)
    path = save_calibration(qmodel, tmp_path / "calib.json", {"model": "digits_cnn", "k": 1})
    assert "pickle" not in path.read_text()

    torch.manual_seed(0)
    fresh = QuantizedModel(DigitsCNN(10).eval(), (3, 32, 32), QuantSettings(calib_method="histogram"))
    weights = {k: v for k, v in qmodel.state_dict().items() if "_amax" not in k}
    fresh.load_state_dict(weights, strict=False)  # same fp32 weights, no amax buffers yet
    assert not hasattr(fresh.layers()[fresh.layer_names[0]]._input_quantizer, "_amax")
    load_calibration(fresh, path, {"model": "digits_cnn", "k": 1})
    fresh.set_uniform_bits(5)
    with torch.no_grad():
        torch.testing.assert_close(fresh(data), expected, rtol=0, atol=0)
    for name, q in fresh.iter_quantizers():
        assert q.unsigned == qmodel.quantizers()[name].unsigned


def test_aciq_amax_follows_bit_width(tmp_path):
    qmodel, data = _calibrated("aciq")
    name = qmodel.layer_names[1]
    qmodel.set_layer_bits({name: (8, 2)})
    low = float(qmodel.layers()[name]._input_quantizer.amax)
    qmodel.set_layer_bits({name: (8, 8)})
    high = float(qmodel.layers()[name]._input_quantizer.amax)
    assert low < high, "fewer bits must clip harder under ACIQ"
    assert aciq_amax(1.0, 100.0, 2, False) < aciq_amax(1.0, 100.0, 4, False) < aciq_amax(1.0, 100.0, 8, False)
    assert aciq_amax(1.0, 3.0, 8, False) == 3.0  # never beyond the observed range


def test_wrong_files_are_refused_with_one_clear_error(tmp_path):
    qmodel, _ = _calibrated("max")
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(DataError, match="bad.json"):
        read_calibration(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(DataError, match="format"):
        read_calibration(other)
    good = save_calibration(qmodel, tmp_path / "good.json", {"model": "a"})
    with pytest.raises(DataError, match="another model"):
        load_calibration(qmodel, good, {"model": "b"})
    payload = json.loads(good.read_text())
    first = next(iter(payload["quantizers"]))
    payload["quantizers"][first]["amax"] = [1.0, 2.0]
    payload["quantizers"][first]["shape"] = [3]
    good.write_text(json.dumps(payload))
    with pytest.raises(DataError):
        load_calibration(qmodel, good)
