"""`python -m sw compare-search [WORKLOAD] [--seeds 1 2 3]`: hypervolume against the number of evaluations
for NSGA-II from a random first population (`search.init: random`), the ILP budget sweep alone, and
NSGA-II seeded with the ILP allocations (`search.init: ilp`), side by side, on the exploration data.

Each search is a run in the results database (the workload with `search.seed` and `search.init` set,
so its own configuration hash); a finished run of the same configuration is reused, so a repeated
or killed comparison only runs what is missing. The sensitivity table is measured first where the
database lacks it (it is shared by every seed and search setting). Every hypervolume has one
reference point (accuracy 0; the largest cost among the runs' first generations + 10 %:
`sw.search.hypervolume`). Selection stays on the exploration data; each method's `best` (the
cheapest point of its front that meets the constraint on the held-out data) is reported beside it.

Writes results/<name>/compare_search/: curves.csv (method, seed, evaluations, hypervolume),
summary.csv and summary.md (per method: final hypervolume, evaluations, evaluations to reach
random-init NSGA-II's final hypervolume; medians over seeds), read by the report."""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any, Sequence

from sw.commands.explore import baselines
from sw.core.durable import atomic_write, write_text
from sw.core.errors import UserError
from sw.search.allocation import SWEEP_STEPS, ilp_table, layer_costs, record_allocations, sweep
from sw.search.heldout import PREFIX, best_index, reevaluate
from sw.search.hypervolume import hypervolume, reference_point
from sw.search.pareto import front_rows, pareto_front
from sw.search.results import ILP, Individual, ResultsDB, Run
from sw.search.runner import Recorder, RecordingRunner, build_algorithm, make_backend, run_nsga2
from sw.search.sensitivity_store import PROXIES
from sw.study.study import Study

HELP = "hypervolume vs evaluations: random-init NSGA-II, the ILP sweep, ILP-seeded NSGA-II (several seeds)"
RANDOM, ILP_ONLY, SEEDED = "nsga2_random", "ilp_only", "nsga2_ilp_seeded"
CURVE_COLUMNS = ("method", "seed", "evaluations", "hypervolume")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workload", nargs="?", help="workload YAML (default: the embedded study)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], metavar="S",
                        help="search.seed of each NSGA-II run (default 1 2 3)")
    parser.add_argument("--sensitivity", choices=PROXIES, default=None,
                        help="what the ILP minimises (default: the workload's search.init_sensitivity)")
    parser.add_argument("--progress", action="store_true")


def curve(individuals: Sequence[Individual], ref: Sequence[float]) -> list[tuple[int, float]]:
    """(evaluations, hypervolume of the feasible individuals among the first `evaluations`), in evaluation order."""
    ordered = sorted(individuals, key=lambda ind: (ind.generation, ind.index))
    points, out = [], []
    for k, ind in enumerate(ordered, 1):
        if ind.feasible:
            points.append(ind.objectives)
        out.append((k, hypervolume(points, ref) if points else 0.0))
    return out


def evaluations_to_reach(points: Sequence[tuple[int, float]], target: float) -> int | None:
    """The first evaluation count at which a curve reaches `target` (relative tolerance 1e-9); None if never."""
    return next((k for k, hv in points if hv >= target * (1 - 1e-9)), None)


def _search(study: Study, db: ResultsDB, thresholds: list[float], progress: bool) -> Run:
    """A finished NSGA-II run of `study`'s configuration: the stored one, or a new one."""
    done = db.latest_run(study.config_hash, finished=True)
    if done is not None:
        return done
    w = study.workload
    backend = make_backend(w.search.runner.kind, w.search.runner.workers, w.search.runner.address)
    try:
        recorder = Recorder(db, -1, list(w.accuracy.metrics))
        problem = study.plugin.prepare_exploration_function(study.quantized_model, study, thresholds,
                                                            elementwise_runner=RecordingRunner(backend, recorder))
        recorder.run_id = db.start_run(w.name, w.problem, study.config_hash, w.config.to_dict(), problem.var_names,
                                       list(w.accuracy.metrics), problem.objective_names, thresholds)
        algorithm = build_algorithm(w.search, problem.n_var, study.plugin.sampling_method(study),
                                    study.plugin.repair_method(study))
        run_nsga2(problem, algorithm, recorder, w.search.generations, w.search.seed, progress=progress)
    finally:
        backend.close()
    db.finish_run(recorder.run_id)
    return db.run(recorder.run_id)


def _ilp_run(study: Study, db: ResultsDB, thresholds: list[float], key: str) -> Run:
    """The ILP sweep's run (`python -m sw allocate --sweep`): stored, or solved and evaluated now."""
    config = {"sensitivity": key, "sweep": SWEEP_STEPS}
    for run in reversed(db.runs()):
        if (run.method == ILP + key and run.config_hash == study.config_hash and run.finished
                and _run_config(db, run.id).get("ilp", {}).get("sweep") == SWEEP_STEPS):
            return run
    table = ilp_table(study, db, key, log=lambda line: print(f"  {line}"))
    cost, reference = layer_costs(study, list(table), sorted(next(iter(table.values()))))
    allocations = sweep(table, cost, reference)
    problem = study.plugin.prepare_exploration_function(study.quantized_model, study, thresholds)
    return record_allocations(study, db, problem, thresholds, key, allocations,
                              {**config, "budgets": [b for b, _ in allocations]})


def _run_config(db: ResultsDB, run_id: int) -> dict[str, Any]:
    row = db.execute("SELECT config FROM runs WHERE id = ?", (run_id,)).fetchone()
    return json.loads(row[0]) if row else {}


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    study = Study(args.workload, progress=args.progress)
    w = study.workload
    key = args.sensitivity or w.search.init_sensitivity
    if len(set(args.seeds)) < len(args.seeds):
        raise UserError(f"--seeds: expected distinct seeds, got {args.seeds}")
    metric = w.accuracy.metrics[0]
    runs: dict[tuple[str, int], Run] = {}
    studies: dict[tuple[str, int], Study] = {}
    with study.open_db() as db:
        fp32 = baselines(study, db, skip=True)["fp32"]
        thresholds = study.thresholds(fp32)
        print(f"compare-search {study.name}: seeds {args.seeds}, ILP over {key}; constraint "
              + ", ".join(f"{m} >= {t:.4f}" for m, t in zip(w.accuracy.metrics, thresholds)))
        runs[(ILP_ONLY, 0)] = _ilp_run(study, db, thresholds, key)
        studies[(ILP_ONLY, 0)] = study
        for seed in args.seeds:
            for method, init in ((RANDOM, "random"), (SEEDED, "ilp")):
                variant = study.variant({"search": {"seed": seed, "init": init}})
                for kind, value in (("fp32", fp32),):  # the variant's run is complete like explore's
                    if db.baseline(variant.config_hash, kind) is None:
                        db.set_baseline(variant.config_hash, kind, value)
                t0 = time.perf_counter()
                runs[(method, seed)] = _search(variant, db, thresholds, args.progress)
                studies[(method, seed)] = variant
                print(f"  {method:>17} seed {seed}: run {runs[(method, seed)].id}, "
                      f"{db.count(runs[(method, seed)].id)} evaluations ({time.perf_counter() - t0:.1f} s)")
        individuals = {k: db.individuals(r.id) for k, r in runs.items()}
        best = {}
        for k, r in runs.items():  # each method's choice, judged on held-out data
            front = pareto_front(individuals[k])
            rows = front_rows(r, front, reevaluate(studies[k], db, front))
            i = best_index(rows)
            best[k] = (rows[i][r.objective_names[1]], rows[i][PREFIX + metric]) if i is not None else (None, None)
    objective_names = runs[(RANDOM, args.seeds[0])].objective_names
    ref = reference_point(objective_names, [ind for inds in individuals.values() for ind in inds
                                            if ind.generation == 0])
    curves = {k: curve(inds, ref) for k, inds in individuals.items()}
    summary = _summary(curves, best, args.seeds)
    out = study.results_dir / "compare_search"
    _write(out, curves, summary, ref, objective_names, study, key, metric)
    for line in _table(summary, metric, objective_names[1]):
        print(line)
    print(f"written: {out / 'curves.csv'}, {out / 'summary.csv'}, {out / 'summary.md'} "
          f"({time.perf_counter() - started:.1f} s)")
    return 0


def median(values: Sequence[float | None]) -> float | None:
    """The median; a None (a run that never got there) counts as later than any number, and a
    median that falls on one is None."""
    if not values:
        return None
    ordered = sorted(values, key=lambda v: float("inf") if v is None else v)
    middle = ordered[(len(ordered) - 1) // 2: len(ordered) // 2 + 1]
    return None if None in middle else sum(middle) / len(middle)


def _summary(curves: dict, best: dict, seeds: Sequence[int]) -> list[dict[str, Any]]:
    """Per method: medians over seeds of final hypervolume, evaluations, evaluations to reach the
    same seed's random-init final hypervolume, and the held-out best point's cost and accuracy."""
    target = {seed: curves[(RANDOM, seed)][-1][1] for seed in seeds}
    rows = []
    for method in (RANDOM, ILP_ONLY, SEEDED):
        keys = [(method, 0)] * len(seeds) if method == ILP_ONLY else [(method, s) for s in seeds]
        reach = [evaluations_to_reach(curves[k], target[s]) for k, s in zip(keys, seeds)]
        own = [evaluations_to_reach(curves[k], curves[k][-1][1]) for k in keys]
        rows.append({"method": method, "runs": len(set(keys)),
                     "final_hv": median([curves[k][-1][1] for k in keys]),
                     "evaluations": median([curves[k][-1][0] for k in keys]),
                     "evals_to_own_final_hv": median(own),
                     "evals_to_random_final_hv": median(reach),
                     "per_seed_evals_to_random_final_hv": " ".join("-" if r is None else str(r) for r in reach),
                     "best_cost": median([best[k][0] for k in keys]),
                     "best_heldout": median([best[k][1] for k in keys])})
    return rows


def _write(out: Path, curves: dict, summary: list[dict], ref, objective_names, study: Study, key: str,
           metric: str) -> None:
    with atomic_write(out / "curves.csv", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CURVE_COLUMNS)
        for (method, seed), points in curves.items():
            writer.writerows([method, seed, k, f"{hv:.6g}"] for k, hv in points)
    with atomic_write(out / "summary.csv", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(summary[0]))
        writer.writeheader()
        writer.writerows(summary)
    names = ", ".join(f"{n.lstrip('-')} {v:.4g}" for n, v in zip(objective_names, ref))
    write_text(out / "summary.md", "\n".join(
        [f"Hypervolume (exploration data, reference point {names}) against evaluations on {study.name}: "
         f"NSGA-II from a random first population, the ILP sweep over {key} alone, NSGA-II seeded with it; "
         f"medians over the seeds; `best`: the cheapest front point meeting the constraint on held-out data.", ""]
        + _table(summary, metric, objective_names[1])) + "\n")


def _fmt(value, digits: int = 4) -> str:
    """A hypervolume or cost with `digits` decimals, an evaluation count (digits=0) as few as it needs."""
    if value is None:
        return "never"
    return f"{value:g}" if digits == 0 else f"{value:.{digits}f}"


def _table(summary: list[dict], metric: str, cost: str) -> list[str]:
    lines = [f"| method | final hypervolume | evaluations | evaluations to its final hv | evaluations to random "
             f"NSGA-II's final hv (per seed) | best: {cost} | best: held-out {metric} |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in summary:
        lines.append(f"| {row['method']} | {_fmt(row['final_hv'])} | {_fmt(row['evaluations'], 0)} | "
                     f"{_fmt(row['evals_to_own_final_hv'], 0)} | {_fmt(row['evals_to_random_final_hv'], 0)} "
                     f"({row['per_seed_evals_to_random_final_hv']}) | {_fmt(row['best_cost'])} | "
                     f"{_fmt(row['best_heldout'])} |")
    return lines
