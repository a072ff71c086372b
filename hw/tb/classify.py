"""What a value, a code or a tensor really is, computed from the value and the configuration.

Functional coverage (functional_coverage.py) samples these labels from what the monitors
saw on the DUT's ports, never from what a generator meant to produce. Everything here is
exact: float32 operands are split into integer significands and exponents, so the exact
product x * scale, its float32 rounding neighbours and the exact quotient q / scale are
compared with integer or exactly representable float64 arithmetic.

Quantize labels (one value x, scale s; p = float32(x * s), code = clamp(rint(p))):
  nan, inf          the product is NaN / +-Inf
  zero              the exact product is 0 (x = +-0 or s = +-0)
  subnormal_x       x is a subnormal float32;  subnormal_coded: ... and its code is nonzero
  tiny              0 < |p| < 0.5 (code 0)
  sat_hi, sat_lo    rint(p) beyond max_bound / min_bound (clamped; unsigned negatives: sat_lo)
  edge_hi, edge_lo  rint(p) is exactly max_bound / min_bound (min_bound != 0)
  inrange           any other in-range value
  int_tie_down/up   |p| is exactly k + 0.5, +-k and +-(k + 1) give different codes, and
                    rounding half to even goes to k (k even: down, toward zero) or to
                    k + 1 (k odd: up, away from zero)
  p_tie_down/up     the exact product x * s lies exactly halfway between two float32
                    values (a tie of the float32 product rounding), the two neighbours give
                    different codes, and rounding to nearest even takes the neighbour of
                    smaller (down) or larger (up) magnitude. p_tie: an exact product
                    midpoint that does not change the code.
 Boundaries of the rounding datapath (exact, from the integer significands; with the
 observed output given, a value counts only where the DUT's code is the one it implies):
  p_carry           the float32 rounding of the exact product carries into the next
                    binade: the exact product is below 2^N (N >= 0), the rounded one is
                    2^N, and +-2^N is a code in range
  p_carry_sat       the same carry, where +-2^N is clamped but +-2^(N-1) gives another
                    code: the carry alone crosses the saturation bound
  p_sticky          the exact product lies above a float32 midpoint by less than half an
                    ulp (guard bit set, sticky bits nonzero), the neighbour below has an
                    even significand and the neighbours give different codes: only the
                    sticky bits make it round up
  p_sticky_lsb      p_sticky where the sticky bits are just the last bit of the 48-bit
                    significand product (x and s normal: 2^(lsb(x) + lsb(s)))
  int_tie_ulp       the float32 product is the float next to k + 0.5, and +-k and
                    +-(k + 1) give different codes (it rounds away from the tie's choice
                    on one side)
  sat_hi_1, sat_lo_1  rint(p) is exactly max_bound + 1 / min_bound - 1 (one past the bound)
  sat_binade16      2^16 <= |p| < 2^17: the first binade above every code range
  x_normal_edge     x is the smallest normal float32 or the largest subnormal of the input
                    format, and its code is nonzero
  p_subnormal       0 < |p| < 2^-126: the float32 product is subnormal (code 0)
Dequantize labels (one b-bit code pattern, read as q):
  q_zero, q_min, q_max   q is 0, min_bound (signed only), max_bound
  junk                   the input pattern has bits set above bit b (block inputs)
  r_normal, r_subnormal, r_zero, r_inf, r_nan   class of the float32 result
  r_sub_deep             |q / s| < 2^-127 (the subnormal result is shifted by 2)
  r_sub_shallow          2^-127 <= |q / s| < 2^-126 (shifted by 1)
  r_overflow             a finite q / s beyond the float32 range (Inf)
  r_overflow_edge        2^128 <= |q / s| < 2^129: the binade just above the largest float
  r_top_binade           the result lies in [2^127, 2^128), the largest binade
  r_min_normal           the result lies in [2^-126, 2^-125), the smallest normal binade
  r_carry                the result is a power of two (or Inf) reached by rounding up: the
                         exact |q / s| is below it (a carry of the output format's rounding;
                         bfloat16 only: an fp32 quotient can never carry, see mutants.py)
  r_tie_down, r_tie_up   the exact quotient lies halfway between two values of the output
                         format and nearest even takes the one of smaller / larger
                         magnitude (bfloat16 only: fp32 quotients are never ties)
  Result classes come from the observed output when it is given, else from refmodel.
Tensor labels (n values of b bits in W-bit words):
  single, exact_fill, padded, straddle (some value crosses a word), last_straddles
Scale labels: scale_zero, scale_negzero, scale_neg, scale_inf, scale_nan, scale_subnormal,
  scale_huge (>= 2^100), scale_short (odd significand of <= 12 bits), scale_typical.
"""

from __future__ import annotations

import math

import numpy as np

from refmodel import (
    QuantConfig,
    bf16_bits_to_f32,
    bits_to_f32,
    bounds,
    dequantize_bits,
    f32_to_bits,
    from_pattern,
    unpack,
)

F32_MIN_NORMAL = 2.0**-126


def _split(bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 bit patterns of finite values -> (integer significand, exponent of its LSB)."""
    b = np.asarray(bits, dtype=np.int64) & 0xFFFFFFFF
    e = (b >> 23) & 0xFF
    f = b & 0x7FFFFF
    mant = np.where(e == 0, f, f | (1 << 23))
    exp = np.where(e == 0, -149, e - 150)
    return mant, exp


def _bit_length(m: np.ndarray) -> np.ndarray:
    """Bit length of non-negative int64 values < 2^53 (exact through float64)."""
    return np.where(m > 0, np.frexp(m.astype(np.float64))[1], 0)


def _codes(v: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """clamp(rint(v)) for exactly representable float64 values."""
    return np.clip(np.rint(v), lo, hi)


def quant_labels(floats: list[int], cfg: QuantConfig, bf16: bool = False, codes: list[int] | None = None) -> set[str]:
    """Labels of every float (fp32 or bf16 bit patterns) of one quantize tensor.

    codes: the observed output code patterns, one per float (None: not checked); the
    boundary labels then count only values the DUT coded as the boundary implies.
    """
    if not len(floats):
        return set()
    x = bf16_bits_to_f32(floats) if bf16 else bits_to_f32(floats)
    x = np.asarray(x, dtype=np.float32)
    s = np.float32(cfg.scale)
    lo, hi = bounds(cfg.bits, cfg.signed, cfg.narrow)
    out: set[str] = set()
    xb = np.asarray(f32_to_bits(x), dtype=np.int64).reshape(-1)
    x = x.reshape(-1)
    sub = ((xb >> 23) & 0xFF == 0) & (xb & 0x7FFFFF != 0)
    with np.errstate(all="ignore"):
        p = x * s  # float32, rounded to nearest even
    nan = np.isnan(p)
    inf = np.isinf(p)
    zero = ~nan & ((x == 0) | (s == 0))
    if nan.any():
        out.add("nan")
    if inf.any():
        out.add("inf")
    if zero.any():
        out.add("zero")
    fin = ~nan & ~inf & ~zero
    pf = p.astype(np.float64)
    r = np.rint(pf)
    code = np.where(fin, np.clip(r, lo, hi), 0)
    if sub.any():
        out.add("subnormal_x")
        if (sub & fin & (code != 0)).any():
            out.add("subnormal_coded")
    if not fin.any():
        return out
    obs = None
    if codes is not None and len(codes) == len(xb):
        obs = from_pattern(np.asarray(codes, dtype=np.int64), cfg.bits, cfg.signed)
    out |= _quant_boundaries(xb, s, p, fin, (lo, hi), obs, bf16)
    pf, r = pf[fin], r[fin]
    tiny = np.abs(pf) < 0.5
    out.update(name for name, mask in (
        ("tiny", tiny),
        ("sat_hi", r > hi),
        ("sat_lo", r < lo),
        ("edge_hi", ~tiny & (r == hi)),
        ("edge_lo", ~tiny & (r == lo) & (lo != 0)),
        ("inrange", ~tiny & (r > lo) & (r < hi)),
    ) if mask.any())
    # integer ties of the float32 product, in magnitude: |p| = k + 0.5
    sgn = np.where(pf < 0, -1.0, 1.0)
    fl = np.floor(np.abs(pf))
    tie = (np.abs(pf) - fl) == 0.5
    if tie.any():
        decisive = tie & (np.clip(sgn * fl, lo, hi) != np.clip(sgn * (fl + 1), lo, hi))
        odd = np.mod(fl, 2) != 0  # half to even: away from zero when k is odd
        if (decisive & ~odd).any():
            out.add("int_tie_down")
        if (decisive & odd).any():
            out.add("int_tie_up")
    # ties of the float32 rounding of the exact product x * s
    sb = np.array([f32_to_bits(s)], dtype=np.int64)
    ms, es = _split(sb)
    mx, ex = _split(xb[fin])
    negative = ((xb[fin] >> 31) & 1) != ((sb[0] >> 31) & 1)
    m = mx * ms[0]  # exact, < 2^48
    e = ex + es[0]
    nb = _bit_length(m)
    shift = nb - 24
    # only products of normal magnitude round on the 24-bit grid (smaller ones give code 0)
    keep = (shift > 0) & (nb - 1 + e >= -126)
    m, e, shift, negative = m[keep], e[keep], shift[keep], negative[keep]
    if m.size:
        low = m & ((np.int64(1) << shift) - 1)
        mid = low == (np.int64(1) << (shift - 1))
        if mid.any():
            m, e, shift = m[mid], e[mid], shift[mid]
            sign = np.where(negative[mid], -1.0, 1.0)
            down = m >> shift  # 24-bit significands of the two neighbours: down, down + 1
            scale = np.ldexp(1.0, (e + shift).astype(np.int64))
            c_down = _codes(sign * down * scale, lo, hi)
            c_up = _codes(sign * (down + 1) * scale, lo, hi)
            decisive = c_down != c_up
            goes_up = (down & 1) == 1  # nearest even takes the even neighbour
            if (decisive & goes_up).any():
                out.add("p_tie_up")
            if (decisive & ~goes_up).any():
                out.add("p_tie_down")
            if (~decisive).any():
                out.add("p_tie")
    return out


class _Hits:
    """Collects labels whose values, where an observed output is given, came out as expected."""

    def __init__(self, valid: np.ndarray, obs: np.ndarray | None) -> None:
        self.valid, self.obs, self.labels = valid, obs, set()

    def __call__(self, name: str, mask: np.ndarray, want: np.ndarray) -> None:
        m = mask & self.valid
        if self.obs is not None:
            m &= self.obs == want
        if m.any():
            self.labels.add(name)


def _pow2(e: np.ndarray) -> np.ndarray:
    """2.0 ** e, exact for integer arrays in the float64 range."""
    return np.ldexp(1.0, np.asarray(e, dtype=np.int64))


def _quant_boundaries(xb: np.ndarray, s: np.float32, p: np.ndarray, fin: np.ndarray, limits: tuple[int, int],
                      obs: np.ndarray | None, bf16: bool) -> set[str]:
    """The rounding-datapath boundary labels of one tensor (see the module docstring).

    The exact product is M * 2^E from the integer significands; its float32 rounding is
    redone here on integers (down, rem, half), independently of numpy's multiply.
    """
    lo, hi = limits
    hit = _Hits(fin, obs)
    sb = np.int64(f32_to_bits(s))
    mx, ex = _split(xb)
    ms, es = _split(np.array([sb]))
    m_prod, e_prod = mx * ms[0], ex + es[0]
    nb = _bit_length(m_prod)
    negative = ((xb >> 31) & 1) != ((sb >> 31) & 1)
    sgn = np.where(negative, -1.0, 1.0)
    clamp = lambda v: np.clip(np.rint(v), lo, hi)  # noqa: E731
    rnd = fin & (nb > 24) & (nb - 1 + e_prod >= -126)  # normal products that lose bits
    sh = np.where(rnd, nb - 24, 1)
    down = m_prod >> sh
    rem = m_prod & ((np.int64(1) << sh) - 1)
    half = np.int64(1) << (sh - 1)
    up = (rem > half) | ((rem == half) & (down & 1 == 1))
    # carry: 0xffffff rounds up to 2^24, i.e. the product becomes 2^N
    n_exp = nb + e_prod
    carry = rnd & up & (down == (1 << 24) - 1) & (n_exp >= 0)
    pow_n = sgn * _pow2(np.where(carry, n_exp, 0))
    c_carry, c_half = clamp(pow_n), clamp(pow_n / 2)
    hit("p_carry", carry & (c_carry == pow_n), c_carry)
    hit("p_carry_sat", carry & (c_carry != pow_n) & (c_carry != c_half), c_carry)
    # sticky: above the midpoint, even neighbour below, the neighbours give different codes
    ulp = _pow2(np.where(rnd, sh + e_prod, 0))
    c_dn, c_up = clamp(sgn * down * ulp), clamp(sgn * (down + 1) * ulp)
    sticky = rnd & (rem > half) & (down & 1 == 0) & (c_dn != c_up)
    hit("p_sticky", sticky, c_up)
    full = (_bit_length(mx) == 24) & (_bit_length(ms)[0] == 24)
    hit("p_sticky_lsb", sticky & (rem == half + 1) & full, c_up)
    # the float32 product next to an integer tie k + 0.5
    pa = np.abs(p)
    code = clamp(p.astype(np.float64))
    small = fin & (pa > 0) & (pa < 2.0**17)
    with np.errstate(all="ignore"):
        for t in (np.nextafter(pa, np.float32(0)), np.nextafter(pa, np.float32(np.inf))):
            t64 = t.astype(np.float64)
            k = np.floor(t64)
            tie = small & (t64 - k == 0.5)
            hit("int_tie_ulp", tie & (clamp(sgn * k) != clamp(sgn * (k + 1))), code)
    r = np.rint(p.astype(np.float64))
    hit("sat_hi_1", r == hi + 1, np.full(r.shape, float(hi)))
    hit("sat_lo_1", r == lo - 1, np.full(r.shape, float(lo)))
    hit("sat_binade16", (pa >= 2.0**16) & (pa < 2.0**17), code)
    edges = (0x00800000, 0x007F0000 if bf16 else 0x007FFFFF)
    hit("x_normal_edge", np.isin(xb & 0x7FFFFFFF, edges) & (code != 0), code)
    hit("p_subnormal", (pa > 0) & (pa < F32_MIN_NORMAL), code)
    return hit.labels


def _quotient_boundaries(q: np.ndarray, s: np.float32, res32: np.ndarray, bf16: bool) -> set[str]:
    """r_carry and r_tie_* of one tensor: exact quotient q / s against the results res32."""
    out: set[str] = set()
    if not np.isfinite(s) or s == 0:
        return out
    sig, lsb = (int(v[0]) for v in _split(np.array([np.int64(f32_to_bits(s))])))
    mag_bits = res32 & 0x7FFFFFFF
    exp, mant = mag_bits >> 23, mag_bits & 0x7FFFFF
    # a power of two (or Inf, as 2^128) above the exact quotient: the rounding carried
    for i in np.flatnonzero((q != 0) & (mant == 0) & (exp >= 1)):
        c = lsb + int(exp[i]) - 127
        a = abs(int(q[i]))
        if (a < sig << c) if c >= 0 else (a << -c < sig):
            out.add("r_carry")
    # exact quotients halfway between two results: the odd part of the scale divides q
    s_odd, tz = sig, 0
    while not s_odd & 1:
        s_odd, tz = s_odd >> 1, tz + 1
    prec, sub_lsb = (8, -133) if bf16 else (24, -149)
    for i in np.flatnonzero((q != 0) & (q % s_odd == 0)):
        w = abs(int(q[i])) // s_odd
        o, z = w, -(lsb + tz)
        while not o & 1:
            o, z = o >> 1, z + 1
        binade = o.bit_length() - 1 + z
        ulp = max(binade - prec + 1, sub_lsb)
        if binade >= 128 or z != ulp - 1:
            continue
        lower = (o - 1) // 2
        nearest = lower if lower % 2 == 0 else lower + 1
        got = float(np.asarray(mag_bits[i], dtype=np.uint32).view(np.float32))
        if got == math.ldexp(nearest, ulp):
            out.add("r_tie_down" if nearest == lower else "r_tie_up")
    return out


def dequant_labels(patterns: list[int], cfg: QuantConfig, bf16: bool = False,
                   results: list[int] | None = None) -> set[str]:
    """Labels of every code pattern (as seen on the input, junk bits included) of one tensor.

    results: the observed output floats (fp32 or bf16 patterns), one per code; the result
    classes are then those of what the DUT produced (None: the reference model's).
    """
    if not len(patterns):
        return set()
    raw = np.asarray(patterns, dtype=np.int64)
    mask = (1 << cfg.bits) - 1
    q = from_pattern(raw & mask, cfg.bits, cfg.signed)
    lo, hi = bounds(cfg.bits, cfg.signed, False)
    out = {name for name, hit in (
        ("junk", (raw & ~mask & 0xFFFF).any()),
        ("q_zero", (q == 0).any()),
        ("q_min", cfg.signed and (q == lo).any()),
        ("q_max", (q == hi).any()),
    ) if hit}
    if results is not None and len(results) == len(q):
        res = np.asarray(results, dtype=np.int64)
    else:
        res = dequantize_bits(q, cfg, bf16=bf16)
    if bf16:
        res = (res & 0xFFFF) << 16
    mag = res & 0x7FFFFFFF
    exp = mag >> 23
    out.update(name for name, m in (
        ("r_zero", mag == 0),
        ("r_subnormal", (exp == 0) & (mag != 0)),
        ("r_normal", (exp > 0) & (exp < 255)),
        ("r_inf", mag == 0x7F800000),
        ("r_nan", mag > 0x7F800000),
        ("r_top_binade", exp == 254),
        ("r_min_normal", exp == 1),
    ) if m.any())
    s = np.float32(cfg.scale)
    out |= _quotient_boundaries(q, s, res, bf16)
    if np.isfinite(s) and s != 0:
        a = np.abs(q[q != 0]).astype(np.float64)
        sa = abs(float(s))
        if (a < sa * 2.0**-127).any():
            out.add("r_sub_deep")
        if ((a >= sa * 2.0**-127) & (a < sa * 2.0**-126)).any():
            out.add("r_sub_shallow")
        if (a > sa * float(np.finfo(np.float32).max)).any():
            out.add("r_overflow")
        if ((a >= sa * 2.0**128) & (a < sa * 2.0**129)).any():
            out.add("r_overflow_edge")
    return out


def stream_labels(n: int, bits: int, word_w: int) -> set[str]:
    """Labels of the bitstream layout of a tensor of n b-bit values in W-bit words."""
    out = set()
    if n == 1:
        out.add("single")
    out.add("exact_fill" if (n * bits) % word_w == 0 else "padded")
    starts = np.arange(n) * bits
    crosses = (starts // word_w) != ((starts + bits - 1) // word_w)
    if crosses.any():
        out.add("straddle")
    if n and crosses[-1]:
        out.add("last_straddles")
    return out


def scale_labels(cfg: QuantConfig) -> set[str]:
    """What kind of scale register value a tensor used."""
    s = np.float32(cfg.scale)
    b = int(f32_to_bits(s))
    if np.isnan(s):
        return {"scale_nan"}
    if np.isinf(s):
        return {"scale_inf"}
    if s == 0:
        return {"scale_negzero" if b >> 31 else "scale_zero"}
    out = {"scale_neg"} if s < 0 else set()
    mant, _ = _split(np.array([b]))
    odd = int(mant[0])
    while odd and not odd & 1:
        odd >>= 1
    if abs(s) < F32_MIN_NORMAL:
        out.add("scale_subnormal")
    elif abs(s) >= 2.0**100:
        out.add("scale_huge")
    elif odd < (1 << 12):
        out.add("scale_short")
    else:
        out.add("scale_typical")
    return out


def tensor_labels(unit: str, cfg: QuantConfig, data: list[int], word_w: int = 0, bf16: bool = False,
                  out: list[int] | None = None) -> set[str]:
    """Every label of one tensor as it entered a unit (its input frame, as observed).

    quantizer: floats; dequantizer, packer: code patterns; unpacker: packed words;
    top.quant: floats (packed into word_w-bit words); top.dequant: packed words of
    cfg.count codes. out: the unit's observed output frame (codes, words or floats), so
    that boundary and result labels say what the DUT did; None: from the input alone.
    """
    if unit == "quantizer":
        return quant_labels(data, cfg, bf16, out) | scale_labels(cfg)
    if unit == "dequantizer":
        return dequant_labels(data, cfg, bf16, out) | scale_labels(cfg)
    if unit == "packer":
        junk = any(c & ~((1 << cfg.bits) - 1) & 0xFFFF for c in data)
        return stream_labels(len(data), cfg.bits, word_w) | ({"junk"} if junk else set())
    if unit == "unpacker":
        return stream_labels(cfg.count, cfg.bits, word_w)
    if unit == "top.quant":
        codes = None if out is None else unpack(out, cfg.bits, word_w, len(data))
        return (quant_labels(data, cfg, bf16, codes) | stream_labels(len(data), cfg.bits, word_w)
                | scale_labels(cfg))
    if unit == "top.dequant":
        codes = unpack(data, cfg.bits, word_w, cfg.count)
        return (dequant_labels(codes, cfg, bf16, out) | stream_labels(cfg.count, cfg.bits, word_w)
                | scale_labels(cfg))
    raise ValueError(f"unknown unit {unit!r}")
