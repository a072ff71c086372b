"""Wrap any `nn.Module` with NVIDIA pytorch-quantization fake-quant quantizers.

- every `nn.Conv1d` / `nn.Conv2d` / `nn.ConvTranspose1d` / `nn.ConvTranspose2d` / `nn.Linear` becomes
  its pytorch-quantization counterpart with an input and a weight `TensorQuantizer` (weights per
  tensor or per output channel; `sw.model.layer_kinds`); what else multiplies tensors stays fp32 and
  is listed in `not_quantized`;
- a `TensorQuantizer` in front of the model quantizes the model's input (8 bits: camera data);
- optional extra activation quantizers after modules chosen by a predicate (forward hooks);
- with `graph: fx` (the default) the model is a torch.fx graph and activation quantizers also
  sit after residual adds, concatenations and functional activations (`sw.model.graph`); batch norm
  can be folded into the layer before it first (`fold_bn`, `sw.model.bn_folding`); a backend
  `preset` sets every quantizer's rules (`sw.quant.presets`).

Every quantizer is addressable by name (`quantizers()`): `<layer>.weight`, `<layer>.input`,
`model_input` and `<module>.output`. Layer names are the fp32 model's module names, so other
tools (the energy table, cosim) can key on them.

Speed: during a search the weights do not change between forward passes, so `freeze_weights()`
fake-quantizes them once per candidate and disables the weight quantizers; input quantizers
still run on every forward. Without a gradient (and with no forward hooks) an fx model runs as
its inference graph (`sw.model.inference_graph`): the same tensors with layers called directly and a
ReLU folded into the quantizer after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Mapping

import torch
from pytorch_quantization import nn as qnn
from pytorch_quantization.nn import TensorQuantizer
from pytorch_quantization.tensor_quant import QuantDescriptor
from torch import fx, nn
from torch.nn.modules.module import _global_forward_hooks, _global_forward_pre_hooks

from sw.core.device import module_device
from sw.model import inference_graph
from sw.model.graph import insert_quantizers, prepare_fp32
from sw.model.layer_kinds import QUANT_LAYER_TYPES, QUANTIZED, TRANSPOSED, macs, not_quantized, weight_axis
from sw.model.weighting import LayerSize
from sw.quant import adapter, fused_quant
from sw.quant.adaround import rounded_weight
from sw.quant.adapter import QuantizerBase, input_quantizer, quantizing_only, static_params, weight_quantizer
from sw.quant.bit_allocation import ChannelBitsQuantizer
from sw.quant.clipping import HISTOGRAM_METHODS, apply_clipping, select_clipping
from sw.quant.presets import apply_preset, quant_params, resolve

ACTIVATION_PREDICATES: dict[str, Callable[[str, nn.Module], bool]] = {
    "none": lambda name, module: False,
    "relu": lambda name, module: isinstance(module, (nn.ReLU, nn.ReLU6)),
}


@dataclass(frozen=True)
class QuantSettings:
    """How a model is quantized (from the workload's `quantization` and `calibration` sections)."""

    per_channel_weights: bool = True
    narrow_range: bool = False
    unsigned_activations: str = "auto"  # "auto": unsigned where calibration saw no negative input
    activation_quantizers: str = "none"
    baseline_bits: int = 8
    calib_method: str = "max"  # "max" or "histogram" (for percentile, entropy, mse)
    num_bins: int = 2048
    graph: str = "fx"  # "fx": quantizers at graph nodes too (sw.model.graph); "modules": layer swap only
    fold_bn: bool = False  # fold batch norm into the preceding conv/linear before calibration
    preset: str = "hw"  # backend rules for every quantizer (sw.quant.presets)

    @classmethod
    def from_workload(cls, workload) -> "QuantSettings":
        q, c = workload.quantization, workload.calibration
        return resolve(cls(per_channel_weights=q.per_channel_weights, narrow_range=q.narrow_range,
                           unsigned_activations=q.unsigned_activations, activation_quantizers=q.activation_quantizers,
                           baseline_bits=q.baseline_bits,
                           calib_method="histogram" if {c.method, *(c.search_methods or ())} & set(HISTOGRAM_METHODS)
                           else "max", num_bins=c.num_bins, graph=q.graph, fold_bn=q.fold_bn, preset=q.preset))


class ActivationQuantizer(QuantizerBase):
    """A TensorQuantizer for inputs/activations with a leaner forward for static amax.

    pytorch-quantization's tensor quant function recomputes the scale, checks amax and allocates
    three intermediate tensors on every call. Here the fp32 scale `max_bound / amax` is cached
    per (amax, bits, signedness) and the same operations run in the same order,
    `clamp(round(x * scale)) / scale`, so the output is bit-identical (tested against the
    library's path), amax <= 2^-24 included (scale 0, then division by 1, as the library does).
    Anything unusual (learned or dynamic amax, per-channel amax, real quant, inputs that need a
    gradient) takes the library's path.

    Threads: contiguous CPU tensors run as one fused pass (`sw.quant.fused_quant`) on torch's threads,
    split as torch splits its element-wise ops. Without the fused kernel (`fused` off, or no C++
    compiler) the library's five passes run in place on one new tensor: on one thread below
    `serial_below` elements, where each pass is too short to share (every OpenMP region waits for
    a descheduled thread on a busy machine: measured 2-4x slower with 2 threads than with 1 under
    load, see `python -m sw.bench`), on torch's thread pool above. The convolutions keep every
    thread. Element-wise results do not depend on the thread count or on the fusion.
    """

    _EPSILON = 1.0 / (1 << 24)
    serial_below = 1 << 20  # elements; 0 runs every unfused pass on torch's thread pool
    fused = True  # False: the passes run as separate torch ops (see above)

    def quant_forward(self, inputs):
        cached = self._static_scales(inputs)
        if cached is None:
            return super().quant_forward(inputs)
        key, mul, div, lo, hi, floats = cached
        unsigned = key[2]
        if self._fusable(inputs):
            return fused_quant.fake_quant(inputs, *floats, unsigned)
        threads = torch.get_num_threads()
        if threads == 1 or inputs.numel() >= self.serial_below:
            return self._static_fake_quant(inputs, mul, div, lo, hi, unsigned)
        torch.set_num_threads(1)
        try:
            return self._static_fake_quant(inputs, mul, div, lo, hi, unsigned)
        finally:
            torch.set_num_threads(threads)

    def fused_forward(self, inputs: torch.Tensor, clamp: tuple[float, float] | None, in_place: bool = False,
                      relu_after: bool = False) -> torch.Tensor | None:
        """This quantizer's output for `clamp(inputs)` (a ReLU or ReLU6 in front, or None) in one
        fused pass, as the module call would give it; None where the module call is needed:
        not in its static quantizing state (disabled, calibrating, clipping, learned amax, ...),
        a hook to run, fusion off, or an input that is not a contiguous float32 CPU tensor.
        `in_place`: nothing else reads `inputs`, so the pass may write over it. `relu_after`:
        `relu(output)` instead, the same pass with its lower bound raised to 0 (the output is
        `code / scale` with the scale > 0, so a code below 0 is exactly what the ReLU zeroes,
        and -0.0 and NaN stay as both give them)."""
        if (not quantizing_only(self) or self._forward_hooks or self._forward_pre_hooks
                or not self._fusable(inputs)):
            return None
        cached = self._static_scales(inputs)
        if cached is None:
            return None
        mul, div, lo, hi = cached[-1]
        return fused_quant.fake_quant(inputs, mul, div, max(lo, 0.0) if relu_after else lo, hi, cached[0][2], clamp,
                                      in_place)

    def _fusable(self, inputs: torch.Tensor) -> bool:
        """The fused kernel can take `inputs`: fusion on, kernel built, a contiguous CPU tensor."""
        return self.fused and inputs.is_cpu and inputs.is_contiguous() and fused_quant.available()

    def _static_scales(self, inputs: torch.Tensor) -> tuple | None:
        """The cached (key, multiplier, divisor, min, max, the four as Python floats) for a static per-tensor
        amax and a float32 input without gradient; None where the library's path is needed."""
        params = static_params(self)  # the amax buffer itself, not the `amax` property: no Python call per read
        if params is None or inputs.dtype != torch.float32 or (inputs.requires_grad and torch.is_grad_enabled()):
            return None
        amax, bits, unsigned, narrow = params
        key = (float(amax), bits, unsigned, narrow)
        cached = getattr(self, "_scale_cache", None)
        if cached is None or cached[0] != key:
            self._scale_cache = cached = (key, *self._scales(amax, bits, unsigned, narrow))
        return cached

    def _scales(self, amax: torch.Tensor, bits: int, unsigned: bool, narrow: bool):
        """(multiplier, divisor, min bound, max bound, the same four as Python floats), as the library's
        tensor quant function (each a float32 value)."""
        max_bound = torch.tensor(2.0 ** (bits - 1 + int(unsigned)) - 1.0)
        min_bound = 0.0 if unsigned else float(-max_bound if narrow else -max_bound - 1)
        if float(amax) <= self._EPSILON:  # the library quantizes with scale 0, then divides by 1
            mul, div = torch.tensor(0.0), torch.tensor(1.0)
        else:
            mul = div = (max_bound / amax.detach().float()).reshape(())
        floats = (float(mul), float(div), float(min_bound), float(max_bound))
        return mul, div, min_bound, float(max_bound), floats

    @staticmethod
    def _static_fake_quant(inputs: torch.Tensor, mul: torch.Tensor, div: torch.Tensor, lo: float, hi: float,
                           unsigned: bool) -> torch.Tensor:
        """`clamp(round(x * mul)) / div` in place on one new tensor, as the library computes it."""
        if unsigned and inputs.min() < 0.0:
            raise TypeError("Negative values encountered in unsigned quantization.")
        out = inputs * mul
        return out.round_().clamp_(lo, hi).div_(div)


def _input_descriptor(s: QuantSettings) -> QuantDescriptor:
    return QuantDescriptor(num_bits=s.baseline_bits, calib_method=s.calib_method, narrow_range=s.narrow_range)


def _weight_descriptor(s: QuantSettings, axis: int = 0) -> QuantDescriptor:
    axes = (axis,) if s.per_channel_weights else None
    return QuantDescriptor(num_bits=s.baseline_bits, axis=axes, calib_method="max", narrow_range=s.narrow_range)


def _quantized_copy(module: nn.Module, s: QuantSettings) -> nn.Module:
    kwargs = dict(quant_desc_input=_input_descriptor(s), quant_desc_weight=_weight_descriptor(s, weight_axis(module)))
    quantized = QUANTIZED[type(module)]
    if isinstance(module, nn.Linear):
        q = quantized(module.in_features, module.out_features, module.bias is not None, **kwargs)
    elif isinstance(module, TRANSPOSED):
        q = quantized(module.in_channels, module.out_channels, module.kernel_size, stride=module.stride,
                      padding=module.padding, output_padding=module.output_padding, groups=module.groups,
                      bias=module.bias is not None, dilation=module.dilation, padding_mode=module.padding_mode, **kwargs)
    else:
        q = quantized(module.in_channels, module.out_channels, module.kernel_size, stride=module.stride,
                      padding=module.padding, dilation=module.dilation, groups=module.groups,
                      bias=module.bias is not None, padding_mode=module.padding_mode, **kwargs)
    adapter.set_layer_quantizer(q, "input", ActivationQuantizer(kwargs["quant_desc_input"]))
    adapter.set_layer_quantizer(q, "weight", ChannelBitsQuantizer(kwargs["quant_desc_weight"]))
    q.to(module.weight.device)  # built where the fp32 layer lives, the weights copied there
    with torch.no_grad():
        q.weight.copy_(module.weight)
        if module.bias is not None:
            q.bias.copy_(module.bias)
    adapter.set_calibrator_unsigned(weight_quantizer(q), False)
    return q.train(module.training)


class QuantizedModel(nn.Module):
    """A fake-quantized copy of a model, with per-layer bit widths settable by name."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...] | list[int], settings: QuantSettings = QuantSettings()):
        super().__init__()
        self.settings = settings
        self.input_shape = tuple(input_shape)
        device = module_device(model)  # the quantized model lives where the fp32 model does
        self.model = prepare_fp32(model, tuple(input_shape), graph=settings.graph, fold_bn=settings.fold_bn)
        self._replace_layers()
        self.model_input = ActivationQuantizer(_input_descriptor(settings))
        if isinstance(self.model, fx.GraphModule):  # quantizers are graph nodes, owned by the graph
            graph_quantizers = insert_quantizers(self.model, tuple(input_shape),
                                                 lambda: ActivationQuantizer(_input_descriptor(settings)),
                                                 relu=settings.activation_quantizers == "relu")
            object.__setattr__(self, "activation_quantizers", graph_quantizers)  # an alias, not a second owner
        else:
            self.activation_quantizers = nn.ModuleDict()
            predicate = ACTIVATION_PREDICATES[settings.activation_quantizers]
            for name, module in list(self.model.named_modules()):
                if name and predicate(name, module):
                    key = name.replace(".", "__")
                    self.activation_quantizers[key] = ActivationQuantizer(_input_descriptor(settings))
                    module.register_forward_hook(self._make_output_hook(key))
        apply_preset(self, settings.preset)
        for q in self.quantizers().values():
            adapter.set_histogram_bins(q, settings.num_bins)
        self.to(device)
        self._master: dict[str, torch.Tensor] = {}
        self._master_bias: dict[str, torch.Tensor | None] = {}
        self._weight_cache: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._cache_budget = 0
        # (inference graph, every module's forward hook and pre-hook dicts), built on first use (forward)
        self._inference: tuple[fx.GraphModule, list[dict]] | None = None
        self.layer_sizes: list[LayerSize] = self._trace(tuple(input_shape))
        self.layer_names: list[str] = [s.name for s in self.layer_sizes]

    # -- construction -----------------------------------------------------------------------
    def _replace_layers(self) -> None:
        for name, module in list(self.model.named_modules()):
            for child_name, child in list(module.named_children()):
                if type(child) in QUANTIZED:
                    setattr(module, child_name, _quantized_copy(child, self.settings))
        self.not_quantized: list[str] = not_quantized(self.model)

    def _make_output_hook(self, key: str):
        def hook(module: nn.Module, inputs, output):
            return self.activation_quantizers[key](output)

        return hook

    @torch.no_grad()
    def _trace(self, input_shape: tuple[int, ...]) -> list[LayerSize]:
        """Run one forward pass (quantizers off) to find layer order and sizes."""
        sizes: list[LayerSize] = []
        handles = []
        for name, layer in self.layers().items():
            def record(module, inputs, output, name=name):
                x = inputs[0]
                if any(s.name == name for s in sizes):
                    return
                sizes.append(LayerSize(name, module.weight.numel(), x[0].numel(), macs(module, x, output)))
            handles.append(layer.register_forward_hook(record))
        states = {n: adapter.is_enabled(q) for n, q in self.quantizers().items()}
        for q in self.quantizers().values():
            q.disable()
        try:
            self.model(torch.zeros((1, *input_shape), device=self.device))
        finally:
            for h in handles:
                h.remove()
            for n, q in self.quantizers().items():
                adapter.set_enabled(q, states[n])
        return sizes

    # -- forward ------------------------------------------------------------------------------
    use_inference_graph = True  # False: always the module graph (tests compare the two)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_inference_graph and not torch.is_grad_enabled() and isinstance(self.model, fx.GraphModule):
            if self._inference is None:
                hooks = [d for m in self.modules() for d in (m._forward_hooks, m._forward_pre_hooks)]
                self._inference = (inference_graph.build(self.model), hooks)
            graph, hooks = self._inference
            # registering a hook adds it to the module's dict: one C-level scan, no Python loop
            if not (_global_forward_hooks or _global_forward_pre_hooks or any(hooks)):
                return graph(inference_graph.quantize(self.model_input, x, None))
        return self.model(self.model_input(x))

    @property
    def device(self) -> torch.device:
        """Where the model's weights live (inputs and calibration data go there)."""
        return module_device(self.model)

    # -- addressing ---------------------------------------------------------------------------

    def layers(self) -> dict[str, nn.Module]:
        """Quantized Conv2d/Linear layers by fp32 module name (forward order once traced).

        The layer modules never change after construction, so the traced order is kept (a search
        asks for it on every candidate)."""
        cached = self.__dict__.get("_layer_order")
        if cached is not None:
            return dict(cached)
        found = {n: m for n, m in self.model.named_modules() if isinstance(m, QUANT_LAYER_TYPES)}
        if hasattr(self, "layer_names"):
            self._layer_order = {n: found[n] for n in self.layer_names} | {
                n: m for n, m in found.items() if n not in self.layer_names}
            return dict(self._layer_order)
        return found

    def quantizers(self) -> dict[str, TensorQuantizer]:
        """Every quantizer by its address."""
        out: dict[str, TensorQuantizer] = {"model_input": self.model_input}
        for name, layer in self.layers().items():
            out[f"{name}.input"] = input_quantizer(layer)
            out[f"{name}.weight"] = weight_quantizer(layer)
        for key, q in self.activation_quantizers.items():
            out[f"{key.replace('__', '.')}.output"] = q
        return out

    def iter_quantizers(self) -> Iterator[tuple[str, TensorQuantizer]]:
        return iter(self.quantizers().items())

    def replace_quantizer(self, address: str, quantizer: TensorQuantizer) -> TensorQuantizer:
        """Put `quantizer` where the quantizer named `address` is; returns the one it replaced."""
        old = self.quantizers()[address]
        if address == "model_input":
            self.model_input = quantizer
        elif address.endswith(".output"):
            self.activation_quantizers[address[: -len(".output")].replace(".", "__")] = quantizer
        else:
            layer, role = address.rsplit(".", 1)
            adapter.set_layer_quantizer(self.layers()[layer], role, quantizer)
        self._inference = None  # rebuilt with the new one (and its hook dicts)
        return old

    # -- bit widths ---------------------------------------------------------------------------
    def set_layer_bits(self, bits: Mapping[str, tuple[int, int]], clipping: Mapping[str, str] | None = None) -> None:
        """Set (weight bits, input bits) per layer, with each quantizer's clipping for its bits
        (`sw.quant.clipping`); re-quantizes frozen weights once. `clipping` picks an input clipping
        method per layer where calibration prepared several (`calibration.search_methods`);
        layers it does not name get the calibrated default."""
        layers = self.layers()
        for name, (wb, ib) in bits.items():
            wq, iq = weight_quantizer(layers[name]), input_quantizer(layers[name])
            wq.num_bits = int(wb)
            iq.num_bits = int(ib)
            select_clipping(iq, (clipping or {}).get(name))
            apply_clipping(wq)
            apply_clipping(iq)
        if self._master:
            self._requantize_weights(bits.keys())

    def set_uniform_bits(self, bits: int) -> None:
        self.set_layer_bits({n: (bits, bits) for n in self.layer_names})

    def layer_bits(self) -> dict[str, tuple[int, int]]:
        return {n: (weight_quantizer(l).num_bits, input_quantizer(l).num_bits) for n, l in self.layers().items()}

    def layer_clipping(self) -> dict[str, str]:
        """The active input clipping method of each layer that calibration prepared several for
        (`calibration.search_methods`): what `set_layer_bits(bits, clipping)` takes back."""
        active = {}
        for name, layer in self.layers().items():
            q = input_quantizer(layer)
            for method, clipping in (getattr(q, "clippings", None) or {}).items():
                if clipping is getattr(q, "clipping", None):
                    active[name] = method
        return active

    # -- quantize weights once per candidate -------------------------------------------------
    def freeze_weights(self, cache_bytes: int = 1 << 30) -> None:
        """Fake-quantize the weights once per bit width instead of on every forward.

        Quantized weights are kept per (layer, bits) up to `cache_bytes`, so a candidate that
        reuses a layer's bit width costs no weight quantization at all.
        """
        self.unfreeze_weights()
        self._master = {n: l.weight.detach().clone() for n, l in self.layers().items()}
        self._master_bias = {n: None if l.bias is None else l.bias.detach().clone() for n, l in self.layers().items()}
        self._cache_budget = cache_bytes
        self._requantize_weights(self._master.keys())

    @property
    def weights_frozen(self) -> bool:
        return bool(self._master)

    def fp32_weight(self, name: str) -> torch.Tensor:
        """The unquantized weight of a layer, whether or not weights are frozen."""
        return self._master.get(name, self.layers()[name].weight).detach()

    def adopt_learned_rounding(self) -> bool:
        """Make the frozen weights of layers with learned rounding at their bits
        (`sw.model.reconstruction`) their fp32 weights, and drop the learned rounding (it was
        learned for the old weights): quantization-aware training then starts from the learned
        codes. Returns whether any layer had learned rounding."""
        adopted = False
        for name, layer in self.layers().items():
            wq = weight_quantizer(layer)
            rounding = getattr(wq, "learned_rounding", None)
            if rounding is not None and name in self._master and rounding.get(wq.num_bits) is not None:
                self._master[name] = layer.weight.detach().clone()
                adopted = True
            wq.learned_rounding = None
        self._weight_cache = {}
        return adopted

    def unfreeze_weights(self) -> None:
        """Restore fp32 weights and per-forward weight quantization (for QAT or calibration)."""
        for name, layer in self.layers().items():
            if name in self._master:
                layer.weight.data = self._master[name]
            if name in self._master_bias:
                self._set_bias(layer, self._master_bias[name])
            weight_quantizer(layer).enable()
        self._master, self._master_bias = {}, {}
        self._weight_cache = {}

    @torch.no_grad()
    def _requantize_weights(self, names) -> None:
        layers = self.layers()
        for name in names:
            layer = layers[name]
            wq = weight_quantizer(layer)
            rounding = getattr(wq, "learned_rounding", None)  # sw.model.reconstruction: per weight bit width
            up = None if rounding is None else rounding.get(wq.num_bits)
            key = (name, wq.num_bits)
            cached = self._weight_cache.get(key)
            if cached is None:
                wq.enable()
                if up is None:
                    cached = (wq(self._master[name]), self._master_bias[name])
                else:
                    cached = (rounded_weight(self._master[name], quant_params(wq), up.float()), self._master_bias[name])
                correction = getattr(wq, "bias_correction", None)
                if correction is not None:  # sw.quant.bias_correction: depends on the bits, so cached with them
                    cached = correction.correct(self._master[name], cached[0], self._master_bias[name])
                used = sum(t.numel() * t.element_size() for t, _ in self._weight_cache.values())
                if used + cached[0].numel() * cached[0].element_size() <= self._cache_budget:
                    self._weight_cache[key] = cached
            layer.weight.data = cached[0]
            self._set_bias(layer, cached[1])
            wq.disable()

    @staticmethod
    def _set_bias(layer: nn.Module, bias: torch.Tensor | None) -> None:
        if bias is None:
            layer.bias = None
        elif layer.bias is None:
            layer.bias = nn.Parameter(bias.clone(), requires_grad=False)
        else:
            layer.bias.data = bias
