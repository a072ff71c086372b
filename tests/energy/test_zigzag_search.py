"""The energy-first ZigZag search returns exactly what ZigZag's stock pipeline returns."""

import pytest
from edge_fixtures import POINTWISE, conv, tiny_edge

from energy.engines import get_engine

GENERATED = "- name: default\n  memory_operand_links: {O: O, W: I2, I: I1}\n"  # ZigZag generates spatial mappings


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    folder = tmp_path_factory.mktemp("search")
    hardware, mapping = tiny_edge(folder)
    (folder / "generated.yaml").write_text(GENERATED)
    fixed = get_engine("zigzag", str(hardware), mapping=str(mapping), lpf_limit=4)
    generated = get_engine("zigzag", str(hardware), mapping=str(folder / "generated.yaml"), lpf_limit=4,
                           spatial_mappings=3)
    for e in (fixed, generated):
        e.check()
    return fixed, generated


def same_result(engine, geometry, wb, ib, ob):
    stock = engine.search(geometry, wb, ib, ob, stock=True)
    fast = engine.search(geometry, wb, ib, ob)
    assert fast.temporal_mapping.mapping_dic_origin == stock.temporal_mapping.mapping_dic_origin
    assert fast.spatial_mapping.mapping_dict_origin == stock.spatial_mapping.mapping_dict_origin
    assert engine.metrics(fast) == engine.metrics(stock)  # every column, latency and utilisation included
    return stock


@pytest.mark.parametrize("bits", [(2, 2, 2), (8, 8, 8), (3, 7, 5)])
def test_fixed_spatial_mapping(engines, bits):
    same_result(engines[0], POINTWISE, *bits)


@pytest.mark.parametrize("bits", [(2, 2, 2), (8, 8, 8)])
def test_generated_spatial_mappings_share_one_bound(engines, bits):
    # three spatial mappings are searched; candidates of later ones are pruned against the best so far
    stock = same_result(engines[1], POINTWISE, *bits)
    assert stock.spatial_mapping.mapping_dict_origin


def test_strided_grouped_conv(engines):
    same_result(engines[0], conv(8, 8, 6, k=3, stride=2, groups=2), 4, 4, 4)
