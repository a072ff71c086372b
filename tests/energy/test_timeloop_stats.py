"""The Timeloop engine without Timeloop: stats parsing, DRAM columns, problem shape, shipped accelerator.

The fixtures under fixtures/timeloop/ are real outputs of the Timeloop + Accelergy stack built from
source (see energy/README.md, "Timeloop"):
- eyeriss_like_conv16-32_w{8i8o8,5i3o6}.stats.txt: this engine on the shipped `eyeriss_like`
  accelerator, conv 16->32 3x3 on 16x16 (digits_cnn's features.2.0), at the named bit widths;
- simple_weight_stationary.stats.txt: the Timeloop/Accelergy exercises' example design of that
  name, unchanged, with its default problem (one DRAM level holding all three operands);
- sparseloop_spmspm.stats.txt: the exercises' sparseloop 02.2.1-spMspM design (sparse print format);
- *.log: excerpts of Timeloop's and Accelergy's console output from failed runs.
Expected numbers are read off those files by hand or follow from the layer geometry and from
LPDDR4 at 8 pJ/bit (Accelergy's CACTI plug-in table), never from the code under test.
"""

import math
import re
import shutil
from pathlib import Path

import pytest
import yaml
from edge_fixtures import conv

from energy.engines import get_engine
from energy.engines.base import METRICS
from energy.engines.timeloop import (SHIPPED, StatsError, TimeloopEngine, failure_reason, input_window,
                                     layer_metrics, parse_stats, problem_dims)
from energy.layers import LayerGeometry
from sw.core.errors import UserError

FIXTURES = Path(__file__).parent / "fixtures" / "timeloop"
LPDDR4_PJ_PER_BIT = 8.0


def text(name: str) -> str:
    return (FIXTURES / name).read_text()


PADDED = conv(16, 32, 16)            # the fixtures' layer as digits_cnn has it ('same' padding)
VALID = conv(16, 32, 18, pad=0)      # the same Timeloop problem without padding: 18x18 input, no halo
W8 = text("eyeriss_like_conv16-32_w8i8o8.stats.txt")
W5 = text("eyeriss_like_conv16-32_w5i3o6.stats.txt")


def total_scalar_accesses(stats_text: str) -> dict[str, float]:
    """Timeloop's own per-level 'Total scalar accesses' (operational-intensity section)."""
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"=== (\S+) ===\n    Total scalar accesses\s*:\s*(\d+)", stats_text)}


# -- parsing ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["eyeriss_like_conv16-32_w8i8o8.stats.txt", "eyeriss_like_conv16-32_w5i3o6.stats.txt",
                                  "simple_weight_stationary.stats.txt"])
def test_every_level_adds_up_to_timeloops_own_access_totals(name):
    stats = parse_stats(text(name))
    totals = total_scalar_accesses(text(name))
    assert {lv.name for lv in stats.levels} == set(totals)
    for level in stats.levels:
        ours = sum(d.total_reads + d.total_writes for d in level.dataspaces.values())
        assert ours == totals[level.name], level.name


def test_dram_levels_summary_and_compute():
    stats = parse_stats(W8)
    dram = {lv.name: lv for lv in stats.levels if lv.technology == "DRAM"}
    assert set(dram) == {"DRAM_weights", "DRAM_inputs", "DRAM_outputs"}
    assert stats.backing_level("Weights").name == "DRAM_weights"
    assert stats.backing_level("Inputs").name == "DRAM_inputs"
    assert stats.backing_level("Outputs").name == "DRAM_outputs"
    # read off the file: DRAM_inputs reads 5760 inputs (a 5184-value window, halo rows twice)
    assert dram["DRAM_inputs"].dataspaces["Inputs"].reads == 5760
    assert dram["DRAM_outputs"].dataspaces["Outputs"].updates == 8192
    assert dram["DRAM_weights"].values_per_word == 8 and dram["DRAM_weights"].width_bits == 64
    assert stats.cycles == 18432 and stats.computes == PADDED.macs
    assert stats.compute_energy_pj == pytest.approx(1417913.30)
    assert stats.energy_total_pj == pytest.approx(4.22e6, abs=0.005e6)  # "Energy: 4.22 uJ"


def test_sparse_levels_report_actual_not_algorithmic_accesses():
    stats = parse_stats(text("sparseloop_spmspm.stats.txt"))
    backing = stats.backing_level("A")
    assert backing.name == "BackingStorage" and backing.word_bits == 8 and backing.block_size == 4
    assert backing.dataspaces["A"].reads == 64          # algorithmic: 512
    assert stats.backing_level("Z").dataspaces["Z"].updates == 64
    assert stats.computes == 64                          # actual computes; algorithmic: 512
    assert stats.energy_total_pj == pytest.approx(9143.82 * 64 / 1000)


@pytest.mark.parametrize("bad", ["", "Summary Stats\n", W8.split("Networks")[0], W8.replace("Level 0", "Level x")])
def test_not_a_stats_file_is_a_stats_error(bad):
    with pytest.raises(StatsError):
        parse_stats(bad)


# -- table metrics ------------------------------------------------------------------------------------
def test_dram_columns_of_a_layer_without_padding():
    for name, bits in ((W8, {"w": 8, "i": 8, "o": 8}), (W5, {"w": 5, "i": 3, "o": 6})):
        m = layer_metrics(parse_stats(name), VALID, bits)
        assert set(METRICS) <= set(m) and all(k.startswith("mem/") for k in set(m) - set(METRICS))
        # weights and outputs cross DRAM once; words hold floor(64 / bits) whole values
        assert m["dram_w_read_bits"] == VALID.n_weights * bits["w"]
        assert m["dram_o_write_bits"] == VALID.n_outputs * bits["o"]
        assert m["dram_w_write_bits"] == m["dram_i_write_bits"] == m["dram_o_read_bits"] == 0
        for op, n in (("w", VALID.n_weights), ("o", VALID.n_outputs)):
            per_word = 64 // bits[op]
            words = m[f"dram_{op}_read_words"] + m[f"dram_{op}_write_words"]
            assert words == math.ceil(n / per_word)
            assert m[f"dram_{op}_energy_pj"] == pytest.approx(words * per_word * bits[op] * LPDDR4_PJ_PER_BIT)
        assert m["dram_word_bits"] == max(64 // b * b for b in bits.values())  # whole values per word
        assert m["dram_energy_pj"] == pytest.approx(m["dram_w_energy_pj"] + m["dram_i_energy_pj"] + m["dram_o_energy_pj"])
        assert m["dram_energy_pj"] < m["energy_total_pj"]
    # inputs: 8 bits -> the halo rows twice (5760 of 5184 window values), 3 bits -> once
    assert layer_metrics(parse_stats(W8), VALID, {"w": 8, "i": 8, "o": 8})["dram_i_read_bits"] == 5760 * 8
    m = layer_metrics(parse_stats(W5), VALID, {"w": 5, "i": 3, "o": 6})
    assert m["dram_i_read_bits"] == VALID.n_inputs * 3
    assert m["dram_i_read_words"] == math.ceil(VALID.n_inputs / 21)
    assert m["dram_i_energy_pj"] == pytest.approx(m["dram_i_read_words"] * 63 * LPDDR4_PJ_PER_BIT)


def test_per_level_breakdown_from_the_stats_file():
    m = layer_metrics(parse_stats(W8), VALID, {"w": 8, "i": 8, "o": 8})
    computes = 1179648
    # read off the file: rf_16B (24-bit words, 64 utilized PEs) keeps the outputs: 17408 reads,
    # 2048 fills + 18432 updates per instance
    assert m["rf_o_read_bits"] == 17408 * 64 * 24
    assert m["rf_o_write_bits"] == (2048 + 18432) * 64 * 24
    assert m["mem/rf/rf_16B/o/energy_pj"] == pytest.approx(662687.19, rel=1e-5)
    # the shared SRAMs are the global buffer: their fJ/Compute lines of the summary
    assert m["gb_energy_pj"] == pytest.approx((73.19 + 140.90 + 399.24) * computes / 1000, rel=1e-4)
    assert m["rf_energy_pj"] == pytest.approx((561.77 + 96.79 + 96.79) * computes / 1000, rel=1e-4)
    assert m["energy_total_pj"] == pytest.approx(3577.60 * computes / 1000, rel=1e-5)  # "Total" fJ/Compute
    assert m["spatial_utilization"] == pytest.approx(64 / 168)
    assert m["utilization"] == pytest.approx(0.3810, abs=5e-5)  # "Utilization: 38.10%" (18432 cycles)
    assert m["latency_cycles"] == 18432


def test_padding_zeros_are_not_read_from_dram():
    # Timeloop's input is the 18x18 window incl. the zero halo; the real input is 16x16.
    for name, bits in ((W8, {"w": 8, "i": 8, "o": 8}), (W5, {"w": 5, "i": 3, "o": 6})):
        stats = parse_stats(name)
        padded, valid = layer_metrics(stats, PADDED, bits), layer_metrics(stats, VALID, bits)
        ratio = (16 * 16) / (18 * 18)
        assert padded["dram_i_read_bits"] == pytest.approx(valid["dram_i_read_bits"] * ratio)
        assert padded["dram_i_energy_pj"] == pytest.approx(valid["dram_i_energy_pj"] * ratio)
        saved = valid["dram_i_energy_pj"] - padded["dram_i_energy_pj"]
        assert padded["energy_total_pj"] == pytest.approx(valid["energy_total_pj"] - saved)
        for c in METRICS:
            if not c.startswith("dram_i_") and c not in ("dram_energy_pj", "energy_total_pj"):
                assert padded[c] == valid[c], c
    # read once at 3 bits: exactly the real input
    m = layer_metrics(parse_stats(W5), PADDED, {"w": 5, "i": 3, "o": 6})
    assert m["dram_i_read_bits"] == pytest.approx(PADDED.n_inputs * 3)


def test_a_grouped_layer_is_groups_times_one_group():
    grouped = conv(32, 64, 16, groups=2)  # two groups of 16 -> 32: the fixtures' problem
    assert problem_dims(grouped) == problem_dims(PADDED)
    bits = {"w": 8, "i": 8, "o": 8}
    one, two = layer_metrics(parse_stats(W8), PADDED, bits), layer_metrics(parse_stats(W8), grouped, bits)
    assert two["dram_w_read_bits"] == grouped.n_weights * 8
    assert two["dram_o_write_bits"] == grouped.n_outputs * 8
    for c in METRICS:  # word width and the fractions of the array used do not grow with groups
        same = c in ("dram_word_bits", "utilization", "spatial_utilization")
        assert two[c] == (one[c] if same else pytest.approx(2 * one[c])), c


def test_one_dram_level_for_all_operands_exercise_design():
    # The exercises' default problem: C3 M32 3x3, stride 2, 224x224 input padded by 1, 16-bit data.
    g = conv(3, 32, 224, stride=2, pad=1)
    assert (g.out_h, problem_dims(g)["P"], problem_dims(g)["Wstride"]) == (112, 112, 2)
    m = layer_metrics(parse_stats(text("simple_weight_stationary.stats.txt")), g, {"w": 16, "i": 16, "o": 16})
    assert m["dram_w_read_bits"] == g.n_weights * 16
    # Timeloop reads the 225x225 window (incl. 1 padding row/column) once: the real input is 224x224
    assert m["dram_i_read_bits"] == pytest.approx(g.n_inputs * 16)
    assert m["dram_o_write_bits"] == g.n_outputs * 16
    assert m["dram_w_energy_pj"] == pytest.approx(g.n_weights * 16 * LPDDR4_PJ_PER_BIT)
    assert m["latency_cycles"] == 903168
    halo = 19440128.00 * (1 - 224 ** 2 / 225 ** 2)  # DRAM input energy (read off the file) of the zero halo
    assert m["energy_total_pj"] == pytest.approx(161.76e6 - halo, abs=0.005e6)  # "Energy: 161.76 uJ"


def test_a_backing_level_that_is_not_dram_is_refused():
    on_chip = W8.replace("Technology                      : DRAM", "Technology                      : SRAM")
    with pytest.raises(StatsError, match="not a DRAM"):
        layer_metrics(parse_stats(on_chip), PADDED, {"w": 8, "i": 8, "o": 8})


# -- problem shape -----------------------------------------------------------------------------------
@pytest.mark.parametrize("g, expected", [
    (conv(3, 16, 32), (32 * 32, 34 * 34)),                 # 'same' 3x3: a one-value zero halo
    (conv(3, 16, 8, stride=2, pad=0), (7 * 7, 7 * 7)),     # 8 -> 3 outputs read columns 0..6 only
    (conv(3, 16, 8, stride=2, pad=1), (8 * 8, 9 * 9)),     # 8 -> 4 outputs: window -1..7
    (conv(3, 16, 12, stride=3, pad=1), (11 * 11, 12 * 12)),  # 12 -> 4 outputs: window -1..10, column 11 unused
    (conv(3, 16, 9, k=3, dilation=2, pad=2), (9 * 9, 13 * 13)),
    (conv(64, 10, 1, k=1, pad=0), (1, 1)),
])
def test_input_window(g, expected):
    assert input_window(g) == expected


def test_problem_dimensions_follow_timeloops_standard_conv():
    g = LayerGeometry(kind="conv", in_channels=8, out_channels=12, groups=4, in_h=10, in_w=20, out_h=5, out_w=9,
                      kernel_h=3, kernel_w=5, stride_h=2, stride_w=2, dilation_h=1, dilation_w=1, pad_top=1,
                      pad_bottom=1, pad_left=1, pad_right=1, batch=2)
    assert problem_dims(g) == {"C": 2, "M": 3, "R": 5, "S": 3, "N": 2, "P": 9, "Q": 5, "Wstride": 2, "Hstride": 2,
                               "Wdilation": 1, "Hdilation": 1}


# -- failures ------------------------------------------------------------------------------------------
def test_failure_reasons_from_real_logs():
    assert failure_reason(text("no_valid_mapping.log")) == (
        "no valid mappings found within search criteria (5000 invalid mappings (3334 fanout, 1666 capacity) "
        "found since the last valid mapping, terminating search)")
    reason = failure_reason(text("accelergy_failure.log"), text("accelergy_failure.accelergy.log"))
    assert reason.startswith("Accelergy failed: Can not find an energy estimator for DRAM(type=XYZ")
    assert "DRAM type XYZ is not supported" in reason and "\n" not in reason
    assert failure_reason("ERROR: data storage width: 65  block_size: 1  word_bits: 8\n") == \
        "ERROR: data storage width: 65  block_size: 1  word_bits: 8"
    assert failure_reason("all fine\n") == ""


def test_unknown_accelerator_is_one_line(tmp_path):
    with pytest.raises(UserError, match=r"expected a shipped Timeloop accelerator \(eyeriss_like\)") as info:
        TimeloopEngine(str(tmp_path / "nowhere")).folder()
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="energy.mapping_objective"):
        get_engine("timeloop", "eyeriss_like", "edp")


def test_accelerator_identity_follows_file_contents(tmp_path):
    copy = tmp_path / "acc"
    shutil.copytree(SHIPPED / "eyeriss_like", copy)
    first = TimeloopEngine(str(copy)).accelerator_id()
    assert first == TimeloopEngine(str(copy)).accelerator_id()
    (copy / "mapper.yaml").write_text((copy / "mapper.yaml").read_text().replace("victory_condition: 200",
                                                                                  "victory_condition: 201"))
    assert TimeloopEngine(str(copy)).accelerator_id() != first


# -- the shipped accelerator against ZigZag's eyeriss_like ---------------------------------------------
class _TaggedLoader(yaml.SafeLoader):
    pass


_TaggedLoader.add_multi_constructor("!", lambda loader, tag, node: {"tag": tag.lstrip("!"), **loader.construct_mapping(node, deep=True)})


def _storages(nodes):
    for node in nodes:
        if node["tag"] == "Parallel":
            yield from _storages(node["nodes"])
        elif node["tag"] == "Component" and node["class"] != "bits_mac":
            yield node


@pytest.mark.parametrize("wb, ib, ob", [(8, 8, 8), (5, 3, 7), (2, 6, 2)])
def test_shipped_eyeriss_like_mirrors_zigzags(wb, ib, ob):
    import jinja2

    from energy.engines.timeloop import template_data
    from energy.engines.zigzag import zigzag_root

    zz = yaml.safe_load((zigzag_root() / "inputs" / "hardware" / "eyeriss_like.yaml").read_text())
    g = PADDED
    data = template_data(g, wb, ib, ob)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    arch = yaml.load(env.from_string((SHIPPED / "eyeriss_like" / "arch.yaml").read_text()).render(**data),
                     Loader=_TaggedLoader)["architecture"]
    operand = {"I1": "Inputs", "I2": "Weights", "O": "Outputs"}
    store = {n["name"]: n for n in _storages(arch["nodes"])}
    for name, mem in zz["memories"].items():
        port = mem["ports"][0]["bandwidth_max"]
        held = sorted(operand[o] for o in mem["operands"])
        parts = [store[f"DRAM_{o.lower()}"] for o in held] if name == "dram" else [store[name]]
        assert sorted(ds for p in parts for ds in p["constraints"]["dataspace"]["keep"]) == held, name
        for p in parts:
            a = p["attributes"]
            assert a["width"] % a["datawidth"] == 0, name  # Timeloop asserts this
            if p["class"] == "bits_regfile":  # one value per access, capacity in bits as ZigZag's
                assert a["width"] == a["datawidth"], name
                assert mem["size"] - a["width"] < a["depth"] * a["width"] <= mem["size"], name
            else:  # the port holds as many whole values as fit; SRAM depth in port words as ZigZag's
                assert port - a["datawidth"] < a["width"] <= port, name
                assert p["class"] == "DRAM" or a["depth"] == mem["size"] // port, name
    widths = {n: store[n]["attributes"]["datawidth"] for n in ("DRAM_weights", "DRAM_inputs", "DRAM_outputs")}
    assert widths == {"DRAM_weights": wb, "DRAM_inputs": ib, "DRAM_outputs": ob}
    meshes = [n["spatial"] for n in arch["nodes"] if "spatial" in n]
    assert [m.get("meshX", m.get("meshY")) for m in meshes] == zz["operational_array"]["sizes"]


def test_accelerators_command_lists_the_shipped_timeloop_ones():
    from test_cli import run

    result = run("accelerators", cwd=Path(__file__).parent)
    assert result.returncode == 0, result.stderr
    assert "timeloop accelerators: eyeriss_like" in result.stdout.splitlines()


def test_residency_and_pooling_traffic_are_refused_in_one_line():
    from energy.engines.base import Residency

    engine = get_engine("timeloop", "eyeriss_like")
    assert not engine.supports_residency and engine.activation_buffer() is None
    with pytest.raises(UserError, match="energy.elementwise: the timeloop engine") as info:
        engine.dram_costs()
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="energy.residency: the timeloop engine"):
        engine.evaluate(PADDED, 8, 8, [8], Residency(True, False))
