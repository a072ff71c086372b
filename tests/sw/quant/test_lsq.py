"""LSQ / STE quantization-aware training: gradients against finite differences, the forward
against pytorch-quantization, QAT through the CLI, and the checkpoint it writes."""

from __future__ import annotations

import csv
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pytorch_quantization.nn import TensorQuantizer
from pytorch_quantization.tensor_quant import QuantDescriptor, fake_tensor_quant
from tiny_graph_net import images, tiny_residual
from tiny_quantized import calibrated_residual

from cosim.cli import main as cosim_main
from sw.cli import main
from sw.core.errors import DataError
from sw.model.calibration import Recipe
from sw.model.checkpoint import load_checkpoint, save_checkpoint
from sw.model.quantized_model import QuantizedModel, QuantSettings
from sw.quant.lsq import LsqFunction, LsqQuantizer, check_trainable, pin_amax
from sw.quant.presets import resolve
from sw.study.study import Study


def _surrogate(x: np.ndarray, s: np.ndarray, x0: np.ndarray, s0: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The straight-through surrogate of fake quantization around (x0, s0), in float64: inside
    the code range the rounding offset delta = round(x0/s0) - x0/s0 is frozen (out = x + s * delta);
    below / above it the code is lo / hi (out = s * lo / s * hi)."""
    v0 = x0 / s0
    delta = np.round(v0) - v0
    return np.where(v0 < lo, s * lo, np.where(v0 > hi, s * hi, x + s * delta))


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("bits, unsigned", [(2, False), (4, False), (3, True), (8, False)])
def test_lsq_gradients_match_finite_differences(per_channel, bits, unsigned):
    rng = np.random.default_rng(bits + 10 * per_channel)
    x = rng.normal(size=(4, 6, 3)).astype(np.float32) * 2.0
    if unsigned:
        x = np.abs(x)
    max_bound = 2.0 ** (bits - 1 + int(unsigned)) - 1
    lo, hi = (0.0 if unsigned else -max_bound - 1), max_bound
    shape = (4, 1, 1) if per_channel else ()
    s0 = (rng.uniform(0.5, 1.5, size=shape) * 2.0 / max_bound).astype(np.float32)  # some elements clip
    w = rng.normal(size=x.shape)  # upstream gradient dL/dout
    xt = torch.tensor(x, requires_grad=True)
    st = torch.tensor(s0, requires_grad=True)
    out = LsqFunction.apply(xt, st, max_bound, lo, hi, 1.0)
    (out.double() * torch.tensor(w)).sum().backward()
    s64 = s0.astype(np.float64)
    h = 1e-6
    # d/ds: one finite difference per step element
    fd = np.zeros(int(np.size(s0)))
    for i in range(fd.size):
        e = np.zeros_like(fd)
        e[i] = h
        e = e.reshape(np.shape(s0))
        fd[i] = ((_surrogate(x, s64 + e, x, s64, lo, hi) - _surrogate(x, s64 - e, x, s64, lo, hi)) * w).sum() / (2 * h)
    np.testing.assert_allclose(st.grad.numpy().reshape(-1), fd, rtol=1e-4, atol=1e-4)
    # d/dx: finite difference of the surrogate for every element
    x64 = x.astype(np.float64)
    fdx = np.zeros_like(x64)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x64)
        e[idx] = h
        fdx[idx] = ((_surrogate(x64 + e, s64, x64, s64, lo, hi) - _surrogate(x64 - e, s64, x64, s64, lo, hi)) * w).sum() / (2 * h)
    np.testing.assert_allclose(xt.grad.numpy(), fdx, rtol=1e-5, atol=1e-5)
    assert (fdx == 0).any() and (fdx != 0).any()  # both clipped and passed-through elements occur


def test_lsq_gradient_scale_is_one_over_sqrt_elements_times_max_code():
    """LsqQuantizer scales the step gradient by g = 1 / sqrt(N * hi), N = elements of one sample."""
    q = LsqQuantizer(TensorQuantizer(QuantDescriptor(num_bits=4, amax=2.0)))
    x = torch.randn(8, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    q(x).sum().backward()
    plain = torch.tensor(2.0 / 7, requires_grad=True)  # the same step, gradient scale 1
    LsqFunction.apply(x, plain, 7.0, -8.0, 7.0, 1.0).sum().backward()
    assert q.step.grad.item() == pytest.approx(plain.grad.item() / math.sqrt(3 * 5 * 5 * 7), rel=1e-6)
    assert plain.grad.item() != 0


@pytest.mark.parametrize("bits, unsigned, narrow", [(2, False, False), (4, False, True), (5, True, False), (8, False, False)])
def test_lsq_forward_is_pytorch_quantizations_fake_quant(bits, unsigned, narrow):
    x = torch.randn(4096) * 3
    if unsigned:
        x = x.abs()
    amax = torch.tensor(2.5)
    q = LsqQuantizer(TensorQuantizer(QuantDescriptor(num_bits=bits, unsigned=unsigned, narrow_range=narrow, amax=2.5)))
    expected = fake_tensor_quant(x, q.amax, bits, unsigned, narrow)
    assert torch.equal(q(x), expected)
    assert float(q.amax) == pytest.approx(float(amax), rel=1e-6)


def test_a_pinned_amax_survives_bit_changes_and_clipping_choices():
    """Trained / loaded amax stays put: neither the bit-aware clipping nor a per-layer clipping
    method chosen by set_layer_bits (sw.quant.clipping) moves it."""
    qmodel = calibrated_residual(Recipe(method="mse", weight_method="aciq", search_methods=("mse", "aciq")),
                                 calib_method="histogram", num_bins=256)
    qin, qw = qmodel.quantizers()["conv1.input"], qmodel.quantizers()["conv1.weight"]
    pin_amax(qin, torch.tensor(0.123))
    pin_amax(qw, torch.full_like(qw.amax, 0.25))
    for bits, method in (((3, 3), "aciq"), ((5, 2), "mse"), ((2, 6), None)):
        qmodel.set_layer_bits({"conv1": bits}, {"conv1": method} if method else None)
        assert float(qin.amax) == pytest.approx(0.123, rel=1e-7) and bool((qw.amax == 0.25).all())


def test_qat_refuses_what_it_cannot_train():
    pow2 = QuantizedModel(tiny_residual(), (3, 16, 16), resolve(QuantSettings(preset="pow2")))
    with pytest.raises(ValueError, match=r"--method lsq learns a free fp32 step; quantizer model_input .* use --method ste"):
        check_trainable(pow2, "lsq")
    check_trainable(pow2, "ste")
    allocated = calibrated_residual(Recipe(bit_allocation=True), images(8))
    allocated.set_layer_bits({"conv1": (4, 8)})
    with pytest.raises(ValueError, match="calibration.bit_allocation: quantizer stem.0.weight has per-channel bits"):
        check_trainable(allocated, "ste")


def test_a_checkpoint_keeps_the_bias_correction_it_was_made_with(tmp_path):
    """The mean bias correction is re-derived from the weights on load: the same outputs where the
    workload has it, one clear error where it has not."""

    def built(correction: str) -> QuantizedModel:
        qmodel = calibrated_residual(Recipe(bias_correction=correction))
        qmodel.freeze_weights()
        qmodel.set_layer_bits({"conv1": (3, 5), "fc": (4, 4)})
        return qmodel

    workload = SimpleNamespace(name="w", model=SimpleNamespace(name="tiny"))
    corrected = built("mean")
    save_checkpoint(corrected, tmp_path / "ck", workload=workload, info={})
    with pytest.raises(DataError, match="bias_correction mean on stem.0.weight, the workload has none"):
        load_checkpoint(built("none"), tmp_path / "ck")
    again = built("mean")
    again.set_layer_bits({"conv1": (8, 8), "fc": (8, 8)})
    load_checkpoint(again, tmp_path / "ck")
    x = images(8, seed=4)
    with torch.no_grad():
        assert torch.equal(again(x), corrected(x))


# -- QAT through the CLI -------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["lsq", "ste"])
def test_retrain_trains_every_layer_and_writes_a_loadable_checkpoint(tiny_workload, method, capsys):
    study = Study(tiny_workload)
    before = {n: l.weight.detach().clone() for n, l in study.quantized_model.layers().items()}
    before = {n: study.quantized_model.fp32_weight(n).clone() for n in before}
    amax_before = {a: q.amax.detach().clone() for a, q in study.quantized_model.quantizers().items()}
    assert main(["retrain", str(tiny_workload), "--uniform", "4", "--method", method, "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    after_line = next(line for line in out.splitlines() if "after" in line)
    after_top1 = float(after_line.split("top1")[1].split()[0])
    stem = study.results_dir / "retrain" / f"uniform4_{method}"
    assert stem.with_suffix(".pt").exists() and stem.with_suffix(".json").exists()
    state = torch.load(stem.with_suffix(".pt"), weights_only=True)
    # every layer was trained: the straight-through gradient reaches the first conv
    for name, w in before.items():
        key = next(k for k in state if k.endswith(f"{name}.weight") and "quantizer" not in k)
        assert not torch.equal(state[key], w), f"{name} did not change: no gradient reached it"
    loaded = Study(tiny_workload)
    bits = load_checkpoint(loaded.quantized_model, stem)
    assert set(bits.values()) == {(4, 4)}
    changed = [a for a, q in loaded.quantized_model.quantizers().items()
               if not torch.allclose(q.amax, amax_before[a].reshape(q.amax.shape))]
    assert bool(changed) == (method == "lsq")  # LSQ learns the steps, STE keeps the calibrated ranges
    with open(stem.parent / "retrain.csv") as fh:
        rows = list(csv.DictReader(fh))
    row = next(r for r in rows if r["method"] == method)
    assert row["label"] == "uniform4" and float(row["after_top1"]) == pytest.approx(after_top1, abs=1e-4)
    # evaluate loads the checkpoint and reproduces the after-QAT metric
    assert main(["evaluate", str(tiny_workload), "--checkpoint", str(stem)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert float(line.split("top1")[1]) == pytest.approx(after_top1, abs=1e-4)


def test_a_bad_checkpoint_is_one_clear_error(tiny_workload, tmp_path, capsys):
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    (tmp_path / "bad.json").write_text('{"format": "mpq-quantized-checkpoint/1"}')
    assert main(["evaluate", str(tiny_workload), "--checkpoint", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.pt" in err[0] and "weights_only" in err[0]
    assert main(["evaluate", str(tiny_workload), "--checkpoint", str(tmp_path / "missing")]) == 2
    assert "missing.json" in capsys.readouterr().err


def test_cosim_runs_a_qat_checkpoint_bit_exactly(tiny_workload, tmp_path, capsys):
    """The LSQ-trained amax and weights go through the simulated RTL like any searched point."""
    stem = tmp_path / "ck"
    assert main(["retrain", str(tiny_workload), "--uniform", "4", "--method", "lsq", "--epochs", "1",
                 "--output", str(stem)]) == 0
    capsys.readouterr()
    assert cosim_main([str(tiny_workload), "--checkpoint", str(stem), "--layers", "features.0.0", "--images", "1",
                       "--out", str(tmp_path / "cosim.csv")]) == 0
    out = capsys.readouterr().out
    assert "features.0.0=4/4" in out and "PASS" in out
    with open(tmp_path / "cosim.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(r["bits"] == "4" for r in rows if r.get("bits"))
