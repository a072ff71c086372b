"""Full-model checks of the output-bit re-evaluation (slow: run with `pytest -m slow tests/energy`)."""

import pytest
import torchvision

from energy.engines import get_engine
from energy.engines.base import METRICS
from energy.trace import trace_layers
from sw.nets.models import DigitsCNN

DRAM_COLUMNS = [c for c in METRICS if c.startswith("dram_")]


def distinct(layers):
    seen = {}
    for name, g in layers.items():
        seen.setdefault(g.key(), (name, g))
    return list(seen.values())


def check_reevaluation(layers, pairs, output_bits):
    engine = get_engine("zigzag", "eyeriss_like")
    for name, g in layers:
        for wb, ib in pairs:
            reused = engine.evaluate(g, wb, ib, output_bits)
            for ob in output_bits[:-1]:
                fresh = engine.evaluate(g, wb, ib, [ob])[ob]
                for c in DRAM_COLUMNS:
                    assert reused[ob][c] == fresh[c], (name, wb, ib, ob, c)
                assert fresh["energy_total_pj"] <= reused[ob]["energy_total_pj"] * (1 + 1e-9)
                assert reused[ob]["energy_total_pj"] <= fresh["energy_total_pj"] * 1.01


@pytest.mark.slow
def test_digits_cnn_every_layer_and_output_width():
    layers = distinct(trace_layers(DigitsCNN(10), [3, 32, 32]))
    check_reevaluation(layers, [(2, 2), (5, 5), (8, 8), (3, 7)], [2, 3, 4, 5, 6, 7, 8])


@pytest.mark.slow
def test_resnet18_distinct_layers():
    layers = distinct(trace_layers(torchvision.models.resnet18(num_classes=10), [3, 32, 32]))
    check_reevaluation(layers, [(4, 4), (8, 8)], [2, 5, 8])


@pytest.mark.slow
def test_resnet18_energy_first_search_equals_stock_zigzag():
    # every distinct resnet18 geometry at a tied and a separate bit pair (~5 min on 2 cores)
    engine = get_engine("zigzag", "eyeriss_like")
    for name, g in distinct(trace_layers(torchvision.models.resnet18(num_classes=10), [3, 32, 32])):
        for wb, ib in ((8, 8), (3, 6)):
            stock, fast = engine.search(g, wb, ib, 8, stock=True), engine.search(g, wb, ib, 8)
            assert engine.metrics(fast) == engine.metrics(stock), (name, wb, ib)
            assert fast.temporal_mapping.mapping_dic_origin == stock.temporal_mapping.mapping_dic_origin
