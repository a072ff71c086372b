"""Deployable forms against the fake-quant model: integer-only reference model and QDQ ONNX in onnxruntime."""

from __future__ import annotations

import csv
import json
from fractions import Fraction

import numpy as np
import onnx
import pytest
import torch
from tiny_graph_net import images
from tiny_quantized import calibrated_residual
from torch.utils._python_dispatch import TorchDispatchMode

from sw.cli import main
from sw.deploy.integer_model import IntegerModel, fixed_point, rne_shift
from sw.deploy.lowering import UnsupportedOp, lower
from sw.deploy.onnx_export import OnnxRunner, exposed_names, onnx_run, to_onnx
from sw.deploy.verification import compare, integer_run
from sw.model.calibration import Recipe
from sw.model.quantized_model import QuantizedModel
from sw.quant.clipping import HISTOGRAM_METHODS
from sw.quant.presets import AffineQuantizer, Pow2Quantizer

MIXED = {"stem.0": (3, 8), "conv1": (5, 4), "conv2": (4, 3), "side": (8, 5), "head": (6, 6), "fc": (7, 8)}


# -- integer arithmetic against exact rationals ----------------------------------------------------
def test_rne_shift_is_round_half_to_even_of_the_exact_quotient():
    rng = np.random.default_rng(0)
    x = rng.integers(-2 ** 40, 2 ** 40, size=4000)
    shift = rng.integers(1, 20, size=4000)
    x[:8] = [5, -5, 3, -3, 7, -7, 12, -12]  # exact ties at shift 1 and 3
    shift[:8] = [1, 1, 1, 1, 1, 1, 3, 3]
    got = rne_shift(torch.from_numpy(x), torch.from_numpy(shift)).tolist()
    expected = [round(Fraction(int(a), 2 ** int(s))) for a, s in zip(x, shift)]  # Python rounds half to even
    assert got == expected


def test_fixed_point_multipliers_are_within_half_a_unit_of_the_last_place():
    rng = np.random.default_rng(1)
    m = np.exp(rng.uniform(np.log(1e-9), np.log(1e3), size=2000))
    m0, shift = fixed_point(m)
    assert (m0 <= 2 ** 30).all() and (m0 >= 2 ** 29).all()  # 30 significant bits
    error = np.abs(np.array([Fraction(int(a), 2 ** int(s)) - Fraction(float(b)) for a, s, b in zip(m0, shift, m)],
                            dtype=object))
    assert all(e <= Fraction(1, 2 ** int(s + 1)) for e, s in zip(error, shift))
    m0, common = fixed_point(m[:5], np.full(5, 40), limit=60)
    assert (common == 40).all() and np.allclose(m0 / 2.0 ** 40, m[:5], rtol=1e-9)


# -- models ---------------------------------------------------------------------------------------
def _quantized(preset: str = "hw", fold_bn: bool = False, graph: str = "fx") -> QuantizedModel:
    qmodel = calibrated_residual("max", images(32, seed=1), preset=preset, fold_bn=fold_bn, graph=graph)
    qmodel.set_layer_bits(MIXED)
    qmodel.freeze_weights()
    return qmodel


class _DtypeRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.dtypes = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else [out]):
            if isinstance(t, torch.Tensor):
                self.dtypes.add(t.dtype)
        return out


def test_the_integer_hot_path_computes_with_integers_only():
    model = IntegerModel.from_graph(lower(_quantized()))
    codes = model.quantize_input(images(4))
    with _DtypeRecorder() as recorder:
        model.run(codes)
    assert recorder.dtypes and all(not d.is_floating_point for d in recorder.dtypes), recorder.dtypes


@pytest.mark.parametrize("preset", ["hw", "tensorrt", "snpe", "pow2"])
@pytest.mark.parametrize("fold_bn", [False, True])
def test_integer_model_equals_fake_quant_up_to_requantization_rounding(preset, fold_bn):
    qmodel = _quantized(preset, fold_bn)
    graph = lower(qmodel)
    model = IntegerModel.from_graph(graph)
    params = {op.attrs["quantizer"]: op.attrs["params"] for op in graph.quant_ops()}
    data = [(images(32, seed=2), None)]
    result = compare(qmodel, integer_run(model), params, data)
    assert set(result.tensors) == set(params)
    assert result.elements > 20000
    assert result.code_mismatches <= 1e-4 * result.elements  # codes at an fp32 rounding boundary only
    assert all(t.max_code_diff <= 1 for t in result.tensors.values())
    assert result.argmax_agreement >= 31 / 32
    assert model.fits_int32 and model.static_bound < 2 ** 31
    assert max(model.max_abs.values()) <= model.static_bound
    if preset == "pow2" and fold_bn:  # every multiplier a power of two: nothing to round differently
        assert result.code_mismatches == 0


def test_integer_model_file_round_trip(tmp_path):
    model = IntegerModel.from_graph(lower(_quantized("snpe")))
    model.save(tmp_path / "m")
    again = IntegerModel.load(tmp_path / "m")
    x = images(8, seed=5)
    assert torch.equal(model(x), again(x))
    assert "float" not in json.dumps([op["ints"] for op in json.loads((tmp_path / "m.json").read_text())["ops"]])


def test_weights_off_the_integer_grid_are_refused():
    qmodel = _quantized()
    layer = qmodel.layers()["conv2"]
    with torch.no_grad():
        layer.weight.data = layer.weight.data + 1e-4  # e.g. a correction applied after quantization
    with pytest.raises(UnsupportedOp, match="conv2: its weights are not on the quantizer's integer grid"):
        lower(qmodel)


def test_module_swap_residual_add_is_refused_with_advice():
    qmodel = _quantized(graph="modules")
    with pytest.raises(UnsupportedOp, match="quantization.graph: fx"):
        IntegerModel.from_graph(lower(qmodel))


# -- ONNX ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["hw", "tensorrt", "snpe", "pow2"])
def test_qdq_onnx_in_onnxruntime_equals_fake_quant(preset):
    qmodel = _quantized(preset, fold_bn=False)
    graph = lower(qmodel)
    params = {op.attrs["quantizer"]: op.attrs["params"] for op in graph.quant_ops()}
    model = to_onnx(graph, expose_quantizers=True)
    result = compare(qmodel, onnx_run(OnnxRunner(model, optimize=False), exposed_names(graph)), params,
                     [(images(32, seed=3), None)])
    assert set(result.tensors) == set(params)
    assert result.code_mismatches <= 1e-4 * result.elements and result.max_tensor_diff < 1.0
    assert result.argmax_agreement >= 31 / 32 and result.logits_max_abs_diff < 0.05
    # bits below 8 travel in int8/uint8 containers clipped to the b-bit code range
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    clips = {n.output[0]: n for n in model.graph.node if n.op_type == "Clip" and n.output[0].endswith(".clip")}
    for address, p in params.items():
        if (p.lo, p.hi) not in ((-128, 127), (0, 255)):
            node = clips[f"{address}.clip"]
            assert (int(inits[node.input[1]]), int(inits[node.input[2]])) == (p.lo, p.hi)
    # weight codes: INT4 / UINT4 initialisers at <= 4 bits (opset 21), int8 / uint8 above
    types = {t.name: t.data_type for t in model.graph.initializer}
    four, eight = (onnx.TensorProto.INT4, onnx.TensorProto.UINT4), (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    for layer, (wbits, _) in MIXED.items():
        assert types[f"{layer}.weight_codes"] in (four if wbits <= 4 else eight), (layer, wbits)
        assert types[f"{layer}.weight_zero_point"] == types[f"{layer}.weight_codes"]
    assert model.opset_import[0].version >= 21
    assert inits["conv2.weight_codes"].min() >= params_lo(qmodel, "conv2")


def params_lo(qmodel, layer: str) -> int:
    from sw.quant.presets import quant_params

    return quant_params(qmodel.quantizers()[f"{layer}.weight"]).lo


# -- calibration features (sw.quant.clipping, sw.quant.bias_correction, sw.quant.bit_allocation) ---------------------
LAYER_METHODS = {"stem.0": "aciq", "conv1": "entropy", "conv2": "mse", "side": "aciq", "head": "entropy", "fc": "mse"}


def _recipe_quantized(recipe: Recipe, preset: str = "hw") -> QuantizedModel:
    histogram = bool({recipe.method, *recipe.search_methods} & set(HISTOGRAM_METHODS))
    qmodel = calibrated_residual(recipe, images(32, seed=1), preset=preset,
                                 calib_method="histogram" if histogram else "max", num_bins=256)
    qmodel.freeze_weights()
    return qmodel


def _expected_scale(q, amax: torch.Tensor, bits: int, weight: torch.Tensor | None = None) -> np.ndarray:
    """The scale each preset's rule gives for a clipping's amax at `bits` (numpy, independent of
    sw.quant.presets); pow2: an activation's 2^k rounds down, a weight channel's to whichever of
    the two neighbouring powers of two gives `weight` the smaller squared error."""
    a = amax.double().numpy().reshape(-1)
    if isinstance(q, AffineQuantizer):  # observed range clipped to [-amax, amax], widened to contain 0
        observed_lo, observed_hi = q.extra_calibration()["range"]
        lo = min(max(observed_lo, -float(a.max())), 0.0)
        hi = max(min(observed_hi, float(a.max())), 0.0)
        return np.float32(np.float32(2 ** bits - 1) / (np.float32(hi) - np.float32(lo)))
    max_bound = 2.0 ** (bits - 1 + int(q.unsigned)) - 1
    if isinstance(q, Pow2Quantizer):
        down = np.exp2(np.floor(np.log2(max_bound / a))).astype(np.float32)
        if weight is None:
            return down
        w = weight.detach().numpy().reshape(len(a), -1).astype(np.float32)
        errors = []
        for scale in (down, (down * 2).astype(np.float32)):
            s = scale.reshape(-1, 1)
            codes = np.clip(np.rint(w * s), -max_bound - 1, max_bound)
            errors.append((((codes / s).astype(np.float64) - w) ** 2).sum(axis=1))
        return np.where(errors[1] < errors[0], down * 2, down).astype(np.float32)
    return (np.float32(max_bound) / a.astype(np.float32)).astype(np.float32)


@pytest.mark.parametrize("preset", ["hw", "pow2", "snpe"])
def test_deploy_forms_follow_bit_aware_clipping_and_per_layer_methods(preset):
    """Each input quantizer is exported with the amax its chosen clipping method gives at its bits,
    through the preset's rule; bias correction (mean) is in the exported bias; the integer model and
    onnxruntime still compute what fake quant does."""
    recipe = Recipe(method="mse", weight_method="aciq", bias_correction="mean", search_methods=("mse", "entropy", "aciq"))
    qmodel = _recipe_quantized(recipe, preset)
    qmodel.set_layer_bits(MIXED, LAYER_METHODS)
    graph = lower(qmodel)
    params = {op.attrs["quantizer"]: op.attrs["params"] for op in graph.quant_ops()}
    amaxes = set()
    for layer, method in LAYER_METHODS.items():
        q = qmodel.quantizers()[f"{layer}.input"]
        bits = MIXED[layer][1]
        amax = q.clippings[method].amax(bits, q.unsigned)
        amaxes.add(round(float(amax), 6))
        np.testing.assert_array_equal(params[f"{layer}.input"].scale.numpy().reshape(-1), _expected_scale(q, amax, bits))
        wq = qmodel.quantizers()[f"{layer}.weight"]
        w_amax = wq.clipping.amax(MIXED[layer][0], wq.unsigned)  # ACIQ weight clipping at the weight bits
        conv = next(op for op in graph.ops if op.kind in ("conv", "linear") and op.attrs["layer"] == layer)
        np.testing.assert_array_equal(conv.attrs["weight_params"].scale.numpy().reshape(-1),
                                      _expected_scale(wq, w_amax, MIXED[layer][0], qmodel.fp32_weight(layer)).reshape(-1))
    assert len(amaxes) == len(LAYER_METHODS)  # the methods and bits really differ
    data = [(images(32, seed=2), None)]
    for name, deployed in (("integer", integer_run(IntegerModel.from_graph(graph))),
                           ("onnx", onnx_run(OnnxRunner(to_onnx(graph, expose_quantizers=True), optimize=False),
                                             exposed_names(graph)))):
        result = compare(qmodel, deployed, params, data)
        assert set(result.tensors) == set(params), name
        assert result.code_mismatches <= 1e-4 * result.elements, name
        assert all(t.max_code_diff <= 1 for t in result.tensors.values()), name
        assert result.argmax_agreement >= 31 / 32, name
    conv2 = next(op for op in graph.ops if op.kind == "conv" and op.attrs["layer"] == "conv2")
    qmodel.unfreeze_weights()  # puts the fp32 bias back
    assert not torch.equal(conv2.attrs["bias"], qmodel.layers()["conv2"].bias)  # the mean correction went into the bias


@pytest.mark.parametrize("recipe, message", [
    (Recipe(bit_allocation=True), "layer stem.0: calibration.bit_allocation gives each output channel its own weight bits"),
    (Recipe(bias_correction="mean_variance"), "layer stem.0: calibration.bias_correction: mean_variance rescales")])
def test_calibration_features_without_an_integer_form_are_refused(recipe, message):
    qmodel = _recipe_quantized(recipe)
    qmodel.set_layer_bits(MIXED)
    with pytest.raises(UnsupportedOp, match=message):
        lower(qmodel)


# -- the export command on the (tiny) default workload --------------------------------------------
def test_integer_model_vs_fake_quant_on_the_default_workload(tiny_workload):
    """The trained digits CNN at a mixed configuration: identical codes, logits and held-out accuracy."""
    from sw.study.study import Study

    study = Study(tiny_workload)
    study.quantized_model.set_layer_bits(dict(zip(study.quantized_model.layer_names, [(5, 5), (4, 4), (3, 3), (6, 6)])))
    graph = lower(study.quantized_model)
    model = IntegerModel.from_graph(graph)
    params = {op.attrs["quantizer"]: op.attrs["params"] for op in graph.quant_ops()}
    result = compare(study.quantized_model, integer_run(model), params, study.batches("reevaluation"))
    assert result.code_mismatches <= 1e-5 * result.elements
    assert result.logits_max_abs_diff < 1e-3
    assert study.evaluate(model, "reevaluation") == study.evaluate(study.quantized_model, "reevaluation")
    assert model.fits_int32


def test_export_command_writes_verified_onnx_int_and_checkpoint(tiny_workload, capsys):
    assert main(["export", str(tiny_workload), "--uniform", "5"]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime" in out and "integer" in out
    from sw.study.study import Study

    folder = Study(tiny_workload).results_dir / "deploy"
    with open(folder / "deploy.csv") as fh:
        rows = list(csv.DictReader(fh))
    row = next(r for r in rows if r["label"] == "uniform5")
    fake, onnx_acc, int_acc = (float(row[k]) for k in ("fakequant_top1", "onnx_top1", "int_top1"))
    assert abs(onnx_acc - fake) <= 0.001 and row["onnx_within_tolerance"] == "True"
    assert abs(int_acc - fake) <= 1 / 120 and row["int_fits_int32"] == "True"
    details = json.loads((folder / "uniform5.json").read_text())
    assert set(details["onnx"]["comparison"]["tensors"]) == set(details["int"]["comparison"]["tensors"])
    assert (folder / "uniform5.onnx").exists() and (folder / "uniform5_int.pt").exists()
    # the state_dict export is a checkpoint evaluate loads, at the same accuracy
    assert main(["evaluate", str(tiny_workload), "--checkpoint", str(folder / "uniform5_state")]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1].split("top1")[1].strip()
    assert printed == f"{fake:.4f}"  # evaluate prints 4 decimals
    # re-running replaces the row, it does not duplicate it
    assert main(["export", str(tiny_workload), "--uniform", "5", "--format", "int"]) == 0
    with open(folder / "deploy.csv") as fh:
        assert [r["label"] for r in csv.DictReader(fh)].count("uniform5") == 1


def test_export_and_retrain_refuse_per_channel_weight_bits_with_one_line(tiny_workload, tmp_path, capsys):
    """calibration.bit_allocation has no integer / ONNX / QAT form yet: one error line naming the
    workload, exit 2, nothing written (the trained CNN of the tiny workload is shared)."""
    import yaml

    from sw.study.study import Study

    raw = yaml.safe_load(tiny_workload.read_text())
    raw["name"] = "tiny_alloc"
    raw["calibration"] = {"method": "max", "bit_allocation": True}
    path = tmp_path / "alloc.yaml"
    path.write_text(yaml.safe_dump(raw))
    results = Study(path).results_dir
    for command, expected in ((["export", str(path), "--uniform", "4"], "cannot export: layer"),
                              (["retrain", str(path), "--uniform", "4", "--method", "ste", "--epochs", "1"],
                               "calibration.bit_allocation: quantizer")):
        assert main(command) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(path) in err[0] and expected in err[0] and "bit_allocation" in err[0], err
    assert not (results / "deploy").exists() and not (results / "retrain").exists()


@pytest.mark.slow
def test_default_study_best_point_in_onnxruntime(tmp_path, capsys):
    """The default study (digits CNN): search, then its best point through the integer model and onnxruntime."""
    import yaml

    from sw.config.workload import default_workload_path

    raw = yaml.safe_load(default_workload_path().read_text())
    raw["results"] = {"dir": str(tmp_path / "results")}
    path = tmp_path / "digits_cnn.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["explore", str(path)]) == 0
    assert main(["export", str(path), "--point", "best"]) == 0
    with open(tmp_path / "results" / "digits_cnn" / "deploy" / "deploy.csv") as fh:
        row = next(csv.DictReader(fh))
    assert abs(float(row["onnx_top1"]) - float(row["fakequant_top1"])) <= 0.001
    assert abs(float(row["int_top1"]) - float(row["fakequant_top1"])) <= 0.003
    assert row["int_fits_int32"] == "True"
