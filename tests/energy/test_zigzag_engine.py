"""The ZigZag engine on real tiny layers: DRAM traffic, packing, output-bit re-evaluation, errors."""

import shutil

import pytest
from edge_fixtures import conv

from energy.engines import get_engine
from energy.engines.base import METRICS
from energy.engines.zigzag import ZigZagEngine, zigzag_root
from energy.layers import LayerGeometry
from energy.packing import dram_words
from sw.core.errors import UserError

DRAM_COLUMNS = [c for c in METRICS if c.startswith("dram_")]


TINY = conv(4, 8, 6)
LINEAR = LayerGeometry(kind="linear", in_channels=32, out_channels=10, groups=1, in_h=1, in_w=1, out_h=1, out_w=1,
                       kernel_h=1, kernel_w=1, stride_h=1, stride_w=1, dilation_h=1, dilation_w=1,
                       pad_top=0, pad_bottom=0, pad_left=0, pad_right=0)


@pytest.fixture(scope="module")
def engine():
    e = get_engine("zigzag", "eyeriss_like", "energy")
    e.check()
    return e


@pytest.fixture(scope="module")
def tiny_results(engine):
    return {(b, b): engine.evaluate(TINY, b, b, [2, 4, 8]) for b in (2, 8)}


def test_small_layer_moves_each_tensor_once_in_densely_packed_words(tiny_results):
    # A layer this small fits on chip: every weight and input is read from DRAM once and every
    # output written once, so DRAM traffic is the tensor size times its precision, and ZigZag's
    # DRAM word count is the dense packing of that tensor into its DRAM port width.
    for (wb, ib), by_ob in tiny_results.items():
        for ob, m in by_ob.items():
            width = int(m["dram_word_bits"])
            assert width > 0
            assert m["dram_w_read_bits"] == TINY.n_weights * wb
            assert m["dram_i_read_bits"] == TINY.n_inputs * ib
            assert m["dram_o_write_bits"] == TINY.n_outputs * ob
            assert m["dram_w_read_words"] == dram_words(TINY.n_weights, wb, width)
            assert m["dram_i_read_words"] == dram_words(TINY.n_inputs, ib, width)
            assert m["dram_o_write_words"] == dram_words(TINY.n_outputs, ob, width)
            assert m["dram_w_write_bits"] == m["dram_i_write_bits"] == 0
            assert 0 < m["dram_energy_pj"] < m["energy_total_pj"]
            assert m["latency_cycles"] > 0


def test_fewer_bits_cost_less_dram_energy(tiny_results):
    low, high = tiny_results[(2, 2)][2], tiny_results[(8, 8)][8]
    assert low["dram_energy_pj"] < high["dram_energy_pj"]
    assert low["dram_w_read_bits"] * 4 == high["dram_w_read_bits"]


def test_output_bits_reevaluation_matches_fresh_search(engine, tiny_results):
    # The table searches a mapping once per (weight, input) bits at the largest output width and
    # re-evaluates it at smaller output widths; a fresh search at each output width must agree on
    # every DRAM column and may only find an on-chip mapping that is at most marginally better.
    # (the slow suite repeats this for every layer of digits_cnn and resnet18)
    for (wb, ib), ob in (((2, 2), 4), ((8, 8), 2)):
        fresh = engine.evaluate(TINY, wb, ib, [ob])[ob]
        reused = tiny_results[(wb, ib)][ob]
        for c in DRAM_COLUMNS:
            assert reused[c] == fresh[c], (wb, ib, ob, c)
        assert fresh["energy_total_pj"] <= reused["energy_total_pj"] * (1 + 1e-9)
        assert reused["energy_total_pj"] <= fresh["energy_total_pj"] * 1.01


def test_depthwise_and_linear_layers(engine):
    dw = conv(8, 8, 6, groups=8)
    m = engine.evaluate(dw, 4, 4, [4])[4]
    assert m["dram_w_read_bits"] == dw.n_weights * 4 == 8 * 9 * 4
    lin = engine.evaluate(LINEAR, 4, 8, [8])[8]
    assert lin["dram_w_read_bits"] == 320 * 4 and lin["dram_i_read_bits"] == 32 * 8
    assert lin["dram_o_write_bits"] == 10 * 8


def test_user_accelerator_file_gives_the_same_numbers(engine, tmp_path):
    src = zigzag_root() / "inputs" / "hardware" / "eyeriss_like.yaml"
    mine = tmp_path / "my_accel.yaml"
    shutil.copy(src, mine)
    user = ZigZagEngine(str(mine))
    user.check()
    assert user.accelerator_id().split(":")[1] != ""
    assert user.evaluate(LINEAR, 8, 8, [8]) == engine.evaluate(LINEAR, 8, 8, [8])


def test_unknown_accelerator_is_one_clear_line():
    with pytest.raises(UserError, match=r"energy.accelerator: expected a shipped accelerator \(.*eyeriss_like"):
        ZigZagEngine("no_such_accel").check()


def test_missing_or_invalid_accelerator_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        ZigZagEngine(str(tmp_path / "missing.yaml")).check()
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: broken\nmemories: {}\n")
    with pytest.raises(UserError, match="not a valid ZigZag accelerator"):
        ZigZagEngine(str(bad)).check()


def test_timeloop_missing_says_how_to_install():
    from energy.engines.timeloop import missing_parts

    if not missing_parts():
        pytest.skip("Timeloop is installed here")
    with pytest.raises(UserError, match="install") as info:
        get_engine("timeloop", "eyeriss_like").check()
    assert "\n" not in str(info.value)
