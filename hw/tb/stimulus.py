"""Stimulus for the converter: scales, float values, codes and tensor lengths, built on purpose.

Corner cases are constructed, not hoped for:
  * exact product midpoints: the scale and x are chosen so that the exact product x * scale
    is a 25-bit odd integer times a power of two, i.e. exactly halfway between two float32
    values, placed next to k + 0.5 so that the float32 rounding decides the code
    (`Midpoints`);
  * subnormal dequantize results: scales in [2^126, 2^128) with codes of magnitude 1..3;
  * subnormal inputs that give nonzero codes: scales near 2^127 and x = target / scale;
  * decisive integer ties: float32 products exactly k + 0.5 where k and k + 1 give
    different codes, in both directions of rounding half to even;
  * the other boundaries of the rounding datapath (boundaries.py): products whose float32
    rounding carries into a power of two, that only the sticky bits round up, next to an
    integer tie, one past the saturation bound, in the first saturating binade; x at the
    normal/subnormal edge; dequantize quotients just below powers of two, exact bfloat16
    ties, results in the largest and the smallest normal binade.
What a value really is, is decided by classify.py from the value itself (coverage labels);
the names used here ("intents") only say what a generator aims at.

Everything draws from a numpy Generator, so a seed reproduces a run.
"""

from __future__ import annotations

import functools
import math

import numpy as np

import boundaries
from refmodel import QuantConfig, bounds

# What a quantize-path value generator aims at.
INTENTS = ("random", "inrange", "int_tie_down", "int_tie_up", "p_tie_down", "p_tie_up", "edge_hi", "edge_lo",
           "sat_hi", "sat_lo", "tiny", "subnormal", "zero", "nan_inf") + boundaries.INTENTS
# Intents drawn at random to fill a tensor (the rest of it is what the scenario must contain).
FILL = ("random", "inrange", "inrange", "int_tie_down", "int_tie_up", "edge_hi", "edge_lo", "sat_hi", "sat_lo",
        "tiny", "subnormal", "zero", "nan_inf")
# How a tensor's scale register is chosen.
SCALE_KINDS = ("typical", "midpoint", "midpoint_up", "midpoint_down", "huge", "huge_low", "edge", "tiny", "subnormal",
               "zero", "negzero", "negative", "inf", "nan", "carry", "sticky", "top", "huge_edge", "near_pow2", "pow2")
# Scale kinds built for a quantize boundary (boundaries.py); the dequantize ones are plain.
BUILT_KINDS = {"carry": boundaries.carry_scale, "sticky": boundaries.sticky_scale}
DEQUANT_KINDS = ("top", "huge_edge", "near_pow2", "pow2")

F32_MAX = np.float32(np.finfo(np.float32).max)


def all_widths() -> list[tuple[int, bool]]:
    """Every (bits, signed) pair the converter accepts: 1..16 unsigned, 2..16 signed."""
    return [(b, False) for b in range(1, 17)] + [(b, True) for b in range(2, 17)]


def f32(x) -> np.float32:
    with np.errstate(all="ignore"):
        return np.float32(x)


def _pow2(e: float) -> np.float32:
    return f32(2.0**e)


# --------------------------------------------------------------------------- product midpoints
def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def _tie_target(k: int, up: bool) -> tuple[int, int]:
    """(T, n): the 25-bit odd significand T of the exact product next to k + 0.5, and n.

    The product is T * 2^(n - 24) with 2^n <= k + 0.5 < 2^(n+1). For `up` (k odd) it lies
    just below k + 0.5, whose float32 significand is even, so rounding to nearest even goes
    up to k + 0.5 and on to k + 1; for down (k even) it lies just above k + 0.5 and rounds
    down to it, then to k. The other neighbour gives k (up) or k + 1 (down).
    """
    n = math.floor(math.log2(k + 0.5))
    return ((2 * k + 1) << (23 - n)) + (-1 if up else 1), n


def _decisive_ks(cfg: QuantConfig, up: bool, negative: bool) -> list[int]:
    """Magnitudes k whose midpoint next to k + 0.5 changes the code (after clamping)."""
    return list(_decisive_range(cfg.bits, cfg.signed, cfg.narrow, up, negative))


@functools.lru_cache(maxsize=None)
def _decisive_range(bits: int, signed: bool, narrow: bool, up: bool, negative: bool) -> range:
    lo, hi = bounds(bits, signed, narrow)
    limit = -lo if negative else hi  # k + 1 must still be a code on that side
    return range(1 if up else 0, min(limit, 1 << 16), 2)


class Midpoints:
    """Exact float32 product midpoints for one tensor's scale (see the module docstring).

    `Midpoints.scale_for(...)` builds a scale with a short odd significand around one seed
    midpoint; `values(...)` then finds more x for that scale (float32: any 24-bit x;
    bfloat16 inputs: only 8-bit significands, so usually the seed only).
    """

    def __init__(self, cfg: QuantConfig, bf16: bool) -> None:
        self.cfg = cfg
        self.abits = 8 if bf16 else 24
        s = np.float32(cfg.scale)
        self.ok = bool(np.isfinite(s) and s != 0 and abs(s) >= 2.0**-126)
        if not self.ok:
            return
        b = int(np.asarray(s).view(np.uint32))
        mant = (b & 0x7FFFFF) | (1 << 23)
        lsb = ((b >> 23) & 0xFF) - 150
        while not mant & 1:
            mant >>= 1
            lsb += 1
        self.s_odd, self.s_lsb, self.s_neg = mant, lsb, bool(b >> 31)
        self._cands: dict[bool, list[tuple[int, int, bool]]] = {}

    def _x(self, t: int, n: int, negative: bool) -> np.float32:
        a = t // self.s_odd
        mag = math.ldexp(a, n - 24 - self.s_lsb)
        return np.float32(-mag if negative != self.s_neg else mag)

    def candidates(self, up: bool) -> list[tuple[int, int, bool]]:
        """Every (T, n, negative) with an x of at most `abits` significant bits."""
        if up not in self._cands:
            found = []
            if self.s_odd > 1:
                for negative in (False, True):
                    if negative and not self.cfg.signed:
                        continue
                    ks = np.asarray(_decisive_ks(self.cfg, up, negative), dtype=np.int64)
                    if not ks.size:
                        continue
                    n = np.floor(np.log2(ks + 0.5)).astype(np.int64)  # as _tie_target, vectorized
                    t = ((2 * ks + 1) << (23 - n)) + (-1 if up else 1)
                    ok = (t % self.s_odd == 0) & (t // self.s_odd < (1 << self.abits))
                    found += [(int(a), int(b), negative) for a, b in zip(t[ok], n[ok])]
            self._cands[up] = found
        return self._cands[up]

    def value(self, rng: np.random.Generator, up: bool) -> np.float32 | None:
        """One x whose product with the scale is a decisive midpoint, or None if none exists."""
        if not self.ok:
            return None
        cands = self.candidates(up)
        if not cands:
            return None
        t, n, negative = cands[int(rng.integers(0, len(cands)))]
        return self._x(t, n, negative)

    @staticmethod
    def scale_for(rng: np.random.Generator, cfg: QuantConfig, bf16: bool, up: bool) -> float | None:
        """A scale (short odd significand, magnitude 2^-4..2^14) with a decisive midpoint."""
        abits = 8 if bf16 else 24
        sides = [False, True] if cfg.signed else [False]
        options = [(k, neg) for neg in sides for k in _decisive_ks(cfg, up, neg)]
        for _ in range(64):
            if not options:
                return None
            k, _neg = options[int(rng.integers(0, len(options)))]
            t, _ = _tie_target(k, up)
            # scale significand s_odd and x significand a = t / s_odd: both fit their formats
            divs = [d for d in _divisors(t) if 1 < d < t and d < (1 << 24) and t // d < (1 << abits)]
            if not divs:
                continue
            s_odd = divs[int(rng.integers(0, len(divs)))]
            e = int(rng.integers(-4, 15)) - (s_odd.bit_length() - 1)
            return float(np.float32(math.ldexp(s_odd, e)))
        return None


# --------------------------------------------------------------------------- scales
def choose_scale(rng: np.random.Generator, bits: int, signed: bool, kind: str) -> float:
    """A scale register value of the given kind ('typical' is max_bound / amax)."""
    max_bound = np.float32(2.0 ** (bits - 1 + (0 if signed else 1)) - 1.0)
    if kind == "typical":
        return float(max_bound / _pow2(rng.uniform(-10, 10)))
    if kind == "negative":
        return float(-(max_bound / _pow2(rng.uniform(-6, 6))))
    if kind == "huge":  # subnormal results 1/s in [2^-128, 2^-127): deep; 2/s, 3/s: shallow
        return float(_pow2(rng.uniform(127, 127.999)))
    if kind == "huge_low":  # 1/s in [2^-127, 2^-126): shallow; subnormal inputs land on codes
        return float(_pow2(rng.uniform(126.001, 127)))
    if kind == "edge":  # the largest code lands in [2^128, 2^129), one binade beyond float32
        qmax = (1 << (bits - 1)) if signed else (1 << bits) - 1
        return float(f32(qmax / 2.0 ** rng.uniform(128.02, 128.98)))
    if kind == "tiny":  # below 2^-129: every nonzero q / scale overflows to Inf
        return float(_pow2(rng.uniform(-149, -129.01)))
    if kind == "subnormal":  # subnormal scale: q / scale overflows
        return float(np.uint32(rng.integers(1, 1 << 23)).view(np.float32))
    if kind == "zero":  # pytorch-quantization's amax <= 2^-24 case
        return 0.0
    if kind == "negzero":
        return -0.0
    if kind == "inf":
        return float(np.inf if rng.random() < 0.5 else -np.inf)
    if kind == "nan":
        return float(np.nan)
    if kind in DEQUANT_KINDS:
        return boundaries.dequant_scale(rng, bits, signed, kind)
    raise ValueError(f"unknown scale kind {kind!r}")


def make_config(rng: np.random.Generator, bits: int, signed: bool, kind: str, bf16: bool = False,
                count: int = 1) -> QuantConfig:
    """A configuration of one scale kind.

    'midpoint_up' / 'midpoint_down' build a scale around a decisive product midpoint that
    rounds up / down ('midpoint': either); where none exists (1-bit unsigned has no 'up'
    one; narrow 2-bit signed none at all) the other direction, or narrow_range off, is used.
    'carry' / 'sticky' build a scale for which x on that boundary exist (boundaries.py).
    """
    narrow = bool(rng.integers(0, 2)) if signed else False
    if kind in BUILT_KINDS:
        cfg = QuantConfig(bits, 1.0, signed, narrow, count)
        scale = BUILT_KINDS[kind](rng, cfg, bf16)
        if scale is None:
            raise ValueError(f"no {kind} scale for {bits}-bit {'signed' if signed else 'unsigned'}")
        return QuantConfig(bits, scale, signed, narrow, count)
    if kind.startswith("midpoint"):  # midpoint, midpoint_up, midpoint_down
        cfg = QuantConfig(bits, 1.0, signed, narrow, count)
        up = kind.endswith("_up") or (kind == "midpoint" and bool(rng.integers(0, 2)))
        scale = None
        for narrow_try, up_try in ((narrow, up), (False, up), (narrow, not up)):
            cfg = QuantConfig(bits, 1.0, signed, narrow_try, count)
            scale = Midpoints.scale_for(rng, cfg, bf16, up_try)
            if scale is not None:
                narrow = narrow_try
                break
        if scale is None:
            raise ValueError(f"no product midpoint scale for {bits}-bit {'signed' if signed else 'unsigned'}")
        return QuantConfig(bits, scale, signed, narrow, count)
    return QuantConfig(bits, choose_scale(rng, bits, signed, kind), signed, narrow, count)


# --------------------------------------------------------------------------- float values
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


def _int_tie(rng: np.random.Generator, cfg: QuantConfig, up: bool) -> float:
    """A target k + 0.5 (signed) where rounding half to even decides between two codes."""
    options = _tie_options(cfg.bits, cfg.signed, cfg.narrow, up)
    k, neg = options[int(rng.integers(0, len(options)))]
    return -(k + 0.5) if neg else k + 0.5


@functools.lru_cache(maxsize=None)
def _tie_options(bits: int, signed: bool, narrow: bool, up: bool) -> tuple[tuple[int, bool], ...]:
    """(k, negative) of every decisive tie of that direction (the other one where none exists)."""
    sides = [False, True] if signed else [False]
    options = [(k, neg) for neg in sides for k in _decisive_range(bits, signed, narrow, up, neg)]
    if not options:
        options = [(k, neg) for neg in sides for k in _decisive_range(bits, signed, narrow, not up, neg)]
    return tuple(options)


class ValueGenerator:
    """Float32 inputs for one tensor's configuration, one intent at a time."""

    def __init__(self, rng: np.random.Generator, cfg: QuantConfig, bf16: bool = False) -> None:
        self.rng = rng
        self.cfg = cfg
        self.scale = np.float32(cfg.scale)
        self.lo, self.hi = bounds(cfg.bits, cfg.signed, cfg.narrow)
        self.mid = Midpoints(cfg, bf16)
        self.bound = boundaries.Boundaries(rng, cfg, bf16)

    def __call__(self, intent: str) -> np.float32:
        rng, cfg, scale, lo, hi = self.rng, self.cfg, self.scale, self.lo, self.hi
        if intent in boundaries.INTENTS:
            x = self.bound.value(intent)
            return x if x is not None else _x_for_product(1.0, scale, rng, exact=False)
        sign = -1.0 if rng.random() < 0.5 else 1.0
        if intent == "random":
            while True:
                b = np.uint32(rng.integers(0, 1 << 32))
                if (b >> 23) & 0xFF != 0xFF:
                    return b.view(np.float32)
        if intent == "inrange":
            return _x_for_product(rng.uniform(lo - 1, hi + 1), scale, rng, exact=False)
        if intent in ("int_tie_down", "int_tie_up"):
            return _x_for_product(_int_tie(rng, cfg, intent.endswith("up")), scale, rng, exact=True)
        if intent in ("p_tie_down", "p_tie_up"):
            up = intent.endswith("up")
            x = self.mid.value(rng, up)
            if x is None:
                x = self.mid.value(rng, not up)
            if x is not None:
                return x
            return _x_for_product(_int_tie(rng, cfg, up), scale, rng, exact=False)
        if intent == "edge_hi":
            return _x_for_product(hi + rng.uniform(-0.49, 0.49), scale, rng, exact=False)
        if intent == "edge_lo":
            return _x_for_product(lo + rng.uniform(-0.49, 0.49), scale, rng, exact=False)
        if intent in ("sat_hi", "sat_lo"):
            edge = (hi + 1) if intent == "sat_hi" else min(lo - 1, -1)
            if rng.random() < 0.2:
                return np.float32(math.copysign(F32_MAX, edge * (1 if scale >= 0 else -1)))
            return _x_for_product(edge * 2.0 ** rng.uniform(0, 40), scale, rng, exact=False)
        if intent == "tiny":
            t = sign * rng.uniform(0, 0.5) * 2.0 ** -rng.uniform(0, 30)
            return _x_for_product(t, scale, rng, exact=False)
        if intent == "subnormal":
            if np.isfinite(scale) and abs(float(scale)) >= 2.0**125:
                # x = target / scale is subnormal (target < |scale| 2^-126 <= 4) and its code nonzero
                negative = sign < 0 and cfg.signed
                top = min((-lo if negative else hi) + 0.49, abs(float(scale)) * 2.0**-126 * 0.999)
                if top > 0.5:
                    x = f32(rng.uniform(0.5, top) / abs(float(scale)))
                    return np.float32(-x if negative != (scale < 0) else x)
            b = np.uint32(rng.integers(1, 1 << 23)) | np.uint32(0x80000000 if sign < 0 else 0)
            return np.uint32(b).view(np.float32)
        if intent == "zero":
            return np.float32(-0.0 if sign < 0 else 0.0)
        if intent == "nan_inf":
            choice = int(rng.integers(0, 4))
            if choice < 2:
                return np.float32(np.inf if choice == 0 else -np.inf)
            payload = int(rng.integers(1, 1 << 22)) | (0x400000 if choice == 2 else 0)  # quiet / signalling
            return np.uint32(0x7F800000 | payload | (0x80000000 if sign < 0 else 0)).view(np.float32)
        raise ValueError(f"unknown value intent {intent!r}")


def gen_values(rng: np.random.Generator, cfg: QuantConfig, n: int, must=(), fill=FILL,
               bf16: bool = False) -> np.ndarray:
    """n float32 inputs: one of each `must` intent, the rest drawn from `fill`, shuffled."""
    gen = ValueGenerator(rng, cfg, bf16)
    intents = list(must)[:n] + [str(c) for c in rng.choice(fill, size=max(0, n - len(must)))]
    values = np.array([gen(c) for c in intents], dtype=np.float32)
    return values[rng.permutation(n)]


# --------------------------------------------------------------------------- codes, lengths
def gen_codes(rng: np.random.Generator, bits: int, signed: bool, n: int, kind: str = "random") -> list[int]:
    """n b-bit code patterns: 'extreme' (min, max, 0, +-1 mixed in), 'small' (|q| <= 3),
    'pow2' (+-2^j), 'tie9' (bfloat16 ties, widths of 9 or more value bits) or random."""
    mask = (1 << bits) - 1
    lo, hi = bounds(bits, signed, False)
    if kind == "extreme":
        pool = [lo & mask, hi & mask, 0, 1 & mask, -1 & mask]
    elif kind == "small":
        pool = [q & mask for q in range(max(lo, -3), min(hi, 3) + 1)]
    elif kind in ("pow2", "tie9"):
        pool = [q & mask for q in boundaries.code_pool(bits, signed, kind)]
    else:
        pool = []
    if not pool:
        return [int(c) for c in rng.integers(0, 1 << bits, size=n)]
    codes = [int(rng.choice(pool)) if rng.random() < 0.7 else int(rng.integers(0, 1 << bits)) for _ in range(n)]
    for i, c in enumerate(pool[: min(n, len(pool))]):  # each of the pool at least once
        codes[i] = c
    return [codes[i] for i in rng.permutation(n)]


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


def straddling_length(bits: int, word_w: int, max_len: int) -> int | None:
    """The smallest n >= 2 (up to max_len) whose last value crosses a word boundary."""
    for n in range(2, max_len + 1):
        start = (n - 1) * bits
        if start // word_w != (start + bits - 1) // word_w:
            return n
    return None
