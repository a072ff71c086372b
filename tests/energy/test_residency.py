"""Between layers: activations kept on chip, fused / separate pooling and residual adds, batch size.

Small networks of 1x1 convolutions on tiny_edge (16 kbit activation bank), so each mapping search
takes about a second. Expected values come from fresh engine evaluations and hand-counted
tensor sizes, never from the table itself.
"""

import pytest
import torch
from edge_fixtures import conv, tiny_edge
from torch import nn

from energy.build import build_from_layers
from energy.engines.base import Residency
from energy.packing import dram_words
from energy.table import TableSpec
from energy.trace import trace_dataflow, trace_layers

DRAM_PJ = 1000.0  # eyeriss_edge / tiny_edge: 1000 pJ per 64-bit DRAM word
WORD = 64


class Chain(nn.Module):
    """a: 8 -> 64 channels (4096 values out), b: 64 -> 8, 2x2 max pooling, a classifier."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(8, 64, 1), nn.Conv2d(64, 8, 1)
        self.pool, self.fc = nn.MaxPool2d(2), nn.Linear(8 * 4 * 4, 4)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.relu(self.b(torch.relu(self.a(x))))), 1))


class Residual(nn.Module):
    """y = a(x); z = b(y) + y (b hosts the add and reads y back); a classifier."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8 * 8 * 8, 4)

    def forward(self, x):
        y = torch.relu(self.a(x))
        return self.fc(torch.flatten(torch.relu(self.b(y) + y), 1))


def build(model, folder, **settings):
    hardware, mapping = tiny_edge(folder)
    spec = TableSpec(accelerator=str(hardware), mapping=str(mapping), bits=(2, 8), baseline_bits=8, workers=1,
                     lpf_limit=4, **settings)
    layers = trace_layers(model, [8, 8, 8])
    dataflow = trace_dataflow(model, [8, 8, 8], layers)
    table, stats = build_from_layers(layers, spec, folder / "cache.sqlite", dataflow=dataflow)
    return table, stats, spec.make_engine(), layers


@pytest.fixture(scope="module")
def resident(tmp_path_factory):
    return build(Chain(), tmp_path_factory.mktemp("resident"), residency=True, elementwise="fused")


def test_activation_stays_on_chip_only_at_the_bits_it_fits(resident):
    table, stats, engine, layers = resident
    low, high = table.resolve(table.uniform(2)), table.resolve(table.uniform(8))
    # a's 4096 outputs: 8 kbit at 2 bits fit the 16 kbit bank; 32 kbit at 8 bits do not
    assert low.output_on_chip[0] and low.input_on_chip[1]
    assert not high.output_on_chip[0] and not high.input_on_chip[1]
    assert not low.input_on_chip[0]  # the network input always comes from DRAM
    dram = {b: table.per_layer(table.uniform(b), "dram_energy_pj") for b in (2, 8)}
    # a and b at 2 bits: their DRAM energy falls far below the linear scaling of the 8-bit numbers
    assert dram[2][:2].sum() < dram[8][:2].sum() * 2 / 8 * 0.7


def test_on_chip_numbers_are_fresh_evaluations_with_the_tensor_in_the_buffer(resident):
    table, _, engine, layers = resident
    a, b, _ = layers.values()
    fc_bits = 2
    mine = table.resolve(table.uniform(2))
    producer = engine.evaluate(a, 2, 2, [2], Residency(False, True))[2]
    reader_on_chip = mine.output_on_chip[1]
    reader = engine.evaluate(b, 2, 2, [fc_bits], Residency(True, bool(reader_on_chip)))[fc_bits]
    assert producer["dram_o_write_bits"] == producer["dram_o_energy_pj"] == 0
    assert reader["dram_i_read_bits"] == reader["dram_i_energy_pj"] == 0
    assert table.column(mine, "energy_total_pj")[0] == producer["energy_total_pj"]
    assert table.column(mine, "dram_i_read_bits")[1] == 0
    assert table.column(mine, "gb_energy_pj")[1] == reader["gb_energy_pj"]


def test_fused_pooling_stores_only_the_pooled_tensor(tmp_path):
    table, _, engine, layers = build(Chain(), tmp_path, elementwise="fused")
    _, b, _ = layers.values()
    config = {"a": (8, 8), "b": (8, 8), "fc": (2, 2)}      # b stores at fc's input bits: 2
    plain = engine.evaluate(b, 8, 8, [2])[2]
    assert plain["dram_o_write_bits"] == 512 * 2            # the engine writes all 8 x 8 x 8 outputs
    got = table.per_layer(config, "dram_o_write_bits")[1]
    assert got == 128 * 2                                    # fused: only the 8 x 4 x 4 pooled values
    assert table.per_layer(config, "dram_o_write_words")[1] == dram_words(128, 2, WORD)
    saved = (dram_words(512, 2, WORD) - dram_words(128, 2, WORD)) * DRAM_PJ
    assert table.per_layer(config, "dram_energy_pj")[1] == plain["dram_energy_pj"] - saved
    assert table.per_layer(config, "energy_total_pj")[1] == plain["energy_total_pj"] - saved


def test_separate_pooling_is_one_more_pass_over_dram(tmp_path):
    table, _, engine, layers = build(Chain(), tmp_path, elementwise="separate")
    _, b, _ = layers.values()
    config = {"a": (8, 8), "b": (8, 8), "fc": (2, 2)}
    plain = engine.evaluate(b, 8, 8, [2])[2]
    assert table.per_layer(config, "dram_o_read_bits")[1] == plain["dram_o_read_bits"] + 512 * 2
    assert table.per_layer(config, "dram_o_write_bits")[1] == plain["dram_o_write_bits"] + 128 * 2
    extra = (dram_words(512, 2, WORD) + dram_words(128, 2, WORD)) * DRAM_PJ
    assert table.per_layer(config, "dram_energy_pj")[1] == plain["dram_energy_pj"] + extra


@pytest.mark.parametrize("mode", ["fused", "separate"])
def test_residual_add_reads_the_shortcut_at_its_stored_bits(tmp_path, mode):
    table, _, engine, layers = build(Residual(), tmp_path, elementwise=mode)
    a, b, _ = layers.values()
    config = {"a": (8, 8), "b": (2, 2), "fc": (8, 8)}
    # y (a's output) is read by b (2 bits) and, through the add, by fc (8 bits): stored at 8 bits
    resolved = table.resolve(config)
    assert list(resolved.output_bits) == [8, 8, 8]
    plain = engine.evaluate(b, 2, 2, [8])[8]
    got = table.per_layer(config, "dram_i_read_bits")[1]
    assert got == plain["dram_i_read_bits"] + 512 * 8          # the shortcut y, 512 values at 8 bits
    extra = dram_words(512, 8, WORD) * DRAM_PJ
    if mode == "separate":   # the add pass also reads b's output and writes the sum
        extra += 2 * dram_words(512, 8, WORD) * DRAM_PJ
        assert table.per_layer(config, "dram_o_write_bits")[1] == plain["dram_o_write_bits"] + 512 * 8
    assert table.per_layer(config, "dram_energy_pj")[1] == plain["dram_energy_pj"] + extra


def test_batch_reuses_weights_and_scales_activations(tmp_path):
    hardware, mapping = tiny_edge(tmp_path)
    from energy.engines import get_engine

    engine = get_engine("zigzag", str(hardware), mapping=str(mapping), lpf_limit=4)
    one = engine.evaluate(conv(16, 16, 4, k=1), 4, 4, [4])[4]
    two = engine.evaluate(conv(16, 16, 4, k=1, batch=2), 4, 4, [4])[4]
    assert two["dram_w_read_bits"] == one["dram_w_read_bits"] == 256 * 4     # weights read once per batch
    assert two["dram_i_read_bits"] == 2 * one["dram_i_read_bits"] == 2 * 256 * 4
    assert two["dram_o_write_bits"] == 2 * one["dram_o_write_bits"]
