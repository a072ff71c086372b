"""Bit-weighting functions: the hardware-agnostic cost objective of a bit configuration.

A weighting maps each quantized layer's (weight bits, input bits) and its sizes to one number
that the search minimises. All are normalised so that all-8-bit costs 8.0 -- a cost reads as
"average bits" in the sense of the weighting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from sw.core.registry import Registry


@dataclass(frozen=True)
class LayerSize:
    """Element counts of one quantized layer (traced at the workload's input shape)."""

    name: str
    weights: int
    inputs: int
    macs: int


Weighting = Callable[[Sequence[LayerSize], Mapping[str, tuple[int, int]]], float]
WEIGHTINGS: Registry[Weighting] = Registry("bit-weighting function")


def _average(sizes: Sequence[LayerSize], bits: Mapping[str, tuple[int, int]], weight_of) -> float:
    total = sum(weight_of(s)[0] + weight_of(s)[1] for s in sizes)
    cost = sum(weight_of(s)[0] * bits[s.name][0] + weight_of(s)[1] * bits[s.name][1] for s in sizes)
    return cost / total


@WEIGHTINGS.register("params_weighted")
def params_weighted(sizes: Sequence[LayerSize], bits: Mapping[str, tuple[int, int]]) -> float:
    """Memory-footprint proxy: bits weighted by each layer's weight and input element counts."""
    return _average(sizes, bits, lambda s: (s.weights, s.inputs))


@WEIGHTINGS.register("weights_only")
def weights_only(sizes: Sequence[LayerSize], bits: Mapping[str, tuple[int, int]]) -> float:
    """Model-size proxy: weight bits weighted by weight counts."""
    return _average(sizes, bits, lambda s: (s.weights, 0))


@WEIGHTINGS.register("bit_operations")
def bit_operations(sizes: Sequence[LayerSize], bits: Mapping[str, tuple[int, int]]) -> float:
    """Compute proxy (BOPs): MACs x weight bits x input bits, normalised to 8 at all-8-bit."""
    total = sum(s.macs for s in sizes)
    return sum(s.macs * bits[s.name][0] * bits[s.name][1] for s in sizes) / total / 8.0


@WEIGHTINGS.register("uniform")
def uniform(sizes: Sequence[LayerSize], bits: Mapping[str, tuple[int, int]]) -> float:
    """Every layer counts the same: the plain mean of all bit widths."""
    return _average(sizes, bits, lambda s: (1, 1))
