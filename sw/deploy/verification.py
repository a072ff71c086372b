"""Compare a deployed form (integer model, onnxruntime) with the fake-quant model it came from.

Per quantized tensor (every activation quantizer's output, by quantizer address): the maximum
absolute difference of the dequantized values and the number of codes that differ; for the
logits: the maximum absolute difference; for a dataset: the metrics of both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import torch

from sw.quant.presets import QuantParams


@dataclass
class TensorDiff:
    quantizer: str
    elements: int = 0
    code_mismatches: int = 0
    max_abs_diff: float = 0.0
    max_code_diff: int = 0

    def add(self, reference: torch.Tensor, other: torch.Tensor, params: QuantParams) -> None:
        ref_codes, other_codes = params.codes(reference), params.codes(other)
        self.elements += reference.numel()
        self.code_mismatches += int((ref_codes != other_codes).sum())
        self.max_code_diff = max(self.max_code_diff, int((ref_codes - other_codes).abs().max()))
        self.max_abs_diff = max(self.max_abs_diff, float((reference.float() - other.float()).abs().max()))


@dataclass
class Comparison:
    """Differences of one deployed form against the fake-quant model over some batches."""

    tensors: dict[str, TensorDiff] = field(default_factory=dict)
    logits_max_abs_diff: float = 0.0
    samples: int = 0
    argmax_agreement: float = 0.0

    @property
    def max_tensor_diff(self) -> float:
        return max((t.max_abs_diff for t in self.tensors.values()), default=0.0)

    @property
    def code_mismatches(self) -> int:
        return sum(t.code_mismatches for t in self.tensors.values())

    @property
    def elements(self) -> int:
        return sum(t.elements for t in self.tensors.values())

    def to_json(self) -> dict:
        return {"logits_max_abs_diff": self.logits_max_abs_diff, "argmax_agreement": self.argmax_agreement,
                "samples": self.samples, "code_mismatches": self.code_mismatches, "elements": self.elements,
                "tensors": {k: vars(v) for k, v in self.tensors.items()}}


@torch.no_grad()
def fake_quant_tensors(qmodel, x: torch.Tensor, addresses: Iterable[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits and the output of every named quantizer of the fake-quant model on `x`."""
    seen: dict[str, torch.Tensor] = {}
    quantizers = qmodel.quantizers()
    handles = []
    for address in addresses:
        def hook(module, inputs, output, address=address):
            seen.setdefault(address, output.detach().clone())
        handles.append(quantizers[address].register_forward_hook(hook))
    try:
        qmodel.eval()
        logits = qmodel(x)
    finally:
        for h in handles:
            h.remove()
    return logits, seen


DeployedRun = Callable[[torch.Tensor], tuple[torch.Tensor, Mapping[str, torch.Tensor]]]


def compare(qmodel, deployed: DeployedRun, params: Mapping[str, QuantParams], batches: Iterable) -> Comparison:
    """Run both on every batch; `deployed(x)` returns (logits, {quantizer address: dequantized output})."""
    result = Comparison()
    agree = 0
    for x, _ in batches:
        logits, reference = fake_quant_tensors(qmodel, x, params)
        other_logits, other = deployed(x)
        for address, p in params.items():
            if address in reference and address in other:
                diff = result.tensors.setdefault(address, TensorDiff(address))
                diff.add(reference[address], other[address], p)
        result.logits_max_abs_diff = max(result.logits_max_abs_diff,
                                         float((logits - other_logits.float()).abs().max()))
        agree += int((logits.argmax(1) == other_logits.argmax(1)).sum())
        result.samples += x.shape[0]
    result.argmax_agreement = agree / max(result.samples, 1)
    return result


def integer_run(model) -> DeployedRun:
    """`deployed` for an IntegerModel: its logits and every quantizer's codes, dequantized."""

    def run(x: torch.Tensor):
        env = model.run(model.quantize_input(x), record=True)
        outs = {a: p.dequantize(env[v]) for a, (v, p) in model.quant_outputs.items()}
        return model.dequantize_output(env[model.output]), outs

    return run
