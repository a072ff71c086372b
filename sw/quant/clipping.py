"""Clipping: a quantizer's amax as a function of its bit width.

Calibration collects statistics once; a `Clipping` turns them into amax for any bit width, on
demand and cached per (bits, signedness), so a 3-bit candidate of the search is priced with
3-bit clipping, not with the 8-bit range it was calibrated at.

- `HistogramClipping` works on the calibration histogram of |x| (pytorch-quantization's
  `HistogramCalibrator`): `percentile` (independent of bits by definition), `entropy` (the
  threshold minimising the KL divergence between the histogram and its `2^(b-1+u)`-level
  quantization, TensorRT's rule as in the library) and `mse` (the amax minimising the
  histogram-weighted error of the project's fake-quant formula at b bits). Both search all
  candidate thresholds at once (vectorised), not one by one.
- `AciqClipping`: analytical clipping of Banner et al. ("Post training 4-bit quantization of
  convolutional networks for rapid-deployment", NeurIPS 2019, ACIQ): a Laplace (b) or Gaussian
  (sigma) prior fitted to the centred distribution, clipped at `mean +- alpha*(bits) * b`.
- `MaxClipping`: amax = the observed |x| maximum at every bit width.

Clippings hold tensors shaped like the quantizer's amax (per tensor, or per output channel for
weights), serialise to JSON (`to_json` / `clipping_from_json`, no pickle) and set a quantizer's
amax for its current bits with `apply(quantizer)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from sw.core.limits import HISTOGRAM_METHODS, MAX_BITS
from sw.quant.adapter import calibrator_histogram, set_amax

PRIORS = ("laplace", "gauss")
MAX_BINS = 8192  # a histogram that grew beyond this (a later batch far wider than the first) is merged down
START_FRACTION = 16  # entropy/mse never clip below 1/16 of the observed range (the library's 128 of 2048 bins)
_ROWS_PER_CHUNK = 1 << 22  # elements per vectorised block: bounds memory for huge histograms or 16 bits


# -- the calibration histogram ---------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Histogram:
    """Counts of |x| in equal-width bins from 0 (`edges` has one more entry than `counts`)."""

    counts: np.ndarray  # float64
    edges: np.ndarray  # float64

    @classmethod
    def from_calibrator(cls, calibrator) -> "Histogram | None":
        """The histogram a pytorch-quantization `HistogramCalibrator` collected (None if nothing was)."""
        hist, edges = calibrator_histogram(calibrator)
        if hist is None or edges is None:
            return None
        counts = torch.as_tensor(hist).double().round().numpy() if isinstance(hist, torch.Tensor) else np.asarray(hist)
        edges = edges.double().numpy() if isinstance(edges, torch.Tensor) else np.asarray(edges, dtype=np.float64)
        return cls(np.asarray(counts, dtype=np.float64), edges).merged(MAX_BINS)

    def merged(self, max_bins: int) -> "Histogram":
        """This histogram with groups of k neighbouring bins summed, k the least that gives <= max_bins."""
        k = -(-len(self.counts) // max_bins)
        if k <= 1:
            return self
        n = -(-len(self.counts) // k)
        counts = np.zeros(n * k)
        counts[: len(self.counts)] = self.counts
        width = (self.edges[-1] - self.edges[0]) / len(self.counts)
        edges = self.edges[0] + width * k * np.arange(n + 1)
        edges[: len(self.edges[::k])] = self.edges[::k]
        return Histogram(counts.reshape(n, k).sum(axis=1), edges)

    def to_json(self) -> dict[str, Any]:
        return {"counts": [int(c) for c in self.counts], "edges": [float(e) for e in self.edges]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Histogram":
        counts = np.asarray(data["counts"], dtype=np.float64)
        edges = np.asarray(data["edges"], dtype=np.float64)
        if counts.ndim != 1 or edges.shape != (len(counts) + 1,) or len(counts) < 2 or (counts < 0).any():
            raise ValueError(f"expected n >= 2 non-negative counts and n + 1 edges, got {counts.shape} and {edges.shape}")
        return cls(counts, edges)

    @property
    def centers(self) -> np.ndarray:
        """Bin centres in fp32, computed as the library does: (left + right) / 2 of fp32 edges."""
        edges = self.edges.astype(np.float32)
        return (edges[1:] + edges[:-1]) / np.float32(2)

    @property
    def start_bin(self) -> int:
        return max(1, len(self.counts) // START_FRACTION)


def percentile_amax(hist: Histogram, percentile: float) -> float:
    """The bin edge below which `percentile` % of the values lie (the library's rule)."""
    cdf = np.cumsum(hist.counts / hist.counts.sum())
    return float(hist.edges[min(int(np.searchsorted(cdf, percentile / 100.0)), len(hist.edges) - 1)])


def entropy_divergences(hist: Histogram, bits: int, unsigned: bool) -> tuple[np.ndarray, np.ndarray]:
    """KL(P || Q_i) for every threshold bin i in [start_bin, n], all at once.

    P is the histogram up to bin i with everything beyond added to bin i-1; Q_i spreads the
    counts of each of the `2^(b-1+u)` equal chunks of bins [0, i) evenly over its non-empty
    bins (bin j falls in chunk floor(j * levels / i)); both are normalised. As in
    pytorch-quantization, bin 0 (the zeros after a ReLU) takes the count of bin 1. Sums over
    chunks come from prefix sums, so each threshold costs O(levels), not O(n).
    Returns (thresholds i, divergences); infinite where P has mass that Q_i has not.
    """
    c = hist.counts.astype(np.float64).copy()
    c[0] = c[1]
    n, total = len(c), c.sum()
    levels = 1 << (bits - 1 + int(unsigned))
    thresholds = np.arange(min(hist.start_bin, n), n + 1)
    prefix = np.concatenate([[0.0], np.cumsum(c)])
    nonzero = np.concatenate([[0], np.cumsum(c > 0)])
    clogc = np.concatenate([[0.0], np.cumsum(np.where(c > 0, c * np.log(np.where(c > 0, c, 1.0)), 0.0))])

    def xlogx(v: np.ndarray) -> np.ndarray:
        return np.where(v > 0, v * np.log(np.where(v > 0, v, 1.0)), 0.0)

    i = thresholds
    tail = total - prefix[i]
    last = c[i - 1]
    p_last = last + tail
    # sum_j p_j log p_j: the prefix up to i-1, then the last bin with the tail added to it
    plogp = clogc[i - 1] + xlogx(p_last)
    # sum_j p_j log q_j = sum over chunks s_k log(s_k / nz_k) + tail * log q(last bin)
    # thresholds of at most `levels` bins: every chunk holds one bin, Q equals the histogram on [0, i)
    plogq = clogc[i].copy()
    q_last = last.copy()
    k = np.arange(levels, dtype=np.int64)
    rows = max(1, _ROWS_PER_CHUNK // levels)
    wide = np.flatnonzero(i > levels)
    for lo in range(0, len(wide), rows):
        at = wide[lo:lo + rows]
        ii = i[at].astype(np.int64)
        starts = (k[None, :] * ii[:, None] + levels - 1) // levels
        ends = ((k[None, :] + 1) * ii[:, None] + levels - 1) // levels
        s = prefix[ends] - prefix[starts]
        nz = nonzero[ends] - nonzero[starts]
        safe = np.where(nz > 0, nz, 1)
        plogq[at] = np.where(nz > 0, s * np.log(np.where(s > 0, s, 1.0) / safe), 0.0).sum(axis=1)
        k_last = ((ii - 1) * levels) // ii
        q_last[at] = s[np.arange(len(ii)), k_last] / safe[np.arange(len(ii)), k_last]
    with np.errstate(divide="ignore", invalid="ignore"):
        plogq = plogq + np.where(tail > 0, tail * np.log(q_last), 0.0)
        kl = (plogp - plogq) / total + np.log(prefix[i] / total)
    kl = np.where((last == 0) & (tail > 0), np.inf, kl)
    kl = np.where(prefix[i] > 0, kl, np.inf)
    return thresholds, kl


def entropy_amax(hist: Histogram, bits: int, unsigned: bool) -> float:
    """The threshold (a bin edge) of least KL divergence; the last of equal minima, as the library."""
    thresholds, kl = entropy_divergences(hist, bits, unsigned)
    best = len(kl) - 1 - int(np.argmin(kl[::-1]))
    return float(hist.edges[thresholds[best]])


def quantization_errors(hist: Histogram, bits: int, unsigned: bool, candidates: np.ndarray) -> np.ndarray:
    """Histogram-weighted squared error of fake-quantizing the bin centres with each candidate amax.

    The fake quantization is the project's formula in fp32 (`scale = max_bound / amax`,
    round half to even, clamp, divide); only |x| is histogrammed, so the positive bound applies.
    """
    centers32 = torch.as_tensor(hist.centers)
    centers = centers32.double()
    counts = torch.as_tensor(hist.counts, dtype=torch.float64)
    max_bound = torch.tensor(2.0 ** (bits - 1 + int(unsigned)) - 1.0)
    amax = torch.as_tensor(candidates, dtype=torch.float32)
    errors = torch.empty(len(amax), dtype=torch.float64)
    rows = max(1, _ROWS_PER_CHUNK // len(centers))
    for lo in range(0, len(amax), rows):
        scale = (max_bound / amax[lo:lo + rows])[:, None]
        q = (centers32[None, :] * scale).round_().clamp_(max=float(max_bound)).div_(scale)
        errors[lo:lo + rows] = ((q.double() - centers) ** 2 * counts).sum(dim=1)
    return errors.numpy()


def mse_amax(hist: Histogram, bits: int, unsigned: bool) -> float:
    """The bin centre (from `start_bin` on) whose use as amax gives the least quantization error."""
    candidates = hist.centers[min(hist.start_bin, len(hist.centers) - 1):]
    return float(candidates[int(np.argmin(quantization_errors(hist, bits, unsigned, candidates)))])


# -- ACIQ -------------------------------------------------------------------------------------------
def _laplace_mse(alpha: float, levels_exp: int) -> float:
    """E[(X - Q(X))^2] / b^2 for X ~ Laplace(0, b) clipped at alpha*b, 2^M uniform levels."""
    return 2.0 * math.exp(-alpha) + alpha ** 2 / (3.0 * 4.0 ** levels_exp)


def _gauss_mse(alpha: float, levels_exp: int) -> float:
    """E[(X - Q(X))^2] / sigma^2 for X ~ N(0, sigma^2) clipped at alpha*sigma, 2^M uniform levels."""
    tail = 0.5 * math.erfc(alpha / math.sqrt(2.0))
    density = math.exp(-alpha ** 2 / 2.0) / math.sqrt(2.0 * math.pi)
    return 2.0 * ((1.0 + alpha ** 2) * tail - alpha * density) + alpha ** 2 / (3.0 * 4.0 ** levels_exp)


@lru_cache(maxsize=None)
def aciq_factor(bits: int, prior: str = "laplace") -> float:
    """alpha / b (Laplace) or alpha / sigma (Gauss) minimising clipping + rounding noise at `bits`.

    Clipping noise of the tails plus the uniform rounding noise `alpha^2 / (3 * 4^bits)` of
    2^bits levels over [-alpha, alpha]; minimised numerically (Brent, bounded).
    """
    noise = {"laplace": _laplace_mse, "gauss": _gauss_mse}[prior]
    result = minimize_scalar(lambda a: noise(a, bits), bounds=(1e-3, 100.0), method="bounded",
                             options={"xatol": 1e-10})
    return float(result.x)


@lru_cache(maxsize=None)
def _factor_table(prior: str) -> torch.Tensor:
    """aciq_factor for 0 .. MAX_BITS + 1 bits (index = bits), for per-channel lookups."""
    return torch.tensor([aciq_factor(b, prior) if b else 0.0 for b in range(MAX_BITS + 2)], dtype=torch.float64)


# -- clippings --------------------------------------------------------------------------------------
def _bits_key(bits) -> Any:
    return int(bits) if not isinstance(bits, torch.Tensor) else tuple(int(b) for b in bits.flatten().tolist())


class Clipping:
    """Base: amax for a bit width (int, or a per-channel tensor of bits), cached per (bits, unsigned)."""

    kind: ClassVar[str] = ""
    per_channel_bits: ClassVar[bool] = False  # can give every channel its own bit width

    def __init__(self) -> None:
        self._cache: dict[Any, torch.Tensor] = {}

    def amax(self, bits, unsigned: bool) -> torch.Tensor:
        key = (_bits_key(bits), bool(unsigned))
        value = self._cache.get(key)
        if value is None:
            value = self._cache[key] = self._amax(bits, bool(unsigned)).to(torch.float32)
        return value

    def _amax(self, bits, unsigned: bool) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def channel_bits(self, bits: int, unsigned: bool = False) -> torch.Tensor | None:
        """Per-channel bit widths for a tensor budget of `bits` (None: every channel gets `bits`)."""
        return None

    def apply(self, quantizer) -> None:
        """Set the quantizer's amax (and per-channel bits, where allocated) for its current bits."""
        channel_bits = self.channel_bits(quantizer.num_bits, quantizer.unsigned)
        if hasattr(quantizer, "channel_bits"):
            quantizer.channel_bits = channel_bits
        set_amax(quantizer, self.amax(quantizer.num_bits if channel_bits is None else channel_bits, quantizer.unsigned))

    def to_json(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError


def _tensor_json(t: torch.Tensor) -> dict[str, Any]:
    return {"shape": list(t.shape), "values": t.flatten().tolist()}


def _tensor_from_json(data: dict[str, Any]) -> torch.Tensor:
    return torch.tensor(data["values"], dtype=torch.float64).reshape(data["shape"])


class MaxClipping(Clipping):
    """amax = the observed |x| maximum (per tensor or per channel), whatever the bits."""

    kind = "max"
    per_channel_bits = True

    def __init__(self, absmax: torch.Tensor):
        super().__init__()
        self.absmax = torch.as_tensor(absmax, dtype=torch.float64)

    def _amax(self, bits, unsigned: bool) -> torch.Tensor:
        return self.absmax.clone()

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "absmax": _tensor_json(self.absmax)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "MaxClipping":
        return cls(_tensor_from_json(data["absmax"]))


class HistogramClipping(Clipping):
    """percentile / entropy / mse amax of one per-tensor calibration histogram."""

    kind = "histogram"

    def __init__(self, method: str, histogram: Histogram, percentile: float = 99.99, shape: tuple[int, ...] = ()):
        super().__init__()
        if method not in HISTOGRAM_METHODS:
            raise ValueError(f"unknown histogram method {method!r}, expected one of {', '.join(HISTOGRAM_METHODS)}")
        self.method, self.histogram, self.percentile, self.shape = method, histogram, float(percentile), tuple(shape)

    def _amax(self, bits, unsigned: bool) -> torch.Tensor:
        if isinstance(bits, torch.Tensor):
            raise ValueError("histogram clipping is per tensor: one bit width")
        if self.method == "percentile":
            value = percentile_amax(self.histogram, self.percentile)
        elif self.method == "entropy":
            value = entropy_amax(self.histogram, int(bits), unsigned)
        else:
            value = mse_amax(self.histogram, int(bits), unsigned)
        return torch.full(self.shape, value, dtype=torch.float64)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "method": self.method, "percentile": self.percentile, "shape": list(self.shape),
                "histogram": self.histogram.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "HistogramClipping":
        return cls(data["method"], Histogram.from_json(data["histogram"]), data["percentile"], tuple(data["shape"]))


@dataclass
class Moments:
    """What ACIQ needs of a tensor's values (per tensor or per channel, shaped like amax)."""

    mean: torch.Tensor
    b: torch.Tensor  # mean |x - mean|: the Laplace scale
    sigma: torch.Tensor  # standard deviation: the Gaussian scale
    lo: torch.Tensor  # observed minimum
    hi: torch.Tensor  # observed maximum

    @classmethod
    def of(cls, x: torch.Tensor, axis: int | None = None) -> "Moments":
        """Exact moments of `x`, over all values or per index of `axis` (kept as a size-1-padded shape)."""
        x = x.detach().double()
        if axis is None:
            flat = x.reshape(1, -1)
            shape: tuple[int, ...] = ()
        else:
            flat = x.movedim(axis, 0).reshape(x.shape[axis], -1)
            shape = tuple(x.shape[axis] if d == axis else 1 for d in range(x.dim()))
        mean = flat.mean(dim=1, keepdim=True)
        b = (flat - mean).abs().mean(dim=1)
        sigma = flat.std(dim=1, unbiased=False)
        return cls(*(t.reshape(shape) for t in (mean.squeeze(1), b, sigma, flat.min(dim=1).values,
                                                flat.max(dim=1).values)))

    def to_json(self) -> dict[str, Any]:
        return {k: _tensor_json(getattr(self, k)) for k in ("mean", "b", "sigma", "lo", "hi")}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Moments":
        return cls(*(_tensor_from_json(data[k]) for k in ("mean", "b", "sigma", "lo", "hi")))


class RunningMoments:
    """`Moments` of every value a quantizer sees during calibration, accumulated batch by batch.

    mean, sigma, min and max are exact over all batches; b = mean |x - mean| is centred on
    each batch's own mean and averaged over batches weighted by their sizes (one pass, as the
    cnn-quantization project collects it), which differs from the global one by at most the
    spread of the batch means.
    """

    def __init__(self) -> None:
        self.count = 0
        self.sum = self.sumsq = self.abs_dev = 0.0
        self.lo, self.hi = math.inf, -math.inf

    def __call__(self, module, inputs) -> None:
        self.add(inputs[0])

    def add(self, x: torch.Tensor) -> None:
        x = x.detach()
        if x.numel() == 0:
            return
        mean = x.mean(dtype=torch.float64)
        self.count += x.numel()
        self.sum += float(x.sum(dtype=torch.float64))
        self.sumsq += float((x.double() ** 2).sum())
        self.abs_dev += float((x.double() - mean).abs().sum())
        self.lo = min(self.lo, float(x.min()))
        self.hi = max(self.hi, float(x.max()))

    @property
    def absmax(self) -> float:
        return max(abs(self.lo), abs(self.hi))

    def moments(self) -> Moments:
        mean = self.sum / self.count
        variance = max(self.sumsq / self.count - mean ** 2, 0.0)
        values = (mean, self.abs_dev / self.count, math.sqrt(variance), self.lo, self.hi)
        return Moments(*(torch.tensor(v, dtype=torch.float64) for v in values))


class AciqClipping(Clipping):
    """Analytical clipping (ACIQ): the interval `mean +- alpha`, `alpha = factor(bits) * scale`.

    `scale` is b (Laplace) or sigma (Gauss) of the centred distribution, and the interval is
    never wider than the observed [min, max]. ACIQ's alpha belongs to a quantizer with 2^M
    levels from -alpha to alpha (step `2 alpha / (2^M - 1)`, the cnn-quantization project's);
    pytorch-quantization's signed grid has step `amax / (2^(M-1) - 1)`, so the half-width is
    scaled by `(2^M - 2) / (2^M - 1)` to keep ACIQ's step, and the symmetric quantizer takes
    amax = max(|low end|, |high end|). Unsigned data (after a ReLU) is quantized on [0, high
    end] with all 2^M levels: the factor of M + 1 bits and no scaling, as the project's
    "positive" table. Per-channel bits (bit allocation) give each channel its own factor.
    """

    kind = "aciq"
    per_channel_bits = True

    def __init__(self, moments: Moments, prior: str = "laplace"):
        super().__init__()
        if prior not in PRIORS:
            raise ValueError(f"unknown ACIQ prior {prior!r}, expected one of {', '.join(PRIORS)}")
        self.moments, self.prior = moments, prior

    def _amax(self, bits, unsigned: bool) -> torch.Tensor:
        m = self.moments
        bits = torch.as_tensor(bits, dtype=torch.long)
        table = _factor_table(self.prior)
        alpha = table[(bits + int(unsigned)).clamp(1, len(table) - 1)] * (m.b if self.prior == "laplace" else m.sigma)
        if not unsigned:
            levels = 2.0 ** bits.double()
            alpha = alpha * (levels - 2) / (levels - 1)
        high = torch.minimum(m.mean + alpha, m.hi)
        value = high if unsigned else torch.maximum(torch.maximum(m.mean - alpha, m.lo).abs(), high.abs())
        absmax = torch.maximum(m.lo.abs(), m.hi.abs())
        return torch.where(alpha > 0, value, absmax)  # a constant tensor (no spread) keeps its value

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "prior": self.prior, "moments": self.moments.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "AciqClipping":
        return cls(Moments.from_json(data["moments"]), data["prior"])


CLIPPINGS: dict[str, type] = {c.kind: c for c in (MaxClipping, HistogramClipping, AciqClipping)}


def register_clipping(cls: type) -> type:
    """Class decorator: make a clipping kind defined in a module above this one (bit allocation)
    readable by `clipping_from_json`."""
    if CLIPPINGS.setdefault(cls.kind, cls) is not cls:
        raise ValueError(f"clipping kind {cls.kind!r} is registered twice")
    return cls


def clipping_from_json(data: dict[str, Any]) -> Clipping:
    """Rebuild a clipping written by `to_json` (raises KeyError/ValueError/TypeError on a bad entry)."""
    kind = data["kind"]
    if kind not in CLIPPINGS:
        raise ValueError(f"unknown clipping kind {kind!r}")
    return CLIPPINGS[kind].from_json(data)


def select_clipping(quantizer, method: str | None) -> None:
    """Make one of a quantizer's prepared clippings (`quantizer.clippings`, by method) the active
    one; None selects the calibrated default. Quantizers with one clipping ignore it."""
    choices = getattr(quantizer, "clippings", None)
    if not choices:
        return
    key = quantizer.clipping_default if method is None else method
    if key not in choices:
        raise ValueError(f"no {key!r} clipping was calibrated (prepared: {', '.join(choices)})")
    quantizer.clipping = choices[key]


def apply_clipping(quantizer) -> None:
    """Set amax for the quantizer's current bits if it has a bit-dependent clipping (else leave it)."""
    clipping = getattr(quantizer, "clipping", None)
    if clipping is not None:
        clipping.apply(quantizer)
