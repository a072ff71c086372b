"""torch.fx graph preparation and batch-norm folding."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torchvision
from tiny_graph_net import Branchy, EveryMergeForm, UnfoldableBatchNorm, images, randomise_batchnorm, tiny_residual
from torch import fx, nn

from sw.core.errors import DataError
from sw.model import bn_folding
from sw.model.calibration import calibrate
from sw.model.graph import prepare_fp32
from sw.model.quantized_model import QuantizedModel, QuantSettings
from sw.nets.models import DigitsCNN


def test_fx_and_module_swap_are_bit_identical_on_the_default_cnn():
    """The default study's model has no graph-only operations: fx changes none of its numbers."""
    model = randomise_batchnorm(DigitsCNN(10))
    data = images(8, 32)
    outputs, names = {}, {}
    for graph in ("fx", "modules"):
        qmodel = QuantizedModel(model, (3, 32, 32), QuantSettings(graph=graph))
        assert isinstance(qmodel.model, fx.GraphModule) == (graph == "fx")
        calibrate(qmodel, [(data, None)], "max")
        qmodel.set_layer_bits({n: (b, b) for n, b in zip(qmodel.layer_names, (5, 4, 3, 6))})
        qmodel.freeze_weights()
        with torch.no_grad():
            outputs[graph] = qmodel(data)
        names[graph] = list(qmodel.quantizers())
    assert names["fx"] == names["modules"]
    assert torch.equal(outputs["fx"], outputs["modules"])


def test_graph_nodes_get_quantizers_with_stable_names():
    model = tiny_residual()
    plain = QuantizedModel(model, (3, 16, 16), QuantSettings(graph="fx"))
    graph_only = {n for n in plain.quantizers() if n.endswith(".output")}
    assert graph_only == {"add.output", "cat.output"}  # the residual torch.add and the concatenation
    with_relu = QuantizedModel(model, (3, 16, 16), QuantSettings(graph="fx", activation_quantizers="relu"))
    outputs = {n for n in with_relu.quantizers() if n.endswith(".output")}
    # the ReLU module keeps its module name; the three functional F.relu calls get relu, relu_1, relu_2
    assert outputs == {"add.output", "cat.output", "stem.2.output", "relu.output", "relu_1.output", "relu_2.output"}
    fp32_layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert sorted(plain.layer_names) == sorted(fp32_layers)
    modules = QuantizedModel(model, (3, 16, 16), QuantSettings(graph="modules"))
    assert not any(n.endswith(".output") for n in modules.quantizers())  # the module swap misses them


def test_every_merge_form_and_functional_relu_gets_a_quantizer_on_the_data_path():
    """operator / Tensor-method / torch-function adds, sub, mul, cat and three functional ReLU forms
    each get a quantizer; tensor-scalar arithmetic does not. Each quantizer is on the path: setting
    only its bits to 2 changes the model's output."""
    torch.manual_seed(0)
    model = EveryMergeForm().eval()
    qmodel = QuantizedModel(model, (3, 8, 8), QuantSettings(graph="fx", activation_quantizers="relu"))
    graph_quantizers = {n for n in qmodel.quantizers() if n.endswith(".output")}
    assert graph_quantizers == {f"{n}.output" for n in ("add", "add_1", "sub", "mul", "cat", "relu", "relu_1", "relu_2")}
    without_relu = QuantizedModel(model, (3, 8, 8), QuantSettings(graph="fx"))
    assert {n for n in without_relu.quantizers() if n.endswith(".output")} == {
        f"{n}.output" for n in ("add", "add_1", "sub", "mul", "cat")}
    data = images(8, 8)
    calibrate(qmodel, [(data, None)], "max")
    with torch.no_grad():
        reference = qmodel(data)
        for name in sorted(graph_quantizers):
            q = qmodel.quantizers()[name]
            q.num_bits = 2
            assert not torch.equal(qmodel(data), reference), f"{name} is not on the data path"
            q.num_bits = 8


def test_resnet_residual_adds_are_named_by_their_block():
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    qmodel = QuantizedModel(model, (3, 32, 32), QuantSettings(graph="fx"))
    adds = sorted(n for n in qmodel.quantizers() if n.endswith(".output"))
    assert adds == sorted(f"layer{i}.{j}.add.output" for i in range(1, 5) for j in range(2))


def test_a_graph_quantizer_really_quantizes_the_add():
    """The add's output lands on its quantizer's grid, and the model's output depends on its bits."""
    model = tiny_residual()
    qmodel = QuantizedModel(model, (3, 16, 16), QuantSettings(graph="fx"))
    data = images(8)
    calibrate(qmodel, [(data, None)], "max")
    q = qmodel.quantizers()["add.output"]
    seen = {}
    q.register_forward_hook(lambda m, i, o: seen.update(x=i[0].detach(), y=o.detach()))
    with torch.no_grad():
        out8 = qmodel(data)
        q.num_bits = 3
        out3 = qmodel(data)
    step = float(q.amax) / (2 ** (3 - 1 + int(q.unsigned)) - 1)
    codes = seen["y"] / step
    assert torch.allclose(codes, codes.round(), atol=1e-4)
    assert len(torch.unique(codes.round())) <= 2 ** 3
    assert not torch.equal(out8, out3)


def test_untraceable_model_falls_back_to_module_swap_with_one_message(caplog):
    with caplog.at_level(logging.WARNING, logger="sw.model.graph"):
        qmodel = QuantizedModel(Branchy(), (3, 8, 8), QuantSettings(graph="fx"))
    assert not isinstance(qmodel.model, fx.GraphModule)
    messages = [r.getMessage() for r in caplog.records if r.name == "sw.model.graph"]
    assert len(messages) == 1 and "falling back to module swap" in messages[0] and "\n" not in messages[0]
    assert qmodel.layer_names == ["conv", "fc"]


# -- batch-norm folding ---------------------------------------------------------------------------
def _relative_change(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("make, shape", [(lambda: randomise_batchnorm(DigitsCNN(10)), (3, 32, 32)),
                                         (tiny_residual, (3, 16, 16)),
                                         (lambda: randomise_batchnorm(torchvision.models.resnet18(num_classes=10)),
                                          (3, 32, 32))])
def test_folding_removes_every_bn_and_keeps_fp32_outputs(make, shape):
    model = make()
    folded = prepare_fp32(model, shape, graph="fx", fold_bn=True)
    assert bn_folding.count_batchnorms(model) > 0 and bn_folding.count_batchnorms(folded) == 0
    x = images(4, shape[1], seed=3)
    with torch.no_grad():
        assert _relative_change(folded(x), model(x)) <= bn_folding.TOLERANCE


def test_folding_formula_against_an_independent_reference():
    """W' = W * gamma / sqrt(var + eps), b' = (b - mean) * gamma / sqrt(var + eps) + beta, in numpy float64."""
    torch.manual_seed(4)
    conv, bn = nn.Conv2d(3, 5, 3, bias=True), nn.BatchNorm2d(5, eps=1e-3)
    randomise_batchnorm(nn.Sequential(bn), seed=4)
    w, b = conv.weight.detach().double().numpy(), conv.bias.detach().double().numpy()
    g, beta = bn.weight.detach().double().numpy(), bn.bias.detach().double().numpy()
    mean, var = bn.running_mean.double().numpy(), bn.running_var.double().numpy()
    bn_folding.fold_into(conv, bn)
    a = g / np.sqrt(var + 1e-3)
    np.testing.assert_allclose(conv.weight.detach().numpy(), (w * a[:, None, None, None]).astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(conv.bias.detach().numpy(), ((b - mean) * a + beta).astype(np.float32), rtol=1e-6)


def test_folding_without_a_graph_folds_sequential_neighbours(caplog):
    model = randomise_batchnorm(DigitsCNN(10))
    folded = prepare_fp32(model, (3, 32, 32), graph="modules", fold_bn=True)
    assert bn_folding.count_batchnorms(folded) == 0
    x = images(2, 32)
    with torch.no_grad():
        assert _relative_change(folded(x), model(x)) <= bn_folding.TOLERANCE


def test_a_wrong_fold_is_caught_by_the_check():
    model = randomise_batchnorm(DigitsCNN(10))
    broken = prepare_fp32(model, (3, 32, 32), graph="fx", fold_bn=True)
    with torch.no_grad():
        broken.get_submodule("features.0.0").bias.add_(1e-3)  # a fold that forgot part of the shift
    with pytest.raises(DataError, match="batch-norm folding changed"):
        bn_folding.check_folding(model, broken, (3, 32, 32))


def test_building_a_folded_model_checks_the_fold(monkeypatch):
    """prepare_fp32 runs the 1e-5 check on every fold it makes: a wrong fold never reaches calibration."""
    def fold_without_shift(layer, bn):  # forgets beta: a plausible bug
        with torch.no_grad():
            bn.bias.zero_()
        original_fold(layer, bn)

    original_fold = bn_folding.fold_into
    monkeypatch.setattr(bn_folding, "fold_into", fold_without_shift)
    for graph in ("fx", "modules"):
        with pytest.raises(DataError, match="batch-norm folding changed the fp32 outputs"):
            QuantizedModel(randomise_batchnorm(DigitsCNN(10)), (3, 32, 32), QuantSettings(graph=graph, fold_bn=True))


def test_batchnorms_that_cannot_fold_stay_with_one_warning(caplog):
    model = randomise_batchnorm(UnfoldableBatchNorm())
    with caplog.at_level(logging.WARNING, logger="sw.model.graph"):
        folded = prepare_fp32(model, (3, 8, 8), graph="fx", fold_bn=True)
    remaining = {n for n, m in folded.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert remaining == {"bn_after_add", "bn_shared"}  # bn3 folded into conv3
    messages = [r.getMessage() for r in caplog.records if r.name == "sw.model.graph"]
    assert len(messages) == 1 and messages[0].startswith("2 batch-norm layer(s) could not be folded")
    x = images(4, 8, seed=1)
    with torch.no_grad():
        assert _relative_change(folded(x), model(x)) <= bn_folding.TOLERANCE


def test_folded_model_quantizes_with_the_same_layer_names():
    model = tiny_residual()
    plain = QuantizedModel(model, (3, 16, 16), QuantSettings(graph="fx"))
    folded = QuantizedModel(model, (3, 16, 16), QuantSettings(graph="fx", fold_bn=True))
    assert folded.layer_names == plain.layer_names
    assert set(folded.quantizers()) == set(plain.quantizers())
    assert folded.layers()["conv1"].bias is not None  # BN's shift became the conv bias
