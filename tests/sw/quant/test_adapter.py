"""`sw.quant.adapter`: the only module that touches pytorch-quantization's internals.

- a scan of sw/, energy/ and cosim/ fails, listing file:line, where any other module uses one of
  the library's private names (attribute, hook method, private function, or the name as a string);
- the adapter's functions against the real library (TensorQuantizer, QuantConv2d, QuantLinear),
  with the fake-quant formula computed here independently.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_quantization import nn as qnn
from pytorch_quantization.nn import TensorQuantizer
from pytorch_quantization.tensor_quant import QuantDescriptor

from sw.quant import adapter

ROOT = Path(__file__).resolve().parents[3]
SCANNED = ("sw", "energy", "cosim")
ADAPTER = Path("sw/quant/adapter.py")

# pytorch-quantization 2.1.3's private names (TensorQuantizer, QuantMixin, the calibrators, tensor_quant)
ATTRIBUTES = {
    "_amax", "_amaxs", "_num_bits", "_disabled", "_unsigned", "_narrow_range", "_if_quant", "_if_calib",
    "_if_clip", "_calibrator", "_axis", "_learn_amax", "_fake_quant", "_scale", "_scale_amax",
    "_input_quantizer", "_weight_quantizer", "_input_quantizers", "_weight_quantizers", "_calib_hist",
    "_calib_bin_edges", "_calib_amax", "_calib_method", "_num_bins", "_skip_zeros", "_track_amax", "_torch_hist",
}
METHODS = {"_quant_forward", "_get_amax", "_fb_fake_quant", "_short_amax"}
FUNCTIONS = {"_tensor_quant", "_fake_tensor_quant_backward", "_compute_amax_entropy", "_compute_amax_mse",
             "_compute_amax_percentile"}
PRIVATE = ATTRIBUTES | METHODS | FUNCTIONS
# not listed: `_quant` (the library's QuantConv2d method, and sw.deploy's own `_quant` ops)


def _uses(source: str) -> list[tuple[int, str]]:
    """(line, what) for every use of a private name of the library in Python `source`.

    A called `._amax(...)` is the project's own `Clipping._amax(bits, unsigned)`: the library's
    `_amax` is a buffer, never called. Docstrings and comments are not uses."""
    tree = ast.parse(source)
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    found = []
    for node in ast.walk(tree):
        what = None
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE:
            if not (node.attr == "_amax" and id(node) in called):
                what = f".{node.attr}"
        elif isinstance(node, ast.Name) and node.id in FUNCTIONS:
            what = node.id
        elif isinstance(node, ast.alias) and node.name in PRIVATE:
            what = f"import {node.name}"
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in METHODS:
            what = f"def {node.name}"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in PRIVATE or ("." in node.value and node.value.rsplit(".", 1)[1] in ATTRIBUTES):
                what = repr(node.value)  # getattr(q, "_amax"), register_buffer("_amax"), "conv._amax" keys
        elif isinstance(node, ast.JoinedStr):
            template = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
            if template in ("_{}_quantizer", "_{}_quantizers"):
                what = f"f{template!r}"
        if what is not None:
            found.append((node.lineno, what))
    return sorted(found)


def _offending_uses() -> list[str]:
    out = []
    for package in SCANNED:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if relative == ADAPTER:
                continue
            out += [f"{relative}:{line}: {what}" for line, what in _uses(path.read_text())]
    return out


def test_no_module_but_the_adapter_uses_the_librarys_private_names():
    offending = _offending_uses()
    assert not offending, ("pytorch-quantization internals outside sw/quant/adapter.py (add or use a function "
                           "there):\n" + "\n".join(offending))


@pytest.mark.parametrize("line", [
    "q._amax.data.copy_(v)", "x = q._disabled", "q._num_bits = 4", "layer._input_quantizer", "hasattr(q, '_amax')",
    "q.register_buffer('_amax', v)", "d['_weight_quantizer']", "k.endswith('conv._amax')",
    "setattr(layer, f'_{role}_quantizer', q)", "super()._quant_forward(x)", "q._calibrator._calib_hist",
    "from pytorch_quantization.calib.histogram import _compute_amax_mse", "def _get_amax(self, inputs): pass",
    "q._short_amax()", "f = _tensor_quant",
])
def test_the_scan_finds_each_kind_of_use(line):
    assert _uses(line), line


@pytest.mark.parametrize("line", [
    "value = self._amax(bits, unsigned)",  # the project's own Clipping._amax method
    "def _amax(self, bits, unsigned): pass", "self._quant(op)", "def _axis(q): pass", "y = _axis(q)",
    "self._scale_cache = 1", "self._scales(a)", "self._static_fake_quant(x)", "fused_quant.fake_quant(x)",
    'def f():\n    """reads `q._amax` and `_tensor_quant`"""', "x = 1  # q._amax",
])
def test_the_scan_ignores_the_projects_own_names_and_prose(line):
    assert _uses(line) == [], line


# -- the adapter against the real library ---------------------------------------------------------------
def _formula(x: torch.Tensor, amax: float, bits: int) -> torch.Tensor:
    """Signed fake quant in fp32, computed here: scale = (2^(b-1) - 1) / amax, round(x * scale) / scale
    (round half to even), codes clamped to [-2^(b-1), 2^(b-1) - 1]."""
    x = x.detach().numpy().astype(np.float32)
    max_bound = np.float32(2.0 ** (bits - 1) - 1)
    scale = np.float32(max_bound / np.float32(amax))
    codes = np.clip(np.rint((x * scale).astype(np.float32)), -max_bound - 1, max_bound)
    return torch.from_numpy((codes / scale).astype(np.float32))


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 1.5


def test_set_amax_creates_the_buffer_and_the_output_is_the_formula():
    q = TensorQuantizer(QuantDescriptor(num_bits=8, narrow_range=False))
    assert adapter.amax_buffer(q) is None  # dynamic amax: nothing stored yet
    adapter.set_amax(q, torch.tensor(2.0, dtype=torch.float64))
    assert adapter.amax_buffer(q).dtype == torch.float32 and float(adapter.amax_buffer(q)) == 2.0
    x = _x(1000)
    assert torch.equal(q(x), _formula(x, 2.0, 8))
    adapter.set_amax(q, torch.tensor(0.75, dtype=torch.float64))  # into the existing buffer
    assert adapter.amax_buffer(q).dtype == torch.float32
    assert torch.equal(q(x), _formula(x, 0.75, 8))


def test_setting_bits_changes_the_output():
    q = TensorQuantizer(QuantDescriptor(num_bits=8))
    adapter.set_amax(q, 2.0)
    x = _x(1000)
    eight = q(x)
    q.num_bits = 3
    three = q(x)
    assert torch.equal(three, _formula(x, 2.0, 3)) and not torch.equal(three, eight)
    assert adapter.static_params(q)[1:] == (3, False, False)


def test_a_disabled_quantizer_passes_the_input_through():
    q = TensorQuantizer(QuantDescriptor(num_bits=4, amax=1.0))
    x = _x(100)
    adapter.set_enabled(q, False)
    assert not adapter.is_enabled(q) and q(x) is x and not adapter.quantizing_only(q)
    adapter.set_enabled(q, True)
    assert adapter.is_enabled(q) and adapter.quantizing_only(q) and torch.equal(q(x), _formula(x, 1.0, 4))


def _linear() -> qnn.QuantLinear:
    return qnn.QuantLinear(6, 4, quant_desc_input=QuantDescriptor(num_bits=8),
                           quant_desc_weight=QuantDescriptor(num_bits=8, axis=(0,)))


def test_set_amax_without_a_buffer_then_load_state_dict_works_on_the_cpu():
    source = _linear()
    adapter.set_amax(adapter.input_quantizer(source), 3.0)
    adapter.set_amax(adapter.weight_quantizer(source), torch.arange(1.0, 5.0).reshape(4, 1))
    state = source.state_dict()
    assert sorted(k for k in state if adapter.is_amax_key(k)) == sorted(k for k in state if k.endswith("amax"))
    assert len([k for k in state if adapter.is_amax_key(k)]) == 2
    assert not any(adapter.is_amax_key(k) for k in ("head.running_amax", "amax_history", "model.step"))
    if not torch.cuda.is_available():  # the library's own path for a missing buffer moves it to CUDA
        with pytest.raises((AssertionError, RuntimeError)):
            _linear().load_state_dict(state)
    fresh = _linear()
    adapter.set_amax(adapter.input_quantizer(fresh), 0.0)  # placeholders of the right shape
    adapter.set_amax(adapter.weight_quantizer(fresh), torch.zeros(4, 1))
    fresh.load_state_dict(state)
    for role in (adapter.input_quantizer, adapter.weight_quantizer):
        loaded = adapter.amax_buffer(role(fresh))
        assert loaded.device.type == "cpu" and torch.equal(loaded, adapter.amax_buffer(role(source)))
    x = _x(2, 6)
    assert torch.equal(fresh(x), source(x))


def test_per_channel_amax_keeps_the_librarys_shape():
    conv = qnn.QuantConv2d(3, 4, 3, quant_desc_input=QuantDescriptor(num_bits=8),
                           quant_desc_weight=QuantDescriptor(num_bits=6, axis=(0,)))
    wq = adapter.weight_quantizer(conv)
    assert adapter.channel_axis(wq) == 0
    adapter.start_calibration(wq)
    wq(conv.weight)
    adapter.stop_calibration(wq)
    wq.load_calib_amax()
    assert adapter.amax_buffer(wq).shape == (4, 1, 1, 1)  # the library's keepdims shape
    amax = torch.tensor([0.5, 0.25, 1.0, 2.0])
    adapter.set_amax(wq, amax)  # a flat per-channel amax is reshaped into the buffer
    assert adapter.amax_buffer(wq).shape == (4, 1, 1, 1)
    w = conv.weight.detach()
    expected = torch.stack([_formula(w[c], float(amax[c]), 6) for c in range(4)])
    assert torch.equal(wq(w), expected)
    assert adapter.static_params(wq) is None  # per channel: the library's own path
    with pytest.raises(RuntimeError):
        adapter.set_amax(wq, torch.ones(3))  # another channel count


def test_calibration_mode_collects_instead_of_quantizing():
    q = TensorQuantizer(QuantDescriptor(num_bits=8, calib_method="max"))
    adapter.start_calibration(q)
    x = _x(500)
    assert q(x) is x and adapter.is_calibrating(q) and not adapter.quantizing_only(q)
    adapter.stop_calibration(q)
    q.load_calib_amax()
    assert not adapter.is_calibrating(q) and float(adapter.amax_buffer(q)) == float(x.abs().max())
    adapter.start_calibration(q)  # starts from empty: a smaller batch gives a smaller amax
    q(x * 0.5)
    adapter.stop_calibration(q)
    q.load_calib_amax()
    assert float(adapter.amax_buffer(q)) == float((x * 0.5).abs().max())
    q.enable_calib()  # quantizing and collecting at once: not the search's state
    assert adapter.is_calibrating(q) and not adapter.quantizing_only(q)


def test_calibrator_settings_and_histogram():
    q = TensorQuantizer(QuantDescriptor(num_bits=8, calib_method="histogram"))
    assert adapter.calib_method(q) == "histogram"
    assert adapter.calib_method(TensorQuantizer(QuantDescriptor(calib_method="max"))) == "max"
    adapter.set_histogram_bins(q, 64)
    adapter.set_calibrator_unsigned(q, True)
    adapter.start_calibration(q)
    q(_x(1000).abs())
    counts, edges = adapter.calibrator_histogram(adapter.calibrator(q))
    assert len(counts) == 64 and len(edges) == 65 and float(counts.sum()) == 1000
    adapter.set_histogram_bins(TensorQuantizer(QuantDescriptor(calib_method="max")), 64)  # no histogram: nothing


def test_static_params_only_for_a_stored_per_tensor_amax_and_the_formula():
    q = TensorQuantizer(QuantDescriptor(num_bits=5, unsigned=True, narrow_range=True))
    assert adapter.static_params(q) is None  # no amax stored
    adapter.set_amax(q, 1.5)
    amax, bits, unsigned, narrow = adapter.static_params(q)
    assert amax is adapter.amax_buffer(q) and (bits, unsigned, narrow) == (5, True, True)
    assert adapter.uses_fake_quant_formula(q)
    learned = TensorQuantizer(QuantDescriptor(num_bits=5, amax=1.0, learn_amax=True))
    assert adapter.static_params(learned) is None and not adapter.uses_fake_quant_formula(learned)


def test_layer_operands_are_what_the_layer_computes():
    conv = qnn.QuantConv2d(3, 4, 3, bias=True, quant_desc_input=QuantDescriptor(num_bits=8, amax=2.0),
                           quant_desc_weight=QuantDescriptor(num_bits=4, amax=0.3))
    x = _x(1, 3, 8, 8)
    quantizer, weight, bias = adapter.layer_operands(conv)
    assert quantizer is adapter.input_quantizer(conv) and bias is conv.bias
    assert torch.equal(weight, _formula(conv.weight, 0.3, 4))
    assert torch.equal(torch.nn.functional.conv2d(quantizer(x), weight, bias), conv(x))
    calls = []
    adapter.weight_quantizer(conv).register_forward_pre_hook(lambda m, i: calls.append(1))
    adapter.weight_quantizer(conv).disable()
    assert adapter.layer_operands(conv)[1] is conv.weight and not calls  # a disabled one is not even called
    adapter.weight_quantizer(conv).enable()
    adapter.layer_operands(conv)
    assert calls == [1]


def test_set_layer_quantizer_replaces_one_role():
    layer = qnn.QuantLinear(3, 2)
    new = TensorQuantizer(QuantDescriptor(num_bits=4))
    adapter.set_layer_quantizer(layer, "weight", new)
    assert adapter.weight_quantizer(layer) is new and adapter.input_quantizer(layer) is not new
    with pytest.raises(ValueError, match="role"):
        adapter.set_layer_quantizer(layer, "output", new)


def test_amax_summary():
    q = TensorQuantizer(QuantDescriptor(num_bits=8))
    assert adapter.amax_summary(q) == "dynamic"
    adapter.set_amax(q, 1.25)
    assert adapter.amax_summary(q) == "1.2500"


class _Halving(adapter.QuantizerBase):
    def forward_amax(self, inputs):
        return super().forward_amax(inputs) / 2


class _Zero(adapter.QuantizerBase):
    def quant_forward(self, inputs):
        return super().quant_forward(inputs) * 0.0


def test_quantizer_base_hooks_replace_the_librarys():
    x = _x(300)
    assert torch.equal(_Halving(QuantDescriptor(num_bits=8, amax=2.0))(x), _formula(x, 1.0, 8))
    assert torch.equal(_Zero(QuantDescriptor(num_bits=8, amax=2.0))(x), torch.zeros_like(x))
    plain = adapter.QuantizerBase(QuantDescriptor(num_bits=8, amax=2.0))
    assert torch.equal(plain(x), TensorQuantizer(QuantDescriptor(num_bits=8, amax=2.0))(x))
    assert getattr(_Zero, adapter.hook_name("quant_forward")) is _Zero.quant_forward
    assert getattr(_Halving, adapter.hook_name("forward_amax")) is _Halving.forward_amax
