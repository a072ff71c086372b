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

`packed` writes every layer's weight codes as the converter's DRAM words (`sw.deploy.packed_file`,
docs/PACKED_FORMAT.md), reads the file back into the integer model and measures it like the
others; its size is reported next to params x bits / 8. Every reloaded form (the .onnx file, the
packed file) is checked for weight codes that differ from the lowered graph's. `vectors` > 0
also writes golden test vectors of that many held-out images (`sw.deploy.vectors`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from sw.core.durable import write_text
from sw.deploy.integer_model import IntegerModel
from sw.deploy.lowering import DeployGraph, lower
from sw.deploy.onnx_export import OnnxRunner, exposed_names, onnx_run, save, to_onnx
from sw.deploy.packed_file import SUFFIX, graph_weights, read_packed, write_packed
from sw.deploy.packing import DEFAULT_WORD_BITS
from sw.deploy.vectors import write_vectors
from sw.deploy.verification import compare, integer_run
from sw.model.checkpoint import save_checkpoint
from sw.search.heldout import PHASE as HELDOUT

FORMATS = ("onnx", "int", "state_dict", "packed")
ONNX_TOLERANCE = 0.001  # held-out accuracy: onnxruntime within 0.1 point of fake quant
VECTORS = 4  # held-out images of the golden test vectors by default


def word_bits_of(workload) -> int:
    """The packed word width: the workload's energy.word_bits (the energy model's), else the RTL default."""
    energy = getattr(workload, "energy", None)
    return int(getattr(energy, "word_bits", None) or DEFAULT_WORD_BITS)


def weight_code_mismatches(graph: DeployGraph, weights: dict[str, np.ndarray]) -> int:
    """Weight codes of `weights` (layer -> codes read back from a file) that differ from the graph's."""
    bad = 0
    for op in graph.ops:
        if op.kind in ("conv", "linear"):
            codes = op.attrs["weight"].numpy()
            got = weights.get(op.attrs["layer"])
            bad += codes.size if got is None or got.shape != codes.shape else int(np.count_nonzero(got != codes))
    return bad


def onnx_weight_codes(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Layer -> weight codes of the QDQ model's `<layer>.weight_codes` initializers (INT4 included)."""
    return {t.name[: -len(".weight_codes")]: numpy_helper.to_array(t).astype(np.int64)
            for t in model.graph.initializer if t.name.endswith(".weight_codes")}


def _held_out_sample(data, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `count` held-out images and labels."""
    xs, ys, have = [], [], 0
    for x, y in data:
        xs.append(x[: count - have])
        ys.append(torch.as_tensor(y)[: count - have])
        have += xs[-1].shape[0]
        if have >= count:
            break
    return torch.cat(xs), torch.cat(ys)


def export_configuration(study, label: str, formats: Sequence[str], out_dir: Path, *,
                         info: dict[str, Any] | None = None, progress: bool = False,
                         vectors: int = VECTORS) -> dict[str, Any]:
    """Export the study's quantized model at its current bits in `formats` (and `vectors` golden
    test vectors); returns the deploy.csv row."""
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
    model = IntegerModel.from_graph(graph) if ({"int", "packed"} & set(formats) or vectors) else None
    int_stem = out_dir / f"{label}_int"
    if "int" in formats:
        comparison = compare(qmodel, integer_run(model), params, data)
        metrics = study.evaluate(model, HELDOUT)
        row.update({f"int_{metric}": metrics[metric], f"int_delta_{metric}": metrics[metric] - fake[metric],
                    "int_logits_max_abs_diff": comparison.logits_max_abs_diff,
                    "int_max_tensor_diff": comparison.max_tensor_diff,
                    "int_code_mismatches": comparison.code_mismatches, "int_elements": comparison.elements,
                    "int_max_abs_value": max(model.max_abs.values()), "int_fits_int32": model.fits_int32})
        details["int"] = {"metrics": metrics, "comparison": comparison.to_json(), "static_bound": model.static_bound,
                          "max_abs": model.max_abs}
        files += [str(p) for p in model.save(int_stem)]
    if "packed" in formats:
        word_bits = word_bits_of(study.workload)
        path = write_packed(out_dir / f"{label}{SUFFIX}", graph_weights(graph, word_bits), word_bits)
        files.append(str(path))
        packed = read_packed(path)
        if "int" in formats:  # the integer model as a user gets it: its program file + the packed weights
            reloaded = IntegerModel.load(int_stem, packed=path)
        else:
            reloaded = IntegerModel.from_graph(graph)
            reloaded.use_packed_weights(packed)
        comparison = compare(qmodel, integer_run(reloaded), params, data)
        metrics = study.evaluate(reloaded, HELDOUT)
        sizes = [(t.elements, t.bits) for t in packed.tensors.values()]
        ideal, weights = sum(n * b for n, b in sizes) / 8, sum(n for n, _ in sizes)
        row.update({f"packed_{metric}": metrics[metric], f"packed_delta_{metric}": metrics[metric] - fake[metric],
                    "packed_code_mismatches": comparison.code_mismatches,
                    "packed_weight_code_mismatches": weight_code_mismatches(
                        graph, {n: t.codes() for n, t in packed.tensors.items()}),
                    "packed_bytes": packed.file_bytes, "packed_header_bytes": packed.header_bytes,
                    "packed_payload_bytes": packed.payload_bytes, "packed_word_bits": word_bits,
                    "packed_words": packed.payload_bytes * 8 // word_bits, "weights": weights,
                    "weights_bytes_ideal": ideal, "weight_bits_per_param": 8 * ideal / max(weights, 1)})
        details["packed"] = {"metrics": metrics, "comparison": comparison.to_json(), "header": packed.header}
    if vectors:
        images, labels = _held_out_sample(data, vectors)
        packed_name = f"../{label}{SUFFIX}" if "packed" in formats else None
        manifest = write_vectors(model, graph, images, labels, out_dir / f"{label}_vectors", packed=packed_name)
        files.append(str(manifest))
        row["vectors"] = int(images.shape[0])
    if "onnx" in formats:
        onnx_path = save(to_onnx(graph), out_dir / f"{label}.onnx")
        files.append(str(onnx_path))
        onnx_model = onnx.load(onnx_path)  # what a user loads: the file, not the in-memory model
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
                    "onnx_weight_code_mismatches": weight_code_mismatches(graph, onnx_weight_codes(onnx_model)),
                    "onnx_bytes": onnx_path.stat().st_size,
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
