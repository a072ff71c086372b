"""`python -m sw export WORKLOAD --point N|best [--format onnx int state_dict]`: deployable forms of a
searched point (or a uniform bit width, or a QAT checkpoint), each verified against fake quant."""

from __future__ import annotations

import argparse
from pathlib import Path

from sw.core.csv_table import upsert_rows
from sw.core.errors import UserError
from sw.deploy.export import FORMATS, export_configuration
from sw.deploy.lowering import UnsupportedOp
from sw.study.configuration import add_configuration_arguments, apply_configuration
from sw.study.study import Study

HELP = "export a Pareto point / uniform bits / QAT checkpoint as QDQ ONNX, integer model or checkpoint, verified"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_configuration_arguments(parser, checkpoint=True)
    parser.add_argument("--format", nargs="+", choices=FORMATS, default=list(FORMATS), metavar="FORMAT",
                        help="onnx: QDQ ONNX run in onnxruntime; int: the integer-only reference model; "
                             "state_dict: weights + quantizer state (default: all three)")
    parser.add_argument("--out", type=Path, help="output folder (default results/<name>/deploy)")
    parser.add_argument("--progress", action="store_true")


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def run(args: argparse.Namespace) -> int:
    study = Study(args.workload, progress=args.progress)
    w = study.workload
    label, info = apply_configuration(study, args)
    out = args.out or study.results_dir / "deploy"
    formats = list(dict.fromkeys(args.format))
    try:
        row = export_configuration(study, label, formats, out, info=info, progress=args.progress)
    except UnsupportedOp as exc:
        raise UserError(f"{w.path}: cannot export: {exc}") from None
    table = upsert_rows(out / "deploy.csv", [row], key=("label",))
    metric = w.accuracy.metrics[0]
    print(f"{label} ({row['preset']} preset, graph {row['graph']}, fold_bn {row['fold_bn']}), bits {row['bits']}")
    print(f"held-out {metric}: fp32 {_fmt(row[f'fp32_{metric}'])} -> fake quant {_fmt(row[f'fakequant_{metric}'])}"
          + (f" -> integer {_fmt(row[f'int_{metric}'])}" if "int" in formats else "")
          + (f" -> onnxruntime {_fmt(row[f'onnx_{metric}'])} (all optimisations: {_fmt(row[f'onnx_all_{metric}'])})"
             if "onnx" in formats else ""))
    if "int" in formats:
        print(f"integer vs fake quant: logits max |diff| {row['int_logits_max_abs_diff']:.3g}, "
              f"{row['int_code_mismatches']} of {row['int_elements']} activation codes differ, "
              f"largest |value| {row['int_max_abs_value']} ({'fits' if row['int_fits_int32'] else 'EXCEEDS'} int32)")
    if "onnx" in formats:
        print(f"onnxruntime vs fake quant: logits max |diff| {row['onnx_logits_max_abs_diff']:.3g}, per-tensor max "
              f"|diff| {row['onnx_max_tensor_diff']:.3g}, {row['onnx_code_mismatches']} codes differ")
    print(f"files: {row['files']}")
    print(f"table: {table} (per-tensor differences: {out / (label + '.json')})")
    if "onnx" in formats and not row["onnx_within_tolerance"]:
        print(f"FAIL: onnxruntime's held-out {metric} differs from fake quant by more than 0.1 point")
        return 1
    return 0
