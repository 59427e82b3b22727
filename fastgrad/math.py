"""Elementary functions written in fastgrad itself: vectorisable, and the same bits on every machine.

Each function here is straight-line IEEE arithmetic: a range reduction, a
polynomial (``fastgrad/_math_coefficients.py``, derived by
``tools/make_math_coefficients.py``) and a reconstruction, with special
values (±0, ±inf, NaN, overflow, underflow) chosen lane by lane by
:func:`fastgrad._simd.where` rather than by branches. So one source compiles

* for a ``float``: callable from Python (``fastgrad.math.exp(1.0)``) and from
  your own ``@numba.njit`` functions, like ``math.exp``;
* for four draws at once (fastgrad's ``F64x4`` vectors): fastgrad's kernels
  use them on 4-lane vectors, where a libm call would be one scalar call per
  draw.

Every operation is spelled out: additions, multiplications, ``fma`` (exactly
specified by IEEE 754, the same result with or without an FMA instruction)
and bit manipulations of the exponent. No fast-math flag lets the compiler
contract or reorder them, so a result does not depend on the CPU, its
vector width or its libm (``docs/math.md`` has the domains, the special
values and the measured accuracy).
"""

import numpy as np
from numba.extending import overload

from fastgrad import _math_coefficients as C
from fastgrad._jit import core, inline_core
from fastgrad._simd import (
    any_lane,
    copysign,
    f64x4,
    fabs,
    float_bits,
    fma,
    lane,
    like,
    pow2,
    split_exponent,
    where,
    with_lane,
)

__all__ = ["cos", "erf", "erfc", "exp", "expm1", "log", "log1p", "sigmoid", "sin", "sincos", "softplus", "tanh"]

INF = float("inf")
NAN = float("nan")

#: 1.5 * 2**52: ``(t + SHIFT) - SHIFT`` is ``t`` rounded to the nearest integer (ties to even) for ``|t| < 2**51``.
SHIFT = 6755399441055744.0
INV_LN2 = 1.4426950408889634  # 1 / ln 2, rounded
LN2_HI = 0.6931471805598903  # ln 2 to 42 bits: k * LN2_HI is exact for |k| < 2**11
LN2_LO = 5.497923018708371e-14  # ln 2 - LN2_HI, rounded
#: exp(x) is inf above this (the largest x with a finite exp is 709.782712893384).
EXP_OVERFLOW = 709.7827128933841
#: exp(x) rounds to 0 below this (exp(-745.1332191019412) is half the smallest subnormal).
EXP_UNDERFLOW = -745.1332191019412
TWO54 = 18014398509481984.0  # 2**54: lifts a subnormal into the normal range
SMALLEST_NORMAL = 2.2250738585072014e-308


@core
def _polynomial(x, c):
    """``c[0] + c[1] x + ... + c[n-1] x**(n-1)`` by Horner's rule with one ``fma`` per step."""
    n = len(c)
    acc = fma(x, c[n - 1], c[n - 2])
    for i in range(n - 3, -1, -1):
        acc = fma(acc, x, c[i])
    return acc


@core
def _exp_reduced(x):
    """``(k, t, t_error)``: ``e**x = 2**k (1 + t + t_error)``, ``k`` integral, ``|t| <= 0.42``.

    ``t_error`` lies below ``t``'s last bit, and ``t + t_error`` is within
    about 2**-60 of ``e**r - 1``: ``expm1`` doubles t's error for ``k = 1``.
    ``x = k ln 2 + r`` with ``|r| <= ln(2)/2``: ``k`` by the rounding trick,
    ``r`` as ``hi - lo`` with ``hi`` exact (Sterbenz) and the rounding error
    ``dr`` of ``r`` kept; ``e**r - 1 = r + r**2/2 + r**3 P(r)``, the first
    two terms summed exactly (``r**2`` split by an fma).
    """
    k = (x * INV_LN2 + SHIFT) - SHIFT
    hi = x - k * LN2_HI
    lo = k * LN2_LO
    r = hi - lo
    dr = (hi - r) - lo  # what rounding r lost
    square = r * r
    half = 0.5 * square
    u = r + half
    tail = ((r - u) + half) + (r * square * _polynomial(r, C.EXP) + (0.5 * fma(r, r, -square) + dr))
    t = u + tail
    return k, t, (u - t) + tail


@core
def _scale(y, k):
    """``y * 2**k`` for integral ``|k| <= 2100``, in two exact halves: a result that ends subnormal is rounded once."""
    half = (k * 0.5 + SHIFT) - SHIFT
    return (y * pow2(half)) * pow2(k - half)


@core
def _exp_split(x):
    """``(k, ph, pl)``: ``e**x = 2**k (ph + pl)`` to about 2**-60 relative, for the functions built on exp."""
    k, t, t_error = _exp_reduced(x)
    ph = 1.0 + t
    return k, ph, ((1.0 - ph) + t) + t_error


@core
def exp(x):
    """Return ``e**x``, within 1 ulp (``docs/math.md``): inf above 709.78, 0 below -745.13, NaN for NaN."""
    k, ph, pl = _exp_split(x)
    y = _scale(ph + pl, k)
    y = where(x > EXP_OVERFLOW, INF, y)
    return where(x < EXP_UNDERFLOW, 0.0, y)


@core
def expm1(x):
    """Return ``e**x - 1`` within 1 ulp, accurate near 0 (``expm1(1e-20)`` is 1e-20): -1 below -38, inf above 709.78.

    ``2**k (1 + t) - 1 = (2**k - 1) + 2**k t``, the sum carried in two parts;
    for ``k`` above 1023 the last factor of 2 is applied at the end.
    """
    k, t, t_error = _exp_reduced(x)
    kk = where(k > 1023.0, 1023.0, k)
    power = pow2(kk)
    a = power - 1.0
    a_error = (power - a) - 1.0  # exact: 2**k - 1 = a + a_error (a is rounded from k = 54 on)
    b = power * t
    s = a + b
    back = s - a
    s_error = (a - (s - back)) + (b - back)
    y = s + ((s_error + a_error) + power * t_error)
    y = where(k > 1023.0, 2.0 * y, y)
    y = where(x > EXP_OVERFLOW, INF, y)
    y = where(x < -38.0, -1.0, y)
    return where(x == 0.0, x, y)


@core
def _log_reduced(m, e, correction):
    """``log(m 2**e) + correction`` for ``m`` in ``[sqrt(1/2), sqrt(2))`` and a small ``correction``.

    ``f = m - 1``, ``s = f / (2 + f)`` and
    ``log(1 + f) = f - (f**2/2 - s (f**2/2 + z P(z)))`` with ``z = s**2``;
    ``e ln 2`` is added in two parts, the exact one last.
    """
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    half_square = 0.5 * f * f
    r = z * _polynomial(z, C.LOG)
    return e * LN2_HI + (f - (half_square - (s * (half_square + r) + (e * LN2_LO + correction))))


@core
def log(x):
    """Return the natural logarithm, within 1 ulp: -inf at ±0, NaN below 0 and for NaN, inf at inf.

    Subnormal ``x`` is scaled by ``2**54`` before its exponent is split off.
    """
    tiny = x < SMALLEST_NORMAL
    m, e = split_exponent(where(tiny, x * TWO54, x))
    y = _log_reduced(m, where(tiny, e - 54.0, e), 0.0)
    y = where(x == INF, INF, y)
    y = where(x == 0.0, -INF, y)
    return where(x < 0.0, NAN, where(x != x, x, y))


#: Below this magnitude log1p is its Taylor series to the cube (the next term is under 2**-60 of it):
#: there ``u - 1`` and ``c`` above would be of the size of the result and cancel.
LOG1P_SERIES = 2.0**-20


@core
def _log1p_pair(h, low):
    """``log(1 + h + low)`` for ``h > -1`` and ``low`` below h's last bit (NaN where ``1 + h <= 0``).

    ``u = 1 + h`` loses ``c = h - (u - 1)`` (exact); ``log(1 + h + low)`` is
    ``log(u) + (c + low)/u`` to far below the last bit. For
    ``|h| < LOG1P_SERIES`` it is ``h + (low - h**2 (1/2 - h/3))``.
    """
    u = 1.0 + h
    c = (h - (u - 1.0)) + low
    m, e = split_exponent(where(u > 0.0, u, 1.0))
    general = _log_reduced(m, e, c / u)
    series = h + (low - h * h * (0.5 - h * (1.0 / 3.0)))
    return where(fabs(h) < LOG1P_SERIES, series, general)


@core
def log1p(x):
    """Return ``log(1 + x)`` within 1 ulp, accurate near 0: -inf at -1, NaN below -1 and for NaN; keeps -0."""
    y = _log1p_pair(x, 0.0)
    y = where(x == INF, INF, y)
    y = where(x == -1.0, -INF, y)
    y = where(x < -1.0, NAN, where(x != x, x, y))
    return where(x == 0.0, x, y)


# --- functions of e**-|x|: sigmoid, softplus, tanh ---------------------------------------------
#
# Each needs e**y to more than a double's precision (a ratio or a log1p of it
# would otherwise add its rounding to theirs): _exp_pair gives it as
# ``eh + el``, and each quotient is corrected by its exact remainder (an fma).


@core
def _exp_pair(y):
    """``(eh, el)`` with ``e**y = eh + el`` to about 2**-60 relative, for ``y <= 0`` (0 below the underflow)."""
    k, ph, pl = _exp_split(y)
    under = y < EXP_UNDERFLOW
    return where(under, 0.0, _scale(ph, k)), where(under, 0.0, _scale(pl, k))


@core
def _divide(nh, nl, dh, dl):
    """``(nh + nl) / (dh + dl)`` rounded once but for about 2**-60 (``dh + dl`` within [1, 2])."""
    q = nh / dh
    remainder = fma(-dh, q, nh)  # exact: nh - dh q
    return q + ((remainder + nl) - q * dl) / dh


@core
def _one_plus(eh, el):
    """``(dh, dl)`` with ``dh + dl = 1 + eh + el`` exactly but for el's rounding (``|eh| <= 1``)."""
    dh = 1.0 + eh
    return dh, ((1.0 - dh) + eh) + el


@core
def sigmoid(x):
    """Return the logistic function ``1 / (1 + e**-x)`` within 1 ulp: 1 at inf, 0 at -inf, NaN for NaN.

    With ``e = e**-|x|``: ``1 / (1 + e)`` for ``x >= 0`` and ``e / (1 + e)``
    below, so nothing cancels and small results (``sigmoid(-700)``) keep
    their relative accuracy.
    """
    eh, el = _exp_pair(-fabs(x))
    dh, dl = _one_plus(eh, el)
    positive = x >= 0.0
    return _divide(where(positive, 1.0, eh), where(positive, 0.0, el), dh, dl)


#: softplus(x) is x + log1p(e**-x) above this, log1p(e**x) at and below it (where x would cancel with the log).
SOFTPLUS_SPLIT = 2.0


@core
def softplus(x):
    """Return ``log(1 + e**x)`` within 1 ulp: ``e**x`` far below 0 (``softplus(-800)`` is 0), ``x`` far above.

    One exponential and one logarithm: ``log1p(e**x)`` up to ``x = 2``, and
    ``x + log1p(e**-x)`` above, where the log is below 0.13 and rounds away
    under ``x``.
    """
    large = x > SOFTPLUS_SPLIT
    eh, el = _exp_pair(where(large, -x, x))
    tail = _log1p_pair(eh, el)
    y = where(large, x + tail, tail)
    return where(x == INF, INF, y)


#: tanh's polynomial serves |x| below this; beyond, it is (1 - e**-2|x|) / (1 + e**-2|x|).
TANH_SMALL = 0.4


@core
def tanh(x):
    """Return the hyperbolic tangent within 1 ulp: ±1 at ±inf, NaN for NaN, -0 kept.

    ``x + x z P(z)`` (``z = x**2``) for ``|x| < 0.4``; above, with
    ``e = e**-2|x|`` carried in two parts, ``(1 - e) / (1 + e)`` with the
    sign of ``x``.
    """
    a = fabs(x)
    z = x * x
    small = x + x * z * _polynomial(z, C.TANH)
    eh, el = _exp_pair(-2.0 * a)
    dh, dl = _one_plus(eh, el)
    nh = 1.0 - eh
    nl = ((1.0 - nh) - eh) - el
    # (the sign last: x z P(z) is +0 at x = -0, and -0 + +0 would lose it)
    return copysign(where(a < TANH_SMALL, small, _divide(nh, nl, dh, dl)), x)


# --- sin and cos -------------------------------------------------------------------------
#
# x = k pi/2 + r with |r| <= pi/4 (a hair more), r carried as rh + rl. Up to
# TRIG_FAST_LIMIT in magnitude, pi/2 in three pieces (Cody & Waite) suffices:
# x - k HALF_PI[0] is exact with an fma (the difference is small and on the
# grid of both terms), k HALF_PI[1] is split exactly with a second fma, and
# k HALF_PI[2] is far below the last bit. Beyond it, lanes are reduced again
# one at a time by _reduce_huge (Payne & Hanek: x times the bits of 2/pi that
# matter, in integer arithmetic), which the common case never reaches.

TWO_OVER_PI = 0.6366197723675814  # 2/pi, rounded
#: |x| above this (2**20) takes the exact reduction of huge arguments.
TRIG_FAST_LIMIT = 1048576.0
_MASK32 = np.uint64(0xFFFFFFFF)
_MASK52 = np.uint64((1 << 52) - 1)
_TWO_OVER_PI_WORDS = np.array(C.TWO_OVER_PI, dtype=np.uint64)


@core
def _floor_quarter(k):
    """``floor(k / 4)`` of an integral float ``k`` (|k| < 2**51)."""
    t = (k * 0.25 + SHIFT) - SHIFT
    return where(t > k * 0.25, t - 1.0, t)


@core
def _reduce(x):
    """``(rh, rl, q)``: ``x = (4n + q) pi/2 + rh + rl``, ``q`` in {0, 1, 2, 3}, for ``|x| <= TRIG_FAST_LIMIT``."""
    k = (x * TWO_OVER_PI + SHIFT) - SHIFT
    r1 = fma(-k, C.HALF_PI[0], x)  # exact
    w = k * C.HALF_PI[1]
    w_error = fma(k, C.HALF_PI[1], -w)  # exact: k HALF_PI[1] = w + w_error
    rh = r1 - w
    back = rh - r1
    rounding = (r1 - (rh - back)) - (w + back)  # Knuth's two-sum: r1 - w = rh + rounding exactly
    rl = rounding - (w_error + k * C.HALF_PI[2])
    return rh, rl, k - 4.0 * _floor_quarter(k)


@core
def _word(i):
    """Word ``i`` of the fraction of 2/pi (0 outside the table)."""
    if i < 0 or i >= _TWO_OVER_PI_WORDS.size:
        return np.uint64(0)
    return _TWO_OVER_PI_WORDS[i]


@core
def _bits_of_two_over_pi(start):
    """Bits ``start .. start + 63`` of 2/pi's fraction (bit p weighs 2**-p; bits p <= 0 are 0), MSB first."""
    i = (start - 1) // 64
    offset = (start - 1) - 64 * i
    if offset == 0:
        return _word(i)
    return (_word(i) << np.uint64(offset)) | (_word(i + 1) >> np.uint64(64 - offset))


@core
def _multiply(a, b):
    """``(high, low)`` 64-bit words of the 128-bit product of two uint64s."""
    a_lo, a_hi = a & _MASK32, a >> np.uint64(32)
    b_lo, b_hi = b & _MASK32, b >> np.uint64(32)
    ll, lh, hl, hh = a_lo * b_lo, a_lo * b_hi, a_hi * b_lo, a_hi * b_hi
    middle = (ll >> np.uint64(32)) + (lh & _MASK32) + (hl & _MASK32)
    low = (middle << np.uint64(32)) | (ll & _MASK32)
    high = hh + (lh >> np.uint64(32)) + (hl >> np.uint64(32)) + (middle >> np.uint64(32))
    return high, low


@core
def _reduce_huge(x):
    """``_reduce`` for any finite ``x``, exactly (Payne & Hanek); scalar, for the rare huge lanes.

    ``|x| = M 2**E`` with a 53-bit integer ``M``. Bits of 2/pi weighing more
    than ``2**(1 - E)`` add multiples of 4 to ``|x| 2/pi`` and are skipped;
    the next 192 bits, times ``M``, give the quadrant (2 bits) and the
    fraction (190 bits) exactly but for a part below 2**-137.
    """
    bits = float_bits(abs(x))
    exponent = np.int64(bits >> np.uint64(52)) - 1075
    mantissa = (bits & _MASK52) | np.uint64(1 << 52)
    start = exponent - 1
    high0, a0 = _multiply(mantissa, _bits_of_two_over_pi(start + 128))
    high1, low1 = _multiply(mantissa, _bits_of_two_over_pi(start + 64))
    low2 = mantissa * _bits_of_two_over_pi(start)
    a1 = high0 + low1
    a2 = high1 + low2 + np.uint64(a1 < low1)
    quadrant = np.int64(a2 >> np.uint64(62))
    f = (a2 << np.uint64(2)) | (a1 >> np.uint64(62))
    g = (a1 << np.uint64(2)) | (a0 >> np.uint64(62))
    if f >> np.uint64(63):  # fraction >= 1/2: round up, the fraction becomes negative (two's complement)
        quadrant += 1
    signed = np.int64(f)  # the fraction times 2**64, in [-2**62, 2**62)
    top = np.float64(signed)
    rest = np.float64(signed - np.int64(top)) + np.float64(g) * 2.0**-64
    fh = top * 2.0**-64
    fl = rest * 2.0**-64
    rh = fh * C.HALF_PI[0]
    rl = fma(fh, C.HALF_PI[0], -rh) + (fh * C.HALF_PI[1] + fl * C.HALF_PI[0])
    total = rh + rl
    rl = rl - (total - rh)
    quadrant = quadrant & 3
    if x < 0:
        return -total, -rl, np.float64((4 - quadrant) & 3)
    return total, rl, np.float64(quadrant)


@inline_core
def _reduce_lane(x, rh, rl, q, i):
    """Lane ``i`` (a literal) of the reduction again by :func:`_reduce_huge` if it is huge and finite."""
    v = lane(x, i)
    if abs(v) > TRIG_FAST_LIMIT and abs(v) < INF:
        h, low, k = _reduce_huge(v)
        return with_lane(rh, i, h), with_lane(rl, i, low), with_lane(q, i, k)
    return rh, rl, q


def _reduce_any(x):
    """``_reduce`` for every finite ``x`` (scalar or vector); compiled code only."""
    raise NotImplementedError("fastgrad.math._reduce_any is compiled code only")


@overload(_reduce_any, inline="always")
def _ol_reduce_any(x):
    if x == f64x4:

        def vector(x):
            rh, rl, q = _reduce(x)
            huge = (fabs(x) > TRIG_FAST_LIMIT) & (fabs(x) < INF)
            if any_lane(huge):
                rh, rl, q = _reduce_lane(x, rh, rl, q, 0)
                rh, rl, q = _reduce_lane(x, rh, rl, q, 1)
                rh, rl, q = _reduce_lane(x, rh, rl, q, 2)
                rh, rl, q = _reduce_lane(x, rh, rl, q, 3)
            return rh, rl, q

        return vector

    def scalar(x):
        if abs(x) > TRIG_FAST_LIMIT and abs(x) < INF:
            return _reduce_huge(x)
        return _reduce(x)

    return scalar


@core
def _sin_cos_reduced(rh, rl):
    """``(sin(rh + rl), cos(rh + rl))`` for ``|rh| <= pi/4``, ``|rl|`` below its last bit."""
    z = rh * rh
    s = rh + (rh * z * _polynomial(z, C.SIN) + rl * (1.0 - 0.5 * z))
    half = 0.5 * z
    w = 1.0 - half
    z_error = fma(rh, rh, -z)
    c = w + (((1.0 - w) - half) + (z * z * _polynomial(z, C.COS) - (0.5 * z_error + rh * rl)))
    return s, c


@core
def sincos(x):
    """Return ``(sin(x), cos(x))`` from one reduction, each as :func:`sin` and :func:`cos` give it."""
    rh, rl, q = _reduce_any(x)
    s, c = _sin_cos_reduced(rh, rl)
    odd = (q == 1.0) | (q == 3.0)
    sine = where(odd, c, s)
    cosine = where(odd, s, c)
    sine = where(q >= 2.0, -sine, sine)
    cosine = where((q == 1.0) | (q == 2.0), -cosine, cosine)
    return where(x == 0.0, x, sine), cosine


@core
def sin(x):
    """Return ``sin(x)`` within 1 ulp for every finite ``x`` (``sin(1e300)`` too); NaN at ±inf and NaN; keeps -0."""
    return sincos(x)[0]


@core
def cos(x):
    """Return ``cos(x)`` within 1 ulp for every finite ``x``; NaN at ±inf and NaN."""
    return sincos(x)[1]


# --- erf and erfc ----------------------------------------------------------------------------
#
# |x| < ERF_SMALL: erf(x) = x + x P(x**2). Beyond, erfc(a) = e**(-a**2) erfcx(a), a = |x|: a**2 split
# exactly by an fma, e**(-a**2) carried in two parts (_exp_split), and erfcx(a) = e**(a**2) erfc(a), a
# slowly varying function, a polynomial on each of five pieces (in a, then in 1/a with 1/a carried in
# two parts), its constant term in two parts. erf is then 1 - erfc, and erfc of a negative x 2 - erfc(a),
# each subtraction carried exactly until the last rounding.

#: erf's odd polynomial serves |x| below this.
ERF_SMALL = 0.75
#: erfc(x) is 0 beyond this (erfc(27.3) is below half the smallest subnormal); erf(x) is 1 beyond 6.
ERFC_ZERO = 27.3
ERF_ONE = 6.0
TWO_M54 = 2.0**-54
TWO_54 = 18014398509481984.0


@core
def _select(bounds, values, a):
    """``values[i]`` for the first ``i`` with ``a < bounds[i]`` (the last where none is), lane by lane."""
    n = len(values)
    out = like(values[n - 1], a)
    for i in range(n - 2, -1, -1):
        out = where(a < bounds[i], values[i], out)
    return out


@core
def _erfcx_pair(a):
    """``(gh, gl)``: ``e**(a**2) erfc(a) = gh + gl`` to about 2**-60 relative, for ``ERF_SMALL <= a <= ERFC_ZERO``.

    On each piece a polynomial in ``d = v - center`` (exact), ``v = a`` on the
    first two, ``v = w = 1/a`` (in two parts) on the others, where it gives
    ``erfcx(a) / w``; its last two Horner steps are carried in two parts.
    """
    inverse = 1.0 / a
    inverse_low = fma(-inverse, a, 1.0) / a  # 1/a = inverse + inverse_low, but for this last rounding
    small = a < C.ERFCX_BOUNDS[1]
    d = where(small, a, inverse) - _select(C.ERFCX_BOUNDS, C.ERFCX_CENTERS, a)  # exact (Sterbenz)
    low = where(small, 0.0, inverse_low)
    rows = C.ERFCX
    n = len(rows[0])
    acc = _select(C.ERFCX_BOUNDS, (rows[0][n - 1], rows[1][n - 1], rows[2][n - 1], rows[3][n - 1], rows[4][n - 1]), a)
    for k in range(n - 2, 0, -1):
        coefficient = _select(C.ERFCX_BOUNDS, (rows[0][k], rows[1][k], rows[2][k], rows[3][k], rows[4][k]), a)
        acc = fma(acc, d, coefficient)
    slope = _select(C.ERFCX_BOUNDS, (rows[0][0], rows[1][0], rows[2][0], rows[3][0], rows[4][0]), a)
    # slope + acc d and head + (that) d, each product and sum with its rounding kept
    p1 = acc * d
    s1 = slope + p1
    back = s1 - slope
    e1 = ((slope - (s1 - back)) + (p1 - back)) + fma(acc, d, -p1)
    p0 = s1 * d
    head = _select(C.ERFCX_BOUNDS, C.ERFCX_HEADS, a)
    hh = head + p0
    hl = ((head - hh) + p0) + (fma(s1, d, -p0) + (e1 * d + (_select(C.ERFCX_BOUNDS, C.ERFCX_TAILS, a) + slope * low)))
    # times w = inverse + inverse_low on the pieces in 1/a (times 1, exactly, on the others)
    wh = where(small, 1.0, inverse)
    wl = where(small, 0.0, inverse_low)
    gh = wh * hh
    return gh, fma(wh, hh, -gh) + (wh * hl + wl * hh)


@core
def _erfc_parts(a):
    """``(k, yh, yl)``: ``erfc(a) = 2**k (yh + yl)`` to about 2**-60 relative, for ``ERF_SMALL <= a <= ERFC_ZERO``."""
    s = a * a
    t = fma(a, a, -s)  # a**2 = s + t exactly
    k, ph, pl = _exp_split(-s)
    gh, gl = _erfcx_pair(a)
    main = ph * gh
    low = fma(ph, gh, -main) + ((ph * gl + pl * gh) - main * t)  # e**-t = 1 - t to far below the last bit
    yh = main + low
    return k, yh, (main - yh) + low


@core
def _erf_small(x):
    """``x + x P(x**2)`` for ``|x| < ERF_SMALL``; subnormal and tiny x scaled by 2**54 first (one rounding)."""
    tiny = fabs(x) < 2.0**-960
    y = where(tiny, x * TWO_54, x)
    r = y + y * _polynomial(x * x, C.ERF)
    return where(tiny, r * TWO_M54, r)


@core
def erf(x):
    """Return the error function within 1 ulp: ±1 beyond ±6 and at ±inf, NaN for NaN, keeps -0."""
    a = fabs(x)
    k, yh, yl = _erfc_parts(where(a < ERF_SMALL, ERF_SMALL, where(a > ERF_ONE, ERF_ONE, a)))
    scale = pow2(k)  # (exact: erfc(a) >= 2**-56 here)
    eh = yh * scale
    el = yl * scale
    one_minus = 1.0 - eh
    large = one_minus + (((1.0 - one_minus) - eh) - el)
    y = where(a < ERF_SMALL, _erf_small(x), copysign(where(a > ERF_ONE, 1.0, large), x))
    return where(x != x, x, y)


@core
def erfc(x):
    """Return the complementary error function ``1 - erf(x)`` within 1 ulp: 2 at -inf, 0 beyond 27.3, NaN for NaN.

    Small results keep their relative accuracy (``erfc(26) = 5.7e-296``), down
    to the subnormals.
    """
    a = fabs(x)
    k, yh, yl = _erfc_parts(where(a < ERF_SMALL, ERF_SMALL, where(a > ERFC_ZERO, ERFC_ZERO, a)))
    positive = _scale(yh + yl, k)
    # 2 - erfc(a) for x <= -ERF_SMALL (exact in two parts; erfc(a) < 2**-1 there, no underflow worth keeping)
    eh = _scale(yh, k)
    el = _scale(yl, k)
    two_minus = 2.0 - eh
    negative = two_minus + (((2.0 - two_minus) - eh) - el)
    # 1 - erf(x) for |x| < ERF_SMALL: (1 - x) exactly in two parts, minus x P(x**2)
    one_minus = 1.0 - x
    middle = one_minus + (((1.0 - one_minus) - x) - x * _polynomial(x * x, C.ERF))
    y = where(x < 0.0, negative, positive)
    y = where(a < ERF_SMALL, middle, y)
    y = where(x > ERFC_ZERO, 0.0, where(x < -ERF_ONE, 2.0, y))
    return where(x != x, x, y)
