"""`python -m energy COMMAND`: per-layer DRAM energy tables, plots and the engine benchmark.

    python -m energy table [WORKLOAD] [--workers N] [--no-cache]
    python -m energy plot [WORKLOAD] [--front CSV]
    python -m energy fronts [WORKLOAD] [--front LABEL=CSV]
    python -m energy accelerators
    python -m energy bench [--workers N] [--mode tied|separate] [--compare N]

User errors print one line (`error: ...`) and exit 2; `--verbose` shows engine logs and tracebacks.
`energy/__main__.py` sets the library warning policy before this module imports torch.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from energy import bench
from energy.build import build_table
from energy.engines import timeloop, zigzag
from energy.fronts import front_costs
from energy.outputs import write_outputs
from energy.plot import plot_workload
from sw.cli import run_cli
from sw.config.workload import load_workload
from sw.core.errors import UserError


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", "-v", action="store_true", help="engine logs and tracebacks on errors")


def _add_workload(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workload", nargs="?", help="workload YAML (default: the embedded default workload)")


def cmd_table(args: argparse.Namespace) -> int:
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers: expected an integer >= 1, got {args.workers}")
    workload = load_workload(args.workload)
    table, stats = build_table(workload, workers=args.workers, use_cache=not args.no_cache,
                               progress=not args.no_progress, verbose=args.verbose)
    files = write_outputs(workload, table)
    spec = table.spec
    print(f"energy table of {workload.name}: {stats.layers} layers ({stats.geometries} distinct), "
          f"engine {spec.engine}, accelerator {spec.accelerator}, bits {spec.bits[0]}..{spec.bits[-1]} ({spec.mode}), "
          f"batch {spec.batch}, residency {'on' if spec.residency else 'off'}, pooling/adds {spec.elementwise}")
    print(f"mapping searches: {stats.hits} cache hits, {stats.misses} computed"
          + (f" ({stats.infeasible} with an activation on chip found no mapping)" if stats.infeasible else "")
          + f", {stats.seconds:.1f} s")
    print_vs_bits(table)
    for bits in sorted({spec.baseline_bits, spec.bits[0]}, reverse=True):
        cfg = table.uniform(bits)
        print(f"all {bits}-bit: DRAM energy {table.lookup(cfg, 'dram_energy_uj'):.3f} uJ, "
              f"total energy {table.lookup(cfg, 'energy_total_uj'):.3f} uJ, DRAM traffic {table.lookup(cfg, 'dram_bits') / 8e3:.1f} kB")
    print(f"wrote {stats.cache}")
    for path in files:
        print(f"wrote {path}")
    return 0


def print_vs_bits(table) -> None:
    """DRAM energy per layer at every uniform bit width, and its ratio to a linear scaling from the top width."""
    rows = table.vs_bits()
    bits = table.bits
    width = max(len(n) for n in table.layer_names) + 2
    print(f"DRAM energy per layer [nJ] at uniform bits; (x) = ratio to the linear scaling from {max(bits)} bits; "
          f"* = output stays on chip")
    print(" " * width + "".join(f"{b:>16}" for b in bits))
    for name in [*table.layer_names, "total"]:
        cells = []
        for b in bits:
            mine = [r for r in rows if r["bits"] == b and (name == "total" or r["layer"] == name)]
            value = sum(r["dram_energy_pj"] for r in mine) / 1e3
            linear = sum(r["dram_energy_linear_pj"] for r in mine) / 1e3
            star = "*" if name != "total" and mine[0]["output_on_chip"] else " "
            cells.append(f"{value:>9.1f}{star}({value / linear:4.2f})" if linear else f"{value:>9.1f}{star}     ")
        print(f"{name:<{width}}" + "".join(f"{c:>16}" for c in cells))


def cmd_plot(args: argparse.Namespace) -> int:
    workload = load_workload(args.workload)
    path = plot_workload(workload, front_csv=args.front, output=args.output, workers=args.workers)
    print(f"wrote {path}")
    return 0


def cmd_fronts(args: argparse.Namespace) -> int:
    workload = load_workload(args.workload)
    fronts = {workload.name: workload.results_dir / "front.csv"}
    for item in args.front or []:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise UserError(f"--front: expected LABEL=CSV, got {item!r}")
        fronts[label] = Path(path)
    table, _ = build_table(workload, workers=args.workers)
    rows = front_costs(workload, table, fronts)
    columns = list(rows[0]) if rows else []
    widths = [max(len(c), *(len(_cell(r[c])) for r in rows)) for c in columns]
    print("  ".join(f"{c:>{w}}" for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(f"{_cell(r[c]):>{w}}" for c, w in zip(columns, widths)))
    return 0


def _cell(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def cmd_accelerators(args: argparse.Namespace) -> int:
    print("zigzag accelerators: " + ", ".join(zigzag.shipped_accelerators()))
    print("zigzag mappings (energy.mapping): " + ", ".join(zigzag.shipped_mappings()))
    print("timeloop accelerators: " + ", ".join(timeloop.shipped_accelerators()))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    return bench.main(workers=args.workers, lower=args.lower, upper=args.upper, mode=args.mode,
                      cache=args.cache, image_size=args.image_size, compare=args.compare, accelerator=args.accelerator)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m energy", description="Per-layer DRAM accesses and energy of a "
                                     "quantized network at every bit width, from a real accelerator cost model.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("table", help="build (or read from the cache) the per-layer energy table of a workload",
                       description="Build the per-layer energy table (SQLite cache + CSV) of a workload.")
    _add_workload(p)
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: energy.workers)")
    p.add_argument("--no-cache", action="store_true", help="recompute every entry (the cache is updated, not read)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("plot", help="per-layer DRAM energy: all-baseline-bit vs a chosen Pareto point (PNG)",
                       description="Per-layer DRAM energy breakdown of the all-baseline-bit model and of the "
                                   "lowest-energy feasible point of the workload's Pareto front.")
    _add_workload(p)
    p.add_argument("--front", help="Pareto front CSV (default: the workload's results/<name>/front.csv)")
    p.add_argument("--output", help="PNG path (default: results/<name>/energy_breakdown.png)")
    p.add_argument("--workers", type=int, default=None, help="worker processes for missing table entries")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("fronts", help="Pareto fronts side by side, every point costed by energy and by weighted bits",
                       description="Cost every point of the workload's front (and of other fronts, e.g. the "
                                   "weighted-bits search's) with the workload's energy objective and bit weighting.")
    _add_workload(p)
    p.add_argument("--front", action="append", metavar="LABEL=CSV", help="another front.csv to cost (repeatable)")
    p.add_argument("--workers", type=int, default=None, help="worker processes for missing table entries")
    p.set_defaults(func=cmd_fronts)

    p = sub.add_parser("accelerators", help="list the shipped accelerator definitions (ZigZag, Timeloop) and mapping files")
    p.set_defaults(func=cmd_accelerators)

    p = sub.add_parser("bench", help="benchmark: time and engine calls for the resnet18 32x32 table",
                       description="Build the resnet18 (10 classes, 32x32) table into a fresh cache and report "
                                   "wall time and mapping searches; then rebuild it from the cache. With --compare N, "
                                   "first time N of its mapping searches with ZigZag's stock pipeline and with this "
                                   "project's energy-first search, side by side, and check they agree exactly.")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--lower", type=int, default=2)
    p.add_argument("--upper", type=int, default=8)
    p.add_argument("--mode", choices=("tied", "separate"), default="separate")
    p.add_argument("--accelerator", default="eyeriss_like")
    p.add_argument("--compare", type=int, default=0, metavar="N",
                   help="searches timed with both pipelines first (0: none; -1: every search of the table)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--cache", help="cache file (default: a fresh temporary file, i.e. a cold build)")
    p.set_defaults(func=cmd_bench)
    for p in sub.choices.values():  # last: --verbose closes every command's options
        _add_common(p)
    return parser


def _run(args: argparse.Namespace) -> int:
    logging.getLogger("zigzag").setLevel(logging.INFO if args.verbose else logging.ERROR)
    return int(args.func(args) or 0)


def main(argv: list[str] | None = None) -> int:
    """Run the command line (one error/interrupt/logging policy for every entry point: `sw.cli.run_cli`)."""
    return run_cli(build_parser, argv, _run)
