"""User accelerators and mapping files, refusal of accelerators without DRAM, one-line mapper
failures, and the per-level breakdown's consistency with ZigZag's own totals."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from edge_fixtures import POINTWISE, conv, tiny_edge

from energy.engines import get_engine
from energy.engines.base import LEVELS, OPERANDS, MappingError, detail
from energy.engines.zigzag import shipped_accelerators, shipped_mappings
from energy.build import build_from_layers
from energy.table import TableSpec
from sw.core.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def test_shipped_edge_accelerator_and_row_stationary_mapping_are_listed():
    assert "eyeriss_edge" in shipped_accelerators() and "eyeriss_like" in shipped_accelerators()
    assert "eyeriss_like_row_stationary" in shipped_mappings()


def test_row_stationary_mapping_for_eyeriss_like():
    rs = get_engine("zigzag", "eyeriss_like", mapping="eyeriss_like_row_stationary")
    rs.check()
    assert rs.accelerator_id() != get_engine("zigzag", "eyeriss_like").accelerator_id()  # another cache key
    layer = conv(8, 8, 14)   # 14 output rows, 3 filter rows, 8 output channels
    cme = rs.search(layer, 8, 8, 8)
    spatial = {str(dim): factor for op in cme.spatial_mapping.mapping_dict_origin.values()
               for level in op for dim, factor in level}
    assert spatial == {"OY": 14, "FY": 3, "K": 4}
    assert rs.metrics(cme)["spatial_utilization"] == 1.0      # 14 x 12 PEs busy (ZigZag's default: 64 of 168)
    innermost = cme.temporal_mapping.mapping_dic_origin
    assert all(str(loops[0][0][0]) == "FX" for loops in innermost.values())  # a filter row slides in each PE


def test_user_accelerator_with_its_own_mapping_file(tmp_path):
    hardware, mapping = tiny_edge(tmp_path)
    other = tmp_path / "ox_k.yaml"
    other.write_text(mapping.read_text().replace("K, 4", "OX, 4").replace("C, 4", "K, 4"))
    mine = get_engine("zigzag", str(hardware), mapping=str(other), lpf_limit=4)
    mine.check()
    cme = mine.search(POINTWISE, 4, 4, 4)
    spatial = {str(dim): factor for level in cme.spatial_mapping.mapping_dict_origin.values() for lv in level
               for dim, factor in lv}
    assert spatial == {"OX": 4, "K": 4}
    default = get_engine("zigzag", str(hardware), mapping=str(mapping), lpf_limit=4)
    assert mine.accelerator_id() != default.accelerator_id()
    assert mine.evaluate(POINTWISE, 4, 4, [4]) != default.evaluate(POINTWISE, 4, 4, [4])


def test_missing_mapping_file_is_one_line(tmp_path):
    with pytest.raises(UserError, match="energy.mapping: expected an existing ZigZag mapping") as info:
        get_engine("zigzag", "eyeriss_like", mapping=str(tmp_path / "none.yaml")).check()
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="energy.mapping: expected a shipped mapping"):
        get_engine("zigzag", "eyeriss_like", mapping="no_such_mapping").check()


def without_dram(folder: Path) -> Path:
    hardware, _ = tiny_edge(folder)
    spec = yaml.safe_load(hardware.read_text())
    del spec["memories"]["dram"]
    path = folder / "no_dram.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_accelerator_without_dram_is_refused_in_one_line(tmp_path):
    path = without_dram(tmp_path)
    with pytest.raises(UserError, match="off-chip DRAM") as info:
        get_engine("zigzag", str(path), mapping=str(tiny_edge(tmp_path)[1])).check()
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "gb_activations_8KB" in message


def test_accelerator_without_dram_through_the_cli(tmp_path):
    path = without_dram(tmp_path)
    (tmp_path / "w.yaml").write_text(f"""
name: nodram
model: {{name: digits_cnn, num_classes: 10, input_shape: [3, 32, 32]}}
datasets: {{exploration: {{name: digits, split: val}}}}
energy: {{accelerator: {path}, mapping: {tiny_edge(tmp_path)[1]}}}
results: {{dir: {tmp_path / 'results'}}}
""")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "energy", "table", str(tmp_path / "w.yaml")], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "off-chip DRAM" in lines[0]


def unmappable_at_8_bits(folder: Path) -> tuple[Path, Path]:
    """tiny_edge with a 4-bit weight register file: a 2-bit weight fits, an 8-bit one does not."""
    hardware, mapping = tiny_edge(folder)
    spec = yaml.safe_load(hardware.read_text())
    spec["name"] = "tiny_rf"
    spec["memories"]["rf_64B_W"]["size"] = 4
    path = folder / "tiny_rf.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path, mapping


def test_mapper_failure_is_one_line_naming_layer_bits_and_accelerator(tmp_path):
    hardware, mapping = unmappable_at_8_bits(tmp_path)
    layer = conv(8, 8, 4, k=1)
    engine = get_engine("zigzag", str(hardware), mapping=str(mapping), lpf_limit=4)
    assert engine.evaluate(layer, 2, 2, [2])[2]["energy_total_pj"] > 0
    with pytest.raises(MappingError) as info:
        engine.evaluate(layer, 8, 8, [8])
    assert "\n" not in str(info.value) and "W8/I8/O8" in str(info.value) and "tiny_rf" in str(info.value)
    spec = TableSpec(accelerator=str(hardware), mapping=str(mapping), bits=(2, 8), baseline_bits=8, workers=1,
                     lpf_limit=4)
    with pytest.raises(UserError) as info:
        build_from_layers({"head.conv": layer}, spec, tmp_path / "cache.sqlite")
    message = str(info.value)
    assert "\n" not in message and message.startswith("layer head.conv: ")
    assert "conv 8->8 1x1" in message and "W8/I8/O8" in message and "tiny_rf" in message


def test_breakdown_adds_up_to_zigzag_totals(tmp_path):
    hardware, mapping = tiny_edge(tmp_path)
    engine = get_engine("zigzag", str(hardware), mapping=str(mapping), lpf_limit=4)
    cme = engine.search(POINTWISE, 8, 4, 6)
    m = engine.metrics(cme)
    # the per-level columns partition ZigZag's own energy total
    assert m["energy_total_pj"] == pytest.approx(cme.energy_total, rel=1e-12)
    assert m["dram_energy_pj"] + m["gb_energy_pj"] + m["rf_energy_pj"] + m["mac_energy_pj"] == pytest.approx(
        cme.energy_total, rel=1e-12)
    assert m["mac_energy_pj"] == POINTWISE.macs * 0.5                  # 0.5 pJ per MAC in the YAML
    assert m["latency_cycles"] == cme.latency_total2 and 0 < m["utilization"] <= 1
    # levels classified from the YAML: per-PE register files, array-wide banks, DRAM
    records = detail(m)
    kinds = {memory: level for level, memory, _, _ in records}
    assert kinds == {"rf_64B_A": "rf", "rf_64B_W": "rf", "rf_16B": "rf", "gb_weights_8KB": "gb",
                     "gb_activations_8KB": "gb", "dram": "dram"}
    for level in LEVELS:
        for op in OPERANDS:
            mine = [f for lv, _, o, f in records if lv == level and o == op]
            assert sum(f["energy_pj"] for f in mine) == pytest.approx(m[f"{level}_{op}_energy_pj"])
            for d in ("read", "write"):
                assert sum(f[f"{d}_bits"] for f in mine) == pytest.approx(m[f"{level}_{op}_{d}_bits"])
    # every weight crosses DRAM at least once; words are the 64-bit DRAM port's
    assert m["dram_w_read_bits"] >= POINTWISE.n_weights * 8 and m["dram_word_bits"] == 64
    assert m["dram_o_final_bits"] == POINTWISE.n_outputs * 6
