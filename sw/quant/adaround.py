"""Learned rounding of weights (AdaRound, Nagel et al. 2020): the numerics, independent of any model.

Round-to-nearest is not the best rounding for a layer's output: AdaRound learns, for every
weight, whether its code is `floor(w * scale)` or one more. During learning the choice is soft,
`h(V) = clamp(sigmoid(V) * (ZETA - GAMMA) + GAMMA, 0, 1)` (the rectified sigmoid), pushed to 0 or 1
by the regulariser `sum(1 - |2h - 1|^beta)` while `beta` anneals from 20 to 2; afterwards the
rounding is hard: up where `V >= 0`. Codes stay on the quantizer's integer grid (`QuantParams`:
any preset, per tensor or per channel), so a learned weight is a value the quantizer maps back to
exactly its code.

`LearnedRounding` keeps the hard choices of one weight tensor for each weight bit width a
reconstruction was run for (`sw.model.reconstruction` learns them on calibration data).
"""

from __future__ import annotations

import math

import torch

from sw.quant.presets import QuantParams

ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch (the paper's values)
BETA_START, BETA_END = 20.0, 2.0


def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    """h(V) in [0, 1]: the soft "round up" of each weight (exactly 0 or 1 away from V = 0)."""
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def initial_v(w: torch.Tensor, params: QuantParams) -> torch.Tensor:
    """V with h(V) = the fractional part of w * scale: the soft rounding starts at the fp32 weight."""
    scale, _ = params.broadcast(w)
    scaled = w.float() * scale
    rest = (scaled - torch.floor(scaled)).clamp(1e-4, 1 - 1e-4)
    return -torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1.0)


def rounding_regulariser(h: torch.Tensor, beta: float) -> torch.Tensor:
    """sum(1 - |2h - 1|^beta): 0 when every h is 0 or 1, largest at h = 1/2."""
    return (1.0 - (2.0 * h - 1.0).abs().pow(beta)).sum()


def beta_schedule(step: int, steps: int, warmup: float = 0.2) -> float | None:
    """The regulariser's exponent at `step`: None during the warm-up (no regulariser), then a
    cosine decay from BETA_START to BETA_END (the AdaRound reference schedule's shape)."""
    start = int(warmup * steps)
    if step < start:
        return None
    progress = (step - start) / max(1, steps - start)
    return BETA_END + 0.5 * (BETA_START - BETA_END) * (1.0 + math.cos(progress * math.pi))


def rounded_weight(w: torch.Tensor, params: QuantParams, up: torch.Tensor) -> torch.Tensor:
    """The dequantized weight with codes `clamp(floor(w * scale) + up + zp, lo, hi)`; `up` may be
    soft (h(V), differentiable) or hard (0/1)."""
    scale, zp = params.broadcast(w)
    codes = torch.clamp(torch.floor(w.float() * scale) + up + zp, params.lo, params.hi)
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    return torch.where(scale == 0, torch.zeros_like(codes), (codes - zp) / safe)


def nearest_up(w: torch.Tensor, params: QuantParams) -> torch.Tensor:
    """The hard choice round-to-nearest makes (round half to even), as 0/1 per weight."""
    scale, _ = params.broadcast(w)
    scaled = w.float() * scale
    return (torch.round(scaled) - torch.floor(scaled)).to(torch.uint8)


class LearnedRounding:
    """The learned up/down choice of every weight of one tensor, per weight bit width."""

    def __init__(self) -> None:
        self.choices: dict[int, torch.Tensor] = {}  # uint8 0/1, the weight's shape

    def get(self, bits: int) -> torch.Tensor | None:
        return self.choices.get(int(bits))

    def set(self, bits: int, up: torch.Tensor) -> None:
        self.choices[int(bits)] = up.to(torch.uint8)
