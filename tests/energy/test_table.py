"""The energy table: parallel build, SQLite cache, lookup semantics, CSV, corrupt cache."""

import csv
import json
import sqlite3

import numpy as np
import pytest

from tiny_net import Tiny

from energy.build import build_from_layers
from energy.plot import plot_breakdown
from energy.table import COLUMNS, TableSpec, resolve_column
from energy.trace import trace_layers
from sw.core.errors import DataError, UserError
from sw.search.pareto import front_point


SPEC = TableSpec(bits=(2, 8), mode="tied", baseline_bits=8, workers=2)


@pytest.fixture(scope="module")
def layers():
    return trace_layers(Tiny(num_classes=3), [3, 6, 6])


@pytest.fixture(scope="module")
def built(layers, tmp_path_factory):
    cache = tmp_path_factory.mktemp("energy") / "cache.sqlite"
    first = build_from_layers(layers, SPEC, cache)
    second = build_from_layers(layers, SPEC, cache)
    return cache, first, second


def cached_rows(cache):
    with sqlite3.connect(cache) as db:
        return [(layer, wb, ib, ob, json.loads(m)) for layer, wb, ib, ob, m in
                db.execute("SELECT layer, weight_bits, input_bits, output_bits, metrics FROM results")]


def test_build_in_processes_then_only_cache_hits(built):
    cache, (table1, stats1), (table2, stats2) = built
    assert (stats1.misses, stats1.hits) == (4, 0)          # 2 geometries x 2 tied bit widths
    assert (stats2.misses, stats2.hits) == (0, 4)
    for c in COLUMNS:
        np.testing.assert_array_equal(table1.data[c], table2.data[c])
    assert len(cached_rows(cache)) == 2 * 2 * 2            # x 2 output widths


def test_lookup_uses_next_layer_input_bits_as_output_bits(built):
    cache, (table, _), _ = built
    rows = {(layer, wb, ib, ob): m for layer, wb, ib, ob, m in cached_rows(cache)}
    config = {"conv": (2, 2), "fc": (8, 8)}
    # conv writes its output at fc's input bits (8); fc, the last layer, at the baseline 8
    expected = rows[("conv", 2, 2, 8)]["dram_energy_pj"] + rows[("fc", 8, 8, 8)]["dram_energy_pj"]
    assert table.lookup(config, "dram_energy_pj") == pytest.approx(expected)
    assert table.lookup(config, "dram_energy_uj") == pytest.approx(expected / 1e6)
    config = {"conv": (8, 8), "fc": (2, 2)}
    expected_bits = sum(rows[("conv", 8, 8, 2)][c] + rows[("fc", 2, 2, 8)][c]
                        for c in rows[("conv", 8, 8, 2)] if c.startswith("dram_")
                        and c.endswith(("_read_bits", "_write_bits")))
    assert table.lookup(config, "dram_bits") == pytest.approx(expected_bits)
    per_layer = table.per_layer(config, "dram_o_write_bits")
    assert list(per_layer) == [4 * 6 * 6 * 2, 3 * 8]   # outputs written once, at 2 and at 8 bits


def test_lookup_rejects_bits_outside_the_table(built):
    _, (table, _), _ = built
    with pytest.raises(DataError, match="covers bits"):
        table.lookup({"conv": (4, 4), "fc": (8, 8)}, "dram_energy_uj")
    with pytest.raises(DataError, match="no entry"):
        table.lookup({"conv": (2, 8), "fc": (8, 8)}, "dram_energy_uj")  # separate pair in a tied table


def test_csv_has_every_computed_row(built, tmp_path):
    _, (table, _), _ = built
    path = table.write_csv(tmp_path / "t.csv")
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 2 * 2 * 2
    assert {(r["layer"], r["weight_bits"], r["output_bits"]) for r in rows} >= {("conv", "2", "8"), ("fc", "8", "2")}
    assert set(COLUMNS) <= set(rows[0])


def test_column_names():
    assert resolve_column("dram_energy") == ("dram_energy_pj", 1e-6)
    assert resolve_column("latency_cycles") == ("latency_cycles", 1.0)
    with pytest.raises(UserError, match="energy.objective"):
        resolve_column("dram_energy_kwh")


def test_corrupt_cache_is_reported_and_kept(layers, tmp_path):
    cache = tmp_path / "cache.sqlite"
    content = b"this is not a database" * 100
    cache.write_bytes(content)
    with pytest.raises(DataError, match=str(cache)):
        build_from_layers(layers, SPEC, cache)
    assert cache.read_bytes() == content


def test_foreign_sqlite_file_is_not_touched(layers, tmp_path):
    cache = tmp_path / "other.sqlite"
    with sqlite3.connect(cache) as db:
        db.execute("CREATE TABLE results (x INTEGER)")
    with pytest.raises(DataError, match="expected an energy cache"):
        build_from_layers(layers, SPEC, cache)
    with sqlite3.connect(cache) as db:
        assert [r[1] for r in db.execute("PRAGMA table_info(results)")] == ["x"]


def test_plot_breakdown_and_front_point(built, tmp_path):
    _, (table, _), _ = built
    front = tmp_path / "front.csv"
    front.write_text("point,top1,dram_energy_uj,conv.bits,fc.bits\n0,0.9,0.5,8,2\n1,0.8,0.2,2,2\n")
    bits, row = front_point(front, table.layer_names, cost_column="dram_energy_uj")
    assert bits == {"conv": (2, 2), "fc": (2, 2)} and row["point"] == "1"   # the lowest-energy point
    png = plot_breakdown(table, {"all 8-bit": table.uniform(8), "point 1": bits}, tmp_path / "b.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(DataError, match="no bit-width column"):
        front_point(front, ["conv", "other"])


@pytest.mark.parametrize("damage", ["{not json", '{"dram_energy_pj": 1.0}', '{"energy_total_pj": "NaN"}'])
def test_a_damaged_row_costs_only_that_row(built, tmp_path, damage):
    source, (table, _), _ = built
    cache = tmp_path / "cache.sqlite"
    with sqlite3.connect(source) as src, sqlite3.connect(cache) as dst:
        src.backup(dst)
    with sqlite3.connect(cache) as db:
        db.execute("UPDATE results SET metrics=? WHERE layer='fc' AND weight_bits=2 AND output_bits=8", (damage,))
    rebuilt, stats = build_from_layers(trace_layers(Tiny(num_classes=3), [3, 6, 6]), SPEC, cache)
    assert (stats.damaged, stats.misses, stats.hits) == (1, 1, 3)   # only fc's (2, 2) search is redone
    for c in COLUMNS:
        np.testing.assert_array_equal(rebuilt.data[c], table.data[c])
    _, again = build_from_layers(trace_layers(Tiny(num_classes=3), [3, 6, 6]), SPEC, cache)
    assert (again.damaged, again.misses, again.hits) == (0, 0, 4)    # the row was replaced


def test_mapper_settings_are_part_of_the_cache_key(tmp_path):
    from dataclasses import replace

    from edge_fixtures import POINTWISE, tiny_edge

    hardware, mapping = tiny_edge(tmp_path)
    base = TableSpec(accelerator=str(hardware), mapping=str(mapping), bits=(2,), baseline_bits=2, workers=1,
                     lpf_limit=4)
    layers, cache = {"pw": POINTWISE}, tmp_path / "cache.sqlite"
    assert build_from_layers(layers, base, cache)[1].misses == 1
    for change in ({"lpf_limit": 5}, {"spatial_mappings": 2}, {"mapping_objective": "latency"}):
        _, stats = build_from_layers(layers, replace(base, **change), cache)
        assert (stats.misses, stats.hits) == (1, 0), change
    assert (build_from_layers(layers, base, cache)[1].hits) == 1
