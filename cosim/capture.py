"""Capture the real tensors every quantizer of a quantized model sees, with its settings.

Weights come from the layers (the fp32 master copy), input activations from one forward pass
over real images (forward hooks on the input quantizers). Next to each tensor we keep what the
search computed from it: the fake-quantized values the quantized model actually used (the
frozen weight cache for weights, the quantizer's output for activations).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from sw.core.errors import UserError
from sw.model.quantized_model import QuantizedModel
from sw.quant.adapter import input_quantizer, is_enabled, weight_quantizer


@dataclass
class CapturedTensor:
    """One quantizer's input tensor, its settings and the search's fake-quant output.

    `values` and `search_output` have shape (segments, n): a per-channel weight has one
    segment per output channel (each with its own amax), anything else a single segment.
    """

    layer: str
    role: str  # "weight" or "input"
    quantizer: str
    values: np.ndarray  # float32
    amax: np.ndarray  # float32, one per segment
    bits: int
    unsigned: bool
    narrow_range: bool
    search_output: np.ndarray  # float32, what the search's model computed

    @property
    def elements(self) -> int:
        return int(self.values.size)

    @property
    def segments(self) -> int:
        return int(self.values.shape[0])


def _settings(q) -> tuple[int, bool, bool]:
    return int(q.num_bits), bool(q.unsigned), bool(q.narrow_range)


def _amax(q, segments: int) -> np.ndarray:
    amax = q.amax
    if amax is None:
        raise ValueError(f"quantizer {q} is not calibrated")
    amax = amax.detach().float().reshape(-1).cpu().numpy()
    return np.broadcast_to(amax, (segments,)).astype(np.float32) if amax.size == 1 else amax


@torch.no_grad()
def capture_weights(qmodel: QuantizedModel, layers: Sequence[str]) -> list[CapturedTensor]:
    """Every selected layer's weight, as the search quantized it (frozen weights)."""
    out = []
    modules = qmodel.layers()
    for name in layers:
        layer = modules[name]
        wq = weight_quantizer(layer)
        correction = getattr(wq, "bias_correction", None)
        if getattr(wq, "channel_bits", None) is not None or getattr(correction, "variance", False):
            raise UserError(f"layer {name}: cosim compares one bit width per tensor and unscaled codes; calibration "
                            f"bit_allocation and bias_correction: mean_variance are not simulated yet")
        master = qmodel.fp32_weight(name)
        if not is_enabled(wq):  # frozen: layer.weight already holds the fake-quantized weight
            used = layer.weight.detach()
        else:
            used = wq(master)
        per_channel = wq.axis is not None and wq.amax is not None and wq.amax.numel() > 1
        segments = master.shape[0] if per_channel else 1
        bits, unsigned, narrow = _settings(wq)
        # learned rounding (sw.model.reconstruction): the weights go in as their dequantized values,
        # which the converter must map back to exactly the learned codes
        learned = getattr(wq, "learned_rounding", None) is not None and wq.learned_rounding.get(bits) is not None
        out.append(CapturedTensor(
            layer=name, role="weight", quantizer=f"{name}.weight",
            values=(used if learned else master).float().reshape(segments, -1).cpu().numpy(),
            amax=_amax(wq, segments), bits=bits, unsigned=unsigned, narrow_range=narrow,
            search_output=used.float().reshape(segments, -1).cpu().numpy(),
        ))
    return out


@torch.no_grad()
def capture_inputs(qmodel: QuantizedModel, images: torch.Tensor, quantizers: Mapping[str, tuple[str, object]],
                   ) -> list[CapturedTensor]:
    """The tensors the given input quantizers receive while the model runs on `images`.

    `quantizers` maps a quantizer address to (layer name, quantizer module).
    """
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []
    for address, (_, q) in quantizers.items():
        def hook(module, inputs, output, address=address):
            seen.setdefault(address, (inputs[0].detach().clone(), output.detach().clone()))
        handles.append(q.register_forward_hook(hook))
    try:
        qmodel(images)
    finally:
        for h in handles:
            h.remove()
    out = []
    for address, (layer, q) in quantizers.items():
        if address not in seen:
            raise ValueError(f"quantizer {address} was not reached by a forward pass")
        x, y = seen[address]
        bits, unsigned, narrow = _settings(q)
        out.append(CapturedTensor(
            layer=layer, role="input", quantizer=address, values=x.float().reshape(1, -1).cpu().numpy(),
            amax=_amax(q, 1), bits=bits, unsigned=unsigned, narrow_range=narrow,
            search_output=y.float().reshape(1, -1).cpu().numpy(),
        ))
    return out


def capture(qmodel: QuantizedModel, layer_bits: Mapping[str, tuple[int, int]], images: torch.Tensor,
            layers: Sequence[str] | None = None, clipping: Mapping[str, str] | None = None) -> list[CapturedTensor]:
    """Weights and input activations of every quantized layer (or the selected ones) at `layer_bits`.

    The model's own input quantizer (`model_input`) and any activation quantizers are included
    when no layer selection is given. `clipping` picks input clipping methods per layer
    (`QuantizedModel.set_layer_bits`); None: the calibrated default.
    """
    if not qmodel.weights_frozen:
        qmodel.freeze_weights()
    qmodel.set_layer_bits(layer_bits, clipping)
    qmodel.eval()
    selected = list(layers) if layers else list(qmodel.layer_names)
    unknown = [n for n in selected if n not in qmodel.layer_names]
    if unknown:
        raise KeyError(f"unknown layer(s) {', '.join(unknown)}; layers are: {', '.join(qmodel.layer_names)}")
    modules = qmodel.layers()
    inputs: dict[str, tuple[str, object]] = {}
    if not layers:
        inputs["model_input"] = ("model_input", qmodel.model_input)
    for name in selected:
        inputs[f"{name}.input"] = (name, input_quantizer(modules[name]))
    if not layers:
        for key, q in qmodel.activation_quantizers.items():
            name = key.replace("__", ".")
            inputs[f"{name}.output"] = (name, q)
    tensors: list[CapturedTensor] = []
    by_layer = {t.quantizer: t for t in capture_inputs(qmodel, images, inputs)}
    weights = {t.layer: t for t in capture_weights(qmodel, selected)}
    for address, t in by_layer.items():  # forward order: a layer's input, then its weight
        tensors.append(t)
        if t.layer in weights and address == f"{t.layer}.input":
            tensors.append(weights.pop(t.layer))
    tensors.extend(weights.values())
    return tensors
