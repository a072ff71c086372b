"""`python -m energy fronts`: every point of several fronts costed by energy and by weighted bits."""

import types

import pytest
from edge_fixtures import tiny_edge
from torch import nn

from energy.fronts import front_costs, weighted_bits
from energy.build import build_from_layers
from energy.table import TableSpec
from energy.trace import trace_layers
from sw.core.errors import DataError
from sw.nets.models import DigitsCNN
from sw.model.quantized_model import QuantizedModel, QuantSettings
from sw.model.weighting import WEIGHTINGS


@pytest.mark.parametrize("weighting", ["params_weighted", "bit_operations", "weights_only"])
def test_weighted_bits_equal_the_search_weighting(weighting):
    layers = trace_layers(DigitsCNN(10), [3, 32, 32])
    qmodel = QuantizedModel(DigitsCNN(10), [3, 32, 32], QuantSettings())
    bits = {"features.0.0": (5, 4), "features.2.0": (3, 6), "features.4.0": (8, 2), "classifier": (4, 4)}
    expected = WEIGHTINGS.get(weighting)(qmodel.layer_sizes, bits)
    assert weighted_bits(types.SimpleNamespace(layers=layers), weighting, bits) == pytest.approx(expected)


class TwoPointwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(4, 8, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.b(self.a(x))


def test_front_costs_every_point_both_ways(tmp_path):
    hardware, mapping = tiny_edge(tmp_path)
    spec = TableSpec(accelerator=str(hardware), mapping=str(mapping), bits=(2, 8), mode="separate", baseline_bits=8,
                     workers=1, lpf_limit=4)
    table, _ = build_from_layers(trace_layers(TwoPointwise(), [4, 4, 4]), spec, tmp_path / "cache.sqlite")
    energy_front = tmp_path / "energy.csv"
    energy_front.write_text("point,top1,heldout_top1,dram_energy_uj,a.weight_bits,a.input_bits,b.weight_bits,"
                            "b.input_bits\n0,0.9,0.88,1,2,8,8,2\n1,0.95,0.94,2,8,8,8,8\n")
    bits_front = tmp_path / "bits.csv"
    bits_front.write_text("point,top1,params_weighted,a.weight_bits,a.input_bits,b.weight_bits,b.input_bits\n"
                          "0,0.91,3,2,2,2,2\n")
    workload = types.SimpleNamespace(energy={"objective": "dram_energy"}, accuracy=types.SimpleNamespace(
        metrics=["top1"]), search=types.SimpleNamespace(weighting="params_weighted"))
    rows = front_costs(workload, table, {"energy": energy_front, "bits": bits_front})
    assert [(r["front"], r["point"], r["bits"]) for r in rows] == [
        ("energy", "0", "2/8 8/2"), ("energy", "1", "8 8"), ("bits", "0", "2 2")]
    configs = [{"a": (2, 8), "b": (8, 2)}, {"a": (8, 8), "b": (8, 8)}, {"a": (2, 2), "b": (2, 2)}]
    for row, bits in zip(rows, configs):
        assert row["dram_energy_uj"] == table.lookup(bits, "dram_energy_uj")
        assert row["params_weighted"] == weighted_bits(table, "params_weighted", bits)
    assert rows[1]["params_weighted"] == pytest.approx(8.0) and rows[2]["params_weighted"] == pytest.approx(2.0)
    with pytest.raises(DataError, match="expected a Pareto front CSV"):
        front_costs(workload, table, {"missing": tmp_path / "none.csv"})
