"""Every layer type a user brings is quantized (its output moves with its bits) or named as fp32."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sw.model.calibration import Recipe, calibrate
from sw.model.layer_kinds import forward_with, not_quantized
from sw.model.quantized_model import QuantizedModel, QuantSettings
from sw.quant import adapter
from sw.quant.bias_correction import BiasCorrection


class Attention(nn.Module):
    """Single-head self-attention written with matmuls (the way a ViT block computes it)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        attn = torch.softmax(q @ k.transpose(-2, -1) / 2.0, dim=-1)
        return torch.matmul(attn, v)


class EveryKind(nn.Module):
    """Conv1d, Conv2d, ConvTranspose1d/2d, Linear, attention matmuls, and layers we do not quantize."""

    def __init__(self) -> None:
        super().__init__()
        self.conv2d = nn.Conv2d(1, 4, 3, padding=1)
        self.up2d = nn.ConvTranspose2d(4, 3, 2, stride=2)
        self.conv1d = nn.Conv1d(3, 4, 3, padding=1)
        self.up1d = nn.ConvTranspose1d(4, 4, 3, stride=2, padding=1, output_padding=1)
        self.attention = Attention(4)
        self.conv3d = nn.Conv3d(1, 1, 1)
        self.mha = nn.MultiheadAttention(4, 1, batch_first=True)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.up2d(self.conv2d(x)))  # B x 3 x 16 x 16
        seq = y.mean(dim=2)  # B x 3 x 16
        seq = F.relu(self.up1d(self.conv1d(seq)))  # B x 4 x 32
        tokens = seq.transpose(1, 2)  # B x 32 x 4
        tokens = self.attention(tokens) + self.conv3d(tokens[:, None, None]).reshape(tokens.shape)
        tokens, _ = self.mha(tokens, tokens, tokens)
        return self.head(tokens.mean(dim=1))


@pytest.fixture(scope="module")
def calibrated() -> tuple[QuantizedModel, torch.Tensor]:
    torch.manual_seed(0)
    model = EveryKind().eval()
    x = torch.randn(8, 1, 8, 8)
    qmodel = QuantizedModel(model, (1, 8, 8), QuantSettings())
    calibrate(qmodel, [(x, None)], "max")
    qmodel.eval()
    return qmodel, x


def test_each_layer_type_is_quantized_or_listed(calibrated) -> None:
    qmodel, _ = calibrated
    assert set(qmodel.layer_names) == {"conv2d", "up2d", "conv1d", "up1d", "attention.qkv", "head"}
    listed = " ".join(qmodel.not_quantized)
    for fp32 in ("conv3d (Conv3d)", "mha (MultiheadAttention)", "(matmul)"):
        assert fp32 in listed
    assert sum(entry.endswith("(matmul)") for entry in qmodel.not_quantized) == 2  # Q.K^T and softmax.V
    for name in qmodel.layer_names:
        assert name + " " not in listed


@pytest.mark.parametrize("layer", ["conv2d", "up2d", "conv1d", "up1d", "attention.qkv", "head"])
def test_output_moves_with_the_layers_bits(calibrated, layer: str) -> None:
    qmodel, x = calibrated
    outputs = []
    with torch.no_grad():
        for bits in (8, 2):
            qmodel.set_uniform_bits(8)
            qmodel.set_layer_bits({layer: (bits, bits)})
            outputs.append(qmodel(x))
    qmodel.set_uniform_bits(8)
    assert not torch.equal(outputs[0], outputs[1])


def test_transposed_weights_are_quantized_per_output_channel(calibrated) -> None:
    qmodel, _ = calibrated
    for name in ("up2d", "up1d"):
        layer = qmodel.layers()[name]
        q = adapter.weight_quantizer(layer)
        assert adapter.channel_axis(q) == 1
        amax = adapter.amax_buffer(q).reshape(-1)
        expected = layer.weight.detach().abs().transpose(0, 1).flatten(1).amax(dim=1)
        torch.testing.assert_close(amax, expected)


def test_layer_sizes_count_the_true_macs(calibrated) -> None:
    qmodel, _ = calibrated
    sizes = {s.name: s for s in qmodel.layer_sizes}
    # transposed conv: every input element meets out_channels x kernel weights
    assert sizes["up2d"].macs == 4 * 8 * 8 * 3 * 2 * 2
    assert sizes["up1d"].macs == 4 * 16 * 4 * 3
    assert sizes["conv1d"].macs == 4 * 16 * 3 * 3
    assert sizes["conv2d"].macs == 4 * 8 * 8 * 1 * 3 * 3


@pytest.mark.parametrize("layer", ["conv2d", "up2d", "conv1d", "up1d", "attention.qkv", "head"])
def test_forward_with_matches_the_module(layer: str) -> None:
    torch.manual_seed(1)
    module = dict(EveryKind().named_modules())[layer]
    shapes = {"conv2d": (2, 1, 8, 8), "up2d": (2, 4, 8, 8), "conv1d": (2, 3, 16), "up1d": (2, 4, 16),
              "attention.qkv": (2, 5, 4), "head": (2, 4)}
    x = torch.randn(*shapes[layer])
    with torch.no_grad():
        torch.testing.assert_close(forward_with(module, x, module.weight, module.bias), module(x))


def test_conv1d_bias_correction_equals_the_conv2d_it_is() -> None:
    torch.manual_seed(2)
    conv1d = nn.Conv1d(3, 4, 3, padding=1, stride=2)
    conv2d = nn.Conv2d(3, 4, (1, 3), padding=(0, 1), stride=(1, 2))
    mean = torch.rand(3, 10)
    one = BiasCorrection.for_layer(conv1d, mean)
    two = BiasCorrection.for_layer(conv2d, mean[:, None, :])
    torch.testing.assert_close(one.patch_mean, two.patch_mean)


def test_bias_correction_calibrates_around_transposed_layers() -> None:
    torch.manual_seed(3)
    qmodel = QuantizedModel(EveryKind().eval(), (1, 8, 8), QuantSettings())
    calibrate(qmodel, [(torch.randn(4, 1, 8, 8), None)], Recipe(method="max", bias_correction="mean"))
    corrections = {name: getattr(adapter.weight_quantizer(layer), "bias_correction", None)
                   for name, layer in qmodel.layers().items()}
    assert corrections["up2d"] is None and corrections["up1d"] is None
    assert corrections["conv1d"] is not None and corrections["conv2d"] is not None


def test_plain_cnn_lists_nothing() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    assert not_quantized(QuantizedModel(model, (1, 8, 8), QuantSettings()).model) == []


def test_forward_with_matches_the_quantized_layers(calibrated) -> None:
    qmodel, x = calibrated
    seen = {}

    def record(name: str):
        def hook(module, inputs, output) -> None:
            seen.setdefault(name, (inputs[0], output))
        return hook

    handles = [layer.register_forward_hook(record(name)) for name, layer in qmodel.layers().items()]
    states = {n: adapter.is_enabled(q) for n, q in qmodel.quantizers().items()}
    try:
        for q in qmodel.quantizers().values():
            q.disable()
        with torch.enable_grad():  # the module graph, so every layer's hook sees its input
            qmodel(x)
    finally:
        for h in handles:
            h.remove()
        for n, q in qmodel.quantizers().items():
            adapter.set_enabled(q, states[n])
    assert set(seen) == set(qmodel.layer_names)
    for name, layer in qmodel.layers().items():
        inputs, output = seen[name]
        torch.testing.assert_close(forward_with(layer, inputs, layer.weight, layer.bias), output)
