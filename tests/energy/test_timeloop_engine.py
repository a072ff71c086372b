"""The Timeloop engine end to end: real timeloop-mapper + Accelergy on the shipped eyeriss_like.

Skipped where Timeloop is not installed (CI); energy/README.md says how to build it. The parser is
tested without Timeloop in test_timeloop_stats.py on real stats files of this stack.
"""

import math
import shutil
from pathlib import Path

import pytest
from edge_fixtures import conv

from energy.engines import get_engine
from energy.engines.base import METRICS
from energy.engines.timeloop import SHIPPED, missing_parts
from sw.core.errors import UserError

MISSING = missing_parts()
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"Timeloop is not installed here (missing: "
                                                      f"{', '.join(MISSING)}; see energy/README.md, Timeloop)")

LPDDR4_PJ_PER_BIT = 8.0  # Accelergy's CACTI plug-in table
# conv 4 -> 8, 3x3 'same' on 6x6: everything fits on chip, so each tensor crosses DRAM once
TINY = conv(4, 8, 6)


@pytest.fixture(scope="module")
def results():
    engine = get_engine("timeloop", "eyeriss_like", "energy")
    engine.check()
    return engine.evaluate(TINY, 8, 4, [8, 4])


def test_tensors_cross_dram_once_at_their_own_widths(results):
    for ob, m in results.items():
        assert set(METRICS) <= set(m)
        assert m["gb_energy_pj"] > 0 and m["rf_energy_pj"] > 0
        assert m["dram_w_read_bits"] == TINY.n_weights * 8
        assert m["dram_i_read_bits"] >= TINY.n_inputs * 4 * (1 - 1e-9)  # the halo may be fetched twice
        assert m["dram_o_write_bits"] == TINY.n_outputs * ob
        assert m["dram_w_read_words"] == math.ceil(TINY.n_weights / 8)
        assert m["dram_o_write_words"] == math.ceil(TINY.n_outputs / (64 // ob))
        assert m["dram_w_energy_pj"] == pytest.approx(TINY.n_weights * 8 * LPDDR4_PJ_PER_BIT)
        assert m["dram_o_energy_pj"] == pytest.approx(TINY.n_outputs * ob * LPDDR4_PJ_PER_BIT)
        assert 0 < m["mac_energy_pj"] < m["energy_total_pj"] and m["dram_energy_pj"] < m["energy_total_pj"]
        assert m["latency_cycles"] >= TINY.macs / (14 * 12)
    assert results[4]["dram_o_energy_pj"] * 2 == pytest.approx(results[8]["dram_o_energy_pj"])


def test_timeloop_failures_are_one_line(tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(SHIPPED / "eyeriss_like", broken)
    arch = broken / "arch.yaml"
    arch.write_text(arch.read_text().replace('type: "LPDDR4", datawidth: {{ WEIGHT_BITS }}',
                                             'type: "XYZ", datawidth: {{ WEIGHT_BITS }}'))
    with pytest.raises(UserError) as info:
        get_engine("timeloop", str(broken)).evaluate(TINY, 8, 8, [8])
    message = str(info.value)
    assert "\n" not in message and "conv 4->8" in message and "W8/I8/O8" in message
    assert "Accelergy failed" in message and "DRAM type XYZ is not supported" in message
    kept = Path(message.rsplit("outputs kept in ", 1)[1].rstrip(")"))
    assert (kept / "out" / "timeloop.log").is_file()
    shutil.rmtree(kept)


@pytest.mark.slow
def test_energy_table_command_with_timeloop(tmp_path):
    from test_cli import run, workload

    path = workload(tmp_path, "energy: {engine: timeloop, accelerator: eyeriss_like, workers: 2}")
    result = run("table", str(path), "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "engine timeloop, accelerator eyeriss_like" in result.stdout
    assert "0 cache hits, 4 computed" in result.stdout
    rows = (tmp_path / "results" / "tiny" / "energy_table.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 2 * 2
