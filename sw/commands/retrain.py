"""`python -m sw retrain WORKLOAD --point N`: quantization-aware retraining of one configuration."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from sw.datasets import build_loader
from sw.errors import UserError
from sw.study import Study
from sw.training import quantization_aware_training

HELP = "quantization-aware retraining (QAT) of a Pareto point or a uniform bit width"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workload", nargs="?", help="workload YAML (default: the embedded study)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--point", metavar="N|best",
                       help="point N of the latest Pareto front, or best: the cheapest point that meets the "
                            "accuracy constraint on held-out data")
    which.add_argument("--uniform", type=int, metavar="B", help="every layer at B bits")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--output", type=Path, help="state_dict of the retrained model (default under results)")
    parser.add_argument("--progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    study = Study(args.workload, progress=args.progress)
    if args.point is not None:
        row, _ = study.select_point(args.point)
        label = f"point{row['point']}"
        before = study.evaluate_point(study.point_vector(row), "reevaluation")
    else:
        if not 2 <= args.uniform <= 16:
            raise UserError(f"--uniform: expected a bit width in [2, 16], got {args.uniform}")
        label = f"uniform{args.uniform}"
        before = study.evaluate_bits(study.uniform_bits(args.uniform), "reevaluation")
    qmodel = study.quantized_model
    spec = study.workload.dataset("retraining")
    quantization_aware_training(qmodel, build_loader(spec, shuffle=True), epochs=args.epochs, lr=args.lr,
                                seed=study.workload.model.train.seed, progress=args.progress)
    after = study.evaluate(qmodel, "reevaluation")
    print(f"{label}: before QAT " + ", ".join(f"{k} {v:.4f}" for k, v in before.items()))
    print(f"{label}: after  QAT " + ", ".join(f"{k} {v:.4f}" for k, v in after.items()))
    out = args.output or study.results_dir / f"qat_{label}.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    qmodel.unfreeze_weights()
    torch.save({k: v for k, v in qmodel.state_dict().items()}, out)
    print(f"written: {out}")
    return 0
