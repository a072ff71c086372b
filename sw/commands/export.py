"""`python -m sw export WORKLOAD --point N|best [--format onnx int state_dict packed] [--vectors N]`:
deployable forms of a searched point (or a uniform bit width, or a QAT checkpoint), each verified
against fake quant, and golden test vectors of a few held-out images."""

from __future__ import annotations

import argparse
from pathlib import Path

from sw.core.csv_table import upsert_rows
from sw.core.errors import UserError
from sw.deploy.export import FORMATS, VECTORS, export_configuration
from sw.deploy.lowering import UnsupportedOp
from sw.study.configuration import add_configuration_arguments, apply_configuration
from sw.study.study import Study

HELP = ("export a Pareto point / uniform bits / QAT checkpoint as QDQ ONNX, integer model, packed weights or "
        "checkpoint, verified, with golden test vectors")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_configuration_arguments(parser, checkpoint=True)
    parser.add_argument("--format", nargs="+", choices=FORMATS, default=list(FORMATS), metavar="FORMAT",
                        help="onnx: QDQ ONNX run in onnxruntime (INT4 weights at <= 4 bits); int: the integer-only "
                             "reference model; state_dict: weights + quantizer state; packed: weight codes as the "
                             "converter's packed DRAM words (docs/PACKED_FORMAT.md) (default: all four)")
    parser.add_argument("--vectors", type=int, default=VECTORS, metavar="N",
                        help=f"golden test vectors of the first N held-out images: every layer's integer input, "
                             f"weight and output and the logits as .npy + manifest.json (default {VECTORS}; 0: none)")
    parser.add_argument("--out", type=Path, help="output folder (default results/<name>/deploy)")
    parser.add_argument("--progress", action="store_true")


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _search_cost(study: Study, args: argparse.Namespace) -> str:
    """The searched point's cost objective as the search priced it (empty for other configurations)."""
    if getattr(args, "point", None) is None:
        return ""
    weighting = study.workload.search.weighting
    row, _ = study.select_point(args.point)
    value = row.get(weighting)
    return f"{weighting} {float(value):.2f}" if value not in (None, "") else ""


def run(args: argparse.Namespace) -> int:
    study = Study(args.workload, progress=args.progress)
    w = study.workload
    label, info = apply_configuration(study, args)
    out = args.out or study.results_dir / "deploy"
    formats = list(dict.fromkeys(args.format))
    if args.vectors < 0:
        raise UserError(f"--vectors: expected a count >= 0, got {args.vectors}")
    try:
        row = export_configuration(study, label, formats, out, info=info, progress=args.progress, vectors=args.vectors)
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
    if "packed" in formats:
        cost = _search_cost(study, args)
        print(f"packed weights: {row['packed_bytes']:,} B = {row['packed_payload_bytes']:,} B of "
              f"{row['packed_word_bits']}-bit words ({row['packed_words']:,} words) + {row['packed_header_bytes']:,} B "
              f"header; params x bits / 8 = {row['weights_bytes_ideal']:,.0f} B ({row['weights']:,} weights at "
              f"{row['weight_bits_per_param']:.2f} bits)" + (f"; the search's cost: {cost}" if cost else ""))
        print(f"packed reloaded: held-out {metric} {_fmt(row[f'packed_{metric}'])}, "
              f"{row['packed_weight_code_mismatches']} weight codes and {row['packed_code_mismatches']} activation "
              f"codes differ")
    if "onnx" in formats:
        print(f"onnx file: {row['onnx_bytes']:,} B, {row['onnx_weight_code_mismatches']} weight codes differ")
    print(f"files: {row['files']}")
    print(f"table: {table} (per-tensor differences: {out / (label + '.json')})")
    if "onnx" in formats and not row["onnx_within_tolerance"]:
        print(f"FAIL: onnxruntime's held-out {metric} differs from fake quant by more than 0.1 point")
        return 1
    return 0
