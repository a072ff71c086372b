"""Each clipping method against its criterion, computed independently (brute force), not only bounds.

- entropy: the threshold minimises the KL divergence over the histogram (a plain loop with
  scipy's entropy here), and equals pytorch-quantization's own (slow) search;
- mse: the amax minimises the histogram-weighted error of the library's fake quant at the
  candidate's bits (every candidate tried here);
- ACIQ: the clip factors match the published table, and on sampled Laplace / Gauss data the
  ACIQ amax is within a few percent of the best amax found by trying a grid;
- bit allocation: the paper's alpha^(2/3) rule, rounded, within the budget;
- bias correction: zero per-channel mean output error on the calibration batch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_quantization.calib.histogram import HistogramCalibrator
from pytorch_quantization.tensor_quant import fake_tensor_quant
from scipy.stats import entropy as scipy_entropy
from torch import nn

from sw.quant.adapter import calibrator_histogram, library_entropy_amax, library_percentile_amax
from sw.quant.bias_correction import BiasCorrection
from sw.quant.bit_allocation import ChannelBitAllocation, ChannelBitsQuantizer, allocate_channel_bits
from sw.quant.clipping import (
    AciqClipping,
    Histogram,
    HistogramClipping,
    MaxClipping,
    Moments,
    aciq_factor,
    clipping_from_json,
    entropy_amax,
    mse_amax,
)


def _histogram(kind: str, bins: int, seed: int = 0) -> Histogram:
    rng = np.random.default_rng(seed)
    x = np.abs(rng.laplace(size=50_000)) if kind == "laplace" else np.maximum(rng.normal(size=50_000), 0.0)
    counts, edges = np.histogram(x, bins=bins, range=(0.0, float(x.max())))
    if kind == "gappy":  # empty bins inside the range and a long empty stretch
        counts[bins // 3: bins // 3 + 7] = 0
        counts[bins // 2: bins // 2 + bins // 8] = 0
    return Histogram(counts.astype(np.float64), edges.astype(np.float32).astype(np.float64))


def brute_force_kl(hist: Histogram, bits: int, unsigned: bool) -> dict[int, float]:
    """KL(P || Q) per threshold bin i, straight from the definition, one threshold at a time."""
    bins = hist.counts.copy()
    bins[0] = bins[1]  # the library's rule: the zero bin takes the next bin's count
    levels = 2 ** (bits - 1 + int(unsigned))
    out = {}
    for i in range(hist.start_bin, len(bins) + 1):
        p = bins[:i].copy()
        p[-1] += bins[i:].sum()
        q = np.zeros(i)
        for chunk in range(levels):
            members = [j for j in range(i) if (j * levels) // i == chunk]
            nonzero = [j for j in members if bins[j] > 0]
            for j in nonzero:
                q[j] = bins[members].sum() / len(nonzero)
        out[i] = float(scipy_entropy(p, q)) if q.sum() > 0 else np.inf
    return out


@pytest.mark.parametrize("kind,bins", [("laplace", 160), ("relu", 131), ("gappy", 200)])
@pytest.mark.parametrize("bits,unsigned", [(2, False), (3, True), (4, False), (8, True)])
def test_entropy_threshold_minimises_kl(kind, bins, bits, unsigned):
    hist = _histogram(kind, bins)
    kl = brute_force_kl(hist, bits, unsigned)
    amax = entropy_amax(hist, bits, unsigned)
    chosen = int(np.flatnonzero(hist.edges == amax)[-1])
    best = min(kl.values())
    assert kl[chosen] <= best + 1e-9 * max(best, 1e-12), (chosen, kl[chosen], best)
    # and the same bin as pytorch-quantization's own loop (which returns it as fp32)
    library = float(library_entropy_amax(hist.counts.copy(), hist.edges, bits, unsigned, 1, hist.start_bin))
    assert np.float32(amax) == np.float32(library)


def test_entropy_follows_the_bits():
    hist = _histogram("laplace", 2048)
    amax = [entropy_amax(hist, b, False) for b in (2, 4, 8)]
    assert amax[0] < amax[1] < amax[2], amax


@pytest.mark.parametrize("kind,bins", [("laplace", 300), ("relu", 257), ("gappy", 400)])
@pytest.mark.parametrize("bits,unsigned", [(2, False), (3, True), (4, False), (6, True), (8, False)])
def test_mse_amax_minimises_quantization_error_at_the_candidates_bits(kind, bins, bits, unsigned):
    hist = _histogram(kind, bins, seed=1)
    centers = torch.tensor(hist.centers)
    counts = torch.tensor(hist.counts)

    def error(amax: float) -> float:
        quantized = fake_tensor_quant(centers, torch.tensor(amax, dtype=torch.float32), bits, unsigned)
        return float(((quantized.double() - centers.double()) ** 2 * counts).sum())

    errors = {float(c): error(float(c)) for c in centers[hist.start_bin:]}
    amax = mse_amax(hist, bits, unsigned)
    assert amax in errors, "amax must be one of the candidate bin centres"
    assert errors[amax] <= min(errors.values()) * (1 + 1e-12)


def test_percentile_is_bit_independent_and_the_librarys():
    hist = _histogram("laplace", 512)
    clipping = HistogramClipping("percentile", hist, 99.9)
    library = float(library_percentile_amax(hist.counts, hist.edges, 99.9))
    for bits in (2, 4, 8):
        assert float(clipping.amax(bits, False)) == np.float32(library)


# -- ACIQ ---------------------------------------------------------------------------------------------
PUBLISHED = {  # alpha / b (Laplace) and alpha / sigma (Gauss), Banner et al. 2019, at 2, 3, 4, 8 bits
    "laplace": {2: 2.83, 3: 3.89, 4: 5.03, 8: 9.89},
    "gauss": {2: 1.71, 3: 2.15, 4: 2.55, 8: 3.92},
}


@pytest.mark.parametrize("prior", ["laplace", "gauss"])
def test_aciq_factors_match_the_published_table(prior):
    for bits, published in PUBLISHED[prior].items():
        assert aciq_factor(bits, prior) == pytest.approx(published, abs=0.01), (prior, bits)


@pytest.mark.parametrize("prior", ["laplace", "gauss"])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_aciq_amax_is_near_the_best_clipping_for_its_prior(prior, bits):
    """On data drawn from the prior, fake quant at the ACIQ amax is within 5 % of the best amax of a grid."""
    gen = torch.Generator().manual_seed(bits)
    x = torch.randn(100_000, generator=gen)
    if prior == "laplace":
        x = torch.sign(x) * -torch.log(torch.rand(100_000, generator=gen))  # Laplace(0, 1)
    clipping = AciqClipping(Moments.of(x), prior)

    def error(amax: float) -> float:
        return float(((fake_tensor_quant(x, torch.tensor(amax), bits, False, False) - x) ** 2).mean())

    grid = np.linspace(0.05, float(x.abs().max()), 300)
    best = min(error(a) for a in grid)
    assert error(float(clipping.amax(bits, False))) <= 1.05 * best


def test_aciq_works_on_the_centred_distribution_within_the_observed_range():
    gen = torch.Generator().manual_seed(0)
    x = 5.0 + torch.randn(10_000, generator=gen)  # mean 5, sigma 1: clip around the mean, not around 0
    m = Moments.of(x)
    assert float(m.b) == pytest.approx(float((x - x.mean()).abs().mean()), rel=1e-6)
    clipping = AciqClipping(m, "gauss")
    alpha = aciq_factor(4, "gauss") * float(m.sigma) * (16 - 2) / (16 - 1)
    assert float(clipping.amax(4, False)) == pytest.approx(min(float(x.mean()) + alpha, float(x.max())), rel=1e-6)
    relu = torch.relu(torch.randn(10_000, generator=gen))
    unsigned = AciqClipping(Moments.of(relu), "laplace")
    mr = Moments.of(relu)
    assert float(unsigned.amax(3, True)) == pytest.approx(float(mr.mean + aciq_factor(4) * mr.b), rel=1e-6)
    assert float(unsigned.amax(16, True)) == pytest.approx(float(relu.max()))  # never beyond the data


# -- bit allocation ----------------------------------------------------------------------------------
def test_bit_allocation_follows_the_two_thirds_rule_within_the_budget():
    gen = torch.Generator().manual_seed(0)
    alpha = torch.exp(torch.randn(64, generator=gen))  # channel ranges over a factor of ~100
    for bits in (2, 3, 4, 6, 8):
        allocated = allocate_channel_bits(alpha, bits)
        assert allocated.min() >= 2 and allocated.max() <= 16
        assert float(allocated.double().mean()) <= bits, "the tensor's average budget is respected"
        # closed form: 2^M_i proportional to alpha_i^(2/3), i.e. M_i - log2(alpha_i^(2/3)) the same shift
        # for every unclamped channel, up to rounding
        free = (allocated > 2) & (allocated < 16)
        shift = allocated[free].double() - torch.log2(alpha[free].double()) * 2 / 3
        assert bits == 2 or float(shift.max() - shift.min()) <= 1.0 + 1e-9
        assert float(allocated.double().mean()) > bits - 1, "the budget is used, not wasted"
    # larger ranges get more bits; equal ranges get the budget exactly
    order = torch.argsort(alpha)
    assert torch.all(allocate_channel_bits(alpha, 4)[order].diff() >= 0)
    assert torch.equal(allocate_channel_bits(torch.ones(10), 5), torch.full((10,), 5))


def test_bit_allocation_lowers_rounding_noise_at_the_same_average():
    alpha = torch.tensor([0.1, 0.2, 0.5, 1.0, 3.0, 8.0])
    allocated = allocate_channel_bits(alpha, 4)
    noise = lambda bits: float((alpha.double() ** 2 / 4.0 ** bits.double()).sum())  # noqa: E731
    assert float(allocated.double().mean()) <= 4
    assert noise(allocated) < noise(torch.full((6,), 4))


def test_channel_bits_quantizer_is_each_channels_library_quantization():
    from pytorch_quantization.tensor_quant import QuantDescriptor

    gen = torch.Generator().manual_seed(3)
    w = torch.randn(6, 4, 3, 3, generator=gen)
    for narrow in (False, True):
        q = ChannelBitsQuantizer(QuantDescriptor(num_bits=4, axis=(0,), narrow_range=narrow))
        amax = w.abs().flatten(1).max(dim=1).values.reshape(6, 1, 1, 1) * torch.tensor([1, .5, .7, 1, .3, 1e-30]
                                                                                         ).reshape(6, 1, 1, 1)
        q.amax = amax.numpy()
        bits = torch.tensor([2, 3, 4, 5, 8, 6]).reshape(6, 1, 1, 1)
        q.channel_bits = bits
        out = q(w)
        for c in range(6):
            expected = fake_tensor_quant(w[c], amax[c], int(bits[c]), False, narrow)
            assert torch.equal(out[c].view(torch.int32), expected.view(torch.int32)), c


def test_allocation_round_trips_as_json():
    clipping = ChannelBitAllocation(MaxClipping(torch.tensor([0.1, 1.0, 4.0]).reshape(3, 1)))
    again = clipping_from_json(clipping.to_json())
    assert torch.equal(again.amax(4, False), clipping.amax(4, False))
    assert torch.equal(again.channel_bits(4), clipping.channel_bits(4))


# -- bias correction ---------------------------------------------------------------------------------
def _quantize_per_channel(w: torch.Tensor, bits: int) -> torch.Tensor:
    amax = w.abs().flatten(1).max(dim=1).values.reshape(-1, *([1] * (w.dim() - 1)))
    return fake_tensor_quant(w, amax, bits, False, False)


@pytest.mark.parametrize("layer", [
    nn.Conv2d(4, 6, 3, padding=1, stride=2, bias=False),
    nn.Conv2d(4, 8, 3, padding=2, dilation=2, groups=2, bias=True),
    nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False, padding_mode="reflect"),
    nn.Linear(12, 5),
])
@pytest.mark.parametrize("variance", [True, False], ids=["mean_variance", "mean"])
def test_bias_correction_zeroes_the_per_channel_mean_error_on_the_calibration_batch(layer, variance):
    torch.manual_seed(0)
    cin = layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels
    x = torch.rand(16, cin) + 0.5 if isinstance(layer, nn.Linear) else torch.rand(16, cin, 9, 9) + 0.5
    w = layer.weight.detach()
    wq = _quantize_per_channel(w, 3)
    correction = BiasCorrection.for_layer(layer, x.mean(dim=0), variance=variance)
    wc, bc = correction.correct(w, wq, layer.bias)

    def out(weight, bias):
        if isinstance(layer, nn.Linear):
            return nn.functional.linear(x, weight, bias)
        return layer._conv_forward(x, weight, bias)

    def channel_mean(y):
        return y.transpose(0, 1).reshape(y.shape[1], -1).mean(dim=1)

    reference = channel_mean(out(w, layer.bias))
    assert (channel_mean(out(wq, layer.bias)) - reference).abs().max() > 1e-3, "3-bit weights must show a bias"
    torch.testing.assert_close(channel_mean(out(wc, bc)), reference, atol=2e-5, rtol=0)
    if not variance:
        assert torch.equal(wc, wq), "mean correction alone leaves the quantized weights as they are"
        return
    # the per-channel spread of the weights is the fp32 one again (variance correction)
    spread = lambda t: (t.flatten(1) - t.flatten(1).mean(dim=1, keepdim=True)).norm(dim=1)  # noqa: E731
    torch.testing.assert_close(spread(wc), spread(w), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(spread(wq), spread(w), rtol=1e-3)
    # and the correction keeps the integer grid: channel c is xi_c times the quantized weights
    ratio = wc.flatten(1) / torch.where(wq.flatten(1) == 0, 1.0, wq.flatten(1))
    nonzero = wq.flatten(1) != 0
    for c in range(w.shape[0]):
        values = ratio[c][nonzero[c]]
        if len(values):
            torch.testing.assert_close(values, values[:1].expand_as(values), rtol=1e-5, atol=0)


def test_a_histogram_that_grew_is_merged_to_a_bounded_size():
    """A later batch far wider than the first grows the library's histogram (same bin width); it is
    merged down so that entropy and mse stay fast, keeping every count and the range."""
    from sw.quant.clipping import MAX_BINS

    calibrator = HistogramCalibrator(8, None, True, num_bins=2048)
    gen = torch.Generator().manual_seed(0)
    calibrator.collect(torch.rand(10_000, generator=gen))
    calibrator.collect(torch.rand(10_000, generator=gen) * 30)
    counts, edges = calibrator_histogram(calibrator)
    grown = len(counts)
    hist = Histogram.from_calibrator(calibrator)
    assert grown > MAX_BINS >= len(hist.counts) > MAX_BINS // 2
    assert hist.counts.sum() == float(counts.sum()) == 20_000
    assert hist.edges[0] == 0 and hist.edges[-1] >= float(edges[-1]) - 1e-3
    np.testing.assert_allclose(np.diff(hist.edges), np.diff(hist.edges)[0], rtol=1e-3)  # fp32 arange edges
    assert 0 < entropy_amax(hist, 4, True) <= hist.edges[-1] and 0 < mse_amax(hist, 4, True) <= hist.edges[-1]
