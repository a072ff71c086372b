"""torch.fx graph preparation of the fp32 model: trace, fold batch norm, quantizers at graph nodes.

Swapping Conv2d/Linear modules (`QuantizedModel`'s module mode) quantizes every layer's input
and weight, but tensors that never enter a layer module stay fp32: residual adds
(`out += identity`), concatenations, products, and functional activations (`F.relu`). A
deployed integer model has to store those tensors as integers too, so with
`quantization.graph: fx` the model is traced with torch.fx and an activation quantizer is
inserted after

- every tensor-tensor add / sub / mul / cat node (`<scope>.add.output`, `<scope>.cat.output`,
  ...: `<scope>` is the module whose forward contains the operation, e.g. `layer1.0.add`),
- and, with `activation_quantizers: relu`, every ReLU: modules as before (`<module>.output`)
  and functional ones (`<scope>.relu.output`).

A second operation of the same kind in one scope gets `_1`, `_2`, ... (`layer1.0.add_1`).
Layer names (and so `<layer>.input` / `<layer>.weight`, the search variables, the energy
table and cosim rows) are the fp32 model's module names in both modes; on a model without
such graph nodes (the default digits CNN) both modes build the same quantizers and give
bit-identical outputs.

A model fx cannot trace (data-dependent control flow) falls back to module mode with one
warning line naming the reason.
"""

from __future__ import annotations

import copy
import logging
import operator
from typing import Callable

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from sw.core.device import module_device
from sw.core.errors import first_line
from sw.model import bn_folding

log = logging.getLogger(__name__)

GRAPH_MODES = ("fx", "modules")

# tensor-tensor operations whose output tensor no layer quantizes
MERGE_FUNCTIONS: dict = {operator.add: "add", operator.iadd: "add", torch.add: "add", operator.sub: "sub",
                         operator.isub: "sub", torch.sub: "sub", operator.mul: "mul", operator.imul: "mul",
                         torch.mul: "mul", torch.cat: "cat", torch.concat: "cat"}
MERGE_METHODS = {"add": "add", "add_": "add", "sub": "sub", "sub_": "sub", "mul": "mul", "mul_": "mul"}
RELU_FUNCTIONS: dict = {F.relu: "relu", torch.relu: "relu", torch.relu_: "relu", F.relu6: "relu6"}
RELU_METHODS = {"relu": "relu", "relu_": "relu"}
RELU_MODULES = (nn.ReLU, nn.ReLU6)


def trace(model: nn.Module) -> fx.GraphModule | None:
    """The model as a torch.fx GraphModule (same submodule names), or None with a warning line."""
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # TraceError, TypeError, ... anything fx cannot follow
        reason = first_line(exc)
        log.warning("torch.fx cannot trace %s (%s); falling back to module swap: residual adds, "
                    "concatenations and functional activations get no quantizers", type(model).__name__, reason)
        return None


def prepare_fp32(model: nn.Module, input_shape: tuple[int, ...], *, graph: str = "fx",
                 fold_bn: bool = False) -> nn.Module:
    """A copy of the fp32 model ready for quantization: traced (fx mode) and with BN folded (if asked).

    Returns a GraphModule when tracing worked, the plain module otherwise. Folding is checked on
    a forward pass (`bn_folding.check_folding`).
    """
    if graph not in GRAPH_MODES:
        raise ValueError(f"unknown graph mode {graph!r}; expected one of {', '.join(GRAPH_MODES)}")
    original = model
    model = copy.deepcopy(model).eval()
    gm = trace(model) if graph == "fx" else None
    prepared = gm if gm is not None else model
    if fold_bn:
        folded = bn_folding.fold_graph(gm) if gm is not None else bn_folding.fold_sequential(model)
        left = bn_folding.count_batchnorms(prepared)
        if left:
            log.warning("%d batch-norm layer(s) could not be folded (not directly after a conv/linear layer "
                        "in the traced graph or an nn.Sequential); they stay as fp32 BN", left)
        if folded:
            bn_folding.check_folding(original.eval(), prepared, tuple(input_shape))
    return prepared


def _tensor_output(node: fx.Node) -> bool:
    meta = node.meta.get("tensor_meta")
    return meta is not None and hasattr(meta, "dtype") and meta.dtype.is_floating_point


def _scope(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def _kind(node: fx.Node, modules: dict[str, nn.Module], relu: bool) -> str | None:
    """What kind of quantizer-needing node this is ("add", "cat", "relu", ...), or None."""
    if node.op == "call_function":
        if node.target in MERGE_FUNCTIONS:
            tensors = node.args[0] if node.target in (torch.cat, torch.concat) else node.args[:2]
            return MERGE_FUNCTIONS[node.target] if all(isinstance(a, fx.Node) for a in tensors) else None
        return RELU_FUNCTIONS.get(node.target) if relu else None
    if node.op == "call_method":
        if node.target in MERGE_METHODS:
            return MERGE_METHODS[node.target] if all(isinstance(a, fx.Node) for a in node.args[:2]) else None
        return RELU_METHODS.get(node.target) if relu else None
    if node.op == "call_module" and relu and isinstance(modules.get(node.target), RELU_MODULES):
        return "module"
    return None


def insert_quantizers(gm: fx.GraphModule, input_shape: tuple[int, ...], make: Callable[[], nn.Module], *,
                      relu: bool = False) -> nn.ModuleDict:
    """Insert an activation quantizer after every add/sub/mul/cat node (and ReLU if `relu`).

    The quantizers live in `gm.activation_quantizers` (keys: the quantizer name with "." as
    "__", as `QuantizedModel.activation_quantizers`); returns that ModuleDict.
    """
    with torch.no_grad():
        ShapeProp(gm).propagate(torch.zeros((1, *input_shape), device=module_device(gm)))
    modules = dict(gm.named_modules())
    gm.activation_quantizers = quantizers = nn.ModuleDict()
    taken: set[str] = set(modules)
    counts: dict[str, int] = {}
    for node in list(gm.graph.nodes):
        kind = _kind(node, modules, relu)
        if kind is None or not _tensor_output(node):
            continue
        base = node.target if kind == "module" else ".".join(p for p in (_scope(node), kind) if p)
        n = counts.get(base, 0)
        counts[base] = n + 1
        name = base if n == 0 else f"{base}_{n}"
        while kind != "module" and name in taken:  # never shadow a module's own name
            n += 1
            counts[base] = n + 1
            name = f"{base}_{n}"
        taken.add(name)
        key = name.replace(".", "__")
        quantizers[key] = make()
        with gm.graph.inserting_after(node):
            q_node = gm.graph.call_module(f"activation_quantizers.{key}", (node,))
        node.replace_all_uses_with(q_node, delete_user_cb=lambda user: user is not q_node)
    gm.graph.lint()
    gm.recompile()
    return quantizers
