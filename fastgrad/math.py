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

from fastgrad import _math_coefficients as C
from fastgrad._jit import core
from fastgrad._simd import fma, pow2, split_exponent, where

__all__ = ["exp", "log"]

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
def exp(x):
    """Return ``e**x``, within 1 ulp (``docs/math.md``): inf above 709.78, 0 below -745.13, NaN for NaN.

    ``x = k ln 2 + r`` with ``|r| <= ln(2)/2``: ``k`` by the rounding trick,
    ``r`` as ``hi - lo`` with ``hi`` exact (Sterbenz) and the rounding error
    of ``r`` carried into the polynomial. ``e**r = 1 + r + r**2 P(r)``, then
    ``2**k`` in two exact halves, so results that end subnormal are rounded
    once.
    """
    k = (x * INV_LN2 + SHIFT) - SHIFT
    hi = x - k * LN2_HI
    lo = k * LN2_LO
    r = hi - lo
    dr = (hi - r) - lo  # what rounding r lost
    q = fma(r * r, _polynomial(r, C.EXP), dr)
    p = 1.0 + (r + q)
    half = (k * 0.5 + SHIFT) - SHIFT
    y = (p * pow2(half)) * pow2(k - half)
    y = where(x > EXP_OVERFLOW, INF, y)
    return where(x < EXP_UNDERFLOW, 0.0, y)


@core
def log(x):
    """Return the natural logarithm, within 1 ulp: -inf at ±0, NaN below 0 and for NaN, inf at inf.

    ``x = m 2**e`` with ``m`` in ``[sqrt(1/2), sqrt(2))`` (subnormals scaled by
    ``2**54`` first), ``f = m - 1``, ``s = f / (2 + f)`` and
    ``log(1 + f) = f - (f**2/2 - s (f**2/2 + z P(z)))`` with ``z = s**2``;
    then ``e ln 2`` is added in two parts, the exact one last.
    """
    tiny = x < SMALLEST_NORMAL
    m, e = split_exponent(where(tiny, x * TWO54, x))
    e = where(tiny, e - 54.0, e)
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    half_square = 0.5 * f * f
    r = z * _polynomial(z, C.LOG)
    y = e * LN2_HI + (f - (half_square - (s * (half_square + r) + e * LN2_LO)))
    y = where(x == INF, INF, y)
    y = where(x == 0.0, -INF, y)
    return where(x < 0.0, NAN, where(x != x, x, y))
