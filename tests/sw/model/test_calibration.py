"""Calibration methods and the calibration file: round trip, CPU reload, refusal of wrong files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sw.core.errors import DataError
from sw.model.calibration import METHODS, calibrate, load_calibration, read_calibration, save_calibration
from sw.model.quantized_model import QuantizedModel, QuantSettings
from sw.nets.models import DigitsCNN
from sw.quant.adapter import amax_buffer, calibrator, input_quantizer, is_amax_key, weight_quantizer


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
    torch.testing.assert_close(weight_quantizer(conv).amax.flatten(), expected, rtol=0, atol=0)


def test_round_trip_restores_outputs_exactly_on_a_fresh_cpu_model(tmp_path):
    qmodel, data = _calibrated("percentile")
    qmodel.set_uniform_bits(5)
    with torch.no_grad():
        expected = qmodel(data)
    path = save_calibration(qmodel, tmp_path / "calib.json", {"model": "digits_cnn", "k": 1})
    assert "pickle" not in path.read_text()

    torch.manual_seed(0)
    fresh = QuantizedModel(DigitsCNN(10).eval(), (3, 32, 32), QuantSettings(calib_method="histogram"))
    weights = {k: v for k, v in qmodel.state_dict().items() if not is_amax_key(k)}
    fresh.load_state_dict(weights, strict=False)  # same fp32 weights, no amax buffers yet
    assert amax_buffer(input_quantizer(fresh.layers()[fresh.layer_names[0]])) is None
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
    low = float(input_quantizer(qmodel.layers()[name]).amax)
    qmodel.set_layer_bits({name: (8, 8)})
    high = float(input_quantizer(qmodel.layers()[name]).amax)
    assert low < high, "fewer bits must clip harder under ACIQ"


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


# -- bit-aware clipping and the ACIQ recipe at model level ---------------------------------------------
from sw.model.calibration import Recipe  # noqa: E402
from sw.quant.clipping import Histogram, entropy_amax, mse_amax  # noqa: E402


@pytest.mark.parametrize("method,rule", [("entropy", entropy_amax), ("mse", mse_amax)])
def test_histogram_methods_clip_for_the_candidates_bits(method, rule):
    """set_layer_bits gives an input quantizer the amax its histogram rule gives at the new bits."""
    qmodel, _ = _calibrated(method)
    name = qmodel.layer_names[1]
    q = input_quantizer(qmodel.layers()[name])
    histogram = Histogram.from_calibrator(calibrator(q))
    amax = {}
    for bits in (2, 3, 8):
        qmodel.set_layer_bits({name: (8, bits)})
        amax[bits] = float(q.amax)
        assert amax[bits] == np.float32(rule(histogram, bits, q.unsigned)), (bits, amax[bits])
    assert amax[2] < amax[8], "2 bits must clip harder than 8"


def _recipe_model(recipe: Recipe, spread_channels: bool = False) -> tuple[QuantizedModel, torch.Tensor]:
    torch.manual_seed(0)
    model = DigitsCNN(10).eval()
    if spread_channels:  # output channels with ranges over a factor of e^4 (trained nets have such spreads)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                    m.weight.mul_(torch.exp(torch.linspace(-2, 2, m.weight.shape[0])).reshape(-1, *[1] * (m.weight.dim() - 1)))
    settings = QuantSettings(calib_method="histogram" if recipe.method in ("percentile", "entropy", "mse") else "max",
                             num_bins=256)
    qmodel = QuantizedModel(model, (3, 32, 32), settings)
    data = torch.rand(32, 3, 32, 32)
    calibrate(qmodel, [(data[:16], None), (data[16:], None)], recipe)
    qmodel.freeze_weights()
    return qmodel, data


RECIPES = [Recipe(method="entropy"), Recipe(method="mse"),
           Recipe(method="aciq", weight_method="aciq", prior="gauss", bit_allocation=True,
                  bias_correction="mean_variance")]


@pytest.mark.parametrize("recipe", RECIPES, ids=["entropy", "mse", "aciq_alloc_bcorr"])
def test_recipes_round_trip_through_json_at_every_bit_width(recipe, tmp_path):
    """Histograms, ACIQ moments, bit allocation and bias correction are saved (JSON, no pickle)
    and a fresh model reproduces the outputs at other bit widths than the saved ones."""
    qmodel, data = _recipe_model(recipe)
    path = save_calibration(qmodel, tmp_path / "c.json", {"k": 1})
    text = path.read_text()
    assert "pickle" not in text and ("counts" in text) == (recipe.method != "aciq")
    torch.manual_seed(0)
    fresh = QuantizedModel(DigitsCNN(10).eval(), (3, 32, 32), QuantSettings(num_bins=256))
    load_calibration(fresh, path, {"k": 1})
    fresh.freeze_weights()
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for _ in range(3):
            bits = {n: (int(rng.integers(2, 9)), int(rng.integers(2, 9))) for n in qmodel.layer_names}
            qmodel.set_layer_bits(bits)
            fresh.set_layer_bits(bits)
            torch.testing.assert_close(fresh(data), qmodel(data), rtol=0, atol=0)


def test_bit_allocation_and_bias_correction_in_the_model():
    qmodel, data = _recipe_model(RECIPES[2], spread_channels=True)
    name = qmodel.layer_names[2]
    layer = qmodel.layers()[name]
    qmodel.set_layer_bits({name: (3, 8)})
    channel_bits = weight_quantizer(layer).channel_bits
    assert channel_bits is not None and float(channel_bits.double().mean()) <= 3 and len(set(channel_bits.flatten().tolist())) > 1
    assert layer.bias is not None, "the mean correction lives in the (new) bias"
    fp32 = qmodel.fp32_weight(name).clone()
    assert not torch.equal(layer.weight, fp32)
    qmodel.unfreeze_weights()
    assert layer.bias is None, "unfreezing restores the fp32 layer (no bias)"
    assert torch.equal(layer.weight, fp32)


def test_bit_allocation_needs_per_channel_weights(write_workload):
    from sw.config.workload import load_workload
    from sw.core.errors import WorkloadError

    path = write_workload({"calibration": {"bit_allocation": True}, "quantization": {"per_channel_weights": False}})
    with pytest.raises(WorkloadError, match="calibration.bit_allocation"):
        load_workload(path)


@pytest.mark.parametrize("damage", ["short_edges", "negative", "kind", "not_a_dict"])
def test_a_damaged_clipping_entry_is_one_clear_error(damage, tmp_path):
    qmodel, _ = _calibrated("entropy")
    path = save_calibration(qmodel, tmp_path / "c.json", {"k": 1})
    payload = json.loads(path.read_text())
    name = next(n for n, e in payload["quantizers"].items() if "clipping" in e)
    clipping = payload["quantizers"][name]["clipping"]
    if damage == "short_edges":
        clipping["histogram"]["edges"] = clipping["histogram"]["edges"][:-2]
    elif damage == "negative":
        clipping["histogram"]["counts"][3] = -1
    elif damage == "kind":
        clipping["kind"] = "magic"
    else:
        payload["quantizers"][name]["clipping"] = [1, 2]
    path.write_text(json.dumps(payload))
    with pytest.raises(DataError, match=f"c.json: quantizer '{name}'"):
        load_calibration(qmodel, path, {"k": 1})
