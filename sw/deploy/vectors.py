"""Golden test vectors: a few held-out inputs through the integer model, every layer's integers on disk.

`write_vectors` runs the integer model (`sw.deploy.integer_model`) on N images and writes, as
plain `.npy` files (no pickle) next to one `manifest.json`:

    input.npy             the fp32 images, N x C x H x W
    labels.npy            their labels
    model_input.npy       the model-input quantizer's codes of the images
    <layer>.input.npy     the codes the layer reads (its input quantizer's output)
    <layer>.weight.npy    the layer's weight codes (zero point included, as stored in the packed file)
    <layer>.bias.npy      the integer bias added to the accumulator (int32)
    <layer>.output.npy    the layer's output: ((x - zp_in) * (w - zp_w) summed) << frac_bits + bias (int32)
    logits_int.npy        the integer value of the model's output
    logits.npy            the logits the integer model returns: float32((logits_int - out_zp) * out_step)

Codes are stored in the narrowest integer type of their range. The manifest gives each layer's
operation (kind, stride, padding, dilation, groups, frac_bits), the quantizer parameters of its
input and weight (bits, fp32 scales, zero points, code range, axis) and the file names, so
firmware, a C reference or another RTL can be checked element for element; `cosim.golden`
replays them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sw.core.durable import atomic_write, write_text
from sw.core.errors import DataError
from sw.deploy.integer_model import IntegerModel
from sw.deploy.lowering import DeployGraph
from sw.deploy.packed_file import fp32_list
from sw.deploy.packing import narrow
from sw.quant.presets import QuantParams

FORMAT = "mpq-golden-vectors/1"
MANIFEST = "manifest.json"


def params_json(p: QuantParams) -> dict[str, Any]:
    """A quantizer's integer description as JSON (fp32 scales as the shortest decimal that reads back the same)."""
    return {"bits": p.bits, "scale": fp32_list(p.scale.float().numpy()),
            "zero_point": [int(z) for z in p.zero_point.reshape(-1)], "lo": p.lo, "hi": p.hi, "axis": p.axis}


def _save(folder: Path, name: str, array: np.ndarray) -> str:
    with atomic_write(folder / name, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
    return name


def write_vectors(model: IntegerModel, graph: DeployGraph, images: torch.Tensor, labels: torch.Tensor,
                  folder: Path, *, packed: str | None = None) -> Path:
    """Write the golden vectors of `images` into `folder`; returns the manifest's path.

    `packed`: the packed weights file's path relative to `folder`, recorded in the manifest.
    """
    folder = Path(folder)
    codes = model.quantize_input(images.float())
    env = model.run(codes)
    by_value = {v: (address, p) for address, (v, p) in model.quant_outputs.items()}
    ops = model.layer_ops()
    layers = []
    for op in graph.ops:
        if op.kind not in ("conv", "linear"):
            continue
        name = op.attrs["layer"]
        int_op = ops[name]
        source = int_op.inputs[0]
        address, in_params = by_value[source]
        entry: dict[str, Any] = {
            "name": name, "kind": op.kind, "value": int_op.output, "input_quantizer": address,
            "input_params": params_json(in_params),
            "weight_params": params_json(op.attrs["weight_params"]),
            "frac_bits": int(int_op.ints["frac_bits"]),
            "files": {"input": _save(folder, f"{name}.input.npy", narrow(env[source].numpy())),
                      "weight": _save(folder, f"{name}.weight.npy", narrow(op.attrs["weight"].numpy())),
                      "bias": _save(folder, f"{name}.bias.npy", env_int32(int_op.tensors["bias"].numpy(), name)),
                      "output": _save(folder, f"{name}.output.npy", env_int32(env[int_op.output].numpy(), name))}}
        if op.kind == "conv":
            entry.update({k: list(op.attrs[k]) for k in ("stride", "padding", "dilation")},
                         groups=int(op.attrs["groups"]))
        layers.append(entry)
    out = env[model.output]
    logits = model.dequantize_output(out)
    manifest = {
        "format": FORMAT, "samples": int(images.shape[0]),
        "input": {"file": _save(folder, "input.npy", images.float().numpy()), "params": params_json(model.input_params),
                  "codes": _save(folder, "model_input.npy", narrow(codes.numpy()))},
        "labels": _save(folder, "labels.npy", narrow(labels.numpy())),
        "layers": layers,
        "output": {"value": model.output, "int": _save(folder, "logits_int.npy", env_int32(out.numpy(), "output")),
                   "step": model.out_step.tolist(), "zero_point": model.out_zp.tolist(),
                   "logits": _save(folder, "logits.npy", logits.numpy().astype(np.float32))},
        "packed_weights": packed,
    }
    return write_text(folder / MANIFEST, json.dumps(manifest, indent=1))


def env_int32(values: np.ndarray, what: str) -> np.ndarray:
    """Integer values as int32 (what an int32 accumulator holds); a value beyond it is a DataError."""
    values = np.asarray(values)
    if values.size and (values.min() < -2 ** 31 or values.max() > 2 ** 31 - 1):
        raise DataError(f"{what}: integer values beyond int32 cannot be written as golden vectors")
    return values.astype(np.int32)


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of a golden-vector folder (or its path); DataError when it is missing or not one."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: expected a golden-vector manifest ({type(exc).__name__})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path}: expected a golden-vector manifest of format {FORMAT}")
    manifest["folder"] = str(path.parent)
    return manifest


def load_array(manifest: dict[str, Any], name: str) -> np.ndarray:
    """One array of a golden-vector folder (no pickle); DataError when it is missing or unreadable."""
    path = Path(manifest["folder"]) / name
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the golden vector ({type(exc).__name__}: {exc})") from None
