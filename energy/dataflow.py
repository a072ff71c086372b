"""How activations travel between the Conv2d / Linear layers of a network.

The energy engines evaluate one layer at a time. Between layers, what crosses DRAM depends on
the network's graph, which `energy.trace.trace_dataflow` reads with torch.fx (shapes from a real forward
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

from dataclasses import dataclass
from typing import Mapping

from energy.layers import LayerGeometry

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
