"""Layers and dataflow of a torch model, read from a real forward pass (and torch.fx).

- `trace_layers`: every `nn.Conv2d` (grouped and depthwise included), `nn.Conv1d` (as a 1 x L image)
  and `nn.Linear` under its
  qualified module name (`model.named_modules()`), in the order the forward pass first calls it,
  as a `LayerGeometry` (`energy.layers`);
- `trace_dataflow`: what travels between those layers (`energy.dataflow`, whose docstring says
  which ops are fused, pooled, added or barriers);
- `workload_layers`: the layers of a workload's model architecture.

Kept apart from `energy.layers` and `energy.dataflow` so that the engine worker processes, which
only need the geometry, never import torch.
"""

from __future__ import annotations

import operator
from typing import Mapping, Sequence

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from energy.dataflow import BASELINE, NETWORK_INPUT, Dataflow, LayerFlow, chain_dataflow
from energy.layers import LayerGeometry
from sw.core.errors import UserError
from sw.nets.models import build_architecture

COSTED = (nn.Conv1d, nn.Conv2d, nn.Linear)  # the layer types with a cost mapping
TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d)


def _pair(value) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (tuple, list)) else (int(value), int(value))


def _conv_geometry(module: nn.Conv2d, x: torch.Tensor, y: torch.Tensor) -> LayerGeometry:
    if isinstance(module.padding, str):  # "same" / "valid": derive the total padding from the shapes
        (kh, kw), (sh, sw), (dh, dw) = module.kernel_size, module.stride, module.dilation
        total_h = max(0, (y.shape[2] - 1) * sh + dh * (kh - 1) + 1 - x.shape[2])
        total_w = max(0, (y.shape[3] - 1) * sw + dw * (kw - 1) + 1 - x.shape[3])
        pads = (total_h // 2, total_h - total_h // 2, total_w // 2, total_w - total_w // 2)
    else:
        ph, pw = _pair(module.padding)
        pads = (ph, ph, pw, pw)
    (kh, kw), (sh, sw), (dh, dw) = _pair(module.kernel_size), _pair(module.stride), _pair(module.dilation)
    return LayerGeometry(
        kind="conv", in_channels=module.in_channels, out_channels=module.out_channels, groups=module.groups,
        in_h=int(x.shape[2]), in_w=int(x.shape[3]), out_h=int(y.shape[2]), out_w=int(y.shape[3]),
        kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw, dilation_h=dh, dilation_w=dw,
        pad_top=pads[0], pad_bottom=pads[1], pad_left=pads[2], pad_right=pads[3])


def _conv1d_geometry(module: nn.Conv1d, x: torch.Tensor, y: torch.Tensor) -> LayerGeometry:
    """A Conv1d is a Conv2d on a 1 x L image with a 1 x k kernel."""
    if isinstance(module.padding, str):
        (k,), (s,), (d,) = module.kernel_size, module.stride, module.dilation
        total = max(0, (y.shape[2] - 1) * s + d * (k - 1) + 1 - x.shape[2])
        left, right = total // 2, total - total // 2
    else:
        left = right = int(module.padding[0])
    return LayerGeometry(
        kind="conv", in_channels=module.in_channels, out_channels=module.out_channels, groups=module.groups,
        in_h=1, in_w=int(x.shape[2]), out_h=1, out_w=int(y.shape[2]), kernel_h=1, kernel_w=int(module.kernel_size[0]),
        stride_h=1, stride_w=int(module.stride[0]), dilation_h=1, dilation_w=int(module.dilation[0]),
        pad_top=0, pad_bottom=0, pad_left=left, pad_right=right)


def _linear_geometry(module: nn.Linear, x: torch.Tensor) -> LayerGeometry:
    # Rows of a batched or sequence input are independent vectors: they become the output pixels.
    rows = int(x.numel() // x.shape[-1]) if x.dim() > 1 else 1
    return LayerGeometry(
        kind="linear", in_channels=module.in_features, out_channels=module.out_features, groups=1,
        in_h=1, in_w=rows, out_h=1, out_w=rows, kernel_h=1, kernel_w=1, stride_h=1, stride_w=1,
        dilation_h=1, dilation_w=1, pad_top=0, pad_bottom=0, pad_left=0, pad_right=0)


def trace_layers(model: nn.Module, input_shape: Sequence[int]) -> dict[str, LayerGeometry]:
    """{qualified name: geometry} of every Conv2d / Linear, in forward order, for one input of `input_shape`.

    `input_shape` is C x H x W (no batch); the forward pass runs on zeros with batch 1.
    """
    names = {module: name for name, module in model.named_modules()}
    found: dict[str, LayerGeometry] = {}

    def hook(module: nn.Module, inputs, output) -> None:
        name = names[module]
        if name in found:  # a module called twice keeps its first geometry
            return
        x = inputs[0]
        if isinstance(module, nn.Conv2d):
            found[name] = _conv_geometry(module, x, output)
        elif isinstance(module, nn.Conv1d):
            found[name] = _conv1d_geometry(module, x, output)
        else:
            found[name] = _linear_geometry(module, x)

    transposed = [f"{name} ({type(m).__name__})" for name, m in model.named_modules() if isinstance(m, TRANSPOSED)]
    if transposed:
        raise UserError(f"energy: transposed convolutions have no cost mapping yet ({', '.join(transposed)}); "
                        "search this model by weighted bits (the default problem) instead")
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, COSTED)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *[int(s) for s in input_shape]))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"model.input_shape {list(input_shape)}: the model's forward pass fails on it ({first})") from None
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not found:
        raise UserError("the model has no Conv2d or Linear layer to evaluate")
    return found


def workload_layers(workload) -> dict[str, LayerGeometry]:
    """Trace the workload's model architecture at the workload's input shape."""
    return trace_layers(build_architecture(workload), workload.model.input_shape)


_ADDS = {operator.add, operator.iadd}


def trace_dataflow(model: nn.Module, input_shape: Sequence[int], layers: Mapping[str, LayerGeometry]) -> Dataflow:
    """The dataflow of `model` (traced with torch.fx) between the layers of `trace_layers`."""
    names = list(layers)
    position = {name: k for k, name in enumerate(names)}
    was_training = model.training
    model.eval()
    try:
        graph_module = fx.symbolic_trace(model)
        ShapeProp(graph_module).propagate(torch.zeros(1, *[int(s) for s in input_shape]))
    except Exception as exc:  # noqa: BLE001 - any tracing failure means the same thing to the user
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(f"energy.elementwise / energy.residency need a model torch.fx can trace; "
                        f"{type(model).__name__} cannot be traced ({first}); set energy.elementwise: ignored "
                        f"and energy.residency: false") from None
    finally:
        model.train(was_training)
    modules = dict(graph_module.named_modules())

    def values(node) -> int | None:
        meta = node.meta.get("tensor_meta")
        shape = getattr(meta, "shape", None)
        return None if shape is None else int(torch.Size(shape).numel())

    def tensor_args(node) -> list:
        return [a for a in node.all_input_nodes if values(a) is not None]

    def tensor_users(node) -> list:
        return [u for u in node.users if u.op == "output" or values(u) is not None]

    layer_of: dict = {}
    for node in graph_module.graph.nodes:
        if node.op == "call_module" and node.target in position and node.target not in layer_of.values():
            if isinstance(modules[node.target], COSTED):
                layer_of[node] = node.target

    def kind(node) -> str:
        if node in layer_of:
            return "layer"
        if node.op == "output":
            return "output"
        args = tensor_args(node)
        out = values(node)
        is_add = ((node.op == "call_function" and (node.target in _ADDS or node.target is torch.add))
                  or (node.op == "call_method" and node.target in ("add", "add_")))
        if is_add and len(args) == 2 and values(args[0]) == values(args[1]) == out:
            return "add"
        if len(args) == 1 and out is not None and node.op != "placeholder":
            inp = values(args[0])
            return "same" if out == inp else "shrink" if out < inp else "barrier"
        return "placeholder" if node.op == "placeholder" else "barrier"

    source_cache: dict = {}

    def source(node) -> int | None:
        """The layer whose stored tensor `node` is (NETWORK_INPUT, or None behind a barrier)."""
        if node not in source_cache:
            k = kind(node)
            if k == "layer":
                result = position[layer_of[node]]
            elif k == "placeholder":
                result = NETWORK_INPUT
            elif k in ("same", "shrink"):
                result = source(tensor_args(node)[0])
            elif k == "add":
                result = add_host(node)
            else:
                result = None
            source_cache[node] = result
        return source_cache[node]

    def add_host(node) -> int | None:
        sources = [source(a) for a in tensor_args(node)]
        return None if None in sources else max(sources)

    flows: dict[int, dict] = {}
    for node, name in layer_of.items():
        k = position[name]
        out_values = values(node)
        stored, pooled, add_operand, add_values = node, False, None, 0
        while True:
            users = tensor_users(stored)
            if len(users) != 1:
                break
            user = users[0]
            ku = kind(user)
            if ku in ("same", "shrink"):
                pooled = pooled or ku == "shrink"
            elif ku == "add" and add_host(user) == k and add_operand is None:
                other = [a for a in tensor_args(user) if a is not stored]
                add_operand = source(other[0]) if other else k
                add_values = values(user)
            else:
                break
            stored = user
        readers, add_hosts, to_baseline = set(), set(), False
        frontier = list(tensor_users(stored))
        while frontier:
            user = frontier.pop()
            ku = kind(user)
            if ku == "layer":
                readers.add(position[layer_of[user]])
            elif ku in ("same", "shrink"):
                frontier.extend(tensor_users(user))
            elif ku == "add" and add_host(user) is not None:
                host = add_host(user)
                if host == k:  # the layer's own add further down a branch: its sum's readers count
                    frontier.extend(tensor_users(user))
                else:
                    add_hosts.add(host)
            else:  # the network output or a barrier
                to_baseline = True
        flows[k] = dict(output_values=out_values, stored_values=values(stored), pooled=pooled,
                        readers=tuple(sorted(readers)), add_hosts=add_hosts, to_baseline=to_baseline,
                        add_operand=add_operand, add_values=add_values)
    missing = [n for n in names if position[n] not in flows]
    if missing:
        raise UserError(f"energy: layer {missing[0]!r} is not called in the traced graph of {type(model).__name__}")

    precision: dict[int, tuple[int, ...]] = {}
    for k in sorted(flows, reverse=True):  # add hosts come later in forward order than what they read
        f = flows[k]
        sources = set(f["readers"])
        for host in f["add_hosts"]:
            sources |= set(precision.get(host, (BASELINE,)))
        if f["to_baseline"] or not sources:
            sources.add(BASELINE)
        precision[k] = tuple(sorted(sources))
    result = []
    for k in range(len(names)):
        f = flows[k]
        result.append(LayerFlow(
            output_values=f["output_values"], stored_values=f["stored_values"], pooled=f["pooled"],
            readers=f["readers"], precision_from=precision[k], add_operand=f["add_operand"],
            add_values=f["add_values"], add_readers=tuple(sorted(f["add_hosts"])),
            chain_next=f["readers"] == (k + 1,) and not f["add_hosts"] and not f["to_baseline"]))
    return Dataflow(tuple(names), tuple(result), traced=True)


def workload_layers_and_dataflow(workload, graph: bool) -> tuple[dict[str, LayerGeometry], Dataflow]:
    """The workload's layers (batch 1) and the dataflow between them: traced with torch.fx when
    `graph` (residency or pooling/adds modelled), else the forward-order chain."""
    model = build_architecture(workload)
    layers = trace_layers(model, workload.model.input_shape)
    if not graph:
        return layers, chain_dataflow(layers)
    try:
        return layers, trace_dataflow(model, workload.model.input_shape, layers)
    except UserError as exc:
        raise UserError(f"{workload.path}: {exc}") from None
