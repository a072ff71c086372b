"""The open synthesis flow (hw/synth/yosys_flow.py, `make synth`) with the real yosys.

One small configuration of the real converter (1 lane, 32-bit words, fp32) goes through
`make synth`; its FIFOs must map to block RAM. Tiny throwaway designs check the matrix
driver's error handling, and hand-written statistics check the cell bookkeeping.
"""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HW = ROOT / "hw"
sys.path.insert(0, str(HW / "synth"))

from timing import NET_NS, TimingError, parse_sta  # noqa: E402
from utilization_table import resources  # noqa: E402
from yosys_stat import StatError, parse_stat_json, read_stat_json, short_label  # noqa: E402

needs_yosys = pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys is not installed")
FLOW = [sys.executable, str(HW / "synth" / "yosys_flow.py")]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """`make synth` (run in hw/) of LANES=1, WORD_W=32, fp32 into a temporary folder (once)."""
    if shutil.which("yosys") is None:
        pytest.skip("yosys is not installed")
    out = tmp_path_factory.mktemp("synth")
    done = subprocess.run(
        ["make", "--no-print-directory", "synth", f"PYTHON={sys.executable}",
         f"SYNTH_ARGS=--lanes 1 --word-width 32 --float fp32 --out {out}"],
        cwd=HW, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return done, out


def test_make_synth_prints_and_writes_the_table(small):
    done, out = small
    header = re.search(r"^\| config \|.*\|$", done.stdout, re.M)
    assert header, done.stdout
    for column in ("LUT", "LUT_per_lane", "FF", "CARRY4", "BRAM", "DSP"):
        assert f"| {column} |" in header.group(0)
    assert re.search(r"^\| L1_W32_fp32 \| 1 \| 32 \| fp32 \| 512 \| \d+ \|", done.stdout, re.M)
    assert re.search(r"L1_W32_fp32: \d+ LUTs per lane \((meets|exceeds) the target", done.stdout)

    rows = list(csv.DictReader(open(out / "utilization.csv")))
    assert [r["config"] for r in rows] == ["L1_W32_fp32"]
    row = rows[0]
    assert int(row["LUT"]) > 0 and int(row["FF"]) > 0 and int(row["CARRY4"]) > 0
    # the critical-path estimate (yosys sta of one flat lane) is in the table and printed
    assert float(row["crit_ns"]) > 1 and int(row["levels"]) > 2
    assert 0 < float(row["fmax_est_mhz"]) < float(row["fmax_cells_mhz"]) == pytest.approx(
        1000 / float(row["crit_ns"]), rel=0.01)
    assert re.search(r"critical path W=32 fp32 \(one lane, flat, yosys sta\): \d+\.\d+ ns of cells, \d+ levels",
                     done.stdout)
    assert float(row["LUT_per_lane"]) == float(row["LUT"])  # one lane
    assert (out / "utilization.md").read_text().count("| L1_W32_fp32 |") == 1

    # yosys' own hierarchy total (the "design" block) agrees with the table's LUT column.
    text = (out / "L1_W32_fp32" / "stat.json").read_text()
    design = text[text.index('"design"'):]
    luts = sum(int(n) for n in re.findall(r'"LUT[1-6]":\s*(\d+)', design))
    assert luts == int(row["LUT"])


def test_fifos_map_to_block_ram(small):
    _, out = small
    row = next(csv.DictReader(open(out / "utilization.csv")))
    assert float(row["BRAM"]) > 0, "no block RAM in the design"

    stat = read_stat_json(out / "L1_W32_fp32" / "stat.json", "mpconv_top")
    fifos = stat.modules_named("mpconv_fifo")
    assert fifos, f"no mpconv_fifo module in {sorted(stat.modules)}"
    depth, word_w = 512, 32
    for fifo in fifos:
        cells = resources(stat.subtree(fifo))
        assert cells["BRAM"] > 0, f"{short_label(fifo)} has no block RAM: {cells}"
        # Storage in flip-flops would take DEPTH x WIDTH of them; pointers and flags need
        # about 3 x log2(DEPTH) + a handful.
        assert cells["FF"] < depth // 4, f"{short_label(fifo)} uses {cells['FF']} flip-flops"
        assert cells["LUTRAM"] == 0, f"{short_label(fifo)} maps to distributed RAM"
    # The whole design holds fewer flip-flops than one FIFO's storage would need.
    assert float(row["FF"]) < depth * word_w


# ---- the driver on throwaway designs (fast) ----

TINY = """
module tiny_top #(parameter LANES = 1, parameter WORD_W = 32, parameter BF16 = 0,
                  parameter FIFO_DEPTH = 512) (
    input wire clk, input wire [WORD_W-1:0] a, input wire [WORD_W-1:0] b,
    output reg [LANES*WORD_W-1:0] y);
    integer i;
    always @(posedge clk)
        for (i = 0; i < LANES; i = i + 1) y[i*WORD_W +: WORD_W] <= a + b + i;
    generate if (WORD_W == 64) begin : g_bad
        module_that_does_not_exist u_missing (.clk(clk));
    end endgenerate
endmodule
"""


@needs_yosys
def test_failed_configuration_keeps_the_others_and_exits_2(tmp_path):
    (tmp_path / "tiny.v").write_text(TINY)
    (tmp_path / "sources.f").write_text("tiny.v\n")
    out = tmp_path / "out"
    done = subprocess.run([*FLOW, "--sources", str(tmp_path / "sources.f"), "--top", "tiny_top",
                           "--lanes", "2", "--word-width", "32", "64", "--float", "fp32",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    # the W=64 configuration fails twice (its synthesis and its timing run), nothing else does
    errors = sorted(line for line in done.stderr.splitlines() if line.startswith("error: "))
    assert len(errors) == 2, done.stderr
    assert "L2_W64_fp32: yosys failed" in errors[0] and str(out / "L2_W64_fp32" / "yosys.log") in errors[0]
    assert "timing_W64_fp32: yosys failed" in errors[1] and str(out / "timing_W64_fp32" / "yosys.log") in errors[1]
    rows = list(csv.DictReader(open(out / "utilization.csv")))
    assert [r["config"] for r in rows] == ["L2_W32_fp32"]
    # the W=32 row still got its critical path: the adder's carry chain, registered
    assert float(rows[0]["crit_ns"]) > 0 and int(rows[0]["levels"]) >= 8
    # two 32-bit registered adders: 64 flip-flops, carry chains, per-lane LUTs = LUT / 2
    assert int(rows[0]["FF"]) == 64 and int(rows[0]["CARRY4"]) >= 8
    assert float(rows[0]["LUT_per_lane"]) == pytest.approx(int(rows[0]["LUT"]) / 2, abs=0.5)
    assert "| L2_W32_fp32 | 2 | 32 | fp32 | 512 |" in done.stdout


@pytest.mark.parametrize("content, expected", [
    (None, "does not exist"),
    ("# nothing\n\n", "names no Verilog file"),
    ("missing.v\n", "line 1: missing.v does not exist"),
])
def test_bad_source_list_gives_one_error_line(tmp_path, content, expected):
    sources = tmp_path / "sources.f"
    if content is not None:
        sources.write_text(content)
    done = subprocess.run([*FLOW, "--sources", str(sources), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert str(sources) in lines[0]


def test_help_describes_the_matrix():
    done = subprocess.run([*FLOW, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for flag in ("--lanes", "--word-width", "--float", "--flatten", "--jobs", "--out"):
        assert flag in done.stdout


# ---- critical path from yosys sta output ----

# Shaped like yosys 0.23 `sta` (latest arrival first; net names on the indented lines).
STA = """
14. Executing STA pass (static timing analysis).
Latest arrival time in 'mpconv_top' is 3110:
    3110 $auto$ff.cc:266:slice$1 (FDRE.D)
           $abc$9.Y [3]
    2900 $abc$8 (LUT6.I2->O)
           $abc$8.A
    2400 $auto$alumacc.cc:485:replace_alu$7.slice[1].carry4 (CARRY4.CI->O)
           $auto$alumacc.cc:485:replace_alu$7.CO [3]
    2100 $auto$alumacc.cc:485:replace_alu$7.slice[0].carry4 (CARRY4.S->CO)
           $auto$alumacc.cc:485:replace_alu$7.X [0]
    1600 $abc$6.mux7 (MUXF7.I0->O)
           $abc$6.f0
    1400 $abc$6.lut0 (LUT6.I1->O)
           \q_bits [1]
     399 $auto$ff.cc:266:slice$2 (FDRE.C->Q)
           \clk
      96 $auto$clkbufmap.cc:261:execute$3 (BUFG.I->O)
       0   \clk (<primary input>)

Arrival histogram:
"""


def test_sta_critical_path_levels_and_estimate():
    t = parse_sta(STA)
    assert t.arrival_ps == 3110 and t.crit_ns == pytest.approx(3.11)
    assert t.cells == ["BUFG", "FDRE", "LUT6", "MUXF7", "CARRY4", "CARRY4", "LUT6"]
    assert t.levels == 5  # LUT6, MUXF7, 2 x CARRY4, LUT6: not the buffer or the flip-flop
    # general routing into: the first LUT6, the carry chain (from a MUXF7), the last LUT6, the endpoint
    assert t.net_hops == 4
    assert t.fmax_cells_mhz == pytest.approx(1000 / 3.11)
    assert t.fmax_est_mhz == pytest.approx(1000 / (3.11 + 4 * NET_NS))
    assert t.endpoint.startswith("FDRE.D of") and t.startpoint.startswith("FDRE ")
    with pytest.raises(TimingError, match="no 'Latest arrival time'"):
        parse_sta("nothing here")


def test_sta_path_launched_by_a_shift_register_or_an_input_port():
    """The launching cell (here an SRL16E, clock -> Q) is no logic level and no routed input;
    a path from an input port has no launching cell."""
    t = parse_sta(STA.replace("FDRE.C->Q", "SRL16E.CLK->Q"))
    assert t.cells[:2] == ["BUFG", "SRL16E"] and t.levels == 5 and t.net_hops == 4
    assert t.startpoint.startswith("SRL16E ") and t.logic == ["LUT6", "MUXF7", "CARRY4", "CARRY4", "LUT6"]
    from_port = STA[:STA.index("     399")] + "       0   \\q_bits (<primary input>)\n\nArrival histogram:\n"
    t = parse_sta(from_port)
    assert t.cells == ["LUT6", "MUXF7", "CARRY4", "CARRY4", "LUT6"] and t.levels == 5


# ---- cell bookkeeping on hand-written statistics ----

# Shaped like yosys 0.23 `stat -json -top top`, including its stray text hierarchy lines
# and instance types written without the leading backslash of the module keys.
STAT = r"""{
   "creator": "Yosys 0.23",
   "modules": {
      "$paramod$0123456789abcdef\\lane": {
         "num_cells": 6,
         "num_cells_by_type": {"leaf": 2, "LUT6": 3, "FDRE": 1}
      },
      "\\leaf": {
         "num_cells": 3,
         "num_cells_by_type": {"RAMB18E1": 1, "LUT2": 1, "FDCE": 4}
      },
      "\\top": {
         "num_cells": 4,
         "num_cells_by_type": {"$paramod$0123456789abcdef\\lane": 3, "LUT4": 1}
      }
   },
       $paramod$0123456789abcdef\lane      3
         leaf      2
      "design": {
         "num_cells": 32,
         "num_cells_by_type": {"FDCE": 24, "FDRE": 3, "LUT2": 6, "LUT4": 1, "LUT6": 9,
                               "RAMB18E1": 6}
      }
}
"""


def test_hierarchy_totals_multiply_through_instances():
    stat = parse_stat_json(STAT, "top")
    lane = "$paramod$0123456789abcdef\\lane"
    assert stat.total() == Counter({"FDCE": 24, "FDRE": 3, "LUT2": 6, "LUT4": 1, "LUT6": 9,
                                    "RAMB18E1": 6})
    assert stat.subtree(lane) == Counter({"LUT6": 3, "FDRE": 1, "LUT2": 2, "FDCE": 8,
                                          "RAMB18E1": 2})
    assert stat.instances() == Counter({"top": 1, lane: 3, "leaf": 6})
    assert stat.modules_named("lane") == [lane]
    assert short_label(lane) == "lane #01234567"


def test_inconsistent_or_foreign_statistics_are_rejected():
    with pytest.raises(StatError, match="do not add up"):
        parse_stat_json(STAT.replace('"LUT4": 1, "LUT6": 9', '"LUT4": 2, "LUT6": 9'), "top")
    with pytest.raises(StatError, match="top module nope not found"):
        parse_stat_json(STAT, "nope")
    with pytest.raises(StatError, match="not a yosys"):
        parse_stat_json("{\"modules\": 3}", "top")


def test_resource_classes():
    cells = Counter({"LUT1": 1, "LUT6": 2, "FDRE": 3, "FDCE": 1, "FDSE": 2, "FDPE": 1,
                     "RAMB36E1": 1, "RAMB18E1": 3, "DSP48E1": 2, "CARRY4": 5, "SRLC32E": 1,
                     "SRL16E": 2, "RAM64M": 2, "RAM32X1D": 1, "INV": 4, "MUXF7": 9, "BUFG": 1})
    assert resources(cells) == {"LUT": 3, "FF": 7, "CARRY4": 5, "BRAM": 2.5, "DSP": 2,
                                "LUTRAM": 3, "SRL": 3, "INV": 4}


def test_hw_makefile_provides_the_synth_targets():
    """hw/Makefile includes synth/synth.mk, so the top-level `make synth` reaches the flow."""
    for target, expected in [("synth", "synth/yosys_flow.py"),
                             ("synth-vivado", "synth/vivado/synth.tcl")]:
        done = subprocess.run(["make", "--no-print-directory", "-n", "-C", str(HW), target,
                               f"PYTHON={sys.executable}"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert expected in done.stdout, done.stdout
