"""`python -m sw ablate WORKLOAD --bits W4A4`: held-out accuracy of each calibration recipe."""

from __future__ import annotations

import argparse
import re

from sw.core.errors import UserError
from sw.core.limits import MAX_BITS
from sw.study.ablation import run_ablation
from sw.study.study import Study

HELP = ("calibration ablation at uniform bits: naive -> +ACIQ -> +bit allocation -> +bias correction, "
        "percentile, entropy, mse; held-out accuracy table (CSV + Markdown)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workload", nargs="?", help="workload YAML (default: the embedded study)")
    parser.add_argument("--bits", default="W4A4", help="weight and input bits of every layer, e.g. W4A4 (default), W3A8")
    parser.add_argument("--ends", type=int, metavar="B", default=None,
                        help="keep the first and the last layer at B bits for weights and inputs (MQBench's academic "
                             "setting: --ends 8); default: every layer at --bits")
    parser.add_argument("--progress", action="store_true", help="progress bars")


def parse_wa(text: str) -> tuple[int, int]:
    """`W4A8` -> (4, 8); one clear error otherwise."""
    match = re.fullmatch(r"[wW](\d+)[aA](\d+)", text.strip())
    if not match:
        raise UserError(f"--bits: expected W<weight bits>A<input bits>, e.g. W4A4, got {text!r}")
    bits = int(match[1]), int(match[2])
    bad = [b for b in bits if not 2 <= b <= MAX_BITS]
    if bad:
        raise UserError(f"--bits: expected bit widths in [2, {MAX_BITS}] (signed integers need >= 2), got {bad[0]}")
    return bits


def run(args: argparse.Namespace) -> int:
    weight_bits, input_bits = parse_wa(args.bits)
    if args.ends is not None and not 2 <= args.ends <= MAX_BITS:
        raise UserError(f"--ends: expected a bit width in [2, {MAX_BITS}], got {args.ends}")
    study = Study(args.workload, progress=args.progress)
    suffix = "" if args.ends is None else f"_ends{args.ends}"
    out_dir = study.results_dir / f"ablation{suffix}"
    ends = "" if args.ends is None else f", first and last layer at {args.ends} bits"
    print(f"Ablation of {study.name} at W{weight_bits}A{input_bits}{ends}, held-out accuracy:")
    run_ablation(study, weight_bits, input_bits, out_dir=out_dir, end_bits=args.ends,
                 on_row=lambda r: print(f"  {r['recipe']:<24} " + (", ".join(
                     f"{k} {v:.4f}" for k, v in r.items() if k.startswith("heldout_")) or r.get("note", ""))))
    print(f"written: {out_dir / 'ablation.csv'}, {out_dir / 'ablation.md'}")
    return 0
