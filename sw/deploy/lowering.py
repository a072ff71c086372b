"""Lower a calibrated QuantizedModel to a `DeployGraph`: operations in topological order.

Each `Op` names its output value, its input values and its attributes; quantizers become
`quant` ops carrying `QuantParams`, quantized layers become `conv` / `linear` ops with their
integer weight codes (checked to dequantize to exactly the weights the fake-quant model
multiplies with). Supported operations are those of CNN classifiers: conv, linear, batch norm
(eval), ReLU / ReLU6, max / average pooling, flatten / view, add, sub, mul, cat, identity,
dropout. Anything else is one `UnsupportedOp` error naming the node.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from pytorch_quantization import nn as qnn
from pytorch_quantization.nn import TensorQuantizer
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from sw.core.errors import UserError, first_line
from sw.quant.adapter import input_quantizer, is_enabled, weight_quantizer
from sw.quant.presets import QuantParams, quant_params


class UnsupportedOp(UserError):
    """A graph node the deploy back ends cannot express."""


@dataclass
class Op:
    kind: str  # input quant conv linear bn relu relu6 maxpool avgpool flatten add sub mul cat identity output
    name: str  # the value it produces
    inputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    shape: tuple[int, ...] = ()  # output shape for a batch of 1


@dataclass
class DeployGraph:
    ops: list[Op]
    input_shape: tuple[int, ...]

    def users(self, name: str) -> list[Op]:
        return [op for op in self.ops if name in op.inputs]

    def quant_ops(self) -> list[Op]:
        return [op for op in self.ops if op.kind == "quant"]


class _LeafTracer(fx.Tracer):
    """Traces a module-mode model: quantized layers and quantizers stay single nodes."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (qnn.QuantConv2d, qnn.QuantLinear, TensorQuantizer)) or super().is_leaf_module(m, qualname)


def _graph_module(qmodel) -> fx.GraphModule:
    if isinstance(qmodel.model, fx.GraphModule):
        return qmodel.model
    try:
        return fx.GraphModule(qmodel.model, _LeafTracer().trace(qmodel.model))
    except Exception as exc:
        first = first_line(exc)
        raise UnsupportedOp(f"export needs a model torch.fx can trace ({first})") from None


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _weight_codes(qmodel, name: str, layer: nn.Module) -> tuple[torch.Tensor, QuantParams]:
    """Integer weight codes of a layer, checked against the weights the fake-quant model uses."""
    wq = weight_quantizer(layer)
    if getattr(wq, "channel_bits", None) is not None:
        raise UnsupportedOp(f"layer {name}: calibration.bit_allocation gives each output channel its own weight bits; "
                            f"the integer model, ONNX export and checkpoints carry one bit width per tensor")
    if getattr(getattr(wq, "bias_correction", None), "variance", False):
        raise UnsupportedOp(f"layer {name}: calibration.bias_correction: mean_variance rescales each output channel "
                            f"off the quantizer's integer grid; export supports bias_correction none or mean")
    params = quant_params(wq)
    with torch.no_grad():
        used = wq(layer.weight.detach()) if is_enabled(wq) else layer.weight.detach()
        # the codes of the weights the model uses: nearest rounding of the fp32 weights, or the
        # learned rounding (sw.model.reconstruction) that frozen weights carry
        codes = params.codes(used)
        if not torch.equal(params.dequantize(codes), used.float() + 0.0):  # + 0.0: -0.0 == +0.0
            raise UnsupportedOp(f"layer {name}: its weights are not on the quantizer's integer grid "
                                f"(modified after quantization?); the integer and ONNX exports need grid weights")
    return codes, params


def _bias(layer: nn.Module) -> torch.Tensor | None:
    return None if layer.bias is None else layer.bias.detach().float().clone()


def lower(qmodel) -> DeployGraph:
    """The DeployGraph of a calibrated QuantizedModel at its current bits."""
    gm = _graph_module(qmodel)
    input_shape = tuple(qmodel.input_shape)
    qmodel.eval()
    with torch.no_grad():
        ShapeProp(gm).propagate(qmodel.model_input(torch.zeros((1, *input_shape))))
    modules = dict(gm.named_modules())
    hooked = set(qmodel.activation_quantizers) if not isinstance(qmodel.model, fx.GraphModule) else set()
    graph_q = {id(q): k for k, q in qmodel.activation_quantizers.items()}
    ops: list[Op] = [Op("input", "input", [], shape=(1, *input_shape)),
                     Op("quant", "model_input", ["input"], {"quantizer": "model_input",
                                                            "params": quant_params(qmodel.model_input)},
                        shape=(1, *input_shape))]
    value: dict[str, str] = {}  # fx node name -> DeployGraph value name
    for node in gm.graph.nodes:
        shape = tuple(node.meta["tensor_meta"].shape) if hasattr(node.meta.get("tensor_meta"), "shape") else ()
        args = [value[a.name] for a in node.all_input_nodes if a.name in value]
        if node.op == "placeholder":
            value[node.name] = "model_input"
            continue
        if node.op == "output":
            ops.append(Op("output", "output", [value[node.args[0].name]]))
            continue
        if not shape:  # sizes, shapes, getitem on them: static here
            continue
        new = _lower_node(qmodel, node, modules, args, shape, graph_q)
        ops.extend(new)
        value[node.name] = new[-1].name
        if node.op == "call_module" and node.target.replace(".", "__") in hooked:  # module mode: output hook
            key = node.target.replace(".", "__")
            q = qmodel.activation_quantizers[key]
            ops.append(Op("quant", f"{node.target}.output", [value[node.name]],
                          {"quantizer": f"{node.target}.output", "params": quant_params(q)}, shape))
            value[node.name] = ops[-1].name
    return DeployGraph(ops, input_shape)


def _lower_node(qmodel, node: fx.Node, modules: dict, args: list[str], shape, graph_q) -> list[Op]:
    name = node.name
    if node.op == "call_module":
        m = modules[node.target]
        if isinstance(m, (qnn.QuantConv2d, qnn.QuantLinear)):
            ops = []
            src = args[0]
            iq = input_quantizer(m)
            if is_enabled(iq):
                qname = f"{node.target}.input"
                ops.append(Op("quant", qname, [src], {"quantizer": qname, "params": quant_params(iq)},
                              tuple(node.args[0].meta["tensor_meta"].shape)))
                src = qname
            codes, params = _weight_codes(qmodel, node.target, m)
            attrs = {"layer": node.target, "weight": codes, "weight_params": params, "bias": _bias(m)}
            if isinstance(m, qnn.QuantConv2d):
                if m.padding_mode != "zeros":
                    raise UnsupportedOp(f"{node.target}: padding_mode {m.padding_mode!r} (only zeros)")
                attrs.update(stride=_pair(m.stride), padding=_pair(m.padding), dilation=_pair(m.dilation),
                             groups=int(m.groups))
            ops.append(Op("conv" if isinstance(m, qnn.QuantConv2d) else "linear", name, [src], attrs, shape))
            return ops
        if isinstance(m, TensorQuantizer):
            key = graph_q.get(id(m))
            address = f"{key.replace('__', '.')}.output" if key else node.target
            return [Op("quant", address, args, {"quantizer": address, "params": quant_params(m)}, shape)]
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            a = (m.weight.detach().double() if m.affine else torch.ones(m.num_features, dtype=torch.float64))
            a = a / torch.sqrt(m.running_var.double() + m.eps)
            b = (m.bias.detach().double() if m.affine else torch.zeros_like(a)) - m.running_mean.double() * a
            raw = {"mean": m.running_mean.detach().float().clone(), "var": m.running_var.detach().float().clone(),
                   "gamma": (m.weight.detach().float().clone() if m.affine else torch.ones(m.num_features)),
                   "beta": (m.bias.detach().float().clone() if m.affine else torch.zeros(m.num_features)),
                   "eps": float(m.eps)}
            return [Op("bn", name, args, {"scale": a, "shift": b, **raw}, shape)]
        if isinstance(m, nn.ReLU):
            return [Op("relu", name, args, {}, shape)]
        if isinstance(m, nn.ReLU6):
            return [Op("relu6", name, args, {}, shape)]
        if isinstance(m, nn.MaxPool2d):
            return [_maxpool(name, args, shape, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)]
        if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AvgPool2d)):
            return [_avgpool(node, name, args, shape, m)]
        if isinstance(m, nn.Flatten):
            return [Op("flatten", name, args, {"start_dim": m.start_dim}, shape)]
        if isinstance(m, (nn.Identity, nn.Dropout)):
            return [Op("identity", name, args, {}, shape)]
        raise UnsupportedOp(f"node {name}: module {node.target} ({type(m).__name__}) has no integer/ONNX form")
    target = node.target
    if node.op == "call_function":
        if target in (operator.add, operator.iadd, torch.add):
            return [Op("add", name, args, {}, shape)]
        if target in (operator.sub, operator.isub, torch.sub):
            return [Op("sub", name, args, {}, shape)]
        if target in (operator.mul, operator.imul, torch.mul) and len(args) == 2:
            return [Op("mul", name, args, {}, shape)]
        if target in (torch.cat, torch.concat):
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
            return [Op("cat", name, args, {"dim": int(dim) % len(shape)}, shape)]
        if target in (F.relu, torch.relu, torch.relu_):
            return [Op("relu", name, args, {}, shape)]
        if target is F.relu6:
            return [Op("relu6", name, args, {}, shape)]
        if target is torch.flatten:
            start = node.kwargs.get("start_dim", node.args[1] if len(node.args) > 1 else 0)
            return [Op("flatten", name, args, {"start_dim": int(start)}, shape)]
        if target is F.adaptive_avg_pool2d:
            return [_avgpool(node, name, args, shape, None)]
        if target is F.dropout:
            return [Op("identity", name, args, {}, shape)]
    if node.op == "call_method":
        if target in ("relu", "relu_"):
            return [Op("relu", name, args, {}, shape)]
        if target in ("add", "add_"):
            return [Op("add", name, args, {}, shape)]
        if target in ("contiguous",):
            return [Op("identity", name, args, {}, shape)]
        if target in ("flatten", "view", "reshape"):
            before = tuple(node.args[0].meta["tensor_meta"].shape)
            if len(shape) == 2 and shape[0] == before[0]:
                return [Op("flatten", name, args, {"start_dim": 1}, shape)]
    raise UnsupportedOp(f"node {name} ({node.op} {getattr(target, '__name__', target)}) has no integer/ONNX form")


def _maxpool(name, args, shape, kernel, stride, padding, dilation, ceil_mode) -> Op:
    if ceil_mode:
        raise UnsupportedOp(f"node {name}: max pooling with ceil_mode")
    return Op("maxpool", name, args, {"kernel": _pair(kernel), "stride": _pair(stride if stride else kernel),
                                      "padding": _pair(padding), "dilation": _pair(dilation)}, shape)


def _avgpool(node: fx.Node, name: str, args, shape, m) -> Op:
    before = tuple(node.args[0].meta["tensor_meta"].shape)
    h, w = before[2], before[3]
    oh, ow = shape[2], shape[3]
    if isinstance(m, nn.AvgPool2d):
        if m.ceil_mode or (m.padding not in (0, (0, 0)) and not m.count_include_pad) or m.divisor_override:
            raise UnsupportedOp(f"node {name}: average pooling with ceil_mode / count_include_pad=False / divisor")
        return Op("avgpool", name, args, {"kernel": _pair(m.kernel_size), "stride": _pair(m.stride or m.kernel_size),
                                          "padding": _pair(m.padding)}, shape)
    if h % oh or w % ow:
        raise UnsupportedOp(f"node {name}: adaptive average pooling {h}x{w} -> {oh}x{ow} has unequal windows")
    k = (h // oh, w // ow)
    return Op("avgpool", name, args, {"kernel": k, "stride": k, "padding": (0, 0)}, shape)
