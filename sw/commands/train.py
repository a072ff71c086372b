"""`python -m sw train WORKLOAD`: deterministic fp32 training of the workload's model."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from sw.nets.models import build_architecture
from sw.nets.training import cached_checkpoint, train_and_cache
from sw.study.study import Study

HELP = "train the workload's fp32 model (deterministic; cached for explore)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workload", nargs="?", help="workload YAML (default: the embedded study)")
    parser.add_argument("--output", type=Path, help="also write the state_dict here (usable as model.weights)")
    parser.add_argument("--force", action="store_true", help="retrain even if a cached checkpoint exists")
    parser.add_argument("--progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    study = Study(args.workload, progress=args.progress)
    path = cached_checkpoint(study.workload)
    if args.force or not path.exists():
        train_and_cache(study.workload, build_architecture(study.workload), progress=args.progress)
    else:
        print("cached checkpoint is up to date (use --force to retrain)")
    metrics = study.evaluate(study.fp32_model, "reevaluation")
    print("fp32 test accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    print(f"checkpoint: {path}")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        torch.save(study.fp32_model.state_dict(), args.output)
        print(f"written: {args.output}")
    return 0
