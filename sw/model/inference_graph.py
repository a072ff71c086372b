"""An inference-only forward of a `QuantizedModel`'s fx graph: fewer passes, fewer calls.

A search runs the same graph on the same images for hundreds of candidates, with no gradient
and frozen (already fake-quantized) weights. In the module graph each quantized layer then costs
`QuantConv2d.forward` -> `_quant` -> an input `TensorQuantizer` and a disabled weight quantizer ->
`F.conv2d`, and a ReLU in front of the layer is its own pass over the activation before the
quantizer makes another. This graph is the same graph with

- each `QuantConv2d` / `QuantLinear` called as `F.conv2d` / `F.linear` on its current weight
  (through its weight quantizer unless that is disabled, as frozen weights leave it) and bias,
  after its input quantizer;
- a ReLU / ReLU6 whose output only a quantizer reads (a layer's input or an activation
  quantizer) and whose input only it reads folded into that quantizer's pass: clamp, then
  quantize, in one read and one write (`ActivationQuantizer.fused_forward`);
- that pass writing over its input where the input is a new tensor (batch norm, conv or linear
  output) that nothing else reads: no second activation-sized buffer competing for the cache;
- a ReLU that alone reads an activation quantizer's output (resnet's ReLU after a residual
  add's quantizer) folded into that quantizer's pass too: its lower bound raised to 0;
- each eval-mode batch norm called as `F.batch_norm`, as its module's forward calls it;
- every module it calls hanging off its root under a flat name (one attribute lookup, not one
  per dot of `features.1.conv.0.0`).

The tensors are the module graph's, bit for bit (tested on resnet18, mobilenet_v2 and graphs with
functional, in-place and shared ReLUs). Quantizers and layers are looked up when the graph runs,
so replaced quantizers and changed bit widths are seen. A quantizer that is not in its static
state (disabled, calibrating, learned amax, another class) or carries a hook is called as a
module on the clamped input, so it sees what the module graph gives it.
`QuantizedModel.forward` uses this graph only with no gradient and no forward hook on any module
of the model (hooks expect the module calls).
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from pytorch_quantization import nn as qnn
from torch import fx, nn

from sw.quant.adapter import layer_operands

CLAMPS = {"relu": (0.0, float("inf")), "relu6": (0.0, 6.0)}  # (floor, ceiling) of the fused pass
_RELU_FUNCTIONS = {F.relu: "relu", torch.relu: "relu", torch.relu_: "relu", F.relu6: "relu6"}
_RELU_METHODS = {"relu": "relu", "relu_": "relu"}
# modules whose output is a new tensor: an in-place ReLU on it changes nothing another node reads
_FRESH_OUTPUT = (nn.modules.batchnorm._BatchNorm, nn.Conv2d, nn.Linear, qnn.QuantConv2d, qnn.QuantLinear)


def quantize(quantizer: nn.Module, x: torch.Tensor, clamp: str | None, in_place: bool = False,
             relu_after: str | None = None) -> torch.Tensor:
    """`quantizer(relu(x))` (`clamp` "relu" / "relu6") or `quantizer(x)` (None), fused where it can
    be; `in_place`: x is a tensor nothing else reads, so the fused pass may write over it;
    `relu_after` "relu" / "relu_" (in place, as the graph's was): then a ReLU on the quantizer's
    output, in the same pass where fused."""
    fused = getattr(quantizer, "fused_forward", None)
    out = fused(x, CLAMPS[clamp] if clamp else None, in_place, bool(relu_after)) if fused is not None else None
    if out is not None:
        return out
    if clamp == "relu":
        x = torch.relu(x)
    elif clamp == "relu6":
        x = F.hardtanh(x, 0.0, 6.0)
    out = quantizer(x)  # a disabled quantizer returns x itself, which an in-place ReLU then changes
    return out if relu_after is None else out.relu_() if relu_after == "relu_" else torch.relu(out)


def conv2d(x: torch.Tensor, clamp: str | None, in_place: bool, layer: qnn.QuantConv2d) -> torch.Tensor:
    """`layer(relu(x))` of a zero-padded QuantConv2d, without its module calls."""
    quantizer, weight, bias = layer_operands(layer)
    return F.conv2d(quantize(quantizer, x, clamp, in_place), weight, bias, layer.stride, layer.padding, layer.dilation,
                    layer.groups)


def linear(x: torch.Tensor, clamp: str | None, in_place: bool, layer: qnn.QuantLinear) -> torch.Tensor:
    """`layer(relu(x))` of a QuantLinear, without its module calls."""
    quantizer, weight, bias = layer_operands(layer)
    return F.linear(quantize(quantizer, x, clamp, in_place), weight, bias)


def batch_norm(x: torch.Tensor, module: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    """`module(x)` of a batch norm: in eval mode, `F.batch_norm` on its running statistics, as its
    forward computes it, without the module call's Python (~2.5 us each, 52 in mobilenet_v2)."""
    if module.training or module.running_mean is None or module.running_var is None:
        return module(x)
    return F.batch_norm(x, module.running_mean, module.running_var, module.weight, module.bias, False, 0.0, module.eps)


def activation(x: torch.Tensor, clamp: str | None, in_place: bool, quantizers: nn.ModuleDict, key: str,
               relu_after: str | None = None) -> torch.Tensor:
    """An activation quantizer node (`sw.model.graph`), looked up when it runs."""
    return quantize(quantizers[key], x, clamp, in_place, relu_after)


def _relu_kind(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    if node.op == "call_module":
        module = modules.get(node.target)
        return {nn.ReLU: "relu", nn.ReLU6: "relu6"}.get(type(module))
    if node.op == "call_function":
        return _RELU_FUNCTIONS.get(node.target)
    if node.op == "call_method":
        return _RELU_METHODS.get(node.target)
    return None


def _in_place(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return bool(getattr(modules[node.target], "inplace", False))
    return node.target in (torch.relu_, "relu_") or bool(node.kwargs.get("inplace", False)) or (
        node.target in (F.relu, F.relu6) and len(node.args) > 1 and bool(node.args[1]))


def _layer_call(node: fx.Node, modules: dict[str, nn.Module]):
    """`conv2d` / `linear` for a quantized layer node this graph can call directly, else None."""
    if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
        return None
    module = modules.get(node.target)
    if type(module) is qnn.QuantConv2d and module.padding_mode == "zeros":
        return conv2d
    if type(module) is qnn.QuantLinear:
        return linear
    return None


def _is_batch_norm(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    return (node.op == "call_module" and len(node.args) == 1 and not node.kwargs
            and type(modules.get(node.target)) in (nn.BatchNorm1d, nn.BatchNorm2d))


def _quantizer_key(node: fx.Node) -> str | None:
    prefix = "activation_quantizers."
    if node.op == "call_module" and node.target.startswith(prefix) and len(node.args) == 1 and not node.kwargs:
        return node.target[len(prefix):]
    return None


def _quantizes(node: fx.Node, tensor: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """`node` is a quantized layer or an activation quantizer whose input is `tensor`."""
    return node.args[:1] == (tensor,) and (_layer_call(node, modules) is not None or _quantizer_key(node) is not None)


def _foldable(relu: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """A ReLU whose only user quantizes it and whose input only it reads (an in-place ReLU: and
    is a new tensor, so no other node sees the change).

    (Folding a ReLU past a max pool into the quantizer after it, as the pool commutes with it,
    was measured slower: torch's max pool branches on every comparison and runs slower on the
    raw values than on ReLU'd ones, which are mostly zeros.)
    """
    if len(relu.users) != 1 or not relu.args or not isinstance(relu.args[0], fx.Node):
        return False
    source, user = relu.args[0], next(iter(relu.users))
    if len(source.users) != 1 or (_in_place(relu, modules) and not _fresh(source, modules)):
        return False
    return _quantizes(user, relu, modules)


def _after_quantizer(relu: fx.Node) -> bool:
    """A ReLU whose input is an activation quantizer's output that only it reads: resnet's ReLU
    after the add quantizer of a residual block."""
    if not relu.args or not isinstance(relu.args[0], fx.Node):
        return False
    source = relu.args[0]
    return _quantizer_key(source) is not None and len(source.users) == 1


def _fresh(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """The node's output is a new tensor: writing over it changes no other node's tensor.
    (fx traces `out += identity` as an out-of-place add, so adds are new tensors.)"""
    if node.op == "call_module":
        return isinstance(modules.get(node.target), _FRESH_OUTPUT)
    if node.op == "call_function" and node.target in (operator.add, torch.add) and not node.kwargs:
        return all(isinstance(a, fx.Node) for a in node.args[:2])  # tensor + tensor
    return False


def build(gm: fx.GraphModule) -> fx.GraphModule:
    """The inference graph of a QuantizedModel's fx graph (`QuantizedModel.model`).

    Every module and attribute it uses hangs directly off its root under a flat name
    (`features_1_conv_0_0`): one attribute lookup per call where a dotted path costs one Python
    `Module.__getattr__` per dot (mobilenet_v2: ~250 fewer per forward)."""
    modules = dict(gm.named_modules())
    folded = {node: _relu_kind(node, modules) for node in gm.graph.nodes}
    folded = {node: kind for node, kind in folded.items() if kind and _foldable(node, modules)}
    # a ReLU that is the only reader of an activation quantizer's output: that quantizer applies it
    after = {node for node in gm.graph.nodes
             if node not in folded and _relu_kind(node, modules) == "relu" and _after_quantizer(node)}
    relu_after = {node.args[0]: "relu_" if _in_place(node, modules) else "relu" for node in after}
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    root: dict[str, object] = {}  # flat name -> module or attribute
    flat: dict[str, str] = {}  # dotted target -> flat name

    def flat_name(target: str) -> str:
        if target not in flat:
            name = target.replace(".", "_")
            while name in root:
                name += "_"
            flat[target], root[name] = name, modules[target] if target in modules else _attribute(gm, target)
        return flat[target]

    quantizers = None
    for node in gm.graph.nodes:
        if node in folded:
            continue  # its one user, a quantizer, reads its input and clamps
        if node in after:
            env[node] = env[node.args[0]]  # the quantizer before it gave the ReLU'd tensor
            continue
        layer_call, key = _layer_call(node, modules), _quantizer_key(node)
        if _is_batch_norm(node, modules):
            env[node] = graph.call_function(batch_norm, (env[node.args[0]], graph.get_attr(flat_name(node.target))))
            continue
        if layer_call is None and key is None:
            env[node] = graph.node_copy(node, lambda n: env[n])
            if node.op in ("call_module", "get_attr"):
                env[node].target = flat_name(node.target)
            continue
        clamp = folded.get(node.args[0])
        tensor = node.args[0].args[0] if clamp else node.args[0]  # the node whose tensor the quantizer reads
        in_place = len(tensor.users) == 1 and _fresh(tensor, modules)
        if layer_call is not None:
            new = graph.call_function(layer_call, (env[tensor], clamp, in_place, graph.get_attr(flat_name(node.target))))
        else:
            if quantizers is None:
                quantizers = graph.get_attr(flat_name("activation_quantizers"))
            new = graph.call_function(activation, (env[tensor], clamp, in_place, quantizers, key, relu_after.get(node)))
        env[node] = new
    graph.lint()
    return fx.GraphModule(root, graph, class_name="InferenceGraph")


def _attribute(gm: fx.GraphModule, target: str):
    owner, _, name = target.rpartition(".")
    return getattr(gm.get_submodule(owner) if owner else gm, name)
