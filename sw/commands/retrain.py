"""`python -m sw retrain WORKLOAD --point N|best | --uniform B [--method ste|lsq]`: quantization-aware
retraining of one configuration; writes a checkpoint and a row of results/<name>/retrain/retrain.csv."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sw.core.csv_table import upsert_rows
from sw.core.errors import UserError
from sw.data.datasets import build_loader
from sw.model.checkpoint import save_checkpoint
from sw.nets.training import quantization_aware_training
from sw.quant.lsq import check_trainable
from sw.search.heldout import PHASE as HELDOUT
from sw.study.configuration import add_configuration_arguments, apply_configuration
from sw.study.study import Study

HELP = "quantization-aware retraining (QAT: STE or LSQ) of a Pareto point or a uniform bit width"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_configuration_arguments(parser, checkpoint=False)
    parser.add_argument("--method", choices=("ste", "lsq"), default="lsq",
                        help="ste: fixed calibrated ranges, straight-through rounding; lsq: learned step size per "
                             "tensor (activations) and per channel (per-channel weights) (default)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--output", type=Path,
                        help="checkpoint stem (writes STEM.pt and STEM.json; default results/<name>/retrain/<label>_<method>)")
    parser.add_argument("--progress", action="store_true")


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def run(args: argparse.Namespace) -> int:
    if args.epochs < 1:
        raise UserError(f"--epochs: expected at least 1, got {args.epochs}")
    if not args.lr > 0:
        raise UserError(f"--lr: expected a positive learning rate, got {args.lr}")
    started = time.perf_counter()
    study = Study(args.workload, progress=args.progress)
    label, info = apply_configuration(study, args)
    qmodel = study.quantized_model
    try:  # before any work: LSQ with a preset whose scale is not a free step, per-channel weight bits
        check_trainable(qmodel, args.method)
    except ValueError as exc:
        raise UserError(f"{study.workload.path}: {exc}") from None
    before = study.evaluate(qmodel, HELDOUT)
    layer_bits = qmodel.layer_bits()
    spec = study.workload.dataset("retraining")
    quantization_aware_training(qmodel, build_loader(spec, shuffle=True), epochs=args.epochs, lr=args.lr,
                                method=args.method, seed=study.workload.model.train.seed, progress=args.progress)
    after = study.evaluate(qmodel, HELDOUT)
    print(f"{label}: before QAT ({HELDOUT}) {_fmt(before)}")
    print(f"{label}: after {args.method.upper()} QAT ({HELDOUT}) {_fmt(after)}")
    stem = args.output or study.results_dir / "retrain" / f"{label}_{args.method}"
    point = info["point"]
    info = {"kind": "qat", "label": label, "point": point, "method": args.method, "epochs": args.epochs,
            "lr": args.lr, "phase": HELDOUT, "before": before, "after": after}
    pt, js = save_checkpoint(qmodel, stem, workload=study.workload, info=info)
    row = {"label": label, "point": point, "method": args.method, "epochs": args.epochs, "lr": args.lr,
           "bits": " ".join(f"{w}/{i}" for w, i in layer_bits.values()), "preset": qmodel.settings.preset,
           **{f"before_{k}": round(v, 6) for k, v in before.items()},
           **{f"after_{k}": round(v, 6) for k, v in after.items()},
           "checkpoint": str(pt), "wall_s": round(time.perf_counter() - started, 1)}
    csv_path = upsert_rows(study.results_dir / "retrain" / "retrain.csv", [row], key=("label", "method"))
    print(f"checkpoint: {pt} (+ {js.name}); table: {csv_path}")
    return 0
