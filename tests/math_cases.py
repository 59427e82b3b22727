"""The table of fastgrad.math's functions: references, targets, domains, hard cases and special values.

Shared by ``tests/test_math.py`` (a deterministic sample of a few thousand
points per function) and ``tools/math_accuracy.py`` (10**7 points per
function, for the table in ``docs/math.md``).
"""

import math

import mpmath
import numpy as np

INF, NAN = math.inf, math.nan
mpmath.mp.prec = 130  # the references: 77 bits beyond a double


def _hard(*groups):
    return np.concatenate([np.asarray(g, dtype=float) for g in groups])


def _near(points, spread=64, above=-INF):
    """Each point and its ``spread`` neighbours on either side, one ulp apart (those above ``above``)."""
    out = []
    for p in points:
        x = float(p)
        for _ in range(spread):
            x = math.nextafter(x, -INF)
        for _ in range(2 * spread + 1):
            if x > above:
                out.append(x)
            x = math.nextafter(x, INF)
    return out


def ndtri(p):
    """The normal quantile at mpmath's precision: Newton's method on log Phi(x) = log p."""
    if p > 0.5:
        return -ndtri(1 - p)
    target = mpmath.log(p)
    x = -mpmath.sqrt(-2 * target) if p < 0.1 else mpmath.sqrt(2) * mpmath.erfinv(2 * p - 1)
    for _ in range(200):
        step = (mpmath.log(mpmath.ncdf(x)) - target) * mpmath.ncdf(x) / mpmath.npdf(x)
        x -= step
        if abs(step) < mpmath.mpf(2) ** (10 - mpmath.mp.prec) * max(1, abs(x)):
            return x
    raise ArithmeticError(f"ndtri({p}) did not converge")


def lgamma(x):
    """log|Gamma(x)| (mpmath's loggamma is complex below 0)."""
    return mpmath.loggamma(x) if x > 0 else mpmath.log(abs(mpmath.gamma(x)))


def _p(r):
    """The p whose tail variable sqrt(-2 log p) is r (ndtri's piece bounds)."""
    return float(mpmath.exp(-(mpmath.mpf(r) ** 2) / 2))


#: Below 0, lgamma and digamma come from the reflection formula, whose terms cancel near their zeros: their
#: errors are measured in ulps of the largest term there (name -> that term's magnitude, for x < 0).
SCALES = {
    "lgamma": lambda x: max(mpmath.log(mpmath.pi), abs(mpmath.log(abs(x * mpmath.sinpi(x)))), abs(mpmath.loggamma(-x))),
    "digamma": lambda x: max(abs(mpmath.digamma(1 - x)), abs(mpmath.pi * mpmath.cot(mpmath.pi * x))),
}

#: name -> (reference, max ulps, [(low, high, log-uniform?)...], hard cases, [(special input, exact output)...])
#: The floats nearest to multiples k pi/2 (k small, around 2**20 where the reduction changes, and huge).
_MULTIPLES_OF_HALF_PI = [
    float(k * mpmath.pi / 2) for k in [*range(1, 64), *range(667_000, 667_600, 7), 10**15 + 1, 2**60]
]
#: The double closest to a multiple of pi/2 (about 2**-61 from it): 6381956970095103 * 2**797.
_KAHAN = 6381956970095103 * 2.0**797

# fmt: off
FUNCTIONS = {
    "exp": (
        mpmath.exp,
        1.0,
        [(-745.2, 709.8, False), (-1.0, 1.0, False), (1e-300, 1e-5, True)],
        _hard(_near([0.0, 709.782712893384, -708.3964185322641, -745.1332191019411, 0.5 * math.log(2)]),
              np.arange(-745, 710, 0.5)),
        [(0.0, 1.0), (-0.0, 1.0), (INF, INF), (-INF, 0.0), (NAN, NAN), (709.79, INF), (-745.14, 0.0), (1000.0, INF),
         (-1e308, 0.0)],
    ),
    "log": (
        mpmath.log,
        1.0,
        [(5e-324, 1e308, True), (0.5, 2.0, False), (5e-324, 2.2e-308, False)],
        _hard(_near([1.0, math.sqrt(0.5), math.sqrt(2.0), 2.0, 0.5, 5e-324, 2.2250738585072014e-308,
                     1.7976931348623157e308], above=0.0)),
        [(1.0, 0.0), (0.0, -INF), (-0.0, -INF), (INF, INF), (-INF, NAN), (-1.0, NAN), (-5e-324, NAN), (NAN, NAN)],
    ),
    "expm1": (
        mpmath.expm1,
        1.0,
        [(-40.0, 709.8, False), (-1.0, 1.0, False), (1e-300, 1e-3, True), (-1e-3, -1e-300, False)],
        _hard(_near([0.0, 709.782712893384, 709.0895657128241, 0.5 * math.log(2), -0.5 * math.log(2),
                     math.log(2), -37.42994775023705, 1e-10, -1e-10]), np.arange(-40, 710, 0.5)),
        [(0.0, 0.0), (-0.0, -0.0), (INF, INF), (-INF, -1.0), (NAN, NAN), (1e-300, 1e-300), (-5e-324, -5e-324),
         (710.0, INF), (-1000.0, -1.0)],
    ),
    "log1p": (
        mpmath.log1p,
        1.0,
        [(1e-300, 1e308, True), (-1.0, 1.0, False), (1e-300, 1e-3, True), (-0.999, -1e-300, False)],
        _hard(_near([0.0, math.sqrt(0.5) - 1.0, math.sqrt(2.0) - 1.0, 1.0, -0.5, 1e-10, -1e-10,
                     math.nextafter(-1.0, 0.0), 2.0**53, 1.7976931348623157e308], above=-1.0)),
        [(0.0, 0.0), (-0.0, -0.0), (-1.0, -INF), (-2.0, NAN), (INF, INF), (-INF, NAN), (NAN, NAN),
         (5e-324, 5e-324), (-5e-324, -5e-324)],
    ),
    "sigmoid": (
        lambda x: 1 / (1 + mpmath.exp(-x)),
        1.0,
        [(-745.0, 40.0, False), (-5.0, 5.0, False), (1e-300, 1.0, True), (-1.0, -1e-300, False)],
        _hard(_near([0.0, -708.3964185322641, -745.1332191019411, 36.7368005696771]), np.arange(-745, 40, 0.25)),
        [(0.0, 0.5), (-0.0, 0.5), (INF, 1.0), (-INF, 0.0), (NAN, NAN), (-800.0, 0.0), (40.0, 1.0)],
    ),
    "softplus": (
        lambda x: mpmath.log1p(mpmath.exp(x)),
        1.0,
        [(-745.0, 800.0, False), (-5.0, 5.0, False), (1e-300, 1.0, True), (1.0, 1e308, True), (-1.0, -1e-300, False)],
        _hard(_near([0.0, 2.0, -2.0, 36.7368005696771, -708.3964185322641, -745.1332191019411]),
              np.arange(-745, 40, 0.25)),
        [(0.0, math.log(2)), (-0.0, math.log(2)), (INF, INF), (-INF, 0.0), (NAN, NAN), (-800.0, 0.0),
         (800.0, 800.0), (1e308, 1e308)],
    ),
    "tanh": (
        mpmath.tanh,
        1.0,
        [(-20.0, 20.0, False), (-1.0, 1.0, False), (1e-300, 1.0, True), (-1.0, -1e-300, False)],
        _hard(_near([0.0, 0.4, -0.4, 19.06154746539849, 22.0, 1e-8], 64), np.arange(-20, 20, 0.01)),
        [(0.0, 0.0), (-0.0, -0.0), (INF, 1.0), (-INF, -1.0), (NAN, NAN), (5e-324, 5e-324), (-5e-324, -5e-324),
         (30.0, 1.0), (-1e300, -1.0)],
    ),
    "sin": (
        mpmath.sin,
        1.0,
        [(-10.0, 10.0, False), (-1e6, 1e6, False), (1e-300, 1.0, True), (1e6, 1e308, True), (-1e308, -1e6, True)],
        _hard(_near(_MULTIPLES_OF_HALF_PI, 3), _near([0.0, 5e-324, 1048576.0, 1e22, 1e300, _KAHAN], 3)),
        [(0.0, 0.0), (-0.0, -0.0), (INF, NAN), (-INF, NAN), (NAN, NAN), (5e-324, 5e-324), (-5e-324, -5e-324)],
    ),
    "cos": (
        mpmath.cos,
        1.0,
        [(-10.0, 10.0, False), (-1e6, 1e6, False), (1e-300, 1.0, True), (1e6, 1e308, True), (-1e308, -1e6, True)],
        _hard(_near(_MULTIPLES_OF_HALF_PI, 3), _near([0.0, 1048576.0, 1e22, 1e300, _KAHAN], 3)),
        [(0.0, 1.0), (-0.0, 1.0), (INF, NAN), (-INF, NAN), (NAN, NAN), (5e-324, 1.0)],
    ),
    "erf": (
        mpmath.erf,
        1.0,
        [(-6.5, 6.5, False), (-1.0, 1.0, False), (1e-300, 1.0, True), (-1.0, -1e-300, True)],
        _hard(_near([0.0, 0.75, -0.75, 1.5, 3.0, 5.863, 6.0, -6.0, 2.0**-960, 1e-8]), np.arange(-6.5, 6.5, 0.01)),
        [(0.0, 0.0), (-0.0, -0.0), (INF, 1.0), (-INF, -1.0), (NAN, NAN), (10.0, 1.0), (-1e300, -1.0),
         (5e-324, 5e-324), (-5e-324, -5e-324)],
    ),
    "erfc": (
        mpmath.erfc,
        1.0,
        [(-6.5, 27.5, False), (-1.0, 1.0, False), (0.75, 27.3, False), (1e-300, 1.0, True), (-1.0, -1e-300, True)],
        # (0.7419918389471836: 1.002 ulps when 1 - erf served erfc up to 0.75)
        _hard(_near([0.0, 0.45, -0.45, 0.75, -0.75, 1.5, 3.0, 6.0, 12.0, 26.5, 27.2, -5.9, -6.0, 1e-8,
                     0.7419918389471836]), np.arange(-6.5, 27.5, 0.01)),
        [(0.0, 1.0), (-0.0, 1.0), (INF, 0.0), (-INF, 2.0), (NAN, NAN), (30.0, 0.0), (-10.0, 2.0), (1e300, 0.0)],
    ),
    "ndtri": (
        ndtri,
        2.0,
        [(5e-324, 0.25, True), (0.25, 0.75, False), (0.75, 1.0, False), (1e-10, 0.25, True)],
        _hard(_near([0.25, 0.75, 0.5, 5e-324, 1e-310, _p(3), _p(6), _p(12), 1 - 1e-10, 0.2, 0.8], 16, above=0.0),
              _near([1.0], 16, above=0.0)[:16]),
        [(0.0, -INF), (-0.0, -INF), (1.0, INF), (0.5, 0.0), (-0.1, NAN), (1.1, NAN), (NAN, NAN), (INF, NAN)],
    ),
    "lgamma": (
        lgamma,
        2.0,
        [(1e-300, 0.5, True), (0.5, 3.0, False), (3.0, 8.0, False), (8.0, 2.5e305, True), (-40.0, -1e-300, False),
         (-1e15, -40.0, True)],
        _hard(_near([1.0, 2.0, 0.5, 1.5, 3.0, 4.5, 8.0, 1e-300, 2.5e305, -0.5, -1.5, -2.4570247382208006,
                     -2.7476826467274127], 32)),
        [(1.0, 0.0), (2.0, 0.0), (0.0, INF), (-0.0, INF), (-3.0, INF), (-1e300, INF), (INF, INF), (-INF, INF),
         (NAN, NAN), (3e305, INF)],
    ),
    "digamma": (
        mpmath.digamma,
        2.0,
        [(1e-300, 1.0, True), (1.0, 8.0, False), (8.0, 1e300, True), (-40.0, -1e-300, False),
         (-1e15, -40.0, True)],
        _hard(_near([1.0, 1.4616321449683622, 2.0, 8.0, 0.5, 1e-300, -0.5, -1.5, -0.5040830082644554,
                     -1.5734984731623021], 32)),
        [(0.0, -INF), (-0.0, INF), (-3.0, NAN), (-1e300, NAN), (INF, INF), (-INF, NAN), (NAN, NAN)],
    ),
}
# fmt: on

NAMES = list(FUNCTIONS)


def sample(name, count=1000, seed=0):
    """The hard cases and ``count`` random points per domain of function ``name`` (deterministic)."""
    _, _, domains, hard, _ = FUNCTIONS[name]
    rng = np.random.default_rng([seed, NAMES.index(name)])
    parts = [hard]
    for low, high, log_uniform in domains:
        if log_uniform:
            sign = 1.0 if low > 0 else -1.0  # (a negative range: its magnitudes are log-uniform)
            ends = sorted((math.log(sign * low), math.log(sign * high)))
            parts.append(sign * np.exp(rng.uniform(*ends, count)))
        else:
            parts.append(rng.uniform(low, high, count))
    return np.concatenate(parts)


def ulps(got, exact, scale=None):
    """|got - exact| in units of the last place of ``exact`` (subnormal spacing below the normal range).

    With ``scale``, in units of the last place of ``scale`` instead (the
    largest term a value is computed from, where those terms cancel).
    """
    if exact == 0 or math.isinf(float(exact)):  # exactly 0, or beyond the largest float: only that value will do
        if scale is None or math.isinf(float(exact)):
            return 0.0 if got == float(exact) else INF
    magnitude = abs(exact) if scale is None else max(abs(exact), scale)
    spacing = mpmath.mpf(2) ** max(int(mpmath.floor(mpmath.log(magnitude, 2))) - 52, -1074)
    return float(abs(mpmath.mpf(got) - exact) / spacing)


def error(name, x, got):
    """``got``'s error at ``x`` in ulps, as the accuracy table measures it for function ``name``."""
    if name in SCALES and x <= 0 and x == math.floor(x):  # a pole: lgamma is inf there, digamma NaN
        return 0.0 if (got == INF if name == "lgamma" else math.isnan(got)) else INF
    exact = FUNCTIONS[name][0](mpmath.mpf(x))
    scale = SCALES[name](mpmath.mpf(x)) if name in SCALES and x < 0 else None
    return ulps(got, exact, scale)
