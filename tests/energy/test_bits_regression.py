"""Guard against "search once at the top bit width and scale": every width gets its own mapping search.

On tiny_edge (16 kbit weight and activation banks), a 64-channel 1x1 convolution on an 8 x 8 map
fits at 2 and 4 bits; at 8 bits it does not, the mapper picks another mapping and the weights are
read from DRAM more than once. The table must equal a fresh search at every width. A table that
searched once at the top width and scaled its numbers, or re-evaluated that one mapping at other
widths, would not.
"""

import pytest
from edge_fixtures import POINTWISE, tiny_edge

from energy.build import build_from_layers
from energy.engines.base import METRICS
from energy.table import TableSpec

BITS = (2, 4, 8)
CHECKED = [c for c in METRICS if c.startswith(("dram_", "gb_", "rf_"))] + ["energy_total_pj", "latency_cycles"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("regression")
    hardware, mapping = tiny_edge(folder)
    spec = TableSpec(accelerator=str(hardware), mapping=str(mapping), bits=BITS, baseline_bits=8, workers=1,
                     lpf_limit=4)
    table, _ = build_from_layers({"pw": POINTWISE}, spec, folder / "cache.sqlite")
    engine = spec.make_engine()
    # independent searches, not via the table; a network's last layer writes at the baseline 8 bits
    fresh = {b: engine.search(POINTWISE, b, b, 8) for b in BITS}
    return table, engine, fresh


def test_premise_mapping_and_dram_traffic_change_with_bits(setup):
    _, engine, fresh = setup
    assert fresh[4].temporal_mapping.mapping_dic_origin != fresh[8].temporal_mapping.mapping_dic_origin
    reads = {b: engine.metrics(c)["dram_w_read_bits"] / (POINTWISE.n_weights * b) for b, c in fresh.items()}
    assert reads[2] == reads[4] == 1 and reads[8] > 1, reads


def test_table_equals_a_fresh_search_at_every_width(setup):
    table, engine, fresh = setup
    for b, cme in fresh.items():
        expected = engine.metrics(cme)
        for column in CHECKED:
            assert table.lookup({"pw": (b, b)}, column) == expected[column], (b, column)


def test_scaling_or_reusing_the_top_width_mapping_would_be_wrong(setup):
    table, engine, fresh = setup
    top = table.lookup({"pw": (8, 8)}, "dram_bits")
    for b in (2, 4):
        mine = table.lookup({"pw": (b, b)}, "dram_bits")
        assert mine < top * b / 8          # fewer re-reads than a linear scaling predicts
        reused = engine.metrics(engine.reevaluate(fresh[8], POINTWISE, b, b, 8))
        assert table.lookup({"pw": (b, b)}, "energy_total_pj") < reused["energy_total_pj"]
