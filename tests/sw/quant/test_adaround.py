"""AdaRound's numerics against formulas written out here: the rectified sigmoid, its start at the
fp32 weight, the regulariser, the annealing, and codes that stay on the quantizer's grid."""

from __future__ import annotations

import math

import pytest
import torch

from sw.quant.adaround import (
    BETA_END,
    BETA_START,
    LearnedRounding,
    beta_schedule,
    initial_v,
    nearest_up,
    rectified_sigmoid,
    rounded_weight,
    rounding_regulariser,
)
from sw.quant.presets import QuantParams


def _params(scale: torch.Tensor, bits: int = 3, axis: int | None = 0) -> QuantParams:
    return QuantParams(bits, scale.float(), torch.zeros(scale.shape, dtype=torch.int64),
                       -(2 ** (bits - 1)), 2 ** (bits - 1) - 1, axis)


def test_rectified_sigmoid_is_the_stretched_clamped_sigmoid():
    v = torch.linspace(-8, 8, 101)
    expected = [min(1.0, max(0.0, 1.2 / (1.0 + math.exp(-float(x))) - 0.1)) for x in v]
    assert torch.allclose(rectified_sigmoid(v), torch.tensor(expected), atol=1e-6)
    assert float(rectified_sigmoid(torch.tensor(0.0))) == pytest.approx(0.5)


def test_soft_rounding_starts_at_the_fp32_weight():
    torch.manual_seed(0)
    w = torch.randn(4, 3, 3, 3)
    params = _params(torch.tensor([3.0, 7.5, 12.0, 0.8]).reshape(4), bits=8)
    soft = rounded_weight(w, params, rectified_sigmoid(initial_v(w, params)))
    assert torch.allclose(soft, w, atol=1e-3 / 0.8)


def test_regulariser_is_zero_at_decided_weights_and_largest_at_one_half():
    decided = torch.tensor([0.0, 1.0, 0.0, 1.0])
    assert float(rounding_regulariser(decided, 5.0)) == 0.0
    half = torch.full((4,), 0.5)
    assert float(rounding_regulariser(half, 5.0)) == pytest.approx(4.0)
    h = torch.tensor([0.3], requires_grad=True)
    rounding_regulariser(h, 2.0).backward()
    assert float(h.grad) > 0  # descending it moves h below 0.3, towards 0: away from 1/2


def test_beta_anneals_from_start_to_end_after_the_warm_up():
    steps = 1000
    assert beta_schedule(0, steps) is None and beta_schedule(199, steps) is None
    assert beta_schedule(200, steps) == pytest.approx(BETA_START)
    assert beta_schedule(steps, steps) == pytest.approx(BETA_END)
    values = [beta_schedule(s, steps) for s in range(200, steps)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_hard_rounding_stays_on_the_grid_within_one_step_of_nearest():
    torch.manual_seed(1)
    w = torch.randn(6, 5) * 0.7
    params = _params(torch.tensor([1.0, 2.5, 4.0, 0.5, 3.3, 9.0]))
    for trial in range(5):
        up = torch.randint(0, 2, w.shape, dtype=torch.uint8)
        value = rounded_weight(w, params, up.float())
        codes = params.codes(value)
        assert torch.equal(params.dequantize(codes), value)  # the quantizer maps it back to its code
        nearest = params.codes(w)
        assert int((codes - nearest).abs().max()) <= 1
        assert int(codes.min()) >= params.lo and int(codes.max()) <= params.hi
    assert torch.equal(rounded_weight(w, params, nearest_up(w, params).float()), params.dequantize(params.codes(w)))


def test_learned_rounding_keeps_one_choice_per_bit_width():
    rounding = LearnedRounding()
    rounding.set(3, torch.ones(2, 2))
    assert rounding.get(3).dtype == torch.uint8 and rounding.get(4) is None
