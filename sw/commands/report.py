"""`python -m sw report [WORKLOAD]`: one HTML page per study with every result that exists.

Reads the results database, front.json, the energy table, the weather sweep, the co-simulation
reports and the ablation/export/retraining folders of the study (see `sw.report.inputs`) and
writes `<results>/<name>/report/index.html`, each figure as PNG, SVG, TikZ/pgfplots `.tex`
with its data `.csv`, and `figures.tex` (all TikZ figures in one LaTeX document). Nothing is
evaluated: run explore, weather-sweep, cosim, ... first; their sections appear once they exist.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sw.report.build import build_report
from sw.study.study import Study

HELP = "write the study's HTML report (front, generations, hypervolume, bits, energy, weather, cosim) with TikZ figures"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workload", nargs="?", help="workload YAML (default: the embedded digits_cnn study)")
    parser.add_argument("--run", type=int, default=None, metavar="ID",
                        help="exploration run to report (default: the latest of this workload)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <results>/<name>/report)")


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    study = Study(args.workload)
    report = build_report(study, run_id=args.run, out_dir=args.out)
    print(f"report of {study.name}: {report.index}")
    print(f"  sections: {', '.join(report.present)}")
    if report.absent:
        print(f"  not yet (their command has not run): {', '.join(report.absent)}")
    print(f"  {len(report.figures)} figures as PNG, SVG and TikZ/pgfplots (.tex + .csv); "
          f"`pdflatex figures.tex` in {report.out_dir} compiles them all")
    for problem in report.inputs.problems:
        print(f"error: {problem}", file=sys.stderr)
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 2 if report.inputs.problems else 0
