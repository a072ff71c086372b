"""Stimulus for the converter: configurations, float value classes, codes and tensor lengths.

Everything draws from a numpy Generator so a seed reproduces a run.
"""

from __future__ import annotations

import math

import numpy as np

from refmodel import QuantConfig, bounds

# Float value classes (what the quantizer sees); each is hit per bit width in coverage.
VALUE_CLASSES = ("random", "inrange", "tie", "boundary", "saturation", "tiny", "subnormal", "zero", "nan_inf")
# Scale kinds: how the tensor's scale register is chosen.
SCALE_KINDS = ("typical", "huge", "tiny", "zero", "negative", "special")
SCALE_WEIGHTS = (0.62, 0.1, 0.08, 0.07, 0.07, 0.06)
# Code classes (what the dequantizer and packer see).
CODE_CLASSES = ("extreme", "random", "quantized")

F32_MAX = np.float32(np.finfo(np.float32).max)


def all_widths() -> list[tuple[int, bool]]:
    """Every (bits, signed) pair the converter accepts: 1..16 unsigned, 2..16 signed."""
    return [(b, False) for b in range(1, 17)] + [(b, True) for b in range(2, 17)]


def f32(x) -> np.float32:
    with np.errstate(all="ignore"):
        return np.float32(x)


def choose_scale(rng: np.random.Generator, bits: int, signed: bool, kind: str | None = None) -> tuple[float, str]:
    """A scale register value and its kind; 'typical' is pytorch-quantization's max_bound / amax."""
    if kind is None:
        kind = str(rng.choice(SCALE_KINDS, p=SCALE_WEIGHTS))
    max_bound = np.float32(2.0 ** (bits - 1 + (0 if signed else 1)) - 1.0)
    if kind == "typical":
        amax = f32(2.0 ** rng.uniform(-10, 10))
        return float(max_bound / amax), kind
    if kind == "negative":
        amax = f32(2.0 ** rng.uniform(-6, 6))
        return float(-(max_bound / amax)), kind
    if kind == "huge":  # maps subnormal inputs into the integer range
        return float(f32(2.0 ** rng.uniform(100, 127.9))), kind
    if kind == "tiny":  # subnormal or very small scale
        if rng.random() < 0.5:
            return float(np.uint32(rng.integers(1, 1 << 23)).view(np.float32)), kind
        return float(f32(2.0 ** rng.uniform(-126, -90))), kind
    if kind == "zero":  # pytorch-quantization's amax <= 2^-24 case
        return (-0.0 if rng.random() < 0.3 else 0.0), kind
    if kind == "special":
        return float(rng.choice([np.inf, -np.inf, np.nan])), kind
    raise ValueError(f"unknown scale kind {kind!r}")


def _ulps(x: np.float32, k: int) -> np.float32:
    """x moved by k units in the last place."""
    step = np.float32(np.inf if k > 0 else -np.inf)
    for _ in range(abs(k)):
        x = np.nextafter(x, step)
    return np.float32(x)


def _x_for_product(t: float, scale: np.float32, rng: np.random.Generator, exact: bool) -> np.float32:
    """A float32 x with float32(x * scale) equal (exact=True, when one exists nearby) or close to t."""
    if not np.isfinite(scale) or scale == 0:
        return f32(t)
    x0 = f32(t / float(scale))
    if not np.isfinite(x0):
        x0 = np.float32(math.copysign(F32_MAX, t / float(scale)))
    if not exact:
        return _ulps(x0, int(rng.integers(-2, 3)))
    best, best_err = x0, math.inf
    with np.errstate(all="ignore"):
        for k in (0, -1, 1, -2, 2, -3, 3):
            x = _ulps(x0, k)
            p = x * scale
            if p == np.float32(t):
                return x
            err = abs(float(p) - t)
            if err < best_err:
                best, best_err = x, err
    return best


def gen_value(rng: np.random.Generator, cls: str, cfg: QuantConfig) -> np.float32:
    """One float32 input of the given class for a configuration."""
    lo, hi = bounds(cfg.bits, cfg.signed, cfg.narrow)
    scale = np.float32(cfg.scale)
    sign = -1.0 if rng.random() < 0.5 else 1.0
    if cls == "random":
        while True:
            b = np.uint32(rng.integers(0, 1 << 32))
            if (b >> 23) & 0xFF != 0xFF:
                return b.view(np.float32)
    if cls == "inrange":
        return _x_for_product(rng.uniform(lo - 1, hi + 1), scale, rng, exact=False)
    if cls == "tie":
        k = int(rng.integers(lo - 1, hi + 1))
        return _x_for_product(k + 0.5, scale, rng, exact=True)
    if cls == "boundary":
        t = float(rng.choice([hi + 0.5, lo - 0.5, 0.5, -0.5, hi, lo, hi + 1, lo - 1, 1.5, -1.5]))
        return _x_for_product(t, scale, rng, exact=rng.random() < 0.5)
    if cls == "saturation":
        t = sign * (hi + 1) * 2.0 ** rng.uniform(0, 40)
        return _x_for_product(t, scale, rng, exact=False) if rng.random() < 0.8 else np.float32(sign * F32_MAX)
    if cls == "tiny":
        t = sign * rng.uniform(0, 0.5) * 2.0 ** -rng.uniform(0, 30)
        return _x_for_product(t, scale, rng, exact=False)
    if cls == "subnormal":
        b = np.uint32(rng.integers(1, 1 << 23)) | np.uint32(0x80000000 if sign < 0 else 0)
        return np.uint32(b).view(np.float32)
    if cls == "zero":
        return np.float32(-0.0 if sign < 0 else 0.0)
    if cls == "nan_inf":
        choice = int(rng.integers(0, 4))
        if choice == 0:
            return np.float32(np.inf)
        if choice == 1:
            return np.float32(-np.inf)
        payload = int(rng.integers(1, 1 << 22)) | (0x400000 if choice == 2 else 0)  # quiet / signalling
        return np.uint32(0x7F800000 | payload | (0x80000000 if sign < 0 else 0)).view(np.float32)
    raise ValueError(f"unknown value class {cls!r}")


def gen_values(rng: np.random.Generator, cfg: QuantConfig, n: int, classes=VALUE_CLASSES) -> tuple[np.ndarray, list[str]]:
    """n float32 inputs, each of a random class; returns (values, class per value)."""
    labels = [str(c) for c in rng.choice(classes, size=n)]
    values = np.array([gen_value(rng, c, cfg) for c in labels], dtype=np.float32)
    return values, labels


def gen_codes(rng: np.random.Generator, bits: int, signed: bool, n: int) -> tuple[list[int], str]:
    """n b-bit code patterns: extremes (min, max, 0, +-1) mixed in, or uniformly random."""
    cls = str(rng.choice(["extreme", "random"]))
    mask = (1 << bits) - 1
    if cls == "extreme":
        lo, hi = bounds(bits, signed, False)
        pool = [lo & mask, hi & mask, 0, 1 & mask, -1 & mask]
        codes = [int(rng.choice(pool)) if rng.random() < 0.6 else int(rng.integers(0, 1 << bits)) for _ in range(n)]
    else:
        codes = [int(c) for c in rng.integers(0, 1 << bits, size=n)]
    return codes, cls


def gen_length(rng: np.random.Generator, bits: int, word_w: int, max_len: int) -> int:
    """A tensor length: 1, an exact multiple of the word, a straddling length, or random."""
    fill = word_w // math.gcd(word_w, bits)  # values that end exactly on a word boundary
    kind = int(rng.integers(0, 6))
    if kind == 0:
        return 1
    if kind == 1 and fill <= max_len:
        return fill * int(rng.integers(1, max(1, max_len // fill) + 1))
    if kind == 2 and fill + 1 <= max_len:
        return fill + 1
    return int(rng.integers(1, max_len + 1))
