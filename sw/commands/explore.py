"""`python -m sw explore [WORKLOAD]`: baselines, NSGA-II search, held-out re-evaluation of the
Pareto front and the baselines, Pareto front (CSV, JSON, PNG) and the printed table."""

from __future__ import annotations

import argparse
import sys
import time

from sw.search.heldout import PHASE as HELDOUT
from sw.search.heldout import PREFIX, best_index, reevaluate
from sw.search.pareto import front_rows, pareto_front, write_front
from sw.search.runner import Recorder, RecordingRunner, build_algorithm, make_backend, run_nsga2
from sw.study.study import Study

HELP = "search per-layer bit widths (NSGA-II) and write the Pareto front"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workload", nargs="?", help="workload YAML (default: the embedded digits_cnn study)")
    parser.add_argument("--skip-baseline", action="store_true", help="do not evaluate the all-8-bit baseline")
    parser.add_argument("--progress", action="store_true", help="progress bars")
    parser.add_argument("--resume", action="store_true", help="continue the last unfinished run of this workload")


def baselines(study: Study, db, *, skip: bool) -> dict[str, dict[str, float]]:
    """fp32 (always: the constraint may be relative to it) and uniform baseline-bit accuracies."""
    out = {}
    fp32 = db.baseline(study.config_hash, "fp32")
    if fp32 is None:
        fp32 = study.evaluate(study.fp32_model, "baseline")
        db.set_baseline(study.config_hash, "fp32", fp32)
    out["fp32"] = fp32
    if not skip:
        bits = study.workload.quantization.baseline_bits
        name = f"int{bits}"
        metrics = db.baseline(study.config_hash, name)
        if metrics is None:
            metrics = study.evaluate_bits(study.uniform_bits(bits), "baseline")
            db.set_baseline(study.config_hash, name, metrics)
        out[name] = metrics
    return out


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    study = Study(args.workload, progress=args.progress)
    w = study.workload
    print(f"Workload {w.name} ({w.path}): model {w.model.name}, problem {w.problem}")
    qmodel = study.quantized_model
    print(f"{len(qmodel.layer_names)} quantized layers, {len(qmodel.quantizers())} quantizers, "
          f"calibration {w.calibration.method} -> {w.calibration_file}")
    if qmodel.not_quantized:
        print(f"not quantized (stay fp32): {', '.join(qmodel.not_quantized)}")
    with study.open_db() as db:
        base = baselines(study, db, skip=args.skip_baseline)
        for name, metrics in base.items():
            print(f"baseline {name:>5}: {_fmt(metrics)}")
        warning = study.check_above_chance(base["fp32"])
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
        thresholds = study.thresholds(base["fp32"])
        print("constraint: " + ", ".join(f"{m} >= {t:.4f}" for m, t in zip(w.accuracy.metrics, thresholds)))

        run_info = db.latest_run(study.config_hash, unfinished=True) if args.resume else None
        if args.resume and run_info is None:
            print("nothing to resume for this workload: starting a new run")
        backend = make_backend(w.search.runner.kind, w.search.runner.workers, w.search.runner.address)
        try:
            recorder = Recorder(db, run_info.id if run_info else -1, list(w.accuracy.metrics))
            runner = RecordingRunner(backend, recorder)
            problem = study.plugin.prepare_exploration_function(qmodel, study, thresholds, elementwise_runner=runner)
            if run_info is None:
                recorder.run_id = db.start_run(w.name, w.problem, study.config_hash, w.config.to_dict(), problem.var_names,
                                               list(w.accuracy.metrics), problem.objective_names, thresholds)
            else:
                print(f"resuming run {run_info.id}: {db.count(run_info.id)} individuals already evaluated")
            print(f"run {recorder.run_id}: {w.search.generations} generations, population {w.search.pop_size}, "
                  f"{problem.n_var} variables in [{w.search.bits.lower}, {w.search.bits.upper}]")
            algorithm = build_algorithm(w.search, problem.n_var, study.plugin.sampling_method(study),
                                        study.plugin.repair_method(study))
            run_nsga2(problem, algorithm, recorder, w.search.generations, w.search.seed, progress=args.progress)
        finally:
            backend.close()
        individuals = db.individuals(recorder.run_id)
        front = pareto_front(individuals)
        heldout = reevaluate(study, db, front, base)
        db.finish_run(recorder.run_id)  # only now: a run killed while re-evaluating is resumed with --resume
        run_record = db.run(recorder.run_id)

    paths = write_front(run_record, individuals, study.results_dir, heldout, baselines=base)
    print(f"evaluated {recorder.evaluated} new individuals ({recorder.reused} from the database), "
          f"{len(individuals)} in this run; Pareto front of {len(front)} points")
    print(f"held-out re-evaluation on the {HELDOUT} data: {heldout.evaluated} evaluated, "
          f"{heldout.reused} from the database")
    for name, metrics in heldout.baselines.items():
        print(f"baseline {name:>5}: held-out {_fmt(metrics)}")
    for line in front_table(front_rows(run_record, front, heldout), run_record.metric_names,
                            problem.objective_names[1], problem.var_names):
        print(line)
    if not front:
        print("  (no feasible point: relax search.minimum_accuracy or widen search.bits)")
    print(f"results database: {study.db_path}")
    for kind in ("csv", "json", "png"):
        print(f"Pareto front {kind.upper():>4}: {paths[kind]}")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


def front_table(rows: list[dict], metrics: list[str], cost_name: str, var_names: list[str]) -> list[str]:
    """The printed front: exploration and held-out metrics side by side, held-out misses marked."""
    width = max(len(PREFIX) + max(map(len, metrics)), 8)
    lines = [f"  {'point':>5}  " + "  ".join(f"{m:>8}  {PREFIX + m:>{width}}" for m in metrics)
             + f"  {cost_name:>14}  {'held-out':<8}  bits"]
    for row in rows:
        lines.append(f"  {row['point']:>5}  "
                     + "  ".join(f"{row[m]:>8.4f}  {row[PREFIX + m]:>{width}.4f}" for m in metrics)
                     + f"  {row[cost_name]:>14.4f}  {'ok' if row[PREFIX + 'feasible'] else 'MISSES':<8}  "
                     + " ".join(str(row[v]) for v in var_names))
    best = best_index(rows)
    if rows and best is None:
        lines.append(f"no point meets the constraint on the held-out ({HELDOUT}) data: `--point best` has nothing "
                     f"to choose; relax search.minimum_accuracy or widen search.bits")
    elif rows:
        missed = sum(not row[PREFIX + "feasible"] for row in rows)
        lines.append(f"best (the cheapest point that meets the constraint on held-out data): point {best}"
                     + (f"; {missed} point(s) marked MISSES meet it on the exploration data only" if missed else ""))
    return lines
