"""The MLPerf Tiny reference networks: registered, the published layer structure, quantized and folded."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sw.model.quantized_model import QuantizedModel, QuantSettings
from sw.nets.models import MODELS

# conv/linear layers of the published architectures:
# ResNet-8: stem + 3 blocks x 2 convs + 2 projection shortcuts (stages 2, 3) + classifier
# ResNet-20: stem + 9 blocks x 2 convs + 2 projection shortcuts + classifier
# MobileNetV1: stem + 13 x (depthwise + pointwise) + classifier
# DS-CNN: stem + 4 x (depthwise + pointwise) + classifier
LAYERS = {"resnet8": 10, "resnet20": 22, "mobilenet_v1_025": 28, "ds_cnn": 10}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_published_structure_quantized_with_batch_norm_folded(name: str) -> None:
    torch.manual_seed(0)
    model = MODELS.get(name)(7).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    qmodel = QuantizedModel(model, (3, 32, 32), QuantSettings(fold_bn=True))
    assert len(qmodel.layer_names) == LAYERS[name]
    assert qmodel.not_quantized == []
    assert not any(isinstance(m, nn.BatchNorm2d) for m in qmodel.modules())


def test_mobilenet_width_quarter_and_depthwise() -> None:
    model = MODELS.get("mobilenet_v1_025")(2)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].out_channels == 8 and convs[-1].out_channels == 256  # 32 x 0.25, 1024 x 0.25
    depthwise = [c for c in convs if c.groups > 1]
    assert len(depthwise) == 13 and all(c.groups == c.in_channels == c.out_channels for c in depthwise)


def test_ds_cnn_stem_is_the_10x4_stride_2_convolution() -> None:
    stem = next(m for m in MODELS.get("ds_cnn")(12).modules() if isinstance(m, nn.Conv2d))
    assert (stem.kernel_size, stem.stride, stem.out_channels) == ((10, 4), (2, 2), 64)
