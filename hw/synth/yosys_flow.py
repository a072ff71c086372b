"""Open synthesis flow: yosys `synth_xilinx` of mpconv_top over a matrix of configurations.

Each configuration (lanes x word width x float format) is synthesized for Xilinx 7-series
(the Zynq-7020 fabric of the Vivado flow) and its primitive cells are summed into a
utilization table (LUT, FF, CARRY4, BRAM, DSP, ...) written as CSV and Markdown and printed.

    python hw/synth/yosys_flow.py                      # the full matrix (make synth)
    python hw/synth/yosys_flow.py --lanes 1 --word-width 32 --float fp32

By default the hierarchy is kept, so the lane module is synthesized once per parameter set
and 16 lanes cost little more time than one; --flatten optimizes across module boundaries
(closer to Vivado's default, slower). Results go to hw/synth/results/yosys/: the tables and,
per configuration, the yosys script, log, `stat -json` output and a per-module breakdown.
The tables are rewritten after every configuration, so an interrupted run keeps what it did.

Timing (timing.py): per word width and float format, one lane is synthesized flat and
yosys `sta` gives the critical path (cell delays), its logic levels and an estimated
maximum frequency, added to every row of that configuration (--no-timing skips it).
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from timing import NET_NS, Timing, TimingError, parse_sta, timing_script
from utilization_table import Row, markdown, resources, write_csv, write_markdown
from yosys_stat import DesignStat, StatError, read_stat_json, short_label

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCES = HERE.parent / "rtl" / "sources.f"
DEFAULT_OUT = HERE / "results" / "yosys"
TOP = "mpconv_top"
LUT_PER_LANE_TARGET = 3000


class FlowError(Exception):
    """A problem the user can fix (missing tool, bad source list); printed as one line."""


def read_source_list(path: Path) -> list[Path]:
    """The Verilog files of a source list: one path per line, relative to the list's folder.

    Blank lines and lines starting with # or // are skipped.
    """
    if not path.is_file():
        raise FlowError(f"source list {path} does not exist (expected one Verilog file per line)")
    files = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith(("#", "//")):
            continue
        file = (path.parent / line).resolve()
        if not file.is_file():
            raise FlowError(f"{path} line {number}: {line} does not exist")
        files.append(file)
    if not files:
        raise FlowError(f"source list {path} names no Verilog file")
    return files


def yosys_script(row: Row, sources: list[Path], top: str, flatten: bool, abc9: bool) -> str:
    """The yosys commands that synthesize one configuration and write its statistics."""
    params = {"LANES": row.lanes, "WORD_W": row.word_w, "BF16": int(row.bf16),
              "FIFO_DEPTH": row.fifo_depth}
    chparams = " ".join(f"-chparam {name} {value}" for name, value in params.items())
    options = " ".join(["-family xc7", f"-top {top}", "-noiopad"]
                       + (["-flatten"] if flatten else []) + (["-abc9"] if abc9 else []))
    reads = "\n".join(f'read_verilog "{file}"' for file in sources)
    return (f"{reads}\n"
            f"hierarchy -check -top {top} {chparams}\n"
            f"synth_xilinx {options}\n"
            f"tee -q -o stat.json stat -json -top {top}\n")


def _last_error(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "no log written"
    errors = [line.strip() for line in lines if line.startswith("ERROR")]
    return errors[-1] if errors else (lines[-1].strip() if lines else "empty log")


def synthesize(row: Row, sources: list[Path], top: str, out: Path, flatten: bool,
               abc9: bool, verbose: bool) -> DesignStat:
    """Run yosys for one configuration; fill `row` and return the per-module statistics."""
    work = out / row.name
    work.mkdir(parents=True, exist_ok=True)
    (work / "stat.json").unlink(missing_ok=True)
    (work / "synth.ys").write_text(yosys_script(row, sources, top, flatten, abc9))
    command = ["yosys", "-q", "-l", "yosys.log", "-s", "synth.ys"]
    if verbose:
        print(f"[{row.name}] cd {work} && {' '.join(command)}", file=sys.stderr)
    start = time.monotonic()
    done = subprocess.run(command, cwd=work, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, check=False)
    row.seconds = time.monotonic() - start
    if done.returncode != 0:
        raise FlowError(f"{row.name}: yosys failed (exit {done.returncode}): "
                        f"{_last_error(work / 'yosys.log')}; full log: {work / 'yosys.log'}")
    stat = read_stat_json(work / "stat.json", top)
    row.counts = resources(stat.total())
    (work / "modules.md").write_text(module_breakdown(stat, row.name))
    return stat


def timing_of(word_w: int, bf16: bool, fifo_depth: int, sources: list[Path], top: str, out: Path,
              verbose: bool) -> Timing:
    """yosys sta of one flat lane (LANES=1) of a word width and float format."""
    name = f"timing_W{word_w}_{'bf16' if bf16 else 'fp32'}"
    work = out / name
    work.mkdir(parents=True, exist_ok=True)
    (work / "sta.txt").unlink(missing_ok=True)
    params = {"LANES": 1, "WORD_W": word_w, "BF16": int(bf16), "FIFO_DEPTH": fifo_depth}
    (work / "timing.ys").write_text(timing_script(sources, top, params))
    command = ["yosys", "-q", "-l", "yosys.log", "-s", "timing.ys"]
    if verbose:
        print(f"[{name}] cd {work} && {' '.join(command)}", file=sys.stderr)
    done = subprocess.run(command, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    if done.returncode != 0:
        raise FlowError(f"{name}: yosys failed (exit {done.returncode}): {_last_error(work / 'yosys.log')}; "
                        f"full log: {work / 'yosys.log'}")
    try:
        return parse_sta((work / "sta.txt").read_text(), str(work / "sta.txt"))
    except (OSError, TimingError) as exc:
        raise FlowError(f"{name}: no timing result ({exc})") from None


def _timing_key(row: Row) -> tuple[int, bool]:
    return row.word_w, row.bf16


def module_breakdown(stat: DesignStat, name: str) -> str:
    """Markdown table of every module: instances, its own and its subtree's resources."""
    header = ["module", "instances", "LUT (own)", "LUT (subtree)", "FF (subtree)",
              "BRAM (subtree)", "DSP (subtree)"]
    lines = [f"Per-module resources of {name} (one instance each; subtree = with sub-modules)",
             "", "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    instances = stat.instances()
    for module in sorted(instances, key=lambda m: -resources(stat.subtree(m))["LUT"]):
        own = resources(stat.modules[module])
        sub = resources(stat.subtree(module))
        lines.append(f"| {short_label(module)} | {instances[module]} | {own['LUT']:.0f} "
                     f"| {sub['LUT']:.0f} | {sub['FF']:.0f} | {sub['BRAM']:g} "
                     f"| {sub['DSP']:.0f} |")
    return "\n".join(lines) + "\n"


def _progress(total: int):
    try:
        from tqdm import tqdm
    except ImportError:  # plain lines when tqdm is not installed
        return None
    return tqdm(total=total, desc="yosys synth_xilinx", unit="config", file=sys.stderr,
                dynamic_ncols=True)


def _say(bar, text: str) -> None:
    if bar is not None:
        bar.write(text, file=sys.stderr)
    else:
        print(text, file=sys.stderr, flush=True)


def run_matrix(rows: list[Row], sources: list[Path], top: str, out: Path, jobs: int,
               flatten: bool, abc9: bool, verbose: bool,
               timing: bool = True) -> tuple[list[Row], list[str], dict]:
    """Synthesize every row (at most `jobs` at once), and time each word width x float format
    once; tables are rewritten after each result. Returns (rows done, failures, timings)."""
    out.mkdir(parents=True, exist_ok=True)
    order = {row.name: index for index, row in enumerate(rows)}
    done: list[Row] = []
    failures: list[str] = []
    timings: dict[tuple[int, bool], Timing] = {}
    keys = sorted({_timing_key(row) for row in rows}) if timing else []
    title = (f"yosys {'flat' if flatten else 'hierarchical'} synth_xilinx"
             f"{' -abc9' if abc9 else ''} of {top}, Xilinx 7-series cells")
    bar = _progress(len(rows) + len(keys))
    _say(bar, f"synthesizing {len(rows)} configuration(s) and timing {len(keys)} with yosys, "
              f"{jobs} at a time; logs in {out}")

    def tables() -> None:
        for row in done:
            t = timings.get(_timing_key(row))
            if t is not None:
                row.timing = {"crit_ns": t.crit_ns, "levels": t.levels, "fmax_cells_mhz": t.fmax_cells_mhz,
                              "fmax_est_mhz": t.fmax_est_mhz}
        write_csv(done, out / "utilization.csv")
        write_markdown(done, out / "utilization.md", title)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(timing_of, w, bf16, rows[0].fifo_depth, sources, top, out, verbose): ("timing", (w, bf16))
                   for w, bf16 in keys}
        futures.update({pool.submit(synthesize, row, sources, top, out, flatten, abc9, verbose): ("synth", row)
                        for row in rows})
        for future in as_completed(futures):
            kind, what = futures[future]
            try:
                result = future.result()
            except (FlowError, StatError) as exc:
                failures.append(str(exc))
                _say(bar, f"{what.name if kind == 'synth' else what}: FAILED ({exc})")
            else:
                if kind == "synth":
                    done.append(what)
                    done.sort(key=lambda r: order[r.name])
                    _say(bar, f"{what.name}: LUT {what.counts['LUT']:.0f}, FF {what.counts['FF']:.0f}, "
                              f"BRAM {what.counts['BRAM']:g}, DSP {what.counts['DSP']:.0f} "
                              f"({what.seconds:.0f} s)")
                else:
                    timings[what] = result
                    _say(bar, f"timing W={what[0]} {'bf16' if what[1] else 'fp32'}: {result.summary()}")
                tables()
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return done, failures, timings


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _power_of_two(text: str) -> int:
    value = int(text)
    if value < 2 or value & (value - 1):
        raise argparse.ArgumentTypeError(f"expected a power of two >= 2, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="yosys synth_xilinx of mpconv_top over a matrix of configurations; "
                    "prints and writes a utilization table (CSV and Markdown).")
    parser.add_argument("--lanes", type=_positive, nargs="+", default=[1, 4, 16],
                        help="LANES values (default: 1 4 16)")
    parser.add_argument("--word-width", type=int, nargs="+", choices=[16, 32, 64],
                        default=[32, 64], help="WORD_W values (default: 32 64)")
    parser.add_argument("--float", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"],
                        help="float side: fp32 (BF16=0), bf16 (BF16=1) (default: both)")
    parser.add_argument("--fifo-depth", type=_power_of_two, default=512,
                        help="FIFO_DEPTH (default: 512)")
    parser.add_argument("--sources", type=Path, default=DEFAULT_SOURCES,
                        help="Verilog source list (default: hw/rtl/sources.f)")
    parser.add_argument("--top", default=TOP, help=f"top module (default: {TOP})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="results folder (default: hw/synth/results/yosys)")
    parser.add_argument("--jobs", type=_positive, default=2,
                        help="configurations synthesized at once (default: 2)")
    parser.add_argument("--flatten", action="store_true",
                        help="flatten before synthesis (cross-module optimization, slower)")
    parser.add_argument("--abc9", action="store_true",
                        help="use yosys' ABC9 LUT mapping (experimental in yosys 0.23)")
    parser.add_argument("--no-timing", action="store_true",
                        help="skip the critical-path estimate (yosys sta of one flat lane)")
    parser.add_argument("--verbose", action="store_true", help="print the yosys commands")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if shutil.which("yosys") is None:
            raise FlowError("yosys is not on PATH (install it, e.g. `apt-get install yosys`)")
        sources = read_source_list(args.sources.resolve())
        rows = [Row(lanes, word_w, fmt == "bf16", args.fifo_depth) for word_w, fmt, lanes
                in itertools.product(args.word_width, args.float, args.lanes)]
        rows = list({row.name: row for row in rows}.values())  # repeated values once
        done, failures, timings = run_matrix(rows, sources, args.top, args.out.resolve(), args.jobs,
                                             args.flatten, args.abc9, args.verbose, not args.no_timing)
    except FlowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if done:
        print(markdown(done, f"Utilization ({len(done)} configuration(s)); "
                             f"BRAM in RAMB36 units, LUT_per_lane = LUT / lanes"))
        for row in done:
            if row.word_w == 32 and not row.bf16:
                verdict = "meets" if row.lut_per_lane <= LUT_PER_LANE_TARGET else "exceeds"
                print(f"{row.name}: {row.lut_per_lane:.0f} LUTs per lane ({verdict} the "
                      f"target of <= {LUT_PER_LANE_TARGET})")
        for (word_w, bf16), t in sorted(timings.items()):
            print(f"critical path W={word_w} {'bf16' if bf16 else 'fp32'} (one lane, flat, yosys sta): "
                  f"{t.summary()}; from {t.startpoint}; fmax <= {t.fmax_cells_mhz:.0f} MHz (cells only), "
                  f"~{t.fmax_est_mhz:.0f} MHz with {t.net_hops} nets at {NET_NS} ns")
        print(f"tables: {args.out / 'utilization.csv'}, {args.out / 'utilization.md'}")
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    return 2 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
