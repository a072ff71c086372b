"""What travels between layers: traced with torch.fx from real models (no engine involved)."""

import pytest
import torch
import torchvision
from torch import nn

from energy.dataflow import BASELINE, chain_dataflow
from energy.trace import trace_dataflow, trace_layers
from sw.core.errors import UserError
from sw.nets.models import DigitsCNN


def flows_of(model, shape):
    layers = trace_layers(model, shape)
    return layers, trace_dataflow(model, shape, layers)


def test_digits_cnn_pooling_is_fused_into_each_convolution():
    layers, df = flows_of(DigitsCNN(10), [3, 32, 32])
    assert df.names == tuple(layers) and df.traced
    f0, f1, f2, fc = df.flows
    # conv -> BN -> ReLU -> MaxPool(2): the stored tensor is the pooled one, read by the next conv
    assert (f0.output_values, f0.stored_values, f0.pooled) == (16 * 32 * 32, 16 * 16 * 16, True)
    assert (f1.output_values, f1.stored_values) == (32 * 16 * 16, 32 * 8 * 8)
    assert (f2.output_values, f2.stored_values) == (64 * 8 * 8, 64)   # AdaptiveAvgPool2d(1), then flatten
    assert [f.readers for f in df.flows] == [(1,), (2,), (3,), ()]
    assert [f.precision_from for f in df.flows] == [(1,), (2,), (3,), (BASELINE,)]
    assert [f.chain_next for f in df.flows] == [True, True, True, False]
    # every stored tensor is exactly what the next layer reads
    geometries = list(layers.values())
    for k in range(3):
        assert df.flows[k].stored_values == geometries[k + 1].n_inputs


def test_resnet18_residual_adds_and_shortcuts():
    layers, df = flows_of(torchvision.models.resnet18(num_classes=10), [3, 32, 32])
    index = {n: k for k, n in enumerate(df.names)}
    flow = dict(zip(df.names, df.flows))
    # block 1: conv2 hosts the add; the shortcut is conv1's pooled output (stem maxpool)
    assert flow["layer1.0.conv2"].add_operand == index["conv1"]
    assert flow["layer1.0.conv2"].add_values == 64 * 8 * 8
    assert flow["conv1"].add_readers == (index["layer1.0.conv2"],) and not flow["conv1"].chain_next
    # a downsampling block: the projection conv comes last in forward order and hosts the add
    assert flow["layer2.0.downsample.0"].add_operand == index["layer2.0.conv2"]
    assert flow["layer2.0.conv2"].readers == () and flow["layer2.0.conv2"].add_readers == (index["layer2.0.downsample.0"],)
    # the block output is read by the next block's conv1 and by its shortcut: never kept on chip
    assert set(flow["layer1.1.conv2"].readers) == {index["layer2.0.conv1"], index["layer2.0.downsample.0"]}
    assert not flow["layer1.1.conv2"].chain_next
    # inside a block the conv1 -> conv2 tensor has one reader, the next layer
    assert flow["layer1.0.conv1"].readers == (index["layer1.0.conv2"],) and flow["layer1.0.conv1"].chain_next
    # precision of a tensor read through an add: the add's readers' input bits
    assert index["layer2.1.conv1"] in flow["layer2.0.conv2"].precision_from


class Concat(nn.Module):
    """Two branches joined by torch.cat (an op the model does not fuse): a barrier."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(torch.cat([self.a(x), self.b(x)], dim=1))


def test_concatenation_is_a_barrier_stored_at_baseline_bits():
    _, df = flows_of(Concat(), [3, 4, 4])
    a, b, head = df.flows
    assert a.readers == b.readers == () and a.precision_from == (BASELINE,) and not a.chain_next
    assert head.precision_from == (BASELINE,)


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            return self.conv(x)
        return self.conv(-x)


def test_untraceable_model_is_one_line_and_chain_view_still_works():
    layers = trace_layers(Untraceable(), [3, 4, 4])
    with pytest.raises(UserError, match="torch.fx") as info:
        trace_dataflow(Untraceable(), [3, 4, 4], layers)
    assert "\n" not in str(info.value)
    chain = chain_dataflow(layers)
    assert not chain.traced and chain.flows[0].precision_from == (BASELINE,)
