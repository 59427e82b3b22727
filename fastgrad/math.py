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

import math as _python_math

import numpy as np
from numba import types
from numba.extending import overload

from fastgrad import _math_coefficients as C
from fastgrad._jit import core, inline_core, serial
from fastgrad._simd import (
    F64xNType,
    any_lane,
    copysign,
    fabs,
    float_bits,
    fma,
    lane,
    like,
    pow2,
    split_exponent,
    sqrt,
    where,
    with_lane,
)

__all__ = [
    "cos",
    "digamma",
    "erf",
    "erfc",
    "exp",
    "expm1",
    "gamma_sample_grad",
    "lgamma",
    "log",
    "log1p",
    "ndtri",
    "sigmoid",
    "sin",
    "sincos",
    "softplus",
    "tanh",
]

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


@core
def _log_normal(x):
    """:func:`log` of a positive, finite, normal ``x`` (at least 2**-1022), without its selects for the rest.

    The same operations on such ``x``, so the same bits: what the samplers
    take of a uniform on (0, 1] (``2**-53`` at least). A fifth faster than
    :func:`log` a value in a loop over a block (1.05 against 1.24 ns, Zen 4).
    """
    m, e = split_exponent(x)
    return _log_reduced(m, e, 0.0)


@core
def _log_pair(x):
    """``(h, l)``: ``log(x) = h + l`` for finite ``x > 0``, to about 2**-57 relative (lgamma and digamma).

    The operations of :func:`log`, with the roundings of its last two
    additions kept in ``l``.
    """
    tiny = x < SMALLEST_NORMAL
    m, e = split_exponent(where(tiny, x * TWO54, x))
    e = where(tiny, e - 54.0, e)
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    half_square = 0.5 * f * f
    inner = half_square - (s * (half_square + z * _polynomial(z, C.LOG)) + e * LN2_LO)
    b = f - inner
    a = e * LN2_HI  # exact
    h = a + b
    return h, ((a - h) + b) + ((f - b) - inner)


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


def _reduce_vector(lanes):
    """``_reduce_any`` for vectors of ``lanes`` lanes: the fast reduction, then each huge lane again, if any."""
    again = "".join(f"        rh, rl, q = _reduce_lane(x, rh, rl, q, {i})\n" for i in range(lanes))
    source = (
        "def vector(x):\n"
        "    rh, rl, q = _reduce(x)\n"
        "    huge = (fabs(x) > TRIG_FAST_LIMIT) & (fabs(x) < INF)\n"
        "    if any_lane(huge):\n"
        f"{again}"
        "    return rh, rl, q\n"
    )
    namespace = {"_reduce": _reduce, "_reduce_lane": _reduce_lane, "fabs": fabs, "any_lane": any_lane,
                 "TRIG_FAST_LIMIT": TRIG_FAST_LIMIT, "INF": INF}  # fmt: skip
    exec(source, namespace)
    return namespace["vector"]


@overload(_reduce_any, inline="always")
def _ol_reduce_any(x):
    if isinstance(x, F64xNType):
        return _reduce_vector(x.lanes)

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


#: :func:`sincos` inlined where it is called (Numba IR), for the kernels' four-draw loops: the compiled
#: 4-lane sincos is too large for LLVM to inline (its rare huge-argument path), so each four draws paid a call.
_sincos_inline = inline_core(sincos.py_func)


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
#: erfc is 1 - erf(x) (that polynomial) below this, e**(-a**2) erfcx(a) beyond: between 0.45 and 0.75,
#: 1 - erf cancelled inside erf's polynomial (1.002 ulps at 0.742, 10**7 points), erfcx is 0.6 ulps.
ERFC_SMALL = 0.45
#: erfc(x) is 0 beyond this (erfc(27.3) is below half the smallest subnormal); erf(x) is 1 beyond 6.
ERFC_ZERO = 27.3
ERF_ONE = 6.0
TWO_M54 = 2.0**-54
TWO_54 = 18014398509481984.0


def _table(name, a, v, low):
    """``(hh, hl)``: piecewise table ``name`` of ``_math_coefficients`` at ``v``, on the piece ``a`` falls in.

    ``head + tail + d P(d) + P'(0) low`` with ``d = v - center`` (exact where
    the centers are chosen so), the last two Horner steps in two parts. The
    name must be a string literal: the code is generated for that table,
    every coefficient a constant chosen lane by lane with ``where`` from the
    piece bounds. (Looping over the tables' tuples instead, indexed at run
    time, compiled to switches: erf ran at 13 M values/s on an array, one
    thread, against 82 M unrolled.)
    """
    raise NotImplementedError("fastgrad.math._table is compiled code only")


def _choose(masks, values, template):
    """Source of ``values[i]`` for the first mask that holds, else the last value (``like`` the template)."""
    text = f"like({values[-1]!r}, {template})"
    for mask, value in reversed(list(zip(masks, values[:-1], strict=False))):
        text = f"where({mask}, {value!r}, {text})"
    return text


@overload(_table, prefer_literal=True, inline="always")
def _ol_table(name, a, v, low):
    if not isinstance(name, types.StringLiteral):
        return None
    key = name.literal_value
    bounds, centers = getattr(C, key + "_BOUNDS"), getattr(C, key + "_CENTERS")
    heads, tails, rows = getattr(C, key + "_HEADS"), getattr(C, key + "_TAILS"), getattr(C, key)
    masks = [f"m{i}" for i in range(len(bounds) - 1)]
    n = len(rows[0])
    lines = ["def impl(name, a, v, low):"]
    lines += [f"    {mask} = a < {bound!r}" for mask, bound in zip(masks, bounds, strict=False)]
    lines.append(f"    d = v - {_choose(masks, centers, 'a')}")
    lines.append(f"    acc = {_choose(masks, [row[n - 1] for row in rows], 'a')}")
    for k in range(n - 2, 0, -1):
        lines.append(f"    acc = fma(acc, d, {_choose(masks, [row[k] for row in rows], 'a')})")
    lines += [
        f"    slope = {_choose(masks, [row[0] for row in rows], 'a')}",
        "    p1 = acc * d",
        "    s1 = slope + p1",
        "    back = s1 - slope",
        "    e1 = ((slope - (s1 - back)) + (p1 - back)) + fma(acc, d, -p1)",
        "    p0 = s1 * d",
        f"    head = {_choose(masks, heads, 'a')}",
        "    hh = head + p0",
        f"    tail = {_choose(masks, tails, 'a')}",
        "    return hh, ((head - hh) + p0) + (fma(s1, d, -p0) + (e1 * d + (tail + slope * low)))",
    ]
    namespace = {"where": where, "fma": fma, "like": like}
    exec("\n".join(lines), namespace)  # (source built above from the coefficient tables)
    return namespace["impl"]


@core
def _erfcx_pair(a):
    """``(gh, gl)``: ``e**(a**2) erfc(a) = gh + gl`` to about 2**-60 relative, for ``0.45 <= a <= ERFC_ZERO``.

    On each piece a polynomial in ``d = v - center`` (exact), ``v = a`` on the
    first pieces, ``v = w = 1/a`` (in two parts) on the others, where it gives
    ``erfcx(a) / w``; its last two Horner steps are carried in two parts.
    """
    inverse = 1.0 / a
    inverse_low = fma(-inverse, a, 1.0) / a  # 1/a = inverse + inverse_low, but for this last rounding
    small = a < C.ERFCX_BOUNDS[C.ERFCX_IN_A - 1]
    # (v - center is exact: Sterbenz, the center is within 2x of v)
    hh, hl = _table("ERFCX", a, where(small, a, inverse), where(small, 0.0, inverse_low))
    # times w = inverse + inverse_low on the pieces in 1/a (times 1, exactly, on the others)
    wh = where(small, 1.0, inverse)
    wl = where(small, 0.0, inverse_low)
    gh = wh * hh
    return gh, fma(wh, hh, -gh) + (wh * hl + wl * hh)


@core
def _erfc_core(a):
    """``(k, yh, yl, ph, gh)``: ``erfc(a) = 2**k (yh + yl)`` to about 2**-60 relative, for ``0.45 <= a <= 27.3``.

    ``2**k ph`` is ``e**(-a**2)`` and ``gh`` ``erfcx(a)``, each to about a
    double's precision (for ndtri's Newton step).
    """
    s = a * a
    t = fma(a, a, -s)  # a**2 = s + t exactly
    k, ph, pl = _exp_split(-s)
    gh, gl = _erfcx_pair(a)
    main = ph * gh
    low = fma(ph, gh, -main) + ((ph * gl + pl * gh) - main * t)  # e**-t = 1 - t to far below the last bit
    yh = main + low
    return k, yh, (main - yh) + low, ph, gh


@core
def _erfc_parts(a):
    """``(k, yh, yl)``: ``erfc(a) = 2**k (yh + yl)`` to about 2**-60 relative, for ``0.45 <= a <= ERFC_ZERO``."""
    k, yh, yl, _, _ = _erfc_core(a)
    return k, yh, yl


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
    k, yh, yl = _erfc_parts(where(a < ERFC_SMALL, ERFC_SMALL, where(a > ERFC_ZERO, ERFC_ZERO, a)))
    positive = _scale(yh + yl, k)
    # 2 - erfc(a) for x <= -ERFC_SMALL (exact in two parts; erfc(a) < 1 there, no underflow worth keeping)
    eh = _scale(yh, k)
    el = _scale(yl, k)
    two_minus = 2.0 - eh
    negative = two_minus + (((2.0 - two_minus) - eh) - el)
    # 1 - erf(x) for |x| < ERFC_SMALL: (1 - x) exactly in two parts, minus x P(x**2)
    one_minus = 1.0 - x
    middle = one_minus + (((1.0 - one_minus) - x) - x * _polynomial(x * x, C.ERF))
    y = where(x < 0.0, negative, positive)
    y = where(a < ERFC_SMALL, middle, y)
    y = where(x > ERFC_ZERO, 0.0, where(x < -ERF_ONE, 2.0, y))
    return where(x != x, x, y)


# --- ndtri, the normal quantile -----------------------------------------------------------------
#
# |p - 1/2| <= 1/4, where q = p - 1/2 is exact: q S(q**2), S's constant term in two parts. In the tails,
# with p' = min(p, 1 - p) (1 - p is exact there): a first guess x0 from r = sqrt(-2 log p') (a polynomial
# on each of four pieces, about 1e-11 relative), then one Newton step with its quadratic term,
#     x = x0 + delta + x0 delta**2 / 2,   delta = (p' - Phi(x0)) / phi(x0) = (p' / Phi(x0) - 1) Phi / phi,
# where Phi(x0) = erfc(a) / 2 (a = -x0 / sqrt 2, in two parts) comes as 2**k (yh + yl) to about 2**-60, so
# that p' / Phi - 1 is exact but for that, and Phi / phi = erfcx(a) sqrt(pi / 2) needs no exponential.
# The step's error is of the order of x0's error cubed: the result is rounded once.


@core
def _ndtri_tail(p):
    """``ndtri(p)`` for ``0 < p <= 1/4`` (subnormals included), within about half an ulp."""
    r = sqrt(-2.0 * log(p))
    hh, hl = _table("NDTRI_TAIL", r, r, 0.0)
    x0 = hh + hl
    ah = -x0 * C.INV_SQRT2
    al = fma(-x0, C.INV_SQRT2, -ah) - x0 * C.INV_SQRT2_LOW  # a = ah + al = -x0 / sqrt(2)
    k, yh, yl, ph, gh = _erfc_core(ah)
    yl = yl - al * C.TWO_OVER_SQRT_PI * ph  # erfc(ah + al) = erfc(ah) - al 2/sqrt(pi) e**(-ah**2)
    scaled = _scale(p, 1.0 - k)  # p / 2**(k - 1), exactly (a number near yh, never subnormal)
    rho = ((scaled - yh) - yl) / yh  # p / Phi(x0) - 1 (scaled - yh is exact: the two are within 2x)
    delta = rho * gh * C.SQRT_HALF_PI
    return x0 + (delta + 0.5 * x0 * (delta * delta))


@core
def ndtri(p):
    """Return the standard normal quantile ``x`` with ``Phi(x) = p``, within 1 ulp for every p in (0, 1).

    ``ndtri(0) = -inf``, ``ndtri(1) = inf``, ``ndtri(1/2) = 0``; NaN outside
    [0, 1] and for NaN. Subnormal ``p`` are exact inputs (``ndtri(5e-324)``
    is -38.47).
    """
    q = p - 0.5
    z = q * q
    r = z * _polynomial(z, C.NDTRI[1:])  # (NDTRI[0] is sqrt(2 pi): the head below, exactly)
    sh = C.SQRT_2PI + r
    sl = ((C.SQRT_2PI - sh) + r) + C.SQRT_2PI_LOW
    central = fma(q, sh, q * sl)
    upper = p > 0.5
    tail = _ndtri_tail(where(upper, 1.0 - p, p))
    y = where(fabs(q) <= 0.25, central, where(upper, -tail, tail))
    y = where(p == 0.0, -INF, where(p == 1.0, INF, y))
    return where((p < 0.0) | (p > 1.0) | (p != p), NAN, y)


# --- lgamma and digamma ------------------------------------------------------------------------------
#
# Both on y = |x| > 0 first, each range a polynomial (generated, tools/make_math_coefficients.py) with its
# last additions kept in two parts: lgamma as (y - 1) Q1(y - 1) around its zero at 1, y Q1(y) - log(y)
# below 1/2, (y - 2) Q2(y - 2) around its zero at 2 (to 3), a polynomial on [3, 8], and Stirling's formula
# beyond; digamma as psi(y + 1) - 1/y below 1, (y - x0) R(y - x0) around its zero x0 = 1.4616..., a
# polynomial on [2, 8], and log(y) - 1/(2y) - w P(w) beyond. Negative x by reflection, with sin(pi x) and
# cos(pi x) from x's exact distance to the nearest integer.

#: lgamma(x) overflows above this (lgamma(2.5563e305) is the largest double).
LGAMMA_OVERFLOW = 2.5563802833360187e305
#: Every double at or beyond this magnitude is an integer: a pole of lgamma and digamma below 0.
INTEGRAL = 4503599627370496.0  # 2**52


@core
def _two_sum(a, b):
    """``(s, e)``: ``a + b = s + e`` exactly (Knuth)."""
    s = a + b
    back = s - a
    return s, (a - (s - back)) + (b - back)


@core
def _times(ah, al, bh, bl):
    """``(ah + al) (bh + bl)`` in two parts (the product of the high parts exact by an fma)."""
    p = ah * bh
    return p, fma(ah, bh, -p) + (ah * bl + al * bh)


@core
def _lgamma_positive(y):
    """``(hi, lo)``: ``lgamma(y) = hi + lo`` for finite ``y > 0`` (below ``LGAMMA_OVERFLOW``)."""
    # Stirling, y >= 8: (y - 1/2)(log y) - y + log(2 pi)/2 + P(1/y**2) / y
    lh, ll = _log_pair(y)
    ym = y - 0.5
    th, tl = _times(ym, 0.0, lh, ll)
    uh = th - y  # (th is about y log y > y here: the rounding is in ul)
    ul = ((th - uh) - y) + tl
    inverse = 1.0 / y
    vh = uh + C.HALF_LOG_2PI
    stirling = _polynomial(inverse * inverse, C.STIRLING) * inverse
    vl = ((uh - vh) + C.HALF_LOG_2PI) + (ul + (C.HALF_LOG_2PI_LOW + stirling))
    # [3, 8]: a polynomial in y - center on two pieces
    mh, ml = _table("LGAMMA_MID", y, y, 0.0)
    # [1.5, 3]: (y - 2) Q2(y - 2), y - 2 exact
    t2 = y - 2.0
    qh, ql = _table("LGAMMA_Q2", t2, t2, 0.0)
    nh, nl = _times(t2, 0.0, qh, ql)
    # (0, 1.5): t Q1(t), t = y - 1 (exact) from 0.5, t = y below, where log(y) is then subtracted
    small = y < 0.5
    t1 = where(small, y, y - 1.0)
    rh, rl = _table("LGAMMA_Q1", t1, t1, 0.0)
    ph, pl = _times(t1, 0.0, rh, rl)
    sh, se = _two_sum(ph, -lh)
    ph = where(small, sh, ph)
    pl = where(small, se + (pl - ll), pl)
    hi = where(y < 1.5, ph, where(y < 3.0, nh, where(y < 8.0, mh, vh)))
    lo = where(y < 1.5, pl, where(y < 3.0, nl, where(y < 8.0, ml, vl)))
    return hi, lo


@core
def _sin_cos_pairs(rh, rl):
    """``(sh, sl, ch, cl)``: :func:`_sin_cos_reduced`'s sine and cosine, each with its last addition's rounding."""
    z = rh * rh
    small = rh * z * _polynomial(z, C.SIN) + rl * (1.0 - 0.5 * z)
    sh = rh + small
    half = 0.5 * z
    w = 1.0 - half
    tail = ((1.0 - w) - half) + (z * z * _polynomial(z, C.COS) - (0.5 * fma(rh, rh, -z) + rh * rl))
    ch = w + tail
    return sh, (rh - sh) + small, ch, (w - ch) + tail


@core
def _sin_cos_pi(x):
    """``(sh, sl, ch, cl)``: ``sin(pi x)`` and ``cos(pi x)`` in two parts each, for finite ``|x| < 2**52``.

    From x's exact distance ``r`` to the nearest integer ``n``, folded to
    ``|pi r| <= pi/4`` (``1/2 - |r|`` is exact), times ``(-1)**n``.
    """
    n = where(x >= 0.0, (x + INTEGRAL) - INTEGRAL, (x - INTEGRAL) + INTEGRAL)  # the nearest integer
    r = x - n  # exact, |r| <= 1/2
    a = fabs(r)
    folded = a > 0.25
    u = where(folded, 0.5 - a, a)  # exact
    uh = u * C.PI
    ul = fma(u, C.PI, -uh) + u * C.PI_LOW  # pi u in two parts
    sh, sl, ch, cl = _sin_cos_pairs(uh, ul)
    half = 0.5 * fabs(n)
    sign = where(((half + INTEGRAL) - INTEGRAL) != half, like(-1.0, x), 1.0)  # (-1)**n
    sine_sign = sign * copysign(like(1.0, x), r)  # sin(pi r) has r's sign
    return (sine_sign * where(folded, ch, sh), sine_sign * where(folded, cl, sl),
            sign * where(folded, sh, ch), sign * where(folded, sl, cl))  # fmt: skip


@core
def lgamma(x):
    """Return ``log|Gamma(x)|`` (see ``docs/math.md`` for the accuracy): inf at 0 and the negative integers.

    inf at ±inf and above 2.5563e305; NaN for NaN. ``lgamma(1) = lgamma(2) = 0``
    exactly. Below 0 by reflection,
    ``lgamma(x) = log(pi) - log|x sin(pi x)| - lgamma(-x)``, whose absolute error is
    a few ulps of the largest of those terms.
    """
    a = fabs(x)
    safe = where((a > 0.0) & (a < LGAMMA_OVERFLOW), a, 1.0)
    hi, lo = _lgamma_positive(safe)
    positive = hi + lo
    s, sl, _, _ = _sin_cos_pi(where(a < INTEGRAL, x, 0.5))
    product = x * s
    product_low = fma(x, s, -product) + x * sl  # x sin(pi x) in two parts
    lh, ll = _log_pair(fabs(where(s != 0.0, product, like(1.0, x))))
    ll = ll + product_low / product
    s1, e1 = _two_sum(C.LOG_PI, -lh)
    s2, e2 = _two_sum(s1, -hi)
    reflected = s2 + ((e1 + e2) + ((C.LOG_PI_LOW - ll) - lo))  # the three terms summed, rounded once
    y = where(x > 0.0, positive, where(s == 0.0, INF, reflected))
    y = where((a >= LGAMMA_OVERFLOW) | (a == 0.0) | ((x < 0.0) & (a >= INTEGRAL)), INF, y)
    return where(x != x, x, y)


@core
def _digamma_positive(y):
    """``(hi, lo)``: ``digamma(y) = hi + lo`` for finite ``y > 0``."""
    inverse = 1.0 / y
    inverse_low = fma(-inverse, y, 1.0) / y
    # y >= 8: log(y) - 1/(2y) - w P(w)
    lh, ll = _log_pair(y)
    half = 0.5 * inverse
    ah, al = _two_sum(lh, -half)
    w = inverse * inverse
    al = al + (ll - (0.5 * inverse_low + w * _polynomial(w, C.DIGAMMA_ASYMPTOTIC)))
    # [2, 8]
    mh, ml = _table("DIGAMMA_MID", y, y, 0.0)
    # [1, 2]: (y - x0) R(y - x0), y - x0 in two parts (the high one exact)
    th = y - C.DIGAMMA_ZERO_HIGH
    tl = -C.DIGAMMA_ZERO_LOW
    rh, rl = _table("DIGAMMA_NEAR_ZERO", th, th, tl)
    zh, zl = _times(th, tl, rh, rl)
    # (0, 1): digamma(y + 1) - 1/y, digamma(y + 1) a polynomial in y - 1/2
    sh, sl = _table("DIGAMMA_SMALL", y, y, 0.0)
    bh, be = _two_sum(sh, -inverse)
    bl = be + (sl - inverse_low)
    hi = where(y < 1.0, bh, where(y < 2.0, zh, where(y < 8.0, mh, ah)))
    lo = where(y < 1.0, bl, where(y < 2.0, zl, where(y < 8.0, ml, al)))
    return hi, lo


@core
def digamma(x):
    """Return the digamma function ``Gamma'(x) / Gamma(x)`` (``docs/math.md`` has the accuracy).

    ``digamma(+0) = -inf``, ``digamma(-0) = inf``, NaN at the negative
    integers, at -inf and for NaN, inf at inf. Below 0 by reflection,
    ``digamma(x) = digamma(1 - x) - pi cot(pi x)``.
    """
    a = fabs(x)
    negative = x < 0.0
    one_minus, one_minus_low = _two_sum(1.0, -x)  # 1 - x in two parts
    y = where(negative, one_minus, x)
    hi, lo = _digamma_positive(where((y > 0.0) & (y < INF), y, like(1.0, x)))
    # below 0: digamma(1 - x) - pi cot(pi x); digamma(y + low) = digamma(y) + low trigamma(y), with
    # trigamma(y) = 1/y + 1/(2 y**2) + 1/(6 y**3) - 1/(30 y**5) to about 1 % for y >= 1 (low is below y's ulp)
    v = 1.0 / one_minus
    trigamma = v * (1.0 + v * (0.5 + v * ((1.0 / 6.0) - v * v * (1.0 / 30.0))))
    s, sl, c, cl = _sin_cos_pi(where(a < INTEGRAL, x, 0.5))
    q = c / s  # cot(pi x), corrected by the quotient's remainder and the low parts
    ql = ((fma(-s, q, c) + cl) - q * sl) / s
    th = C.PI * q
    tl = fma(C.PI, q, -th) + (C.PI * ql + C.PI_LOW * q)  # pi cot(pi x) = th + tl
    vh, ve = _two_sum(hi, -th)
    value = where(negative, vh + (ve + ((lo + one_minus_low * trigamma) - tl)), hi + lo)
    value = where(x == INF, INF, value)
    value = where(x == 0.0, -copysign(INF, x), value)
    value = where(negative & ((s == 0.0) | (a >= INTEGRAL)), NAN, value)
    return where(x != x, x, value)


# --- the implicit reparameterisation gradient of a Gamma draw ------------------------------
#
# A unit-rate Gamma(a) draw x = F^-1(u; a) moves with a as dx/da = -(dP(a, x)/da) / p(x; a), P the regularised
# lower incomplete gamma function and p the density (Figurnov, Mohamed & Mnih 2018). Both branches below write P
# (or Q = 1 - P) as x**a e**-x / Gamma(.) times a factor whose a-derivative is carried alongside, so the density
# cancels exactly and nothing overflows:
#
#   below:  P = x**a e**-x / Gamma(a + 1) S,  S = sum_n t_n,  t_n = x**n / ((a+1)...(a+n)),
#       dx/da = (x/a) (S (digamma(a + 1) - log x) + T),  T = -dS/da = sum_n t_n H_n,  H_n = sum_k<=n 1/(a + k);
#   beyond:  Q = x**a e**-x / Gamma(a) F,  F = 1 / (x + 1 - a - 1 (1 - a) / (x + 3 - a - 2 (2 - a) / (x + 5 - a - ...)))
#       (Legendre's continued fraction), dx/da = G (log x - digamma(a)) + dG/da with G = x F.
#
# The series is used up to x = max(a + sqrt(a), 1) and the fraction beyond, each where it measured the more
# accurate: the fraction converges slowly near x = a, and the series' two parts (S (digamma(a + 1) - log x) turns
# negative above x = e**digamma(a + 1), about a + 1/2) cancel further up (docs/math.md).

#: The series is summed for x <= max(a + sqrt(a), GAMMA_GRAD_SERIES), the continued fraction beyond: each where
#: it measured the more accurate (the fraction converges slowly near x = a, the series cancels above it).
GAMMA_GRAD_SERIES = 1.0
#: Steps of either sum before giving up (NaN): about 9 sqrt(a) are needed near x = a (4 * 10**6 at a = 2 * 10**11).
GAMMA_GRAD_STEPS = 4_000_000
_SUM_TOLERANCE = 2.0**-55


@core
def _gamma_grad_series(x, a, ph, pl):
    # (ph, pl): digamma(a + 1) in two parts
    t = 1.0  # t_n
    s = 1.0  # S
    total = 0.0  # T
    h = 0.0  # H_n
    r = 1.0 / (a + 1.0)  # 1 / (a + n + 1) at the top of step n + 1
    n = 0
    while n < GAMMA_GRAD_STEPS:
        n += 1
        h += r
        t *= x * r
        s += t
        total += t * h
        r = 1.0 / (a + (n + 1))
        # the rest of both sums is bounded by geometric series of ratio x r < 1 (H_k < H_n + (k - n) r)
        q = 1.0 - x * r
        if q > 0.0 and t <= _SUM_TOLERANCE * q * s and t * (h * q + r) <= _SUM_TOLERANCE * q * q * total:
            lh, ll = _log_pair(x)
            return x * (s * ((ph - lh) + (pl - ll)) + total) / a
    return NAN


@core
def _gamma_grad_fraction(x, a, ph, pl):
    # (ph, pl): digamma(a) in two parts
    # G = x F = 1 / (b0 + a1 / (b1 + a2 / (b2 + ...))), b_n = (x + 2n + 1 - a) / x, a_n = n (a - n) / x**2 (the
    # fraction over x), summed as G = sum_n delta_n by Steed's method: d_n = 1 / (b_n + a_n d_(n-1)), delta_n =
    # -a_n d_(n-1) d_n delta_(n-1); every quantity's a-derivative (dd, ddelta) carried alongside
    inverse = 1.0 / x
    d = 1.0 / ((x + (1.0 - a)) * inverse)
    dd = d * d * inverse
    delta = d
    ddelta = dd
    g = delta
    dg = ddelta
    n = 0
    while n < GAMMA_GRAD_STEPS:
        n += 1
        b = (x + (2.0 * n + 1.0 - a)) * inverse
        c = (n * inverse) * ((a - n) * inverse)
        dc = n * inverse * inverse
        d_new = 1.0 / (b + c * d)
        dd_new = -d_new * d_new * (-inverse + dc * d + c * dd)
        ratio = -c * d * d_new
        dratio = -(dc * d * d_new + c * dd * d_new + c * d * dd_new)
        ddelta = dratio * delta + ratio * ddelta
        delta = ratio * delta
        d, dd = d_new, dd_new
        g += delta
        dg += ddelta
        # the rest is about |delta| r / (1 - r), r = |ratio|, once |ratio| no longer rises. Before n = a the ratios
        # alternate in sign and |ratio_k| < k (a - k) / ((s + 2k)**2 - 1) (s = x - a), a bound that peaks at
        # k = a s / (2 x): until then the bound's peak stands in for r (below 1 only well above the bulk), after
        # it |ratio| falls; past n = a the terms keep one sign and |ratio| rises slowly towards 1 while the terms
        # are already far below the sum (the estimate then is within a small factor, far inside the tolerance)
        future = abs(ratio)
        peak = a * (x - a) / (2.0 * x)
        if n + 1.0 < peak:
            y = x - a + 2.0 * peak
            future = max(future, peak * (a - peak) / (y * y - 1.0))
        room = 1.0 - future
        if room > 0.0 and abs(delta) <= _SUM_TOLERANCE * room * abs(g):
            if abs(ddelta) <= _SUM_TOLERANCE * room * abs(dg):
                lh, ll = _log_pair(x)
                return g * ((lh - ph) + (ll - pl)) + dg
    return NAN


@core
def gamma_sample_grad(x, alpha):
    """Return ``dx/dalpha`` of a unit-rate ``Gamma(alpha)`` draw ``x``: the implicit reparameterisation gradient.

    ``-(dP(alpha, x)/dalpha) / p(x; alpha)`` with ``P`` the regularised
    lower incomplete gamma function and ``p`` the density, from the series of
    ``P`` (``x <= max(alpha + sqrt(alpha), 1)``) or the continued fraction of
    ``1 - P``, their derivatives in ``alpha`` carried alongside
    (``docs/math.md``: within 10**-13 relative, measured 1.5e-14 at most, for
    ``alpha`` in [10**-3, 10**4] and every ``x``).
    A draw of ``Gamma(alpha, rate)`` is ``x / rate``: its derivative in
    ``alpha`` is this one over ``rate``. Scalar only (its loops run as many
    steps as each ``x`` needs: about ``9 sqrt(alpha)`` near ``x = alpha``).

    ``±0`` at ``x = ±0``, ``inf`` at ``x = inf``; NaN for ``x < 0``,
    ``alpha <= 0``, infinite ``alpha``, NaN, and where a sum does not
    converge in :data:`GAMMA_GRAD_STEPS` steps (near ``x = alpha`` for
    ``alpha`` beyond about ``10**11``).
    """
    if not (alpha > 0.0) or alpha == INF or not (x >= 0.0):
        return NAN
    if x == 0.0 or x == INF:
        return x
    if x <= max(alpha + sqrt(alpha), GAMMA_GRAD_SERIES):
        ph, pl = _digamma_positive(alpha + 1.0)
        return _gamma_grad_series(x, alpha, ph, pl)
    ph, pl = _digamma_positive(alpha)
    return _gamma_grad_fraction(x, alpha, ph, pl)


@core
def _gamma_grad_constants(alpha):
    """``(digamma(alpha), digamma(alpha + 1))``, each in two parts: what :func:`_gamma_sample_grad_at` takes.

    Compiled, so that a kernel whose shape moves (an optimisation's, ``gamma._gamma_theta_of``) calls it too.
    """
    high, low = _digamma_positive(alpha)
    high1, low1 = _digamma_positive(alpha + 1.0)
    return high, low, high1, low1


@core
def _gamma_sample_grad_at(x, alpha, constants):
    """:func:`gamma_sample_grad` with the digamma values of ``alpha`` given (:func:`_gamma_grad_constants`).

    The same bits, without evaluating digamma per draw: what a kernel whose
    ``alpha`` is fixed for the run calls (faster, and smaller to compile).
    ``alpha > 0`` finite and ``x >= 0`` are not checked here.
    """
    if x == 0.0 or x == INF:
        return x
    if x <= max(alpha + sqrt(alpha), GAMMA_GRAD_SERIES):
        return _gamma_grad_series(x, alpha, constants[2], constants[3])
    return _gamma_grad_fraction(x, alpha, constants[0], constants[1])


# --- the implicit gradient at a shape fixed for a run: piecewise polynomials, checked against the series ----------
#
# A run's shape is fixed, so dz/dshape is one smooth function of z for the whole run. The kernels evaluate it from
# piecewise polynomials fitted once per run: h(z) = g(z) / z is interpolated at the Chebyshev points of each piece,
# then written as monomials in the piece's own variable s in [-1, 1] and summed by Estrin's scheme, which costs a
# few integer operations and eight multiply-adds instead of the series' 30 to 900 terms. Below a shape of
# GAMMA_FIT_LINEAR_FROM the pieces split each octave of z ([2**e sqrt(1/2), 2**e sqrt(2)), from the float's own
# exponent: no log, whose latency measured 35 ns a draw) into equal parts; from it on they are equal in z over the
# narrow bulk. The fit covers the draws' bulk; a draw outside it takes the series. The pieces are doubled until
# every check point (8 a piece, between the interpolation points) agrees with the series to GAMMA_FIT_TOLERANCE; a
# shape whose fit does not get there with GAMMA_FIT_MAX_PIECES pieces has no fit (the series for every draw).

#: Polynomial degree of each piece.
GAMMA_FIT_DEGREE = 7
#: Largest relative difference from the series accepted at the check points.
GAMMA_FIT_TOLERANCE = 2e-14
#: Most pieces a fit may use (128 KiB of coefficients).
GAMMA_FIT_MAX_PIECES = 2048
#: From this shape on, the pieces are equal in z rather than parts of octaves (the bulk is narrow against z).
GAMMA_FIT_LINEAR_FROM = 1000.0
#: Above this shape there is no fit: the largest shape of the accuracy table (tests/data/gamma_sample_grad.csv), past
#: which the series' own rounding nears the tolerance (5e-14 from the fit at 1e5) and a check point's series grows to
#: thousands of terms (fitting took 110 s at 1e8).
GAMMA_FIT_MAX_SHAPE = 1e4

_OCTAVE_START = 0.7071067811865476  # sqrt(1/2): split_exponent's mantissas lie in [sqrt(1/2), sqrt(2))
_OCTAVE_WIDTH = 1.4142135623730951 - 0.7071067811865476


@core
def _gamma_fit_position(x, octaves, start, scale, per_octave):
    """``u`` with ``int(u)`` the piece of ``x`` and ``2 frac(u) - 1`` its variable (``x`` inside the fit)."""
    if octaves:
        m, e = split_exponent(x)
        return (e - start) * per_octave + (m - _OCTAVE_START) * scale
    return (x - start) * scale


@core
def _gamma_grad_fitted(x, fit):
    """Return the fit's value at ``x``, or NaN outside it (then the caller takes the series).

    ``fit = (octaves, z_lo, z_hi, start, scale, per_octave, table)``.
    """
    octaves, z_lo, z_hi, start, scale, per_octave, table = fit
    if not (x >= z_lo and x < z_hi):  # (also NaN, 0, inf and subnormals: outside every fit)
        return NAN
    u = _gamma_fit_position(x, octaves, start, scale, per_octave)
    k = min(max(int(u), 0), table.shape[0] - 1)  # (rounding at the ends)
    s = 2.0 * (u - k) - 1.0
    s2 = s * s
    low = (table[k, 0] + table[k, 1] * s) + s2 * (table[k, 2] + table[k, 3] * s)
    high = (table[k, 4] + table[k, 5] * s) + s2 * (table[k, 6] + table[k, 7] * s)
    return x * (low + (s2 * s2) * high)


@core
def _gamma_grad_from_fit(x, alpha, constants, fit):
    """:func:`_gamma_sample_grad_at` from a run's fit (:func:`_gamma_grad_fit`); the series outside it."""
    fitted = _gamma_grad_fitted(x, fit)
    if fitted == fitted:
        return fitted
    return _gamma_sample_grad_at(x, alpha, constants)


@serial
def _gamma_fit_pieces(alpha, constants, fit):
    """Monomial coefficients in ``s`` of each piece's interpolant of ``h = g(z) / z``, into ``fit``'s table."""
    table = fit[6]
    n = GAMMA_FIT_DEGREE + 1
    values = np.empty(n)
    chebyshev = np.empty(n)
    for p in range(table.shape[0]):
        for k in range(n):
            s = np.cos(np.pi * (k + 0.5) / n)
            x = _gamma_fit_point(fit, p, s)
            values[k] = _gamma_sample_grad_at(x, alpha, constants) / x
        for j in range(n):
            total = 0.0
            for k in range(n):
                total += values[k] * np.cos(np.pi * j * (k + 0.5) / n)
            chebyshev[j] = (1.0 if j else 0.5) * 2.0 / n * total
        # Chebyshev to monomial coefficients: T_0 = 1, T_1 = s, T_{j+1} = 2 s T_j - T_{j-1}
        previous = np.zeros(n)
        current = np.zeros(n)
        previous[0] = 1.0
        current[1] = 1.0
        monomial = chebyshev[0] * previous + chebyshev[1] * current
        for j in range(2, n):
            following = -previous.copy()
            following[1:] += 2.0 * current[:-1]
            monomial += chebyshev[j] * following
            previous, current = current, following
        table[p] = monomial


@core
def _gamma_fit_point(fit, p, s):
    """Return the ``z`` of piece ``p`` at its variable ``s`` in [-1, 1]."""
    octaves, start, scale, per_octave = fit[0], fit[3], fit[4], fit[5]
    u = p + 0.5 * (s + 1.0)
    if octaves:
        e = start + np.floor(u / per_octave)
        m = _OCTAVE_START + (u - (e - start) * per_octave) / scale
        return m * 2.0**e
    return start + u / scale


@serial
def _gamma_fit_error(alpha, constants, fit):
    """Largest relative difference between the fit and the series at 8 points a piece (not the fit's own)."""
    worst = 0.0
    for p in range(fit[6].shape[0]):
        for k in range(8):
            x = _gamma_fit_point(fit, p, (k + 0.5) / 4.0 - 1.0)
            exact = _gamma_sample_grad_at(x, alpha, constants)
            fitted = _gamma_grad_from_fit(x, alpha, constants, fit)
            error = abs(fitted - exact) / abs(exact)
            if not error <= worst:  # (NaN counts as a failure)
                worst = error if error == error else np.inf
    return worst


def _no_fit():
    return False, 1.0, 0.0, 0.0, 1.0, 1.0, np.zeros((0, GAMMA_FIT_DEGREE + 1))


def _gamma_grad_fit(alpha):
    """Return a run's fit of the implicit gradient at ``alpha`` (:func:`_gamma_grad_fitted` reads it).

    The fit spans the draws' bulk: from the point below which a draw falls
    with probability about 1e-7 (``(1e-7 Gamma(alpha + 1))**(1 / alpha)``,
    or ``alpha - 12 sqrt(alpha)`` if higher) to ``alpha + 12 sqrt(alpha) +
    40`` (widened to whole octaves below :data:`GAMMA_FIT_LINEAR_FROM`).
    Without a fit that meets :data:`GAMMA_FIT_TOLERANCE` (or above
    :data:`GAMMA_FIT_MAX_SHAPE`), the table has no pieces (every draw takes
    the series).
    """
    constants = _gamma_grad_constants(alpha)
    m = _python_math
    if alpha > GAMMA_FIT_MAX_SHAPE:
        return _no_fit()
    low = m.exp((m.log(1e-7) + m.lgamma(alpha + 1.0)) / alpha) if alpha < 1e3 else 0.0
    low = max(low, alpha - 12.0 * m.sqrt(alpha), 1e-300)
    high = alpha + 12.0 * m.sqrt(alpha) + 40.0
    octaves = alpha < GAMMA_FIT_LINEAR_FROM
    if octaves:  # whole octaves [2**e sqrt(1/2), 2**e sqrt(2)) from the one holding low to the one holding high
        first = m.floor(m.log2(low / _OCTAVE_START))
        last = m.floor(m.log2(high / _OCTAVE_START))
        count = int(last - first) + 1
    pieces = 16
    while pieces <= GAMMA_FIT_MAX_PIECES:
        if octaves:
            per_octave = max(1, pieces // count)
            if per_octave * count > GAMMA_FIT_MAX_PIECES:
                break
            z_lo, z_hi = _OCTAVE_START * 2.0**first, _OCTAVE_START * 2.0 ** (last + 1.0)
            fit = (True, z_lo, z_hi, float(first), per_octave / _OCTAVE_WIDTH, float(per_octave),
                   np.empty((per_octave * count, GAMMA_FIT_DEGREE + 1)))  # fmt: skip
        else:
            fit = (False, low, high, low, pieces / (high - low), 1.0, np.empty((pieces, GAMMA_FIT_DEGREE + 1)))
        _gamma_fit_pieces(alpha, constants, fit)
        if _gamma_fit_error(alpha, constants, fit) <= GAMMA_FIT_TOLERANCE:
            return fit
        pieces *= 2
    return _no_fit()
