"""`python -m sw explore [WORKLOAD]`: baselines, NSGA-II search, Pareto front (CSV, JSON, PNG)."""

from __future__ import annotations

import argparse
import time

from sw.pareto import pareto_front, write_front
from sw.search import Recorder, RecordingRunner, build_algorithm, make_backend, run_nsga2
from sw.study import Study

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
    with study.open_db() as db:
        base = baselines(study, db, skip=args.skip_baseline)
        for name, metrics in base.items():
            print(f"baseline {name:>5}: {_fmt(metrics)}")
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
        db.finish_run(recorder.run_id)
        run_record = db.run(recorder.run_id)
        individuals = db.individuals(recorder.run_id)

    front = pareto_front(individuals)
    paths = write_front(run_record, individuals, study.results_dir, baselines=base)
    print(f"evaluated {recorder.evaluated} new individuals ({recorder.reused} from the database), "
          f"{len(individuals)} in this run; Pareto front of {len(front)} points:")
    cost_name = problem.objective_names[1]
    print(f"  {'point':>5}  {w.accuracy.metrics[0]:>8}  {cost_name:>14}  bits")
    for i, ind in enumerate(front):
        print(f"  {i:>5}  {ind.metrics[w.accuracy.metrics[0]]:>8.4f}  {ind.objectives[1]:>14.4f}  "
              f"{' '.join(str(b) for b in ind.x)}")
    if not front:
        print("  (no feasible point: relax search.minimum_accuracy or widen search.bits)")
    print(f"results database: {study.db_path}")
    for kind in ("csv", "json", "png"):
        print(f"Pareto front {kind.upper():>4}: {paths[kind]}")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0
