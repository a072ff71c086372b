"""Layer tracing: names, order and loop bounds from a real forward pass."""

import pytest
import torchvision
from torch import nn

from energy.trace import trace_layers
from sw.core.errors import UserError


class Mixed(nn.Module):
    """Plain, strided+dilated, grouped and depthwise convolutions, then a Linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(8, 12, 3, stride=2, padding=2, dilation=2), nn.ReLU(),
                                  nn.Conv2d(12, 12, 3, padding=1, groups=3),
                                  nn.Conv2d(12, 12, 5, padding="same", groups=12))
        self.head = nn.Linear(12, 5)

    def forward(self, x):
        return self.head(self.body(self.stem(x)).mean((2, 3)))


def expected_out(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def test_trace_mixed_geometry_and_order():
    layers = trace_layers(Mixed(), [3, 15, 17])
    assert list(layers) == ["stem", "body.0", "body.2", "body.3", "head"]
    body0 = layers["body.0"]
    assert (body0.in_h, body0.in_w) == (15, 17)
    assert (body0.out_h, body0.out_w) == (expected_out(15, 3, 2, 2, 2), expected_out(17, 3, 2, 2, 2))
    assert (body0.stride_h, body0.dilation_w, body0.pad_top, body0.pad_right) == (2, 2, 2, 2)
    grouped, depthwise = layers["body.2"], layers["body.3"]
    assert grouped.groups == 3 and grouped.n_weights == Mixed().body[2].weight.numel()
    assert depthwise.groups == 12 and depthwise.n_weights == 12 * 25 and depthwise.reduction_size == 25
    assert (depthwise.pad_top + depthwise.pad_bottom, depthwise.out_h) == (4, depthwise.in_h)
    head = layers["head"]
    assert (head.kind, head.in_channels, head.out_channels, head.n_weights) == ("linear", 12, 5, 60)
    # MACs of every layer equal the ones counted from the real module shapes
    for name, module in Mixed().named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            g = layers[name]
            assert g.macs == g.n_outputs * module.weight[0].numel()


def test_trace_resnet18_names_match_named_modules():
    model = torchvision.models.resnet18(num_classes=10)
    layers = trace_layers(model, [3, 32, 32])
    wanted = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert set(layers) == wanted and len(layers) == 21
    assert list(layers)[0] == "conv1" and list(layers)[-1] == "fc"
    assert layers["conv1"].out_h == 16 and layers["layer4.1.conv2"].out_h == 1
    assert len({g.key() for g in layers.values()}) < len(layers)  # repeated blocks share a geometry


def test_trace_matches_quantized_model_layer_names():
    qm = pytest.importorskip("sw.model.quantized_model")
    from sw.nets.models import DigitsCNN

    model = DigitsCNN(10)
    layers = trace_layers(model, [3, 32, 32])
    qmodel = qm.QuantizedModel(model, [3, 32, 32], qm.QuantSettings())
    assert list(layers) == list(qmodel.layer_names)


def test_trace_bad_input_shape_is_a_user_error():
    with pytest.raises(UserError, match="input_shape"):
        trace_layers(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)), [3, 9, 9])


class Sequence1d(nn.Module):
    """A keyword-spotting style 1-D net: Conv1d (padded, strided, 'same', depthwise) then a Linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 8, 5, stride=2, padding=2)
        self.same = nn.Conv1d(8, 8, 3, padding="same", groups=8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.same(self.conv(x)).mean(2))


def test_conv1d_is_costed_as_the_conv2d_on_a_1xL_image():
    as_1d = trace_layers(Sequence1d(), [4, 21])
    as_2d = trace_layers(nn.Sequential(nn.Conv2d(4, 8, (1, 5), stride=(1, 2), padding=(0, 2))), [4, 1, 21])
    conv, reference = as_1d["conv"], as_2d["0"]
    for field in ("in_channels", "out_channels", "groups", "in_h", "in_w", "out_h", "out_w", "kernel_h", "kernel_w",
                  "stride_h", "stride_w", "pad_left", "pad_right", "pad_top", "pad_bottom"):
        assert getattr(conv, field) == getattr(reference, field), field
    assert as_1d["same"].out_w == as_1d["same"].in_w == 11 and as_1d["same"].pad_left + as_1d["same"].pad_right == 2


def test_transposed_convolution_is_refused_by_name():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ConvTranspose2d(2, 1, 2, stride=2))
    with pytest.raises(UserError, match=r"1 \(ConvTranspose2d\)"):
        trace_layers(model, [1, 8, 8])
