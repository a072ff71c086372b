"""`python -m sw sensitivity WORKLOAD`: each layer's sensitivity to quantization at every bit width
the search allows: Hessian (Hutchinson) and Fisher (FIT) trace proxies, and the measured loss and
top1 drop when only that layer goes to those bits; their rank correlation is printed.

Proxies and measurements use the calibration data (selection data, never the held-out split).
Every measurement is committed to the results database as it is made (`sw.search.sensitivity_store`:
a killed run continues, a repeated one measures nothing); the whole table is written to
results/<name>/sensitivity/sensitivity.csv (the report draws it; `allocate`, `compare-search` and
`search.init: ilp` measure it too where the database lacks it)."""

from __future__ import annotations

import argparse
import time

from sw.search.sensitivity import spearman
from sw.search.sensitivity_store import PHASE, measure, write_csv
from sw.study.study import Study

HELP = "per-layer sensitivity (Hessian / Fisher trace proxies and measured drop) at every searched bit width"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workload", nargs="?", help="workload YAML (default: the embedded study)")
    parser.add_argument("--samples", type=int, default=8, help="Hutchinson probes per calibration batch (default 8)")
    parser.add_argument("--progress", action="store_true", help="progress bars")


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    study = Study(args.workload, progress=args.progress)
    w = study.workload
    print(f"Sensitivity of {study.name}: {len(study.quantized_model.layer_names)} layers, bits "
          f"{w.search.bits.lower}..{w.search.bits.upper}, {PHASE} data")
    with study.open_db() as db:
        rows, measured = measure(study, db, args.samples, progress=args.progress, log=lambda line: print(f"  {line}"))
    print(f"  {measured} (layer, bits) measured now, {len(rows) - measured} from {study.db_path}")
    path = write_csv(study, rows)
    observed = [r["loss_increase"] for r in rows]
    for key in ("hessian_proxy", "fit_proxy"):
        print(f"  Spearman rank correlation, {key} vs measured loss increase: "
              f"{spearman([r[key] for r in rows], observed):.3f} over {len(rows)} (layer, bits)")
    print(f"written: {path} ({time.perf_counter() - started:.1f} s)")
    return 0
