"""`python -m sw evaluate WORKLOAD --bits ...`: the metrics of one bit configuration."""

from __future__ import annotations

import argparse

from sw.errors import UserError
from sw.study import Study
from sw.workload import MAX_BITS

HELP = "evaluate one bit configuration (or fp32, or a Pareto point) on a dataset phase"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workload", nargs="?", help="workload YAML (default: the embedded study)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--bits", help="comma-separated decision vector (one value per variable, see --list)")
    which.add_argument("--uniform", type=int, metavar="B", help="every layer at B bits")
    which.add_argument("--point", type=int, metavar="N", help="point N of the latest Pareto front")
    which.add_argument("--fp32", action="store_true", help="the unquantized model")
    parser.add_argument("--phase", default="reevaluation",
                        choices=("exploration", "baseline", "reevaluation", "calibration", "retraining"))
    parser.add_argument("--list", action="store_true", help="print the decision variables and exit")
    parser.add_argument("--progress", action="store_true")


def parse_bits(text: str, n_var: int) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise UserError(f"--bits: expected comma-separated integers, got {text!r}") from None
    if len(values) == 1:
        values = values * n_var
    if len(values) != n_var:
        raise UserError(f"--bits: expected {n_var} values (one per variable, see --list), got {len(values)}")
    bad = [v for v in values if not 2 <= v <= MAX_BITS]
    if bad:
        raise UserError(f"--bits: expected bit widths in [2, {MAX_BITS}] (signed integers need >= 2), got {bad[0]}")
    return values


def run(args: argparse.Namespace) -> int:
    from sw.problems.quantization_problem import variable_names

    study = Study(args.workload, progress=args.progress)
    w = study.workload
    if args.fp32:
        metrics = study.evaluate(study.fp32_model, args.phase)
        label = "fp32"
    else:
        names = variable_names(study.quantized_model.layer_names, w.quantization.explore)
        if args.list:
            for i, name in enumerate(names):
                print(f"{i:>3}  {name}")
            return 0
        if args.point is not None:
            front = study.pareto_bits()
            if not 0 <= args.point < len(front):
                raise UserError(f"--point: expected 0..{len(front) - 1} (the Pareto front has {len(front)} points), got {args.point}")
            layer_bits = front[args.point]
            label = f"Pareto point {args.point}"
        else:
            x = parse_bits(args.bits if args.bits else str(args.uniform or w.quantization.baseline_bits), len(names))
            layer_bits = study.decode(x)
            label = "bits " + ",".join(map(str, x))
        metrics = study.evaluate_bits(layer_bits, args.phase)
        print(f"weighted bits ({w.search.weighting}): {study.weighted_bits(layer_bits):.4f}")
    print(f"{label} on {args.phase}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return 0
