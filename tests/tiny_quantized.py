"""The tiny residual net (tiny_graph_net) quantized and calibrated: the model the preset, deploy
and QAT tests start from."""

from __future__ import annotations

import torch
from tiny_graph_net import images, tiny_residual

from sw.model.calibration import Recipe, calibrate
from sw.model.quantized_model import QuantizedModel, QuantSettings
from sw.quant.presets import resolve


def calibrated_residual(method: str | Recipe = "max", batch: torch.Tensor | None = None,
                        **settings) -> QuantizedModel:
    """`tiny_residual()` (16x16 inputs) quantized with `QuantSettings(**settings)` as its preset
    resolves them, calibrated by `method` on one batch (default `images(16)`)."""
    resolved = resolve(QuantSettings(**settings))
    qmodel = QuantizedModel(tiny_residual(), (3, 16, 16), resolved)
    calibrate(qmodel, [(images(16) if batch is None else batch, None)], method,
              unsigned_activations=resolved.unsigned_activations)
    return qmodel
