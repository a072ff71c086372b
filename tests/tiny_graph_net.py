"""Tiny networks with the graph shapes deployment must handle, shared by the graph, preset and
deploy tests: conv + BN + ReLU, a residual `torch.add`, a functional `F.relu`, a channel
concatenation, max and average pooling, flatten and a classifier; BN statistics randomised so
that folding is not a no-op."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TinyResidual(nn.Module):
    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.side = nn.Conv2d(8, 4, 1)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Conv2d(12, 8, 3, stride=2, padding=1)
        self.avg = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        x = self.stem(x)
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        x = F.relu(torch.add(x, y))
        x = self.pool(x)
        x = torch.cat([x, self.side(x)], dim=1)
        x = self.avg(F.relu(self.head(x)))
        return self.fc(torch.flatten(x, 1))


class Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        y = self.conv(x)
        if y.sum() > 0:
            y = y * 2
        return self.fc(y.mean((2, 3)))


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
    return model.eval()


def tiny_residual(seed: int = 0) -> TinyResidual:
    torch.manual_seed(seed)
    return randomise_batchnorm(TinyResidual(), seed)


def images(n: int = 16, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, 3, size, size), generator=torch.Generator().manual_seed(seed))


class EveryMergeForm(nn.Module):
    """Each way a forward can merge two tensors or apply a functional ReLU, plus tensor-scalar
    arithmetic (which no quantizer should follow: it is folded into the next scale)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        a, b = self.a(x), self.b(x)
        s = a + b  # operator.add
        s = s.add(a)  # Tensor.add
        d = torch.sub(s, b)  # torch.sub
        m = d * b  # operator.mul
        m = m * 0.5 + 1.0  # tensor-scalar: no quantizer
        r = torch.cat([F.relu(m), torch.relu(d), s.relu()], dim=1)  # three functional ReLU forms
        return self.fc(r.mean((2, 3)))


class UnfoldableBatchNorm(nn.Module):
    """BNs that must stay: one after an add (no layer to absorb it), one after a conv whose
    output is also used elsewhere (folding would change that other use)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn_after_add = nn.BatchNorm2d(4)
        self.bn_shared = nn.BatchNorm2d(4)
        self.conv3 = nn.Conv2d(4, 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(4)  # the only foldable one
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        a = self.conv1(x)
        y = self.bn_after_add(a + self.conv2(x))
        z = self.bn_shared(a) + a
        y = self.bn3(self.conv3(y + z))
        return self.fc(y.mean((2, 3)))
