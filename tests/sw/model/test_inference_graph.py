"""The inference graph (`sw.model.inference_graph`) computes the module graph's tensors, bit for bit,
and is used only where nothing can tell the difference (no gradient, no hooks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from pytorch_quantization import nn as qnn
from torch import nn

from sw.model import inference_graph
from sw.model.calibration import calibrate
from sw.model.quantized_model import QuantizedModel, QuantSettings
from sw.quant.adapter import input_quantizer, set_layer_quantizer


class ReluShapes(nn.Module):
    """Every ReLU arrangement the graph must get right: folded (in-place module on a BN output,
    ReLU6, functional, `torch.relu_` on a conv output, method in front of a linear layer) and not
    folded (two readers of the ReLU, in place on a tensor an add reads too, in place on a view);
    not folded past a max pool (module and functional, with padding); folded into the add quantizer
    before it where that quantizer's output only it reads, and not where the add reads it too;
    quantizers writing over tensors only they read (add outputs, a BN output) and not over a
    tensor another node reads."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.b1 = nn.BatchNorm2d(6)
        self.r1 = nn.ReLU(inplace=True)
        self.c2 = nn.Conv2d(6, 6, 3, padding=1)
        self.b2 = nn.BatchNorm2d(6)
        self.r2 = nn.ReLU6(inplace=True)
        self.c3 = nn.Conv2d(6, 6, 1)
        self.c4 = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.c5, self.c6, self.c8, self.c9, self.c10, self.c14 = (nn.Conv2d(6, 6, 1) for _ in range(6))
        self.c7, self.c11, self.c12, self.c13 = (nn.Conv2d(3, 6, 1) for _ in range(4))
        self.b3, self.b4 = nn.BatchNorm2d(6), nn.BatchNorm2d(6)
        self.c14b, self.c15, self.c16 = nn.Conv2d(6, 6, 1), nn.Conv2d(3, 6, 1), nn.Conv2d(6, 6, 1)
        self.pool, self.r3 = nn.MaxPool2d(3, 1, 1), nn.ReLU(inplace=True)
        self.c17, self.c18, self.c19 = nn.Conv2d(3, 6, 1), nn.Conv2d(3, 6, 1), nn.Conv2d(6, 6, 1)
        self.c20, self.c21, self.c22 = nn.Conv2d(3, 6, 1), nn.Conv2d(3, 6, 1), nn.Conv2d(6, 6, 1)
        self.r4 = nn.ReLU(inplace=True)
        self.fc = nn.Linear(6 * 8 * 8, 4)

    def forward(self, x):
        a = self.r1(self.b1(self.c1(x)))  # in place on a BN output only it reads: folded, written over
        b = self.r2(self.b2(self.c2(a)))  # ReLU6 in place: folded
        shared = F.relu(self.c3(b))  # read by two layers: not folded
        d = self.c4(shared) + self.c5(shared)  # an add nothing else reads (its quantizer writes over it)
        e = self.c6(F.relu(d))  # functional ReLU: folded
        f = self.c7(x)
        g = self.c8(f.relu_())  # in place on f, which the add below reads too: not folded
        h = e + f + g
        k = self.c9(torch.relu_(self.c10(h)))  # in place on a conv output only it reads: folded
        n = self.c12(x)
        m = self.c11(n[:, :3].relu_())  # in place on a view of n, which the add below reads: not folded
        p = self.b3(self.c13(x))
        p = self.c14(p) + p  # c14's quantizer must not write over p
        r = self.c14b(self.pool(self.r3(self.b4(self.c15(x)))))  # ReLU, max pool, layer: not folded
        t = self.c16(F.max_pool2d(F.relu(self.c15(x)), 3, 1, 1))
        u = self.r4(self.c17(x) + self.c18(x))  # in place after an add's quantizer, read by a layer and an add:
        w = self.c19(u) + u  # folded into that quantizer (graph mode), not into c19's
        s = self.c20(x) + self.c21(x)
        y = self.c22(F.relu(s)) + s  # after an add's quantizer that the add reads too: not folded
        return self.fc(torch.flatten(h + k + m + n + p + r + t + w + y, 1).relu())  # method ReLU before a linear layer


def _quantized(model: nn.Module, shape, batches: list[torch.Tensor], unsigned: str = "auto",
               **settings) -> QuantizedModel:
    qmodel = QuantizedModel(model.eval(), shape, QuantSettings(calib_method="max", **settings))
    assert isinstance(qmodel.model, torch.fx.GraphModule)  # traced: the inference graph applies
    calibrate(qmodel, [(x, None) for x in batches], "max", unsigned_activations=unsigned)
    qmodel.freeze_weights()
    return qmodel


def _widen(qmodel: QuantizedModel, factor: float = 1.5) -> None:
    """Activation ranges wider than the data's, so a ReLU6's ceiling and a signed quantizer's
    negative range are not hidden by the quantizer's own clamp."""
    for name, q in qmodel.quantizers().items():
        if not name.endswith(".weight"):
            q.amax = float(q.amax) * factor


def _both(qmodel: QuantizedModel, x: torch.Tensor, monkeypatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(inference graph, module graph) outputs for the same input (copies: in-place passes)."""
    with torch.no_grad():
        fast = qmodel(x.clone())
        with monkeypatch.context() as m:
            m.setattr(QuantizedModel, "use_inference_graph", False)
            modules = qmodel(x.clone())
    return fast, modules


def _bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.view(torch.int32), b.view(torch.int32))


def _count_layer_forwards(monkeypatch) -> list[int]:
    calls = [0]
    forward = qnn.QuantConv2d.forward

    def counted(self, x):
        calls[0] += 1
        return forward(self, x)

    monkeypatch.setattr(qnn.QuantConv2d, "forward", counted)
    return calls


@pytest.mark.parametrize("activations", ["none", "relu"])
@pytest.mark.parametrize("unsigned", ["auto", "never"])
def test_relu_arrangements_give_the_module_graphs_tensors(activations, unsigned, monkeypatch):
    torch.manual_seed(0)
    model = ReluShapes()
    for bn in (model.b1, model.b2, model.b3, model.b4):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.1, 2.0)
    model.b2.weight.data.mul_(20.0)  # well beyond the ReLU6 ceiling
    x = [torch.randn(4, 3, 8, 8) * 3 for _ in range(2)]
    qmodel = _quantized(model, (3, 8, 8), x, unsigned, activation_quantizers=activations)
    rng = np.random.default_rng(1)
    for _ in range(4):
        qmodel.set_layer_bits({n: (int(b), int(b)) for n, b in zip(qmodel.layer_names,
                                                                   rng.integers(2, 9, len(qmodel.layer_names)))})
        _widen(qmodel)
        for batch in x:
            fast, modules = _both(qmodel, batch, monkeypatch)
            assert _bitwise_equal(fast, modules)
    with torch.no_grad():
        fp32 = model(x[0])
    assert not torch.equal(fast, fp32)  # it did quantize
    nodes = inference_graph.build(qmodel.model).graph.nodes  # the graph the forwards above ran
    relu_after = [n for n in nodes if n.target is inference_graph.activation and n.args[5]]
    assert len(relu_after) == 1  # r4 (in place on a quantizer's output: never folded into the quantizer after it)
    assert not any(n.op == "call_module" and n.target == "r4" for n in nodes)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "digits_cnn"])
def test_models_give_the_module_graphs_logits(name, monkeypatch):
    """Random bits per layer, and the model's own input batch left unchanged (in-place passes
    write only over tensors the graph made)."""
    from sw.nets.models import DigitsCNN

    torch.manual_seed(0)
    model = DigitsCNN(10) if name == "digits_cnn" else getattr(torchvision.models, name)(weights=None, num_classes=10)
    data = [torch.rand(4, 3, 32, 32) for _ in range(2)]
    qmodel = _quantized(model, (3, 32, 32), data)
    rng = np.random.default_rng(0)
    for _ in range(3):
        n = len(qmodel.layer_names)
        qmodel.set_layer_bits(dict(zip(qmodel.layer_names, [(int(b), int(b)) for b in rng.integers(2, 9, n)])))
        before = data[0].clone()
        with torch.no_grad():
            fast = qmodel(data[0])
        assert torch.equal(before, data[0])
        _, modules = _both(qmodel, data[0], monkeypatch)
        assert _bitwise_equal(fast, modules)


def test_used_without_gradient_and_hooks_only(monkeypatch):
    """No layer module runs in the inference graph; with a gradient or a hook the module graph runs,
    and a hook sees what it saw before."""
    torch.manual_seed(0)
    model = ReluShapes()
    x = torch.randn(2, 3, 8, 8)
    qmodel = _quantized(model, (3, 8, 8), [x])
    calls = _count_layer_forwards(monkeypatch)
    with torch.no_grad():
        fast = qmodel(x)
    assert calls[0] == 0
    slow = qmodel(x)  # gradient on
    assert calls[0] == 24 and _bitwise_equal(fast, slow.detach())  # 24 QuantConv2d calls
    seen = []
    handle = qmodel.layers()["c3"].register_forward_hook(lambda m, i, o: seen.append(i[0].clone()))
    try:
        with torch.no_grad():
            hooked = qmodel(x)
    finally:
        handle.remove()
    assert calls[0] == 48 and len(seen) == 1 and _bitwise_equal(fast, hooked)
    assert seen[0].min() >= 0  # the hooked layer saw its ReLU'd input


def test_quantizer_states_take_the_module_path(monkeypatch):
    """A disabled or hooked quantizer is called as a module on the ReLU'd input, also one swapped
    in after the graph was built without `replace_quantizer`."""
    import copy

    torch.manual_seed(0)
    model = ReluShapes()
    x = torch.randn(2, 3, 8, 8)
    qmodel = _quantized(model, (3, 8, 8), [x])
    with torch.no_grad():
        qmodel(x)  # builds the inference graph
    layer = qmodel.layers()["c2"]  # behind the folded in-place ReLU
    q = copy.deepcopy(input_quantizer(layer))
    set_layer_quantizer(layer, "input", q)
    seen = []
    handle = q.register_forward_pre_hook(lambda m, i: seen.append(i[0].clone()))
    try:
        fast, modules = _both(qmodel, x, monkeypatch)
    finally:
        handle.remove()
    assert _bitwise_equal(fast, modules) and len(seen) == 2 and torch.equal(seen[0], seen[1])
    assert seen[0].min() >= 0
    q.disable()
    fast, modules = _both(qmodel, x, monkeypatch)
    assert _bitwise_equal(fast, modules)
    qmodel.activation_quantizers["add_4"].disable()  # its in-place ReLU (r4) then runs on the add output
    fast, modules = _both(qmodel, x, monkeypatch)
    assert _bitwise_equal(fast, modules)


def test_batch_norm_in_training_mode_runs_as_its_module(monkeypatch):
    """Eval-mode batch norms are called as `F.batch_norm`; in training mode (no gradient, e.g.
    re-estimating statistics) the module runs: batch statistics, running statistics updated."""
    import copy

    torch.manual_seed(0)
    x = torch.randn(4, 3, 8, 8)
    qmodel = _quantized(ReluShapes(), (3, 8, 8), [x])
    with torch.no_grad():
        evaluated = qmodel(x)
    other = copy.deepcopy(qmodel)
    before = qmodel.model.b1.running_mean.clone()
    qmodel.train()
    other.train()
    with torch.no_grad():
        fast = qmodel(x)
        monkeypatch.setattr(QuantizedModel, "use_inference_graph", False)
        modules = other(x)
    assert _bitwise_equal(fast, modules) and not torch.equal(fast, evaluated)
    for name in ("b1", "b2", "b3", "b4"):
        ours, theirs = getattr(qmodel.model, name), getattr(other.model, name)
        assert torch.equal(ours.running_mean, theirs.running_mean) and torch.equal(ours.running_var, theirs.running_var)
    assert not torch.equal(before, qmodel.model.b1.running_mean)
