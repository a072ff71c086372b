"""`python -m sw weather-sweep [WORKLOAD] --conditions fog snow --severities 1 3 5`.

Evaluates fp32, the uniform baseline-bit model and every Pareto point of the latest
exploration of WORKLOAD under every condition x severity (see `sw.robustness.run`), stores the
results in the study's results database and writes `sweep.csv` and plots to
`<results>/<name>/weather/`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sw.data import corruptions
from sw.robustness.plots import write_outputs
from sw.robustness.result import summary_lines
from sw.robustness.run import DEFAULT_CONDITIONS, run_sweep
from sw.study.study import Study

HELP = "evaluate fp32, 8-bit and the Pareto front under weather conditions x severities; write plots"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workload", nargs="?", help="workload YAML (default: the embedded digits_cnn study)")
    parser.add_argument("--conditions", nargs="+", default=list(DEFAULT_CONDITIONS), metavar="NAME",
                        help=f"conditions (default: {' '.join(DEFAULT_CONDITIONS)}; all: "
                             f"{', '.join(corruptions.CONDITIONS.names())})")
    parser.add_argument("--severities", nargs="+", type=int, default=list(corruptions.SEVERITIES), metavar="S",
                        help="severities 1-5 (default: all)")
    parser.add_argument("--phase", default="exploration",
                        choices=("exploration", "baseline", "reevaluation", "calibration", "retraining"),
                        help="dataset phase to corrupt (default: exploration)")
    parser.add_argument("--seed", type=int, default=0, help="corruption seed (default 0)")
    parser.add_argument("--workers", type=int, default=2, help="processes that generate corruptions (default 2)")
    parser.add_argument("--run", type=int, default=None, metavar="ID",
                        help="exploration run whose Pareto front is swept (default: the latest of this workload)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--baselines-only", action="store_true",
                       help="sweep fp32 and the uniform baseline only (no exploration needed)")
    which.add_argument("--point", metavar="N|best",
                       help="sweep only this Pareto point (and fp32, the baseline): N, or best: the cheapest point "
                            "that meets the accuracy constraint on held-out data")
    parser.add_argument("--fresh", action="store_true",
                        help="re-evaluate rows already in the results database instead of reusing them")
    parser.add_argument("--out", default=None,
                        help="folder for sweep.csv and plots (default: <results>/<name>/weather)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                        help="progress bar (default: on)")


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    for condition in args.conditions:
        corruptions.check_condition(condition)
    for severity in args.severities:
        corruptions.check_severity(severity)
    study = Study(args.workload, progress=False)
    w = study.workload
    print(f"Workload {w.name} ({w.path}): {len(args.conditions)} conditions x {len(set(args.severities))} severities "
          f"on the {args.phase} data")
    result = run_sweep(study, args.conditions, args.severities, phase=args.phase, seed=args.seed,
                       workers=args.workers, pareto=not args.baselines_only, run_id=args.run, point=args.point,
                       fresh=args.fresh, progress=args.progress)
    out_dir = study.results_dir / "weather" if args.out is None else Path(args.out)
    paths = write_outputs(result, out_dir, title=w.name)
    print(f"{len(result.models)} models ({', '.join(m.label for m in result.models)}); "
          f"{result.evaluated} evaluations, {result.reused} reused from the database")
    print(f"{result.metric} accuracy, clean and mean over severities {', '.join(map(str, result.severities))}:")
    for line in summary_lines(result):
        print("  " + line)
    print(f"results database: {study.db_path} (tables weather_sweeps, weather_results; sweep {result.sweep_id})")
    for name, path in paths.items():
        print(f"{name:>9}: {path}")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0
