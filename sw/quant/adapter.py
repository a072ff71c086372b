"""The one module that touches NVIDIA pytorch-quantization's internals (written against 2.1.3).

The library keeps a quantizer's state in private attributes (the `_amax` buffer, `_num_bits`,
`_disabled`, the forward stages `_if_quant` / `_if_calib` / `_if_clip`, `_learn_amax`, ...), a
quantized layer's quantizers in `_input_quantizer` / `_weight_quantizer`, a histogram calibrator's
counts in `_calib_hist` / `_calib_bin_edges`, and its forward's extension points in the methods
`_quant_forward` / `_get_amax`. Every other module of the project reads and writes them through
the small functions here, so a new library version changes this file only
(`tests/sw/quant/test_adapter.py` scans sw/, energy/ and cosim/ for those names).

The library's public API (`num_bits`, `unsigned`, `narrow_range`, `axis` and `amax` properties,
`enable()`/`disable()`, `load_calib_amax()`, `QuantDescriptor`, `QuantConv2d`, ...) stays fine to
use anywhere. Functions that run per forward (`layer_operands`, `static_params`,
`quantizing_only`) read the attributes directly: one plain function call, no property.
"""

from __future__ import annotations

import numpy as np
import torch
from pytorch_quantization import calib
from pytorch_quantization.calib.histogram import _compute_amax_entropy, _compute_amax_percentile
from pytorch_quantization.nn import TensorQuantizer
from torch import nn

ROLES = ("input", "weight")  # the two quantizers of a QuantConv2d / QuantLinear


# -- amax -----------------------------------------------------------------------------------------
def amax_buffer(q: TensorQuantizer) -> torch.Tensor | None:
    """The stored amax buffer itself (None: dynamic amax, nothing calibrated yet).

    Unlike the `amax` property of a subclass (e.g. the power-of-two one of `sw.quant.presets`),
    this is the raw calibrated value; writing into it changes the quantizer."""
    return q._buffers.get("_amax")


def set_amax(q: TensorQuantizer, value: torch.Tensor | float) -> None:
    """Set a quantizer's amax (float32, detached). An existing buffer keeps its shape (`value` is
    reshaped to it); where there is none yet, one is created with `value`'s shape, so that a later
    `load_state_dict` finds it (the library's own fallback for a missing buffer calls `.cuda()`).
    A new per-channel amax needs the library's keepdims shape, e.g. (C, 1, 1, 1) for a conv weight
    on axis 0 (a (C,) amax would broadcast along the last axis)."""
    value = torch.as_tensor(value).detach().to(torch.float32)
    current = q._buffers.get("_amax")
    if current is None:
        q.register_buffer("_amax", value.clone())
    else:
        current.data.copy_(value.reshape(current.shape))


def is_amax_key(key: str) -> bool:
    """A `state_dict` key that holds a quantizer's amax."""
    return key == "_amax" or key.endswith("._amax")


def amax_summary(q: TensorQuantizer) -> str:
    """Short text of a quantizer's amax: 'dynamic', one value, or '[min, max](count)' per channel."""
    return q._short_amax()


# -- state ----------------------------------------------------------------------------------------
def is_enabled(q: TensorQuantizer) -> bool:
    """False when the quantizer is bypassed (`disable()`): its forward returns the input itself."""
    return not q._disabled


def set_enabled(q: TensorQuantizer, enabled: bool) -> None:
    """`enable()` / `disable()` by a flag (to restore a saved `is_enabled`)."""
    q._disabled = not enabled


def channel_axis(q: TensorQuantizer) -> int | None:
    """The per-channel axis (the first, where the descriptor gave a tuple); None per tensor."""
    axis = q._axis
    if isinstance(axis, (tuple, list)):
        axis = axis[0] if axis else None
    return axis


def uses_fake_quant_formula(q: TensorQuantizer) -> bool:
    """The forward fake-quantizes with the library's formula `clamp(round(x * scale)) / scale`,
    `scale = max_bound / amax` (no learned amax, no real quantization, not torch's native path),
    so the project's own implementations of that formula may replace it."""
    return not q._learn_amax and q._fake_quant and not TensorQuantizer.use_fb_fake_quant


def is_calibrating(q: TensorQuantizer) -> bool:
    """Enabled and collecting calibration statistics on every forward."""
    return q._if_calib and not q._disabled


def quantizing_only(q: TensorQuantizer) -> bool:
    """Enabled, and forward only quantizes (no calibration or clip stage): the state the search runs in."""
    return not q._disabled and q._if_quant and not q._if_calib and not q._if_clip


def static_params(q: TensorQuantizer) -> tuple[torch.Tensor, int, bool, bool] | None:
    """(amax buffer, bits, unsigned, narrow range) of a quantizer that fake-quantizes with the
    library's formula and one stored per-tensor amax; None where the library's own forward is
    needed (dynamic, learned or per-channel amax, real quantization, torch's native path)."""
    amax = q._buffers.get("_amax")  # (the conditions of `uses_fake_quant_formula`, inline: runs per forward)
    if (amax is None or amax.numel() != 1 or q._learn_amax or not q._fake_quant
            or TensorQuantizer.use_fb_fake_quant):
        return None
    return amax, q._num_bits, q._unsigned, q._narrow_range


# -- calibration ----------------------------------------------------------------------------------
def start_calibration(q: TensorQuantizer) -> None:
    """Collect statistics instead of quantizing, from empty (the calibrator's earlier data dropped)."""
    q.disable_quant()
    q.enable_calib()
    if q._calibrator is not None:
        q._calibrator.reset()


def stop_calibration(q: TensorQuantizer) -> None:
    """Quantize again; the statistics stay for `load_calib_amax()` or a `sw.quant.clipping.Clipping`."""
    q.disable_calib()
    q.enable_quant()


def calibrator(q: TensorQuantizer) -> calib.MaxCalibrator | calib.HistogramCalibrator | None:
    """The calibrator that collects the quantizer's statistics (`sw.quant.clipping.Histogram.from_calibrator`)."""
    return q._calibrator


def calib_method(q: TensorQuantizer) -> str:
    """The QuantDescriptor `calib_method` the quantizer was made with ("histogram" or "max")."""
    return "histogram" if isinstance(q._calibrator, calib.HistogramCalibrator) else "max"


def set_calibrator_unsigned(q: TensorQuantizer, unsigned: bool) -> None:
    """The signedness the calibrator assumes (the quantizer's own is the public `unsigned`)."""
    q._calibrator._unsigned = unsigned


def set_histogram_bins(q: TensorQuantizer, bins: int) -> None:
    """Bins of a histogram calibrator's first histogram; nothing for a max calibrator."""
    if hasattr(q._calibrator, "_num_bins"):
        q._calibrator._num_bins = bins


def calibrator_histogram(calibrator: calib.HistogramCalibrator) -> tuple[torch.Tensor | np.ndarray | None,
                                                                        torch.Tensor | np.ndarray | None]:
    """(counts, bin edges) a HistogramCalibrator collected, as it keeps them (tensors or numpy
    arrays); (None, None) before it saw data."""
    return calibrator._calib_hist, calibrator._calib_bin_edges


def library_entropy_amax(counts: np.ndarray, edges: np.ndarray, bits: int, unsigned: bool, stride: int = 1,
                         start_bin: int = 128) -> torch.Tensor | None:
    """The library's own (slow, loop by loop) entropy search on a histogram (reference and benchmark)."""
    return _compute_amax_entropy(counts, edges, bits, unsigned, stride, start_bin)


def library_percentile_amax(counts: np.ndarray, edges: np.ndarray, percentile: float) -> torch.Tensor | None:
    """The library's own percentile amax of a histogram (reference)."""
    return _compute_amax_percentile(counts, edges, percentile)


# -- layers ---------------------------------------------------------------------------------------
def input_quantizer(layer: nn.Module) -> TensorQuantizer:
    """The input quantizer of a QuantConv2d / QuantLinear."""
    return layer._modules["_input_quantizer"]


def weight_quantizer(layer: nn.Module) -> TensorQuantizer:
    """The weight quantizer of a QuantConv2d / QuantLinear."""
    return layer._modules["_weight_quantizer"]


def set_layer_quantizer(layer: nn.Module, role: str, quantizer: TensorQuantizer) -> None:
    """Put `quantizer` in place of a layer's "input" or "weight" quantizer."""
    if role not in ROLES:
        raise ValueError(f"quantizer role {role!r}: expected one of {', '.join(ROLES)}")
    setattr(layer, f"_{role}_quantizer", quantizer)


def layer_operands(layer: nn.Module) -> tuple[TensorQuantizer, torch.Tensor, torch.Tensor | None]:
    """A quantized layer's (input quantizer, weight as its weight quantizer gives it, bias): what its
    forward computes before the convolution, less the input's quantization. Read from the module's
    own dicts (the inference graph calls this per layer and forward; `layer.weight` would be a Python
    `Module.__getattr__` call per name), a disabled weight quantizer not called at all."""
    modules, parameters = layer._modules, layer._parameters
    weight, wq = parameters["weight"], modules["_weight_quantizer"]
    return modules["_input_quantizer"], weight if wq._disabled else wq(weight), parameters.get("bias")


# -- subclasses -----------------------------------------------------------------------------------
_HOOKS = {"quant_forward": "_quant_forward", "forward_amax": "_get_amax"}  # ours -> the library's name


def hook_name(hook: str) -> str:
    """The library's method name behind a `QuantizerBase` hook (to patch a class's hook in a test)."""
    return _HOOKS[hook]


class QuantizerBase(TensorQuantizer):
    """TensorQuantizer whose forward's extension points have names of the project's own.

    A subclass overrides `quant_forward(inputs)` (the quantizing stage of `forward`, after the
    library's disable / calibration / clip stages) and/or `forward_amax(inputs)` (the amax a forward
    quantizes with: the buffer, or computed from `inputs` when there is none) and calls
    `super().quant_forward(inputs)` for the library's behaviour. The override is installed under the
    library's method name when the class is created, so a forward costs what a direct override costs.
    """

    quant_forward = TensorQuantizer._quant_forward
    forward_amax = TensorQuantizer._get_amax

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        for ours, library in _HOOKS.items():
            if ours in cls.__dict__:
                setattr(cls, library, cls.__dict__[ours])
