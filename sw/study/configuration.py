"""Choosing the one configuration a command works on: a Pareto point, uniform bits or a checkpoint
(shared by `retrain` and `export`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sw.core.errors import UserError
from sw.core.limits import MAX_BITS
from sw.model.checkpoint import load_checkpoint
from sw.search.results import ILP

POINT_HELP = ("point N of the latest Pareto front, or best: the cheapest point that meets the accuracy constraint on "
              "held-out data; ilp:N / ilp:best: the same of the latest ILP allocation (python -m sw allocate)")


def add_configuration_arguments(parser: argparse.ArgumentParser, *, checkpoint: bool) -> None:
    """WORKLOAD and one of --point / --uniform (/ --checkpoint)."""
    parser.add_argument("workload", nargs="?", help="workload YAML (default: the embedded study)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--point", metavar="N|best|ilp:N|ilp:best", help=POINT_HELP)
    which.add_argument("--uniform", type=int, metavar="B", help="every layer at B bits")
    if checkpoint:
        which.add_argument("--checkpoint", type=Path, metavar="STEM",
                           help="a quantized checkpoint (python -m sw retrain: STEM.pt + STEM.json)")


def apply_configuration(study, args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """Set the study's quantized model to the chosen configuration; returns (label, row info)."""
    if getattr(args, "checkpoint", None) is not None:
        load_checkpoint(study.quantized_model, args.checkpoint, model_name=study.workload.model.name)
        return args.checkpoint.with_suffix("").name, {"point": "", "source": str(args.checkpoint)}
    if args.point is not None:
        row, _ = study.select_point(args.point)
        study.apply(study.point_vector(row))
        source = "ilp" if str(args.point).startswith(ILP) else "front"  # the ILP sweep's front (allocate)
        return (f"{'ilp_' if source == 'ilp' else ''}point{row['point']}{_suffix(study)}",
                {"point": row["point"], "source": source})
    if not 2 <= args.uniform <= MAX_BITS:
        raise UserError(f"--uniform: expected a bit width in [2, {MAX_BITS}], got {args.uniform}")
    study.quantized_model.set_layer_bits(study.uniform_bits(args.uniform))
    return f"uniform{args.uniform}{_suffix(study)}", {"point": "", "source": "uniform"}


def _suffix(study) -> str:
    """Files of non-default quantization settings are told apart by name (point0_tensorrt_foldbn)."""
    s = study.quantized_model.settings
    return "".join(suffix for suffix, differs in ((f"_{s.preset}", s.preset != "hw"), ("_foldbn", s.fold_bn),
                                                  ("_modules", s.graph != "fx")) if differs)
