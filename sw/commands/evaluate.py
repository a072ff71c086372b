"""`python -m sw evaluate WORKLOAD --bits ...`: the metrics of one configuration."""

from __future__ import annotations

import argparse
from pathlib import Path

from sw.core.errors import UserError
from sw.core.limits import MAX_BITS
from sw.model.checkpoint import load_checkpoint
from sw.study.configuration import POINT_HELP
from sw.study.study import Study

HELP = "evaluate one configuration (a decision vector, uniform bits, a Pareto point or fp32) on a dataset phase"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workload", nargs="?", help="workload YAML (default: the embedded study)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--bits", help="comma-separated decision vector (one value per variable, see --list)")
    which.add_argument("--uniform", type=int, metavar="B", help="every layer at B bits")
    which.add_argument("--point", metavar="N|best|ilp:N|ilp:best", help=POINT_HELP)
    which.add_argument("--fp32", action="store_true", help="the unquantized model")
    which.add_argument("--checkpoint", type=Path, metavar="STEM",
                       help="a quantized checkpoint (retrain / export --format state_dict: STEM.pt + STEM.json) at its bits")
    parser.add_argument("--phase", default="reevaluation",
                        choices=("exploration", "baseline", "reevaluation", "calibration", "retraining"))
    parser.add_argument("--list", action="store_true", help="print the decision variables and exit")
    parser.add_argument("--progress", action="store_true")


def parse_bits(text: str, n_var: int) -> list[int]:
    """A decision vector from `--bits` (one value repeats for every variable)."""
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise UserError(f"--bits: expected comma-separated integers, got {text!r}") from None
    if len(values) == 1:
        values = values * n_var
    if len(values) != n_var:
        raise UserError(f"--bits: expected {n_var} values (one per variable, see --list), got {len(values)}")
    return values


def check_bits(layer_bits: dict[str, tuple[int, int]], option: str) -> None:
    for layer, bits in layer_bits.items():
        bad = [b for b in bits if not 2 <= b <= MAX_BITS]
        if bad:
            raise UserError(f"{option}: expected bit widths in [2, {MAX_BITS}] (signed integers need >= 2), "
                            f"got {bad[0]} for layer {layer}")


def run(args: argparse.Namespace) -> int:
    study = Study(args.workload, progress=args.progress)
    w = study.workload
    if args.fp32:
        metrics = study.evaluate(study.fp32_model, args.phase)
        label = "fp32"
    elif args.checkpoint is not None:
        layer_bits = load_checkpoint(study.quantized_model, args.checkpoint, model_name=w.model.name)
        metrics = study.evaluate(study.quantized_model, args.phase)
        label = f"checkpoint {args.checkpoint}"
        print("bits per layer: " + ", ".join(f"{n}={wb}/{ib}" for n, (wb, ib) in layer_bits.items()))
    else:
        if args.list:
            for i, name in enumerate(study.variable_names):
                print(f"{i:>3}  {name}")
            return 0
        if args.bits is None and args.point is None:  # --uniform B, or the baseline bits
            bits = w.quantization.baseline_bits if args.uniform is None else args.uniform
            layer_bits = study.uniform_bits(bits)
            check_bits(layer_bits, "--uniform")
            label = f"uniform {bits} bits"
            metrics = study.evaluate_bits(layer_bits, args.phase)
        else:
            if args.point is not None:
                row, _ = study.select_point(args.point)
                x = study.point_vector(row)
                label = (f"{'ILP ' if args.point.startswith('ilp:') else ''}Pareto point {row['point']}"
                         + (" (best on held-out data)" if args.point.endswith("best") else ""))
            else:
                x = parse_bits(args.bits, len(study.variable_names))
                label = "decision vector " + ",".join(map(str, x))
            layer_bits = study.decode(x)
            check_bits(layer_bits, "--point" if args.point is not None else "--bits")
            metrics = study.evaluate_point(x, args.phase)
        print("bits per layer: " + ", ".join(f"{n}={wb}/{ib}" for n, (wb, ib) in layer_bits.items()))
        print(f"weighted bits ({w.search.weighting}): {study.weighted_bits(layer_bits):.4f}")
    print(f"{label} on {args.phase}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return 0
