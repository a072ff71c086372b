"""The Vivado flow (hw/synth/vivado/synth.tcl) run under tclsh with stub Vivado commands.

Nobody here has Vivado, so every Vivado command the script may call is replaced by a stub
that records the call; the tests then check the recorded flow: every file of the source
list is read, the top, part and parameters are set, the clock constraint is applied and
the reports and checkpoints are written. Any other Vivado command makes the run fail, and
the Tcl 8.6-only commands are removed because Vivado embeds Tcl 8.5.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HW = ROOT / "hw"
SCRIPT = HW / "synth" / "vivado" / "synth.tcl"
TCLSH = shutil.which("tclsh")

pytestmark = pytest.mark.skipif(TCLSH is None, reason="tclsh (Tcl 8.6) is not installed")

# Vivado commands (UG835) the flow is allowed to use; each stub logs its name and arguments
# (tab-separated, one call per line) and returns a plausible value.
STUBS = r"""
set ::stub_log [open $::env(STUB_LOG) a]
proc stub_record {name arguments} {
    puts $::stub_log [join [concat [list $name] $arguments] "\t"]
    flush $::stub_log
}
foreach command {read_verilog read_xdc synth_design opt_design place_design route_design
                 report_utilization report_timing_summary write_checkpoint set_property
                 create_clock set_input_delay set_output_delay} {
    proc $command args "stub_record $command \$args; return {}"
}
proc get_ports args { stub_record get_ports $args; return [lindex $args end] }
proc get_clocks args { stub_record get_clocks $args; return [lindex $args end] }
proc all_inputs args { stub_record all_inputs $args; return {in_a in_b clk} }
proc all_outputs args { stub_record all_outputs $args; return {out_a out_b} }
proc remove_from_collection args {
    stub_record remove_from_collection $args
    set keep {}
    foreach item [lindex $args 0] { if {[lsearch -exact [lindex $args 1] $item] < 0} { lappend keep $item } }
    return $keep
}
proc get_timing_paths args { stub_record get_timing_paths $args; return {timing_path_0} }
proc get_property args { stub_record get_property $args; return 0.250 }
# Vivado embeds Tcl 8.5: commands that only exist in 8.6 must not be used.
foreach command {lmap try throw tailcall coroutine yield yieldto zlib} {
    catch {rename $command {}}
}
proc unknown args {
    puts stderr "stub: [lindex $args 0] is neither Tcl 8.5 nor a stubbed Vivado command"
    exit 3
}
set script [lindex $::argv 0]
set ::argv [lrange $::argv 1 end]
set ::argc [llength $::argv]
source $script
"""


@pytest.fixture
def harness(tmp_path) -> Path:
    path = tmp_path / "vivado_stubs.tcl"
    path.write_text(STUBS)
    return path


def run_flow(harness: Path, log: Path, *args: str, script: Path = SCRIPT,
             cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([TCLSH, str(harness), str(script), *args], capture_output=True,
                          text=True, env={**os.environ, "STUB_LOG": str(log)}, cwd=cwd,
                          timeout=60)


def calls(log: Path) -> list[tuple[str, list[str]]]:
    if not log.exists():
        return []
    return [(line.split("\t")[0], line.split("\t")[1:])
            for line in log.read_text().splitlines() if line]


def option(args: list[str], name: str) -> list[str]:
    """Every value given to `name` in one recorded call."""
    return [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == name]


def index_of(recorded, name: str, predicate=lambda args: True) -> int:
    found = [i for i, (command, args) in enumerate(recorded) if command == name and predicate(args)]
    assert found, f"{name} was never called as expected; calls: {[c for c, _ in recorded]}"
    return found[0]


def source_list_files(path: Path) -> list[Path]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    return [(path.parent / line).resolve() for line in lines
            if line and not line.startswith(("#", "//"))]


def clock_of(xdc: Path, harness: Path, tmp_path: Path, io_delay: str = "4.000") -> list[str]:
    """Source an XDC under the stubs (proving it is valid Tcl), check its I/O delays and
    return create_clock's args."""
    log = tmp_path / "xdc.log"
    done = run_flow(harness, log, script=xdc)
    assert done.returncode == 0, done.stderr
    recorded = calls(log)
    assert [c for c, _ in recorded].count("create_clock") == 1, recorded
    assert ("get_ports", ["clk"]) in recorded, recorded
    # every input but the clock and every output get a delay against clk, after the clock exists
    clock = index_of(recorded, "create_clock")
    inputs = index_of(recorded, "set_input_delay")
    outputs = index_of(recorded, "set_output_delay")
    assert clock < inputs and clock < outputs
    assert recorded[inputs][1] == ["-clock", "clk", io_delay, "in_a in_b"], recorded[inputs]
    assert recorded[outputs][1] == ["-clock", "clk", io_delay, "out_a out_b"], recorded[outputs]
    return recorded[clock][1]


def test_default_flow_reads_sources_sets_top_part_clock_and_writes_reports(harness, tmp_path):
    out = tmp_path / "out"
    log = tmp_path / "vivado.log"
    done = run_flow(harness, log, "-out", str(out))
    assert done.returncode == 0, done.stderr
    recorded = calls(log)

    expected = source_list_files(HW / "rtl" / "sources.f")
    assert expected, "hw/rtl/sources.f lists no file"
    read = [Path(args[-1]).resolve() for command, args in recorded if command == "read_verilog"]
    assert read == expected

    synth = index_of(recorded, "synth_design")
    assert [c for c, _ in recorded].count("synth_design") == 1
    args = recorded[synth][1]
    assert option(args, "-top") == ["mpconv_top"]
    assert option(args, "-part") == ["xc7z020clg400-1"]
    assert option(args, "-mode") == ["out_of_context"]
    assert sorted(option(args, "-generic")) == sorted(
        ["LANES=1", "WORD_W=32", "BF16=0", "FIFO_DEPTH=512"])
    assert max(i for i, (c, _) in enumerate(recorded) if c == "read_verilog") < synth

    clock_xdc = out / "clock.xdc"
    xdc = index_of(recorded, "read_xdc", lambda a: Path(a[-1]) == clock_xdc)
    assert xdc < synth, "the clock constraint must be read before synthesis"
    assert option(recorded[xdc][1], "-mode") == ["out_of_context"]
    assert option(clock_of(clock_xdc, harness, tmp_path), "-period") == ["10.000"]

    for command, target in [("report_utilization", out / "utilization_synth.rpt"),
                            ("report_utilization", out / "utilization_synth_hier.rpt"),
                            ("report_timing_summary", out / "timing_synth.rpt")]:
        at = index_of(recorded, command, lambda a, t=target: option(a, "-file") == [str(t)])
        assert at > synth
    at = index_of(recorded, "write_checkpoint", lambda a: a[-1] == str(out / "post_synth.dcp"))
    assert at > synth and "-force" in recorded[at][1]
    for command in ("opt_design", "place_design", "route_design"):
        assert command not in [c for c, _ in recorded], f"{command} ran without -impl"
    summary = (out / "summary.txt").read_text()
    assert "part xc7z020clg400-1" in summary and "wns_synth_ns 0.250" in summary


def test_impl_on_ultrascale_with_parameters_and_extra_constraints(harness, tmp_path):
    out = tmp_path / "out"
    log = tmp_path / "vivado.log"
    extra = tmp_path / "extra.xdc"
    extra.write_text("set_property DONT_TOUCH true [get_cells u_regs]\n")
    done = run_flow(harness, log, "-impl", "-family", "zynqmp", "-lanes", "4", "-word_w", "64",
                    "-bf16", "1", "-fifo_depth", "1024", "-period", "4", "-xdc", str(extra),
                    "-out", str(out))
    assert done.returncode == 0, done.stderr
    recorded = calls(log)
    names = [c for c, _ in recorded]

    synth = index_of(recorded, "synth_design")
    args = recorded[synth][1]
    assert option(args, "-part") == ["xczu9eg-ffvb1156-2-e"]
    assert sorted(option(args, "-generic")) == sorted(
        ["LANES=4", "WORD_W=64", "BF16=1", "FIFO_DEPTH=1024"])
    clock = index_of(recorded, "read_xdc", lambda a: Path(a[-1]) == out / "clock.xdc")
    user = index_of(recorded, "read_xdc", lambda a: Path(a[-1]) == extra)
    assert clock < user < synth
    assert option(clock_of(out / "clock.xdc", harness, tmp_path, io_delay="1.600"), "-period") == ["4.000"]

    opt, place, route = (names.index(c) for c in ("opt_design", "place_design", "route_design"))
    assert synth < opt < place < route
    for command, target in [("report_utilization", out / "utilization_route.rpt"),
                            ("report_timing_summary", out / "timing_route.rpt")]:
        assert index_of(recorded, command,
                        lambda a, t=target: option(a, "-file") == [str(t)]) > route
    assert index_of(recorded, "write_checkpoint",
                    lambda a: a[-1] == str(out / "post_route.dcp")) > route
    assert "wns_route_ns 0.250" in (out / "summary.txt").read_text()


def test_part_option_wins_and_default_paths_follow_the_script(harness, tmp_path):
    """A copy of the flow in another tree reads that tree's hw/rtl/sources.f (comments and
    blank lines skipped) and writes to that tree's hw/synth/results/vivado/<configuration>."""
    tree = tmp_path / "hw"
    (tree / "synth" / "vivado").mkdir(parents=True)
    script = tree / "synth" / "vivado" / "synth.tcl"
    shutil.copy(SCRIPT, script)
    (tree / "rtl" / "sub").mkdir(parents=True)
    for name in ("a.v", "sub/b.v"):
        (tree / "rtl" / name).write_text("module m; endmodule\n")
    (tree / "rtl" / "sources.f").write_text("# compile order\n\nsub/b.v\n  a.v  \n// end\n")
    log = tmp_path / "vivado.log"
    done = run_flow(harness, log, "-part", "xc7a35tcpg236-1", "-family", "zynqmp", "-lanes", "2",
                    script=script, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    recorded = calls(log)
    assert [Path(a[-1]) for c, a in recorded if c == "read_verilog"] == [
        (tree / "rtl" / "sub" / "b.v").resolve(), (tree / "rtl" / "a.v").resolve()]
    assert option(recorded[index_of(recorded, "synth_design")][1], "-part") == ["xc7a35tcpg236-1"]
    out = tree / "synth" / "results" / "vivado" / "L2_W32_fp32_xc7a35tcpg236-1"
    assert (out / "clock.xdc").is_file() and (out / "summary.txt").is_file()


@pytest.mark.parametrize("args, expected", [
    (["-lanes", "0"], "-lanes"),
    (["-lanes"], "expected a value"),
    (["-word_w", "24"], "-word_w"),
    (["-bf16", "2"], "-bf16"),
    (["-fifo_depth", "100"], "power of two"),
    (["-period", "fast"], "-period"),
    (["-io_budget", "1.5"], "-io_budget"),
    (["-family", "virtex2"], "-family"),
    (["-xdc", "/nonexistent/extra.xdc"], "/nonexistent/extra.xdc"),
    (["-sources", "/nonexistent/sources.f"], "/nonexistent/sources.f"),
    (["-bogus"], "unknown option '-bogus'"),
])
def test_bad_options_give_one_error_line_and_run_nothing(harness, tmp_path, args, expected):
    log = tmp_path / "vivado.log"
    done = run_flow(harness, log, "-out", str(tmp_path / "out"), *args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert calls(log) == []


def test_missing_file_in_source_list_names_list_and_line(harness, tmp_path):
    (tmp_path / "a.v").write_text("module a; endmodule\n")
    sources = tmp_path / "sources.f"
    sources.write_text("a.v\nmissing.v\n")
    log = tmp_path / "vivado.log"
    done = run_flow(harness, log, "-sources", str(sources), "-out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {sources} line 2: missing.v does not exist"
    assert calls(log) == []


def test_help_lists_options_and_runs_nothing(harness, tmp_path):
    log = tmp_path / "vivado.log"
    done = run_flow(harness, log, "-help")
    assert done.returncode == 0, done.stderr
    for flag in ("-part", "-family", "-lanes", "-word_w", "-bf16", "-period", "-io_budget", "-impl", "-out"):
        assert flag in done.stdout
    assert calls(log) == []


def _make(target: str, path: str, tmp_path: Path, **variables: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": path}
    command = ["make", "--no-print-directory", "-f", "synth/synth.mk", target,
               *(f"{k}={v}" for k, v in variables.items())]
    return subprocess.run(command, cwd=HW, capture_output=True, text=True, env=env, timeout=120)


def test_make_synth_vivado_without_vivado_explains_how_to_run(tmp_path):
    path = "/usr/bin:/bin"
    if shutil.which("vivado", path=path):
        pytest.skip("a real vivado is installed in /usr/bin")
    done = _make("synth-vivado", path, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "vivado is not on PATH" in done.stdout
    assert "synth/vivado/synth.tcl" in done.stdout and "-tclargs" in done.stdout


def test_make_synth_vivado_runs_the_script_in_batch_mode(harness, tmp_path):
    """A fake `vivado` on PATH records its command line and runs the script under the stubs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "vivado"
    fake.write_text(f"""#!/bin/sh
echo "$@" > "{tmp_path / 'cmdline'}"
while [ $# -gt 0 ]; do
  case "$1" in
    -source) script="$2"; shift 2 ;;
    -tclargs) shift; break ;;
    *) shift ;;
  esac
done
exec "{TCLSH}" "{harness}" "$script" "$@"
""")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    out = tmp_path / "out"
    log = tmp_path / "vivado.log"
    os.environ["STUB_LOG"] = str(log)
    try:
        done = _make("synth-vivado", f"{bin_dir}:/usr/bin:/bin", tmp_path,
                     VIVADO_ARGS=f"-lanes 2 -out {out}")
    finally:
        del os.environ["STUB_LOG"]
    assert done.returncode == 0, done.stdout + done.stderr
    cmdline = (tmp_path / "cmdline").read_text().split()
    assert cmdline[:2] == ["-mode", "batch"]
    assert Path(HW / cmdline[cmdline.index("-source") + 1]).resolve() == SCRIPT
    recorded = calls(log)
    assert "LANES=2" in option(recorded[index_of(recorded, "synth_design")][1], "-generic")
    assert (out / "summary.txt").is_file()
