"""How activations travel between the Conv2d / Linear layers of a network.

The energy engines evaluate one layer at a time. Between layers, what crosses DRAM depends on
the network's graph, which `trace_dataflow` reads with torch.fx (shapes from a real forward
pass):

- ops with one tensor input and as many values out as in (BatchNorm, activations, reshapes) are
  fused into the producing layer: they never touch DRAM;
- ops with one tensor input and fewer values out (max/average/adaptive pooling, global means)
  are *poolings*: when fused, the layer stores the pooled tensor, not its own output;
- a two-input `add` of equally sized tensors is a *residual add*: when fused, the producer of the
  operand that comes later in forward order (the *host*) reads the other operand from DRAM and
  stores the sum;
- the *readers* of a stored tensor are the layers that take it as input; its precision is the
  largest input width among them (through any add that reads it: the add's readers); a tensor
  no layer reads (the network output) is stored at `quantization.baseline_bits`;
- a stored tensor whose only reader is the next layer in forward order may stay on chip
  (`energy.residency`), like ZigZag's own layer-chain data-locality rule; tensors with several
  readers (residual shortcuts) always go through DRAM.

`chain_dataflow` is the per-layer view without a graph: layer k's output is read by layer k+1.
Any other op (concatenation, multiplication of two tensors, upsampling) is a barrier: the tensors
it reads are stored at the baseline precision and its own traffic is not modelled.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

from energy.layers import LayerGeometry
from sw.core.errors import UserError

if TYPE_CHECKING:
    from torch import nn

BASELINE = -1  # in `precision_from`: the tensor is stored at the baseline precision
NETWORK_INPUT = -1  # in `add_operand`: the added tensor is the network input


@dataclass(frozen=True)
class LayerFlow:
    output_values: int                  # values the layer computes, per inference
    stored_values: int                  # values of the tensor it stores (after a fused pooling)
    pooled: bool                        # a pooling follows on the layer's own path
    readers: tuple[int, ...]            # layers that read the stored tensor as input
    precision_from: tuple[int, ...]     # layers whose input bits set its precision (BASELINE: baseline bits)
    add_operand: int | None = None      # the layer hosts a residual add of this layer's stored tensor
    add_values: int = 0                 # values of the added tensor
    chain_next: bool = False            # the only reader is the next layer: the tensor may stay on chip
    add_readers: tuple[int, ...] = ()   # layers hosting an add that reads the stored tensor


@dataclass(frozen=True)
class Dataflow:
    names: tuple[str, ...]
    flows: tuple[LayerFlow, ...]
    traced: bool  # False: the forward-order chain

    def describe(self) -> list[str]:
        """One line per layer: what it stores and who reads it."""
        lines = []
        for name, f in zip(self.names, self.flows):
            readers = ", ".join([*(self.names[r] for r in f.readers),
                                 *(f"the add in {self.names[h]}" for h in f.add_readers)]) or "network output"
            extra = f", pooled {f.output_values}->{f.stored_values}" if f.pooled else ""
            if f.add_operand is not None:
                src = "network input" if f.add_operand == NETWORK_INPUT else self.names[f.add_operand]
                extra += f", adds {src} ({f.add_values} values)"
            lines.append(f"{name}: stores {f.stored_values} values{extra}; read by {readers}"
                         + (" (may stay on chip)" if f.chain_next else ""))
        return lines


def chain_dataflow(layers: Mapping[str, LayerGeometry]) -> Dataflow:
    """Today's per-layer view: each layer's whole output is read by the next layer in forward order."""
    names = tuple(layers)
    n = len(names)
    flows = tuple(LayerFlow(output_values=g.n_outputs // g.batch, stored_values=g.n_outputs // g.batch, pooled=False,
                            readers=(k + 1,) if k + 1 < n else (),
                            precision_from=(k + 1,) if k + 1 < n else (BASELINE,), chain_next=k + 1 < n)
                  for k, g in enumerate(layers.values()))
    return Dataflow(names, flows, traced=False)


_ADDS = {operator.add, operator.iadd}


def trace_dataflow(model: "nn.Module", input_shape: Sequence[int], layers: Mapping[str, LayerGeometry]) -> Dataflow:
    """The dataflow of `model` (traced with torch.fx) between the layers of `trace_layers`."""
    import torch
    from torch import fx, nn
    from torch.fx.passes.shape_prop import ShapeProp

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
            if isinstance(modules[node.target], (nn.Conv2d, nn.Linear)):
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
