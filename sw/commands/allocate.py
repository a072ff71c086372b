"""`python -m sw allocate WORKLOAD --budget B [B ...]`: bits per layer from the sensitivity table by an
integer linear program (`sw.search.ilp`): the least summed sensitivity whose cost (the workload's
`search.weighting`) is at most each budget; every allocation evaluated on the exploration data
and on the held-out data. Needs `python -m sw sensitivity WORKLOAD` first."""

from __future__ import annotations

import argparse
import csv
import time

from sw.core.durable import atomic_write
from sw.core.errors import DataError, UserError
from sw.search.heldout import PHASE as HELDOUT
from sw.search.ilp import allocate
from sw.study.study import Study

HELP = "bits per layer by an integer linear program over the sensitivity table, under cost budgets"
PROXIES = ("hessian_proxy", "fit_proxy", "loss_increase")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workload", nargs="?", help="workload YAML (default: the embedded study)")
    parser.add_argument("--budget", type=float, nargs="+", required=True, metavar="B",
                        help="cost budgets in the workload's search.weighting units (e.g. weighted bits)")
    parser.add_argument("--sensitivity", choices=PROXIES, default="fit_proxy",
                        help="what the program minimises (default: the Fisher-trace proxy, the better ranked on "
                             "the default study; README)")


def read_sensitivity(path, key: str) -> dict[str, dict[int, float]]:
    """{layer: {bits: value}} from sensitivity.csv; one clear error if missing or malformed."""
    if not path.exists():
        raise UserError(f"{path}: no sensitivity table; run `python -m sw sensitivity WORKLOAD` first")
    table: dict[str, dict[int, float]] = {}
    try:
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                table.setdefault(row["layer"], {})[int(row["bits"])] = float(row[key])
    except (KeyError, ValueError) as exc:
        raise DataError(f"{path}: expected columns layer, bits and {key} with numbers ({exc!r})") from None
    return table


def run(args: argparse.Namespace) -> int:
    study = Study(args.workload)
    path = study.results_dir / "sensitivity" / "sensitivity.csv"
    sensitivity = read_sensitivity(path, args.sensitivity)
    layers = list(study.quantized_model.layer_names)
    if set(sensitivity) != set(layers):
        raise DataError(f"{path}: layers differ from the workload's model; run `python -m sw sensitivity` again")
    base = study.uniform_bits(study.workload.quantization.baseline_bits)
    reference = study.weighted_bits(base)
    cost = {layer: {b: study.weighted_bits({**base, layer: (b, b)}) - reference for b in sensitivity[layer]}
            for layer in layers}
    metric = study.workload.accuracy.metrics[0]
    rows = []
    print(f"{'budget':>8} {'cost':>8} {metric:>8} {'heldout_' + metric:>14}  bits   ({study.workload.search.weighting})")
    for budget in args.budget:
        start = time.perf_counter()
        choice = allocate(sensitivity, cost, budget - reference)
        seconds = time.perf_counter() - start
        if choice is None:
            print(f"{budget:8.4f}  no allocation meets this budget")
            rows.append({"budget": budget, "note": "infeasible"})
            continue
        bits = {layer: (choice[layer], choice[layer]) for layer in layers}
        explored = study.evaluate_bits(bits, "exploration")[metric]
        heldout = study.evaluate_bits(bits, HELDOUT)[metric]
        spent = study.weighted_bits(bits)
        print(f"{budget:8.4f} {spent:8.4f} {explored:8.4f} {heldout:14.4f}  {' '.join(str(choice[l]) for l in layers)}")
        rows.append({"budget": budget, "cost": spent, metric: explored, f"heldout_{metric}": heldout,
                     "bits": " ".join(str(choice[l]) for l in layers), "solve_s": round(seconds, 4)})
    out = study.results_dir / "sensitivity" / f"allocate_{args.sensitivity}.csv"
    with atomic_write(out, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["budget", "cost", metric, f"heldout_{metric}", "bits", "solve_s", "note"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"written: {out}")
    return 0
