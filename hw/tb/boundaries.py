"""Stimulus on the boundaries of the rounding datapath, built by construction.

The quantizer rounds the exact product x * scale to float32 (24-bit significand, nearest
even), then to an integer (half to even), then saturates; the dequantizer rounds q / scale
to the output format. A boundary is a window of exact values that decides a code or a
result, and random values reach one with a probability near 2^-25. Here x is computed so
that the exact product falls into the window (magnitudes; ulp: of float32 at k + 1/2):

  carry_in, carry_sat  [2^N (1 - 2^-25), 2^N): the 24-bit rounding overflows into 2^N; N
                       inside the code range, or the first N beyond it (and N = 16, where
                       the datapath saturates)
  p_sticky             (k + 1/2 + ulp/2, k + 1/2 + ulp), k even: above the midpoint, so only
                       the sticky bits round it up; the first one, where the scale allows,
                       exactly one unit of the 48-bit significand product above it
  int_tie_ulp          the float next to k + 1/2, below or above
  sat_hi_1, sat_lo_1   rint(p) = max_bound + 1 / min_bound - 1
  sat_binade16         [2^16, 2^16 + 2^10): the first binade above every code range
  x_edge, p_subnormal  x = 2^-126 or the largest subnormal; |x * scale| below 2^-126
For a given scale, `x_in_window` finds x with exact integer arithmetic (a window narrower
than the scale's significand step may hold no x). The scale kinds 'carry' and 'sticky'
build a scale for which the window is reachable: a random significand for x and the
scale that puts the product into the window; the one-unit sticky point needs the 48-bit
significand product N = x_sig * s_sig itself, so N is factored.

Dequantize boundaries are scales and codes: 'near_pow2' scales (1 + d 2^-23) 2^e with
codes +-2^j give quotients just below powers of two (a bfloat16 rounding carry; in fp32
they cannot carry), 'pow2' scales with 9-bit odd codes give exact bfloat16 ties, 'top'
puts max_bound into [2^127, 2^128) and 'huge_edge' puts 1 / scale into [2^-126, 2^-125).
"""

from __future__ import annotations

import math
from collections import Counter
from fractions import Fraction

import numpy as np

from refmodel import QuantConfig, bounds

SIG_LO, SIG_HI = 1 << 23, 1 << 24  # a normal float32 significand, as an integer
TRIES = 8  # values of k tried for a window the scale may not reach
INTENTS = ("carry_in", "carry_sat", "p_sticky", "int_tie_ulp", "sat_hi_1", "sat_lo_1", "sat_binade16", "x_edge",
           "p_subnormal")


# --------------------------------------------------------------------------- exact helpers
def odd_part(v: float) -> tuple[int, int]:
    """(odd, e) with |v| = odd * 2^e exactly (v finite, nonzero)."""
    n, d = abs(float(v)).as_integer_ratio()
    tz = (n & -n).bit_length() - 1
    return n >> tz, tz - (d.bit_length() - 1)


def _floor_log2(f: Fraction) -> int:
    e = f.numerator.bit_length() - f.denominator.bit_length()
    return e if Fraction(2) ** e <= f else e - 1


def _representable(x: float, abits: int) -> bool:
    """x is a finite nonzero float32 (a bfloat16 when abits == 8)."""
    with np.errstate(all="ignore"):
        f = np.float32(x)
    if not np.isfinite(f) or f == 0 or float(f) != x:
        return False
    return abits > 8 or int(np.asarray(f).view(np.uint32)) & 0xFFFF == 0


def x_in_window(lo: Fraction, hi: Fraction, scale: float, abits: int, open_lo: bool = False) -> float | None:
    """|x| of at most `abits` significant bits with lo <= |x * scale| < hi (lo < ... when
    open_lo), the widest significand that fits; None when no such float exists nearby."""
    s_odd, s_lsb = odd_part(scale)
    # |x * scale| = a * s_odd * 2^(i + s_lsb) for x = a * 2^i. With u = -(i + s_lsb) the
    # window for a is [lo, hi) * 2^u / s_odd: start where it is too wide for `abits`.
    top = abits + s_odd.bit_length() - _floor_log2(hi) + 1
    for u in range(top, top - 6, -1):
        w_lo, w_hi = lo * Fraction(2) ** u / s_odd, hi * Fraction(2) ** u / s_odd
        a = math.floor(w_lo) + 1 if open_lo else math.ceil(w_lo)
        if not 1 <= a < 1 << abits or a >= w_hi:
            continue
        x = math.ldexp(a, -u - s_lsb)
        if _representable(x, abits):
            return x
    return None


def _random_sig(rng: np.random.Generator, abits: int) -> int:
    """A random odd significand of exactly `abits` bits."""
    return int(rng.integers(1 << (abits - 1), 1 << abits)) | 1


def _placed(rng: np.random.Generator, s_mag: float) -> float:
    """s_mag times a power of two, in [2^-4, 2^15) like a typical scale (the x that go with
    it absorb the power of two, so every window stays reachable)."""
    return math.ldexp(s_mag, int(rng.integers(-4, 15)) - math.frexp(s_mag)[1] + 1)


def scale_for_window(rng: np.random.Generator, lo: Fraction, hi: Fraction, abits: int,
                     open_lo: bool = False) -> float | None:
    """A scale (24-bit significand) for which some x of `abits` bits puts x * scale in the window."""
    for _ in range(400):
        s = x_in_window(lo, hi, float(_random_sig(rng, abits)), 24, open_lo)
        if s is not None:
            return _placed(rng, s)
    return None


# --------------------------------------------------------------------------- factoring (the 48-bit point)
def _is_prime(n: int) -> bool:
    """Miller-Rabin with the first 12 primes as bases: exact below 3.3 * 10^24."""
    bases = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
    if n < 2:
        return False
    for p in bases:
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while not d & 1:
        d, r = d >> 1, r + 1
    for a in bases:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def _rho(n: int, c: int) -> int:
    """A factor of the odd composite n (Pollard's rho, Floyd cycle; n itself on failure)."""
    x = y = 2
    d = 1
    while d == 1:
        x = (x * x + c) % n
        y = (y * y + c) % n
        y = (y * y + c) % n
        d = math.gcd(abs(x - y), n)
    return d


def _factor(n: int) -> list[int]:
    """Prime factors of n (with multiplicity)."""
    out: list[int] = []
    for p in (2, 3, 5, 7, 11, 13):
        while n % p == 0:
            out.append(p)
            n //= p
    stack = [n] if n > 1 else []
    while stack:
        m = stack.pop()
        if _is_prime(m):
            out.append(m)
            continue
        c, d = 1, m
        while d in (1, m):
            d, c = _rho(m, c), c + 1
        stack += [d, m // d]
    return out


def divisor_pair(n: int) -> tuple[int, int] | None:
    """(d, n // d) with both in [2^23, 2^24): two normal float32 significands with product n."""
    divisors = {1}
    for p in _factor(n):
        divisors |= {d * p for d in divisors}
    for d in sorted(divisors):
        if SIG_LO <= d < SIG_HI and SIG_LO <= n // d < SIG_HI:
            return d, n // d
    return None


def sticky_lsb_points(k: int) -> list[tuple[int, int]]:
    """(N, E): 48-bit (47-bit) significand products N with N * 2^E exactly one unit of N
    above the float32 midpoint just above k + 1/2 (guard bit set, sticky bits = 1)."""
    n = math.floor(math.log2(k + 0.5))
    m = (2 * k + 1) << (22 - n)  # the 24-bit significand of k + 1/2
    return [((m << (nb - 24)) + (1 << (nb - 25)) + 1, n + 1 - nb) for nb in (47, 48)]


# --------------------------------------------------------------------------- scales built for a boundary
def decisive_ks(cfg: QuantConfig, negative: bool, parity: int | None = None) -> list[int]:
    """k >= 0 where +-k and +-(k + 1) are different codes on that side (optionally k % 2 == parity)."""
    lo, hi = bounds(cfg.bits, cfg.signed, cfg.narrow)
    limit = -lo if negative else hi
    return [k for k in range(0, min(limit, 1 << 16)) if parity is None or k % 2 == parity]


def _sides(cfg: QuantConfig) -> list[bool]:
    """Product signs (negative?) that can give different codes."""
    return [False, True] if cfg.signed else [False]


def _sticky_window(k: int) -> tuple[Fraction, Fraction]:
    """(lo, hi), open at lo: above the midpoint just above k + 1/2, below the next float."""
    ulp = Fraction(2) ** (math.floor(math.log2(k + 0.5)) - 23)
    mid = k + Fraction(1, 2)
    return mid + ulp / 2, mid + ulp


def _carry_window(n: int) -> tuple[Fraction, Fraction]:
    top = Fraction(2) ** n
    return top - top / 2**25, top


def carry_scale(rng: np.random.Generator, cfg: QuantConfig, bf16: bool) -> float | None:
    """A scale whose products carry into a power of two for some x (then for x * 2^j too)."""
    return scale_for_window(rng, *_carry_window(0), 8 if bf16 else 24)


def sticky_scale(rng: np.random.Generator, cfg: QuantConfig, bf16: bool) -> float | None:
    """A scale with a decisive p_sticky product: for float32 inputs the one-unit point of a
    random even k (factored; k = 0 has none), else (bfloat16 x, widths without one) the
    sticky window at k = 0, which is decisive at every width (codes 0 and 1)."""
    if not bf16:
        options = [k for neg in _sides(cfg) for k in decisive_ks(cfg, neg, 0) if k > 0]
        for k in rng.permutation(options)[:40]:
            for n, _ in sticky_lsb_points(int(k)):
                pair = divisor_pair(n)
                if pair:
                    return _placed(rng, float(pair[0]))
    return scale_for_window(rng, *_sticky_window(0), 8 if bf16 else 24, open_lo=True)


# --------------------------------------------------------------------------- x on the boundaries
class Boundaries:
    """x values on the rounding boundaries for one tensor's scale.

    Each intent cycles through its cases deterministically: the first call takes the
    sharpest one (N = 0 for a carry, k = 0 for the sticky and tie neighbours: codes 0 and
    1 differ at every width), later calls random ones. Where the scale allows no x in a
    window, the x nearest to the window is returned (the label then says it missed).
    """

    def __init__(self, rng: np.random.Generator, cfg: QuantConfig, bf16: bool = False) -> None:
        self.rng, self.cfg, self.bf16 = rng, cfg, bf16
        self.abits = 8 if bf16 else 24
        self.scale = float(np.float32(cfg.scale))
        self.lo, self.hi = bounds(cfg.bits, cfg.signed, cfg.narrow)
        self.ok = math.isfinite(self.scale) and self.scale != 0
        self.calls: Counter = Counter()

    def value(self, intent: str) -> np.float32 | None:
        """One x aimed at `intent` (see INTENTS), or None when the scale is 0, Inf or NaN."""
        if not self.ok:
            return None
        c = self.calls[intent]
        self.calls[intent] += 1
        negative, target = getattr(self, f"_{intent}")(c)
        if isinstance(target, tuple):
            lo, hi, open_lo = target
            mag = x_in_window(lo, hi, self.scale, self.abits, open_lo)
            if mag is None:
                with np.errstate(all="ignore"):
                    mag = float(np.float32(float((lo + hi) / 2) / abs(self.scale)))
        else:
            mag = target
        x = np.float32(-mag if negative != (self.scale < 0) else mag)
        return x if np.isfinite(x) else np.float32(np.copysign(np.finfo(np.float32).max, x))

    def _side(self, c: int) -> bool:
        sides = _sides(self.cfg)
        return sides[c % len(sides)]

    def _limit(self, negative: bool) -> int:
        return -self.lo if negative else self.hi

    def _carry_in(self, c: int):
        neg = self._side(c)
        top = self._limit(neg).bit_length() - 1  # the largest power of two that is a code
        n = (0, top)[c] if c < 2 else int(self.rng.integers(0, top + 1))
        return neg, (*_carry_window(n), False)

    def _carry_sat(self, c: int):
        neg = self._side(c)
        n = 16 if c % 3 == 2 else self._limit(neg).bit_length()  # the first power beyond the bound
        return neg, (*_carry_window(n), False)

    def _random_k(self, negative: bool, even: bool = False) -> int:
        """A random decisive k on that side (see decisive_ks)."""
        k = int(self.rng.integers(0, min(self._limit(negative), 1 << 16)))
        return k - k % 2 if even else k

    def _p_sticky(self, c: int):
        if c == 0:
            found = self._sticky_lsb()
            if found is not None:
                return found
        neg = self._side(c)
        for j in range(TRIES):
            k = 0 if c <= 1 and j == 0 else self._random_k(neg, even=True)
            lo, hi = _sticky_window(k)
            if x_in_window(lo, hi, self.scale, self.abits, True) is not None:
                break
        return neg, (lo, hi, True)

    def _sticky_lsb(self):
        """(negative, |x|) of a decisive one-unit sticky point for this scale, or None."""
        s_odd, s_lsb = odd_part(self.scale)
        if self.bf16 or s_odd.bit_length() != 24:
            return None
        for neg in _sides(self.cfg):
            ks = np.asarray(decisive_ks(self.cfg, neg, 0), dtype=np.int64)
            n = np.floor(np.log2(ks + 0.5)).astype(np.int64)  # as sticky_lsb_points, vectorized
            m = (2 * ks + 1) << (22 - n)
            for nb in (47, 48):
                big = (m << (nb - 24)) + (1 << (nb - 25)) + 1
                ok = (big % s_odd == 0) & (big // s_odd >= SIG_LO) & (big // s_odd < SIG_HI)
                for i in np.flatnonzero(ok):
                    x = math.ldexp(int(big[i]) // s_odd, int(n[i]) + 1 - nb - s_lsb)
                    if _representable(x, 24):
                        return neg, x
        return None

    def _int_tie_ulp(self, c: int):
        neg = self._side(c)
        above = c == 0 or bool(self.rng.integers(0, 2))
        for j in range(TRIES):
            k = 0 if c == 0 and j == 0 else self._random_k(neg)
            t = np.nextafter(np.float32(k + 0.5), np.float32(np.inf if above else 0))
            below, after = np.nextafter(t, np.float32(0)), np.nextafter(t, np.float32(np.inf))
            ft = Fraction(float(t))
            lo, hi = (ft + Fraction(float(below))) / 2, (ft + Fraction(float(after))) / 2
            if x_in_window(lo, hi, self.scale, self.abits, True) is not None:
                break
        return neg, (lo, hi, True)

    def _sat_hi_1(self, c: int):
        return False, (self.hi + Fraction(3, 4), self.hi + Fraction(5, 4), True)

    def _sat_lo_1(self, c: int):
        m = 1 - self.lo  # |min_bound - 1|
        return True, (m - Fraction(1, 4), m + Fraction(1, 4), True)

    def _sat_binade16(self, c: int):
        return self._side(c), (Fraction(2**16), Fraction(2**16 + 2**10), False)

    def _x_edge(self, c: int):
        sub = 2.0**-126 - (2.0**-133 if self.bf16 else 2.0**-149)
        return self._side(c), (2.0**-126 if c % 2 == 0 else sub)

    def _p_subnormal(self, c: int):
        with np.errstate(all="ignore"):
            x = np.float32(2.0 ** -(127 + c % 12) / abs(self.scale))
        if self.bf16:  # truncated to bfloat16: the product only gets smaller
            x = (np.asarray(x).view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)
        x = float(x)
        if not _representable(x, self.abits):
            x = 2.0**-133 if self.bf16 else 2.0**-149
        return self._side(c), x


# --------------------------------------------------------------------------- dequantize boundaries
def dequant_scale(rng: np.random.Generator, bits: int, signed: bool, kind: str) -> float:
    """Scales for the dequantize boundaries (see the module docstring)."""
    hi = bounds(bits, signed, False)[1]
    if kind == "top":  # max_bound / scale in the largest binade [2^127, 2^128)
        return float(np.float32(hi / 2.0 ** rng.uniform(127.02, 127.98)))
    if kind == "huge_edge":  # 1 / scale in [2^-126, 2^-125): the smallest normal binade
        return 2.0**126 if rng.random() < 1 / 3 else float(np.float32(2.0 ** rng.uniform(125.01, 125.99)))
    if kind == "near_pow2":  # q / scale just below 2^j for q = +-2^i: a bfloat16 rounding carry
        s = math.ldexp(1 + int(rng.integers(1, 1 << 12)) * 2.0**-23, int(rng.integers(-20, 21)))
        return -s if rng.random() < 0.25 else s
    if kind == "pow2":  # exact quotients: 9-bit odd codes are bfloat16 ties
        s = math.ldexp(1.0, int(rng.integers(-20, 21)))
        return -s if rng.random() < 0.25 else s
    raise ValueError(f"unknown dequantize scale kind {kind!r}")


def code_pool(bits: int, signed: bool, kind: str) -> list[int]:
    """Code values (not patterns) for a boundary code kind: 'pow2' (+-2^j and 0) or 'tie9'
    (9-bit odd values o * 2^j, one rounding down and one up to even in bfloat16)."""
    lo, hi = bounds(bits, signed, False)
    if kind == "pow2":
        pool = [0] + [1 << j for j in range(bits) if 1 << j <= hi]
        return pool + [-(1 << j) for j in range(bits) if -(1 << j) >= lo]
    if kind == "tie9":
        pool = []
        for o in (257, 259):  # (o - 1) / 2 = 128 (even: down), 129 (odd: up)
            shift = max(0, hi.bit_length() - 9)
            for v in (o << shift, o):
                if v <= hi:
                    pool.append(v)
                    if -v >= lo:
                        pool.append(-v)
                    break
        return pool
    raise ValueError(f"unknown code kind {kind!r}")
