"""QuantizedModel numerics against an independent numpy formula, and its addressing and speed path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from fused_kernel import require_fused_kernel
from quant_reference import symmetric_reference
from torch import nn

from sw.model.calibration import calibrate
from sw.model.quantized_model import QuantizedModel, QuantSettings
from sw.nets.models import DigitsCNN
from sw.quant.adapter import QuantizerBase, hook_name, input_quantizer, weight_quantizer


def _model_with_known_inputs():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5)).eval()


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8, 12, 16])
@pytest.mark.parametrize("narrow", [False, True])
@pytest.mark.parametrize("per_channel", [False, True])
def test_weight_quantizer_matches_independent_formula(bits, narrow, per_channel):
    model = _model_with_known_inputs()
    qmodel = QuantizedModel(model, (3, 8, 8), QuantSettings(per_channel_weights=per_channel, narrow_range=narrow))
    calibrate(qmodel, [(torch.rand(8, 3, 8, 8), None)], "max")
    qmodel.set_uniform_bits(bits)
    conv = qmodel.layers()["0"]
    w = model[0].weight.detach().numpy()
    amax = np.abs(w).reshape(4, -1).max(axis=1).reshape(4, 1, 1, 1) if per_channel else np.abs(w).max().reshape(1)
    expected = symmetric_reference(w, amax, bits, False, narrow)[0]
    got = weight_quantizer(conv)(conv.weight).detach().numpy()
    np.testing.assert_array_equal(got, expected)
    # grid check independent of the formula: every value is an integer multiple of the step
    steps = got / (amax / (2 ** (bits - 1) - 1))
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_unsigned_input_quantizer_after_relu_matches_formula(bits):
    model = _model_with_known_inputs()
    qmodel = QuantizedModel(model, (3, 8, 8), QuantSettings())
    data = torch.rand(16, 3, 8, 8)
    calibrate(qmodel, [(data, None)], "max", unsigned_activations="auto")
    q = input_quantizer(qmodel.layers()["3"])
    assert q.unsigned, "inputs after ReLU are non-negative: calibration must make the quantizer unsigned"
    assert not weight_quantizer(qmodel.layers()["0"]).unsigned
    q.num_bits = bits
    x = torch.relu(model[0](data)).flatten(1).detach()
    # ties: values exactly half-way between grid points must round to even
    amax = float(q.amax)
    step = amax / (2 ** bits - 1)
    ties = torch.tensor([0.5 * step, 1.5 * step, 2.5 * step, 0.0, amax, 2 * amax], dtype=torch.float32)
    for inputs in (x, ties):
        expected = symmetric_reference(inputs.numpy(), np.float32(amax).reshape(1), bits, True, False)[0]
        np.testing.assert_array_equal(q(inputs).detach().numpy(), expected)


def test_round_half_to_even_on_exact_ties():
    model = _model_with_known_inputs()
    qmodel = QuantizedModel(model, (3, 8, 8), QuantSettings())
    q = qmodel.model_input
    q.amax = 127.0  # scale exactly 1 at 8 bits
    q.num_bits = 8
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, 126.5, 127.5, 300.0, -300.0])
    assert q(x).tolist() == [0.0, 2.0, 2.0, -0.0, -2.0, 126.0, 127.0, 127.0, -128.0]


def test_frozen_weights_give_identical_outputs():
    """The speed path (weights quantized once per candidate) is bit-identical to per-forward quantization."""
    torch.manual_seed(1)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    qmodel = QuantizedModel(model, (3, 32, 32), QuantSettings())
    data = torch.rand(4, 3, 32, 32)
    calibrate(qmodel, [(data, None)], "max")
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for _ in range(3):
            bits = {n: (int(rng.integers(2, 9)), int(rng.integers(2, 9))) for n in qmodel.layer_names}
            qmodel.unfreeze_weights()
            qmodel.set_layer_bits(bits)
            reference = qmodel(data)
            qmodel.freeze_weights()
            qmodel.set_layer_bits(bits)
            torch.testing.assert_close(qmodel(data), reference, rtol=0, atol=0)
            qmodel.set_layer_bits({n: (8, 8) for n in qmodel.layer_names})
            qmodel.set_layer_bits(bits)  # from the per-(layer, bits) cache
            torch.testing.assert_close(qmodel(data), reference, rtol=0, atol=0)


def test_addressing_and_layer_order():
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    qmodel = QuantizedModel(model, (3, 32, 32), QuantSettings(activation_quantizers="relu"))
    fp32_layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert sorted(qmodel.layer_names) == sorted(fp32_layers)
    assert qmodel.layer_names[0] == "conv1" and qmodel.layer_names[-1] == "fc"
    names = set(qmodel.quantizers())
    assert "model_input" in names and "conv1.weight" in names and "fc.input" in names
    assert "relu.output" in names and "layer1.0.relu.output" in names
    assert len([n for n in names if n.endswith(".weight")]) == 21
    sizes = {s.name: s for s in qmodel.layer_sizes}
    assert sizes["conv1"].weights == 64 * 3 * 7 * 7
    assert sizes["conv1"].inputs == 3 * 32 * 32
    assert sizes["conv1"].macs == 64 * 16 * 16 * 3 * 7 * 7
    assert sizes["fc"].macs == 512 * 10


def test_set_bits_per_layer_and_input_quantization_changes_output():
    model = DigitsCNN(10).eval()
    qmodel = QuantizedModel(model, (3, 32, 32), QuantSettings())
    data = torch.rand(8, 3, 32, 32)
    calibrate(qmodel, [(data, None)], "max")
    qmodel.freeze_weights()
    qmodel.set_uniform_bits(8)
    with torch.no_grad():
        out8 = qmodel(data)
        first = qmodel.layer_names[0]
        qmodel.set_layer_bits({first: (8, 2)})
        assert qmodel.layer_bits()[first] == (8, 2)
        out_in2 = qmodel(data)
        qmodel.set_layer_bits({first: (2, 8)})
        out_w2 = qmodel(data)
        fp32 = model(data)
    assert not torch.equal(out8, out_in2) and not torch.equal(out8, out_w2)
    assert (out8 - fp32).abs().max() < (out_w2 - fp32).abs().max()


ACTIVATION_PATHS = {  # (fused, serial_below, grain): every way ActivationQuantizer can compute a static fake quant
    "fused": (True, 1 << 20, 32768),
    "fused, in chunks on every thread": (True, 1 << 20, 64),
    "torch ops on one thread": (False, 1 << 20, 32768),
    "torch ops on the thread pool": (False, 0, 32768),
}


@pytest.mark.parametrize("path", ACTIVATION_PATHS)
@pytest.mark.parametrize("unsigned", [False, True])
@pytest.mark.parametrize("narrow", [False, True])
def test_activation_quantizer_is_bit_identical_to_the_library(unsigned, narrow, path, monkeypatch, two_threads):
    """The lean activation paths must equal pytorch-quantization's TensorQuantizer bit for bit:
    every bit width, amax at and below the library's zero threshold (2^-24), signed zeros,
    denormals, values far outside the range, inf and NaN."""
    from pytorch_quantization.nn import TensorQuantizer
    from pytorch_quantization.tensor_quant import QuantDescriptor

    from sw.model.quantized_model import ActivationQuantizer
    from sw.quant import fused_quant

    fused, serial_below, grain = ACTIVATION_PATHS[path]
    if fused:
        require_fused_kernel()
    monkeypatch.setattr(ActivationQuantizer, "fused", fused)
    monkeypatch.setattr(ActivationQuantizer, "serial_below", serial_below)
    monkeypatch.setattr(fused_quant, "GRAIN", grain)
    gen = torch.Generator().manual_seed(7)
    inf, nan = float("inf"), float("nan")
    for bits in range(1 if unsigned else 2, 17):
        for amax in (0.0, 1e-30, 2.0 ** -24, 2.0 ** -24 * 1.0000001, 3e-6, 0.37, 1.0, 6.5, 1234.5):
            desc = QuantDescriptor(num_bits=bits, unsigned=unsigned, narrow_range=narrow, amax=amax)
            ours, theirs = ActivationQuantizer(desc), TensorQuantizer(desc)
            x = torch.randn(4099, generator=gen) * amax * 1.5
            x = torch.cat([x, torch.tensor([0.0, -0.0, amax, -amax, 2 * amax, 1e-40, -1e-40, 1e30, -1e30, inf, -inf])])
            if unsigned:
                x = x.abs()
            x = x.reshape(-1, 3, 5)
            a, b = ours(x), theirs(x)
            assert torch.equal(a.view(torch.int32), b.view(torch.int32)), (bits, amax)
            x[0, 0, 0] = nan  # NaN stays NaN; an unsigned min() is then NaN and nothing is raised
            x[1, 2, 3] = -0.5 if unsigned else x[1, 2, 3]
            assert torch.equal(ours(x).view(torch.int32), theirs(x).view(torch.int32))
            ours.amax = amax * 0.5  # a changed amax must not reuse a stale cached scale
            theirs.amax = amax * 0.5
            assert torch.equal(ours(x).view(torch.int32), theirs(x).view(torch.int32))
    if unsigned:  # a negative input is an error in both, as in the library
        for q in (ours, theirs):
            with pytest.raises(TypeError, match="Negative"):
                q(-x[1:].abs() - 1e-3)
        # ... unless a NaN anywhere (here far from the negative value: another chunk) makes min() NaN
        far = torch.rand(8192, generator=gen)
        far[0], far[-1] = -0.5, nan
        assert torch.equal(ours(far).view(torch.int32), theirs(far).view(torch.int32))


@pytest.mark.parametrize("clamp", ["relu", "relu6"])
@pytest.mark.parametrize("unsigned", [False, True])
def test_fused_clamp_equals_the_relu_then_the_library(clamp, unsigned):
    """`fused_forward` with a ReLU / ReLU6 in front, out of place and over its input, against
    torch's relu / hardtanh and then the library's quantizer: NaN, infinities, signed zeros,
    values beyond 6 and below zero."""
    from pytorch_quantization.nn import TensorQuantizer
    from pytorch_quantization.tensor_quant import QuantDescriptor

    from sw.model.inference_graph import CLAMPS
    from sw.model.quantized_model import ActivationQuantizer

    require_fused_kernel()
    gen = torch.Generator().manual_seed(5)
    relu = torch.relu if clamp == "relu" else (lambda t: torch.nn.functional.hardtanh(t, 0.0, 6.0))
    for bits in (2, 4, 8):
        for amax in (0.5, 6.0, 9.0):
            desc = QuantDescriptor(num_bits=bits, unsigned=unsigned, amax=amax)
            x = torch.cat([torch.randn(5000, generator=gen) * 8, torch.tensor(
                [0.0, -0.0, 6.0, 6.0001, -1e-40, 1e-40, float("inf"), -float("inf"), float("nan")])])
            library = TensorQuantizer(desc)(relu(x))
            with torch.no_grad():
                ours = ActivationQuantizer(desc).fused_forward(x, CLAMPS[clamp])
                over = x.clone()
                in_place = ActivationQuantizer(desc).fused_forward(over, CLAMPS[clamp], in_place=True)
            assert torch.equal(ours.view(torch.int32), library.view(torch.int32)), (bits, amax)
            assert in_place.data_ptr() == over.data_ptr()
            assert torch.equal(in_place.view(torch.int32), library.view(torch.int32)), (bits, amax)


def test_activation_quantizer_passes_the_library_gradient():
    """Inputs that need a gradient take the library's path: straight-through inside [-amax, amax]."""
    from pytorch_quantization.nn import TensorQuantizer
    from pytorch_quantization.tensor_quant import QuantDescriptor

    from sw.model.quantized_model import ActivationQuantizer

    desc = QuantDescriptor(num_bits=4, amax=2.0)
    x = torch.linspace(-3.0, 3.0, 61, requires_grad=True)
    ActivationQuantizer(desc)(x).pow(2).sum().backward()
    ours, x.grad = x.grad, None
    TensorQuantizer(desc)(x).pow(2).sum().backward()
    assert torch.equal(ours, x.grad) and ours.abs().sum() > 0


def frozen_4bit(name: str, batch: int) -> tuple[nn.Module, QuantizedModel, list[torch.Tensor]]:
    """A randomly initialised torchvision model, max-calibrated on two random batches, 4 bits, weights frozen."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None, num_classes=10).eval()
    data = [torch.rand(batch, 3, 32, 32) for _ in range(2)]
    qmodel = QuantizedModel(model, (3, 32, 32), QuantSettings(calib_method="max"))
    calibrate(qmodel, [(x, None) for x in data], "max")
    qmodel.set_uniform_bits(4)
    qmodel.freeze_weights()
    return model, qmodel, data


def test_quantized_mobilenet_logits_equal_the_library_path(monkeypatch):
    """mobilenet_v2 (randomly initialised: some calibrated amax are ~1e-9, below the library's zero
    threshold) with frozen weights: the inference graph with its fused ReLU + quantizer passes
    gives the library's logits (module graph, library quantizers) bit for bit."""
    from sw.model.quantized_model import ActivationQuantizer

    model, qmodel, data = frozen_4bit("mobilenet_v2", 4)
    amaxes = [float(q.amax) for n, q in qmodel.quantizers().items() if n.endswith(".input")]
    assert min(amaxes) <= 2.0 ** -24 < max(amaxes)  # the zero-amax case is exercised
    with torch.no_grad():
        ours = [qmodel(x) for x in data]  # the inference graph (sw.model.inference_graph)
        monkeypatch.setattr(ActivationQuantizer, hook_name("quant_forward"), QuantizerBase.quant_forward)
        monkeypatch.setattr(QuantizedModel, "use_inference_graph", False)
        library = [qmodel(x) for x in data]
    assert all(torch.equal(a.view(torch.int32), b.view(torch.int32)) for a, b in zip(ours, library))
    assert not torch.equal(ours[0], model(data[0]))  # it did quantize


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("unsigned", [False, True])
def test_activation_quantizer_on_one_thread_equals_the_threaded_and_library_paths(fused, unsigned, monkeypatch,
                                                                                 two_threads):
    """One thread and every thread give the same bits as the library, below and above the size
    where the work is split (the fused kernel's GRAIN, the torch passes' `serial_below`), and
    torch's thread count is restored (after an error too)."""
    from pytorch_quantization.nn import TensorQuantizer
    from pytorch_quantization.tensor_quant import QuantDescriptor

    from sw.model.quantized_model import ActivationQuantizer
    from sw.quant import fused_quant

    if fused:
        require_fused_kernel()
    monkeypatch.setattr(ActivationQuantizer, "fused", fused)
    gen = torch.Generator().manual_seed(3)
    for shape in ((32, 64, 8, 8), (1, 3, 32, 32), ((1 << 20) + 7,)):
        x = torch.randn(shape, generator=gen) * 2.5
        x = x.abs() if unsigned else x
        for bits in (2, 4, 8):
            desc = QuantDescriptor(num_bits=bits, unsigned=unsigned, amax=3.1)
            ours = ActivationQuantizer(desc)
            torch.set_num_threads(1)
            serial = ours(x)
            assert torch.get_num_threads() == 1
            torch.set_num_threads(2)
            with monkeypatch.context() as split:  # split even the smallest tensor
                split.setattr(fused_quant, "GRAIN", 16)
                split.setattr(ActivationQuantizer, "serial_below", 0)
                threaded = ours(x)
            library = TensorQuantizer(desc)(x)
            assert torch.equal(serial.view(torch.int32), threaded.view(torch.int32)), (shape, bits)
            assert torch.equal(serial.view(torch.int32), library.view(torch.int32)), (shape, bits)
    if unsigned:
        with pytest.raises(TypeError, match="Negative"):
            ours(-x[:100])
        assert torch.get_num_threads() == 2


def test_quantized_resnet_outputs_do_not_depend_on_the_activation_thread_path(monkeypatch, two_threads):
    """A whole fake-quant model with frozen weights: identical logits with its activations
    quantized on one thread and split over two."""
    from sw.quant import fused_quant

    model, qmodel, data = frozen_4bit("resnet18", 8)
    with torch.no_grad():
        torch.set_num_threads(1)
        serial = [qmodel(x) for x in data]
        torch.set_num_threads(2)
        monkeypatch.setattr(fused_quant, "GRAIN", 1000)
        threaded = [qmodel(x) for x in data]
    assert all(torch.equal(a, b) for a, b in zip(serial, threaded))
    assert not torch.equal(serial[0], model(data[0]))  # it did quantize
