"""Export one configuration of a study and prove each form computes what the fake-quant model does.

`export_configuration` lowers the study's quantized model (at the bits already set), writes the
requested formats under `results/<name>/deploy/`, measures on the held-out (`reevaluation`)
data the metrics of fp32, fake quant, the integer model and onnxruntime, and the per-tensor
differences of each against fake quant, and returns one row for `deploy.csv` plus the
per-configuration JSON (`<label>.json`, written too).

onnxruntime runs the QDQ model twice: with basic graph optimisations (constant folding only:
every QuantizeLinear / DequantizeLinear is computed as the ONNX standard defines it, the
reference the 0.1-point check applies to) and with all optimisations (what a default
session does: onnxruntime may fuse DQ -> Conv -> Q into integer kernels such as QLinearConv,
which round the bias to the accumulator step; reported as `onnx_all_<metric>`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

from sw.core.durable import write_text
from sw.deploy.integer_model import IntegerModel
from sw.deploy.lowering import lower
from sw.deploy.onnx_export import OnnxRunner, exposed_names, onnx_run, save, to_onnx
from sw.deploy.verification import compare, integer_run
from sw.model.checkpoint import save_checkpoint
from sw.search.heldout import PHASE as HELDOUT

FORMATS = ("onnx", "int", "state_dict")
ONNX_TOLERANCE = 0.001  # held-out accuracy: onnxruntime within 0.1 point of fake quant


def export_configuration(study, label: str, formats: Sequence[str], out_dir: Path, *,
                         info: dict[str, Any] | None = None, progress: bool = False) -> dict[str, Any]:
    """Export the study's quantized model at its current bits in `formats`; returns the deploy.csv row."""
    started = time.perf_counter()
    qmodel = study.quantized_model
    qmodel.eval()
    metric = study.workload.accuracy.metrics[0]
    data = study.batches(HELDOUT)
    graph = lower(qmodel)
    params = {op.attrs["quantizer"]: op.attrs["params"] for op in graph.quant_ops()}
    settings = qmodel.settings
    row: dict[str, Any] = {"label": label, **(info or {}), "preset": settings.preset, "graph": settings.graph,
                           "fold_bn": settings.fold_bn,
                           "bits": " ".join(f"{w}/{i}" for w, i in qmodel.layer_bits().values())}
    fp32 = study.evaluate(study.fp32_model, HELDOUT)
    fake = study.evaluate(qmodel, HELDOUT)
    row.update({f"fp32_{metric}": fp32[metric], f"fakequant_{metric}": fake[metric]})
    details: dict[str, Any] = {"label": label, "phase": HELDOUT, "samples": data.num_samples, "fp32": fp32,
                               "fakequant": fake, "row": row}
    files: list[str] = []
    out_dir = Path(out_dir)
    if "int" in formats:
        model = IntegerModel.from_graph(graph)
        comparison = compare(qmodel, integer_run(model), params, data)
        metrics = study.evaluate(model, HELDOUT)
        row.update({f"int_{metric}": metrics[metric], f"int_delta_{metric}": metrics[metric] - fake[metric],
                    "int_logits_max_abs_diff": comparison.logits_max_abs_diff,
                    "int_max_tensor_diff": comparison.max_tensor_diff,
                    "int_code_mismatches": comparison.code_mismatches, "int_elements": comparison.elements,
                    "int_max_abs_value": max(model.max_abs.values()), "int_fits_int32": model.fits_int32})
        details["int"] = {"metrics": metrics, "comparison": comparison.to_json(), "static_bound": model.static_bound,
                          "max_abs": model.max_abs}
        files += [str(p) for p in model.save(out_dir / f"{label}_int")]
    if "onnx" in formats:
        onnx_model = to_onnx(graph)
        files.append(str(save(onnx_model, out_dir / f"{label}.onnx")))
        standard = OnnxRunner(onnx_model, optimize=False)
        default = OnnxRunner(onnx_model, optimize=True)
        exposed = OnnxRunner(to_onnx(graph, expose_quantizers=True), optimize=False)
        comparison = compare(qmodel, onnx_run(exposed, exposed_names(graph)), params, data)
        metrics = study.evaluate(standard, HELDOUT)
        optimized = study.evaluate(default, HELDOUT)
        all_cmp = compare(qmodel, onnx_run(default, {}), {}, data)
        row.update({f"onnx_{metric}": metrics[metric], f"onnx_delta_{metric}": metrics[metric] - fake[metric],
                    "onnx_logits_max_abs_diff": comparison.logits_max_abs_diff,
                    "onnx_max_tensor_diff": comparison.max_tensor_diff,
                    "onnx_code_mismatches": comparison.code_mismatches,
                    f"onnx_all_{metric}": optimized[metric], "onnx_all_logits_max_abs_diff": all_cmp.logits_max_abs_diff,
                    "onnx_within_tolerance": abs(metrics[metric] - fake[metric]) <= ONNX_TOLERANCE + 1e-12})
        details["onnx"] = {"metrics": metrics, "metrics_all_optimizations": optimized,
                           "comparison": comparison.to_json(), "opset": onnx_model.opset_import[0].version}
    if "state_dict" in formats:
        files += [str(p) for p in save_checkpoint(qmodel, out_dir / f"{label}_state", workload=study.workload,
                                                  info={"kind": "export", **row})]
    row = {k: (float(f"{v:.6g}") if isinstance(v, float) else v) for k, v in row.items()}
    row["files"] = " ".join(files)
    row["wall_s"] = round(time.perf_counter() - started, 1)
    details["files"] = files
    write_text(out_dir / f"{label}.json", json.dumps(details, indent=1, default=float))
    return row
