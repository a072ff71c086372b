"""`python -m sw allocate WORKLOAD --budget B [B ...] | --sweep [N]`: bits per layer from the
sensitivity table by an integer linear program (`sw.search.ilp`): the least summed sensitivity
whose cost (the workload's `search.weighting`) is at most each budget, or every distinct allocation
over N evenly spaced budgets (`--sweep`: a predicted front in seconds).

The allocations are stored and evaluated as search points (`sw.search.allocation`): an ILP run in
the results database, each allocation evaluated on the exploration data (objectives, constraint)
and on the held-out data (table `heldout`); `--point ilp:N|ilp:best` (evaluate, export, retrain,
weather-sweep, cosim) picks a point of the latest ILP run's Pareto front as `--point N|best` does
of the search's. Measures the sensitivity table first when the database has none."""

from __future__ import annotations

import argparse
import csv
import time

from sw.commands.explore import baselines
from sw.core.durable import atomic_write
from sw.search.allocation import SWEEP_STEPS, ilp_table, layer_costs, record_allocations, sweep, vector_of
from sw.search.heldout import PHASE as HELDOUT
from sw.search.heldout import PREFIX, best_index, meets, reevaluate
from sw.search.ilp import allocate
from sw.search.pareto import front_rows, pareto_front, write_front
from sw.search.sensitivity_store import PROXIES
from sw.study.study import Study

HELP = "bits per layer by an integer linear program over the sensitivity table: under budgets or a budget sweep"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workload", nargs="?", help="workload YAML (default: the embedded study)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--budget", type=float, nargs="+", metavar="B",
                       help="cost budgets in the workload's search.weighting units (e.g. weighted bits)")
    which.add_argument("--sweep", type=int, nargs="?", const=SWEEP_STEPS, metavar="N",
                       help=f"N budgets evenly from the all-lowest to the all-highest bits cost (default "
                            f"{SWEEP_STEPS}); every distinct allocation is evaluated")
    parser.add_argument("--sensitivity", choices=PROXIES, default="fit_proxy",
                        help="what the program minimises (default: the Fisher-trace proxy, the better ranked on "
                             "the default study; README)")
    parser.add_argument("--progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    study = Study(args.workload, progress=args.progress)
    w = study.workload
    metric = w.accuracy.metrics[0]
    with study.open_db() as db:
        table = ilp_table(study, db, args.sensitivity, log=lambda line: print(f"  {line}"))
        layers = list(study.quantized_model.layer_names)
        cost, reference = layer_costs(study, layers, sorted(next(iter(table.values()))))
        solve = time.perf_counter()
        if args.sweep is not None:
            allocations = sweep(table, cost, reference, args.sweep)
            budgets = [b for b, _ in allocations]
        else:
            budgets = list(args.budget)
            allocations = [(b, choice) for b in budgets if (choice := allocate(table, cost, b - reference)) is not None]
        solve = time.perf_counter() - solve
        thresholds = study.thresholds(baselines(study, db, skip=True)["fp32"])
        problem = study.plugin.prepare_exploration_function(study.quantized_model, study, thresholds)
        config = {"sensitivity": args.sensitivity, "budgets": budgets, "sweep": args.sweep}
        run_record = record_allocations(study, db, problem, thresholds, args.sensitivity, allocations, config)
        individuals = db.individuals(run_record.id)
        heldout = reevaluate(study, db, individuals)  # every allocation, not only the front
    front = pareto_front(individuals)
    rows = front_rows(run_record, front, heldout)
    point_of = {tuple(study.point_vector(r)): r["point"] for r in rows}
    by_x = {ind.x: ind for ind in individuals}
    print(f"ILP ({args.sensitivity}): {len(allocations)} distinct allocations from {len(budgets)} budgets, solved in "
          f"{solve:.2f} s; ILP run {run_record.id}, constraint "
          + ", ".join(f"{m} >= {t:.4f}" for m, t in zip(run_record.metric_names, run_record.thresholds)))
    print(f"{'budget':>8} {'cost':>8} {metric:>8} {PREFIX + metric:>14} {'held-out':>8} {'point':>7}  bits   "
          f"({w.search.weighting})")
    out_rows = []
    allocated = dict(allocations)
    for budget in budgets:
        choice = allocated.get(budget)
        if choice is None:
            print(f"{budget:8.4f}  no allocation meets this budget")
            out_rows.append({"budget": budget, "note": "infeasible"})
            continue
        x = vector_of(study, choice)
        ind = by_x[tuple(x)]
        held = heldout.points[ind.x]
        label = f"ilp:{point_of[ind.x]}" if ind.x in point_of else ""
        bits = " ".join(str(choice[layer]) for layer in layers)
        print(f"{budget:8.4f} {ind.objectives[1]:8.4f} {ind.metrics[metric]:8.4f} {held[metric]:14.4f} "
              f"{'ok' if meets(held, run_record) else 'MISSES':>8} {label:>7}  {bits}")
        out_rows.append({"budget": budget, "cost": ind.objectives[1], metric: ind.metrics[metric],
                         f"{PREFIX}{metric}": held[metric], f"{PREFIX}feasible": meets(held, run_record),
                         "point": label, "bits": bits, "x": " ".join(map(str, x))})
    best = best_index(rows)
    if best is not None:
        print(f"ilp:best (the cheapest point of the ILP front that meets the constraint on held-out {HELDOUT} data): "
              f"ilp:{best}, {rows[best][w.search.weighting]:.4f} {w.search.weighting}, held-out {metric} "
              f"{rows[best][PREFIX + metric]:.4f}")
    out = study.results_dir / "sensitivity" / f"allocate_{args.sensitivity}.csv"
    with atomic_write(out, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["budget", "cost", metric, f"{PREFIX}{metric}", f"{PREFIX}feasible",
                                                "point", "bits", "x", "note"])
        writer.writeheader()
        writer.writerows(out_rows)
    paths = write_front(run_record, individuals, study.results_dir / "ilp" / args.sensitivity, heldout,
                        title=f"{w.name}: ILP front ({args.sensitivity})")
    print(f"written: {out}, {paths['csv']} ({time.perf_counter() - started:.1f} s in all)")
    return 0
