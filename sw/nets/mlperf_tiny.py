"""The MLPerf Tiny reference networks (the models the DIANA deployment framework is tested on).

Written from the benchmark's published layer tables, sized for any C x H x W input:

- `ResNet8`: image classification (CIFAR-10 reference): a 16-channel stem, three residual stages
  of one basic block each (16, 32, 64 channels; stride 1, 2, 2; 1x1 projection shortcuts where
  the shape changes), global average pool, a linear classifier (~78k parameters).
- `ResNet20`: the CIFAR ResNet-20 of He et al. (three stages of three basic blocks).
- `MobileNetV1`: visual wake words reference at width multiplier 0.25: a 3x3 stem then 13
  depthwise-separable blocks (depthwise 3x3 + pointwise 1x1, batch norm and ReLU after each).
- `DSCNN`: keyword spotting reference (DS-CNN small): a 64-channel 10x4 stride-2 convolution,
  four depthwise-separable blocks, average pool, linear classifier. The reference reads 49x10
  MFCC frames (1 channel); here the datasets yield RGB images, so the stem takes 3 channels.

Batch norm sits after every convolution, so `quantization.fold_bn` folds them as in deployment.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn(cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1, groups: int = 1,
             relu: bool = True) -> nn.Sequential:
    k = (kernel, kernel) if isinstance(kernel, int) else kernel
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, (k[0] // 2, k[1] // 2), groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN, a shortcut (1x1 conv + BN where the shape changes), ReLU after the add."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(cin, cout, 3, stride), _conv_bn(cout, cout, 3, relu=False))
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout
                         else _conv_bn(cin, cout, 1, stride, relu=False))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class _CifarResNet(nn.Module):
    def __init__(self, blocks_per_stage: int, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.stem = _conv_bn(in_channels, 16, 3)
        stages, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for k in range(blocks_per_stage):
                stages.append(BasicBlock(cin, cout, stride if k == 0 else 1))
                cin = cout
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


class ResNet8(_CifarResNet):
    """MLPerf Tiny image classification: ResNet-8 (one basic block per stage)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__(1, num_classes, in_channels)


class ResNet20(_CifarResNet):
    """CIFAR ResNet-20 (three basic blocks per stage)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__(3, num_classes, in_channels)


def _separable(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(_conv_bn(cin, cin, 3, stride, groups=cin), _conv_bn(cin, cout, 1))


class MobileNetV1(nn.Module):
    """MobileNetV1 at a width multiplier (0.25: the visual wake words reference)."""

    # (output channels at width 1, stride) of the 13 separable blocks
    BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
              (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))

    def __init__(self, num_classes: int = 2, width: float = 0.25, in_channels: int = 3) -> None:
        super().__init__()

        def channels(c: int) -> int:
            return max(8, int(c * width))

        self.stem = _conv_bn(in_channels, channels(32), 3, 2)
        blocks, cin = [], channels(32)
        for cout, stride in self.BLOCKS:
            blocks.append(_separable(cin, channels(cout), stride))
            cin = channels(cout)
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


class DSCNN(nn.Module):
    """MLPerf Tiny keyword spotting: DS-CNN (small), 64 channels throughout."""

    def __init__(self, num_classes: int = 12, in_channels: int = 3, channels: int = 64) -> None:
        super().__init__()
        self.stem = _conv_bn(in_channels, channels, (10, 4), 2)
        self.blocks = nn.Sequential(*[_separable(channels, channels, 1) for _ in range(4)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))
