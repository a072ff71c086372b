"""One co-simulation: a workload's model at one bit configuration, every quantized tensor on the RTL.

    capture (real weights and activations) -> reference (library codes, search values)
    -> simulate (quantize -> pack -> unpack -> dequantize on the RTL) -> compare, per tensor.

Per-channel weights are streamed channel by channel, with a SCALE register update between
channels (the RTL takes a new configuration at a tensor boundary), so each channel is its own
packed tensor and starts on a fresh word.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch

from cosim.capture import CapturedTensor, capture
from cosim.comparison import TensorReport, compare
from cosim.reference import expected
from cosim.simulation import Stream, simulate
from sw.core.errors import UserError
from sw.study.study import Study


@dataclass
class CosimResult:
    point: str
    layer_bits: dict[str, tuple[int, int]]
    rows: list[TensorReport]
    sim: str
    word_bits: int
    simulator_s: float
    total_s: float
    stalls: str = "none"
    fault: str | None = None

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(r.ok for r in self.rows)

    @property
    def elements(self) -> int:
        return sum(r.elements for r in self.rows)


def select_point(study: Study, point: str, run_id: int | None = None) -> dict[str, tuple[int, int]]:
    """Bits per layer for `point`: "int8" (all layers 8 bits), or "best" / a Pareto row index as
    `Study.select_point` picks them ("best": the cheapest point meeting the constraint on held-out data)."""
    return point_configuration(study, point, run_id)[0]


def point_configuration(study: Study, point: str, run_id: int | None = None
                        ) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """(bits per layer, input clipping method per layer) of `point` (see `select_point`). The
    clipping is empty for "int8" and for points whose decision vector chooses bits only; where it
    chooses them too (`calibration.search_methods`), cosim must simulate the point's own clipping."""
    if point == "int8":
        return study.uniform_bits(8), {}
    if point.removeprefix("ilp:") != "best" and not point.removeprefix("ilp:").lstrip("-").isdigit():
        raise UserError(f"--point: expected int8, best, a Pareto row index, ilp:best or ilp:N, got {point!r}")
    row, _ = study.select_point(point, run_id)
    qmodel = study.apply(study.point_vector(row))
    return dict(qmodel.layer_bits()), qmodel.layer_clipping()


def real_images(study: Study, count: int, phase: str = "exploration") -> torch.Tensor:
    """The first `count` images of a phase's data (the data the search evaluated on)."""
    if count < 1:
        raise UserError(f"--images: expected a count >= 1, got {count}")
    images, have = [], 0
    for x, _ in study.batches(phase):
        images.append(x[: count - have])
        have += images[-1].shape[0]
        if have >= count:
            break
    return torch.cat(images)


def streams_of(tensor: CapturedTensor, scales) -> list[Stream]:
    return [Stream(tensor.values[k], tensor.bits, scales[k], not tensor.unsigned, tensor.narrow_range)
            for k in range(tensor.segments)]


def run_cosim(study: Study, layer_bits: Mapping[str, tuple[int, int]], *, point: str = "int8",
              images: int = 8, layers: Sequence[str] | None = None, sim: str = "icarus", word_bits: int = 32,
              stalls: str = "none", seed: int = 0, fault: str | None = None, work_dir: Path | None = None,
              clipping: Mapping[str, str] | None = None) -> CosimResult:
    """Capture, simulate and compare every quantized tensor of the study's model at `layer_bits`
    (and, where the point chose them, its input `clipping` methods: see `point_configuration`)."""
    start = time.perf_counter()
    qmodel = study.quantized_model
    try:
        tensors = capture(qmodel, layer_bits, real_images(study, images), layers, clipping)
    except KeyError as exc:
        raise UserError(f"--layers: {exc.args[0]}") from None
    expectations = [expected(t.values, t.amax, t.bits, t.unsigned, t.narrow_range, t.search_output, fault)
                    for t in tensors]
    streams = [s for t, e in zip(tensors, expectations) for s in streams_of(t, e.scale)]
    work_dir = work_dir or (study.results_dir / "cosim" / "sim_build")
    results, sim_wall = simulate(streams, work_dir=work_dir, sim=sim, word_bits=word_bits, stalls=stalls, seed=seed)
    rows, pos = [], 0
    for t, e in zip(tensors, expectations):
        rows.append(compare(t, e, results[pos:pos + t.segments], word_bits))
        pos += t.segments
    return CosimResult(point=point, layer_bits=dict(layer_bits), rows=rows, sim=sim, word_bits=word_bits,
                       simulator_s=sim_wall, total_s=time.perf_counter() - start, stalls=stalls, fault=fault)
