"""Measure fastgrad.math's accuracy on 10**7 points per function: the table of ``docs/math.md``.

Run ``python tools/math_accuracy.py [--points N] [NAME ...]``. The points are
those of ``tests/math_cases.py`` (each function's hard cases and random
points over its domains), with ``N`` random points in all per function.

Every point is screened against NumPy's ``long double`` functions (the x87
80-bit format here: 11 bits beyond a double, so an error is known to about
0.001 ulp), and the 200 largest errors are then recomputed exactly with
mpmath at 130 bits: the maxima printed are mpmath's. A machine whose
``long double`` is a double cannot screen, and the script says so.
NumPy has no ``long double`` erf, erfc, ndtri, lgamma or digamma: those are
screened by mpmath itself at 72 bits (19 beyond a double), on every core,
about 15 s per million points and core. Below 0, lgamma's and digamma's
errors are in ulps of the largest term of their reflection formula
(``tests/math_cases.py``, ``SCALES``).
"""

import argparse
import multiprocessing
import os
import sys
import time
from pathlib import Path

import mpmath
import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import fastgrad.math as fm
from fastgrad._simd import load4, store4

from math_cases import FUNCTIONS, NAMES, SCALES, sample
from math_cases import error as exact_error

#: name -> NumPy's long-double function (the screen)
SCREENS = {
    "exp": np.exp,
    "log": np.log,
    "expm1": np.expm1,
    "log1p": np.log1p,
    "sin": np.sin,
    "cos": np.cos,
    "tanh": np.tanh,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "softplus": lambda x: np.logaddexp(np.longdouble(0.0), x),
}
CONFIRMED = 200


@numba.njit
def _evaluate(function, x, out):
    rows = out.reshape(1, -1)
    for i in range(0, x.size - x.size % 4, 4):
        store4(rows, 0, i, function(load4(x, i)))
    for i in range(x.size - x.size % 4, x.size):
        out[i] = function(x[i])


def _screen_ulps(got, reference):
    """Errors in ulps of the (long double) reference, where both are finite."""
    finite = np.isfinite(reference) & np.isfinite(got)
    magnitude = np.abs(reference)
    _, exponent = np.frexp(np.where(magnitude > 0, magnitude, 1.0))
    spacing = np.ldexp(np.longdouble(1.0), np.maximum(exponent.astype(np.int64) - 53, -1074))
    errors = np.abs(got.astype(np.longdouble) - reference) / spacing
    return np.where(finite, errors, 0.0).astype(np.float64)


def _ndtri_error(p, got):
    """ndtri's error at p in ulps of the result, to first order: |Phi(got) - p| / (phi(got) ulp(got)).

    One normal CDF instead of a quantile's Newton iterations (a screen: the
    largest errors are recomputed from the exact quantile).
    """
    if not np.isfinite(got) or got == 0.0:
        return 0.0 if got == float(FUNCTIONS["ndtri"][0](mpmath.mpf(p))) else np.inf
    x = mpmath.mpf(got)
    residual = mpmath.ncdf(x) - p if p <= 0.5 else (1 - mpmath.mpf(p)) - mpmath.ncdf(-x)
    return float(abs(residual) / (mpmath.npdf(x) * np.spacing(abs(got))))


def _mpmath_errors(task):
    """Errors of one slice of points against mpmath at 72 bits (a worker of the pool)."""
    name, x, got = task
    with mpmath.workprec(72):
        if name == "ndtri":
            return np.array([_ndtri_error(float(v), float(g)) for v, g in zip(x, got, strict=True)])
        return np.array([exact_error(name, float(v), float(g)) for v, g in zip(x, got, strict=True)])


def _screen(name, x, got):
    """Every point's error, screened: NumPy's long double where it has the function, else mpmath in a pool."""
    if name in SCREENS:
        screened = _screen_ulps(got, SCREENS[name](x.astype(np.longdouble)))
        if name in SCALES:  # (not so far: a long double screen of a reflected function would need its scale)
            raise NotImplementedError(name)
        return screened
    pieces = np.array_split(np.arange(x.size), max(1, x.size // 20_000))
    with multiprocessing.Pool(os.cpu_count()) as pool:
        parts = pool.map(_mpmath_errors, [(name, x[i], got[i]) for i in pieces], chunksize=1)
    return np.concatenate(parts)


def measure(name, points):
    _, target, domains, _, _ = FUNCTIONS[name]
    x = sample(name, count=points // len(domains), seed=7)
    x = x[np.isfinite(x)]
    got = np.empty_like(x)
    _evaluate(getattr(fm, name), x, got)
    screened = _screen(name, x, got)
    worst = np.argsort(screened)[-CONFIRMED:]
    exact = [(exact_error(name, float(x[i]), float(got[i])), float(x[i])) for i in worst]
    # every point whose result is not finite (overflow, poles) must equal the correctly rounded value
    odd = np.flatnonzero(~np.isfinite(got))[:CONFIRMED]
    exact += [(exact_error(name, float(x[i]), float(got[i])), float(x[i])) for i in odd]
    error, where = max(exact)
    return x.size, error, where, target


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=NAMES)
    parser.add_argument("--points", type=int, default=10**7)
    args = parser.parse_args(argv)
    if np.finfo(np.longdouble).nmant < 60:
        sys.exit("this machine's long double is no wider than a double: it cannot screen the points")
    print("| function | points | max error (ulps) | at x | target |")
    print("|---|---|---|---|---|")
    for name in args.names:
        start = time.perf_counter()
        count, error, where, target = measure(name, args.points)
        print(f"| `{name}` | {count:,} | {error:.3f} | {where!r} | {target:g} |", flush=True)
        print(f"  ({time.perf_counter() - start:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
