"""fastgrad.math: accuracy against mpmath, special values, and the same bits in scalar, vector and Python code.

One table of functions drives every test. Accuracy is measured in ulps of
the exact value (mpmath at 130 bits) on a deterministic sample: random points
over each function's domain plus the hard cases named in the table. The
full 10**7-point measurement of ``docs/math.md`` is ``tools/math_accuracy.py``.
"""

import math
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import mpmath
import numba
import numpy as np
import pytest

import fastgrad.math as fm
from fastgrad._simd import load4, store4

ROOT = Path(__file__).resolve().parents[1]
INF, NAN = math.inf, math.nan
mpmath.mp.prec = 130


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
}
# fmt: on

NAMES = list(FUNCTIONS)


def _sample(name, count=3000, seed=0):
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


def _ulps(got, exact):
    """|got - exact| in units of the last place of ``exact`` (subnormal spacing below the normal range)."""
    if exact == 0 or math.isinf(float(exact)):  # exactly 0, or beyond the largest float: only that value will do
        return 0.0 if got == float(exact) else INF
    spacing = mpmath.mpf(2) ** max(int(mpmath.floor(mpmath.log(abs(exact), 2))) - 52, -1074)
    return float(abs(mpmath.mpf(got) - exact) / spacing)


@pytest.mark.parametrize("name", NAMES)
def test_accuracy_within_the_stated_ulps(name):
    reference, target, _, _, _ = FUNCTIONS[name]
    function = getattr(fm, name)
    worst, where = 0.0, None
    for x in _sample(name):
        error = _ulps(function(float(x)), reference(mpmath.mpf(float(x))))
        if error > worst:
            worst, where = error, float(x)
    assert worst <= target, f"{name}({where!r}) is {worst:.3f} ulps off (target {target})"


@pytest.mark.parametrize("name", NAMES)
def test_special_values(name):
    function = getattr(fm, name)
    for x, expected in FUNCTIONS[name][4]:
        got = function(x)
        if math.isnan(expected):
            assert math.isnan(got), f"{name}({x!r}) = {got!r}, not NaN"
        else:
            assert got == expected and math.copysign(1, got) == math.copysign(1, expected), (
                f"{name}({x!r}) = {got!r}, not {expected!r}"
            )


@numba.njit
def _lanes(function, x, out):
    """``out = function(x)`` four values at a time (fastgrad's vector code)."""
    rows = out.reshape(1, -1)
    for i in range(0, x.size, 4):
        store4(rows, 0, i, function(load4(x, i)))


@numba.njit
def _one_by_one(function, x, out):
    for i in range(x.size):
        out[i] = function(x[i])


@pytest.mark.parametrize("name", NAMES)
def test_vector_code_gives_the_scalar_bits(name):
    """The 4-lane code and the scalar loop (which LLVM vectorises to its own width here) agree bit for bit."""
    function = getattr(fm, name)
    x = np.concatenate([_sample(name, 2000, seed=1), [x for x, _ in FUNCTIONS[name][4]]])
    x = np.concatenate([x, np.zeros(-x.size % 4)])
    vector, scalar = np.empty_like(x), np.empty_like(x)
    _lanes(function, x, vector)
    _one_by_one(function, x, scalar)
    python = np.array([function(float(v)) for v in x])
    assert np.array_equal(vector.view(np.int64), scalar.view(np.int64))
    assert np.array_equal(scalar.view(np.int64), python.view(np.int64))


# --- exp restated in plain Python: the compiled code does exactly these operations ------------------


def _fma(a, b, c):
    """IEEE fusedMultiplyAdd: the exact a*b + c, rounded once (Fraction -> float rounds correctly)."""
    if not all(math.isfinite(v) for v in (a, b, c)):
        return a * b + c
    return float(Fraction(a) * Fraction(b) + Fraction(c))


def _python_exp(x):
    k = (x * fm.INV_LN2 + fm.SHIFT) - fm.SHIFT
    hi = x - k * fm.LN2_HI
    lo = k * fm.LN2_LO
    r = hi - lo
    dr = (hi - r) - lo
    c = fm.C.EXP
    acc = _fma(r, c[-1], c[-2])
    for coefficient in reversed(c[:-2]):
        acc = _fma(acc, r, coefficient)
    p = 1.0 + (r + _fma(r * r, acc, dr))
    half = (k * 0.5 + fm.SHIFT) - fm.SHIFT
    y = p * math.ldexp(1.0, int(half)) * math.ldexp(1.0, int(k - half))
    return INF if x > fm.EXP_OVERFLOW else 0.0 if x < fm.EXP_UNDERFLOW else y


def test_exp_is_the_operations_written_in_its_source():
    x = _sample("exp", 500, seed=2)
    compiled = np.array([fm.exp(float(v)) for v in x])
    python = np.array([_python_exp(float(v)) for v in x])
    assert np.array_equal(compiled.view(np.int64), python.view(np.int64))


def test_coefficients_are_what_the_generator_prints():
    generated = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "make_math_coefficients.py")], capture_output=True, text=True, check=True
    ).stdout
    assert generated == (ROOT / "fastgrad" / "_math_coefficients.py").read_text()
