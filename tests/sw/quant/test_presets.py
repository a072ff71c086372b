"""Backend presets: each preset's scale and zero-point rule against an independent numpy formula."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from quant_reference import symmetric_reference
from tiny_graph_net import tiny_residual
from tiny_quantized import calibrated_residual

from sw.model.calibration import load_calibration, save_calibration
from sw.model.quantized_model import QuantizedModel, QuantSettings
from sw.quant.adapter import amax_buffer
from sw.quant.clipping import apply_clipping
from sw.quant.presets import AffineQuantizer, Pow2Quantizer, quant_params, resolve
from sw.study.study import Study


def test_hw_preset_is_the_library_formula_signed_and_unsigned():
    qmodel = calibrated_residual(preset="hw")
    q = qmodel.quantizers()["conv2.input"]  # after F.relu: non-negative, so unsigned (auto)
    assert q.unsigned and not qmodel.quantizers()["model_input"].narrow_range
    x = torch.rand(1000) * float(q.amax) * 1.2
    for bits in (2, 4, 8):
        q.num_bits = bits
        expected, scale, _ = symmetric_reference(x.numpy(), q.amax.numpy(), bits, True, False)
        np.testing.assert_array_equal(q(x).numpy(), expected)
        assert float(quant_params(q).scale) == float(scale)


def test_tensorrt_preset_is_signed_narrow_per_channel_everywhere():
    qmodel = calibrated_residual(preset="tensorrt")
    for name, q in qmodel.quantizers().items():
        assert not q.unsigned and q.narrow_range, name  # no uint8 tensors in this backend
        p = quant_params(q)
        assert (p.lo, p.hi) == (-(2 ** (q.num_bits - 1) - 1), 2 ** (q.num_bits - 1) - 1)
    wq = qmodel.quantizers()["conv1.weight"]
    assert wq.amax.numel() == 8  # one scale per output channel
    w = qmodel.layers()["conv1"].weight.detach()
    wq.num_bits = 4
    expected, _, codes = symmetric_reference(w.numpy(), wq.amax.numpy(), 4, False, True)
    np.testing.assert_array_equal(wq(w).numpy(), expected)
    assert codes.min() >= -7 and codes.max() <= 7
    x = torch.relu(torch.randn(500)) * 3  # non-negative, still signed: half the codes unused
    a = qmodel.quantizers()["conv2.input"]
    np.testing.assert_array_equal(a(x).numpy(), symmetric_reference(x.numpy(), a.amax.numpy(), 8, False, True)[0])


def test_snpe_preset_is_asymmetric_with_an_integer_zero_point():
    qmodel = calibrated_residual(preset="snpe")
    assert all(isinstance(q, AffineQuantizer) for q in qmodel.quantizers().values())
    wq = qmodel.quantizers()["conv1.weight"]
    assert wq.amax.numel() == 1  # per tensor
    w = qmodel.layers()["conv1"].weight.detach()
    for bits in (3, 5, 8):
        wq.num_bits = bits
        wn = w.numpy().astype(np.float32)
        lo, hi = min(float(wn.min()), 0.0), max(float(wn.max()), 0.0)
        qmax = np.float32(2 ** bits - 1)
        scale = np.float32(qmax / (np.float32(hi) - np.float32(lo)))
        zp = np.clip(np.rint(np.float32(-lo) * scale), 0, qmax)
        codes = np.clip(np.rint(wn * scale) + zp, 0, qmax)
        np.testing.assert_array_equal(wq(w).numpy(), ((codes - zp) / scale).astype(np.float32))
        p = quant_params(wq)
        assert (p.lo, p.hi, int(p.zero_point)) == (0, int(qmax), int(zp))
        assert float(wq(torch.zeros(3)).abs().max()) == 0.0  # zero is exactly representable
    # an activation range that does not include 0 is widened to include it
    a = qmodel.quantizers()["model_input"]
    lo, hi = a.extra_calibration()["range"]  # the observed range, as the calibration file keeps it
    assert 0.0 <= lo < 0.01 and 0.99 < hi <= 1.0  # images in [0, 1)
    assert int(quant_params(a).zero_point) == 0


def test_snpe_range_survives_the_calibration_file(tmp_path):
    qmodel = calibrated_residual(preset="snpe")
    path = save_calibration(qmodel, tmp_path / "c.json", {"x": 1})
    assert "range" in json.loads(path.read_text())["quantizers"]["conv1.weight"]
    fresh = QuantizedModel(tiny_residual(), (3, 16, 16), resolve(QuantSettings(preset="snpe")))
    load_calibration(fresh, path)
    for name, q in qmodel.quantizers().items():
        assert quant_params(fresh.quantizers()[name]).scale == quant_params(q).scale, name


def _reference_error(x: np.ndarray, amax: np.ndarray, bits: int, unsigned: bool) -> np.ndarray:
    """Squared fake-quantization error per output channel (axis 0), from the numpy reference."""
    values = symmetric_reference(x, amax, bits, unsigned, False)[0]
    return ((values.astype(np.float64) - x.astype(np.float64)) ** 2).reshape(x.shape[0], -1).sum(axis=1)


def test_pow2_preset_scales_are_powers_of_two_at_every_bit_width():
    """Every scale is exactly 2^k with k = floor or ceil of log2(max_bound / amax); weights take
    whichever of the two gives the smaller error on the weight itself (nearest in log2 clipped up
    to 29 % of a layer's largest weights); max-calibrated activations round down (nothing clipped)."""
    qmodel = calibrated_residual(preset="pow2")
    assert all(isinstance(q, Pow2Quantizer) for q in qmodel.quantizers().values())
    chose_up = chose_down = 0
    for name, q in qmodel.quantizers().items():
        raw = amax_buffer(q).detach().clone()
        for bits in (2, 3, 4, 5, 8):
            q.num_bits = bits
            scale = quant_params(q).scale.double().numpy()
            exponent = np.log2(scale)
            np.testing.assert_array_equal(exponent, np.round(exponent))  # exactly 2^k
            max_bound = 2.0 ** (bits - 1 + int(q.unsigned)) - 1
            ideal = np.log2(max_bound / raw.double().numpy().reshape(-1))
            floor, ceil = np.floor(ideal), np.ceil(ideal)
            k = exponent.reshape(-1)
            assert np.all((k == floor) | (k == ceil)), (name, bits)
            if not name.endswith(".weight"):
                np.testing.assert_array_equal(k, floor)
                continue
            w = qmodel.layers()[name[: -len(".weight")]].weight.detach().numpy()
            shape = (-1,) + (1,) * (w.ndim - 1)
            errors = [_reference_error(w, (max_bound / 2.0 ** e).astype(np.float32).reshape(shape), bits, False)
                      for e in (floor, ceil)]
            chosen = _reference_error(w, q.amax.numpy(), bits, False)
            np.testing.assert_array_equal(chosen, np.minimum(*errors))
            chose_up += int(np.sum((k == ceil) & (ceil != floor)))
            chose_down += int(np.sum((k == floor) & (ceil != floor)))
        assert torch.equal(amax_buffer(q), raw)  # the calibrated amax itself is kept
    assert chose_up and chose_down  # both directions occur: the choice is made, not a fixed rule
    q = qmodel.quantizers()["conv1.weight"]
    q.num_bits = 4
    w = qmodel.layers()["conv1"].weight.detach()
    amax = q.amax.numpy()
    expected = symmetric_reference(w.numpy(), amax, 4, False, False)[0]
    np.testing.assert_array_equal(q(w).numpy(), expected)


def test_pow2_at_b_bits_errs_less_than_hw_at_b_minus_1(write_workload):
    """A power-of-two scale costs at most one bit of resolution: on the trained tiny CNN
    (percentile calibration, as the default study), every quantizer's squared error on what it
    quantizes (its weight; its activations on the held-out data) with pow2 at b bits is at most
    hw's at b - 1 bits (nearest-in-log2 scales clipped up to 29 % of the range and lost)."""
    hw = Study(write_workload({"calibration": {"method": "percentile"}}, name="hw.yaml"))
    pow2 = hw.variant({"quantization": {"preset": "pow2"}})
    hq, pq = hw.quantized_model, pow2.quantized_model
    seen: dict[str, list[torch.Tensor]] = {}
    hooks = [q.register_forward_pre_hook(lambda m, args, name=name: seen.setdefault(name, []).append(args[0]))
             for name, q in hq.quantizers().items() if not name.endswith(".weight")]
    with torch.no_grad():
        hq.set_uniform_bits(8)
        for x, _ in hw.batches("reevaluation"):
            hq(x)
        for h in hooks:
            h.remove()
        for name, q in pq.quantizers().items():
            x = hq.fp32_weight(name[: -len(".weight")]) if name.endswith(".weight") else torch.cat(seen[name])
            reference = hq.quantizers()[name]
            reference.enable()  # frozen weights leave weight quantizers disabled
            q.enable()
            for bits in (8, 6, 4):
                q.num_bits, reference.num_bits = bits, bits - 1
                apply_clipping(q)
                apply_clipping(reference)
                assert float(((q(x) - x) ** 2).sum()) <= float(((reference(x) - x) ** 2).sum()), (name, bits)


def test_pow2_calibration_file_keeps_the_raw_amax(tmp_path):
    """Reloaded pow2 quantizers round to the same 2^k at every bit width as the calibrated ones
    (the file holds the raw amax, not its power of two at the bits it was saved at)."""
    qmodel = calibrated_residual(preset="pow2")  # max calibration: no clipping object re-derives amax on load
    path = save_calibration(qmodel, tmp_path / "c.json", {"x": 1})
    fresh = QuantizedModel(tiny_residual(), (3, 16, 16), resolve(QuantSettings(preset="pow2")))
    load_calibration(fresh, path)
    for name, q in qmodel.quantizers().items():
        other = fresh.quantizers()[name]
        for bits in (2, 3, 4, 6, 8):
            q.num_bits = other.num_bits = bits
            assert torch.equal(quant_params(other).scale, quant_params(q).scale), (name, bits)


@pytest.mark.parametrize("preset, fixed", [("tensorrt", {"per_channel_weights": True, "unsigned_activations": "never",
                                                        "narrow_range": True}),
                                           ("snpe", {"per_channel_weights": False, "narrow_range": False}),
                                           ("hw", {}), ("pow2", {})])
def test_presets_fix_their_settings_and_leave_the_rest(preset, fixed):
    base = QuantSettings(per_channel_weights=not fixed.get("per_channel_weights", True), narrow_range=False,
                         unsigned_activations="auto", preset=preset, baseline_bits=6)
    resolved = resolve(base)
    for key, value in fixed.items():
        assert getattr(resolved, key) == value
    assert resolved.baseline_bits == 6
    if not fixed:
        assert resolved == base


@pytest.mark.parametrize("preset", ["snpe", "pow2"])
def test_bit_allocation_with_a_one_bit_width_preset_is_a_workload_error(write_workload, preset):
    from sw.config.workload import load_workload
    from sw.core.errors import WorkloadError

    path = write_workload({"calibration": {"bit_allocation": True}, "quantization": {"preset": preset}})
    with pytest.raises(WorkloadError, match=f"calibration.bit_allocation: expected false with quantization.preset {preset}"):
        load_workload(path)
