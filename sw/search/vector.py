"""The default decision vector: bit widths per layer (tied or separate weight/input bits),
then optionally one input-clipping method index per layer.

Shared by the search problems, which build vectors, and the study, which names and reads them.
"""

from __future__ import annotations

from typing import Mapping, Sequence


def variable_names(layer_names: Sequence[str], mode: str) -> list[str]:
    if mode == "tied":
        return [f"{n}.bits" for n in layer_names]
    return [f"{n}.{part}_bits" for n in layer_names for part in ("weight", "input")]


def decode(x: Sequence[int], layer_names: Sequence[str], mode: str) -> dict[str, tuple[int, int]]:
    """Decision vector -> {layer: (weight bits, input bits)}."""
    x = [int(round(float(v))) for v in x]
    if mode == "tied":
        return {n: (b, b) for n, b in zip(layer_names, x, strict=True)}
    if len(x) != 2 * len(layer_names):
        raise ValueError(f"expected {2 * len(layer_names)} variables, got {len(x)}")
    return {n: (x[2 * i], x[2 * i + 1]) for i, n in enumerate(layer_names)}


def clipping_names(layer_names: Sequence[str], workload) -> list[str]:
    """`<layer>.clipping` variables when the workload searches clipping methods, else none."""
    return [f"{n}.clipping" for n in layer_names] if workload.calibration.search_methods else []


def split(x: Sequence[int], layer_names: Sequence[str], workload) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """Decision vector -> ({layer: (weight bits, input bits)}, {layer: input clipping method})."""
    methods = workload.calibration.search_methods or []
    n_clip = len(clipping_names(layer_names, workload))
    bits = decode(x[: len(x) - n_clip], layer_names, workload.quantization.explore)
    clipping = {n: methods[int(round(float(v)))] for n, v in zip(layer_names, x[len(x) - n_clip:])} if n_clip else {}
    return bits, clipping


def encode(bits: Mapping[str, tuple[int, int]], layer_names: Sequence[str], mode: str) -> list[int]:
    if mode == "tied":
        return [bits[n][0] for n in layer_names]
    return [b for n in layer_names for b in bits[n]]


def default_variable_names(study) -> list[str]:
    """The variable names of the default vector for a study's quantized model and workload."""
    names = study.quantized_model.layer_names
    return variable_names(names, study.workload.quantization.explore) + clipping_names(names, study.workload)
