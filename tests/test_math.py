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

import numba
import numpy as np
import pytest

import fastgrad.math as fm
from fastgrad._simd import LANES, load4, load8, store4, store8

from math_cases import FUNCTIONS, NAMES, sample
from math_cases import error as measured_error

ROOT = Path(__file__).resolve().parents[1]
INF, NAN = math.inf, math.nan


@pytest.mark.parametrize("name", NAMES)
def test_accuracy_within_the_stated_ulps(name):
    target = FUNCTIONS[name][1]
    function = getattr(fm, name)
    worst, where = 0.0, None
    for x in sample(name):
        error = measured_error(name, float(x), function(float(x)))
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
def _lanes4(function, x, out):
    """``out = function(x)`` four values at a time (fastgrad's vector code)."""
    rows = out.reshape(1, -1)
    for i in range(0, x.size, 4):
        store4(rows, 0, i, function(load4(x, i)))


@numba.njit
def _lanes8(function, x, out):
    """``out = function(x)`` eight values at a time (the kernels' vectors on AVX-512)."""
    rows = out.reshape(1, -1)
    for i in range(0, x.size, 8):
        store8(rows, 0, i, function(load8(x, i)))


@numba.njit
def _one_by_one(function, x, out):
    for i in range(x.size):
        out[i] = function(x[i])


#: Functions also checked at the width the kernels do not use here: sin and cos have width-specific code (each
#: huge lane reduced again, ``math._reduce_vector``), exp is the core of most others. (Every function at both
#: widths compiled 30 s longer, each vector form of lgamma and digamma taking 6-8 s.)
BOTH_WIDTHS = ("exp", "sin", "cos")


@pytest.mark.parametrize("name", NAMES)
def test_vector_code_gives_the_scalar_bits(name):
    """The kernels' vectors (8 lanes on AVX-512, else 4; both for BOTH_WIDTHS) and the scalar loop (which LLVM
    vectorises to its own width) agree bit for bit."""
    function = getattr(fm, name)
    x = np.concatenate([sample(name, 2000, seed=1), [x for x, _ in FUNCTIONS[name][4]]])
    x = np.concatenate([x, np.zeros(-x.size % 8)])
    scalar = np.empty_like(x)
    _one_by_one(function, x, scalar)
    for lanes in (4, 8) if name in BOTH_WIDTHS else (LANES,):
        vector = np.empty_like(x)
        (_lanes8 if lanes == 8 else _lanes4)(function, x, vector)
        assert np.array_equal(vector.view(np.int64), scalar.view(np.int64)), f"{lanes} lanes"
    python = np.array([function(float(v)) for v in x])
    assert np.array_equal(scalar.view(np.int64), python.view(np.int64))


def test_the_samplers_log_gives_logs_bits_on_every_uniform():
    """``_log_normal`` (log without its special values) on uniforms on (0, 1]: log's bits, the extremes included."""
    from fastgrad.rng import random_words, unit_open_closed

    words = np.concatenate([random_words(3, 0, 20_000), np.array([0, 2**11 - 1, 2**11, 2**63, 2**64 - 1], np.uint64)])
    u = np.array([unit_open_closed(w) for w in words])
    assert u.min() == 2.0**-53 and u.max() == 1.0
    fast, full = np.empty_like(u), np.empty_like(u)
    _one_by_one(fm._log_normal, u, fast)
    _one_by_one(fm.log, u, full)
    assert np.array_equal(fast.view(np.int64), full.view(np.int64))


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
    p = _fma(r, c[-1], c[-2])
    for coefficient in reversed(c[:-2]):
        p = _fma(p, r, coefficient)
    square = r * r
    half = 0.5 * square
    u = r + half
    tail = ((r - u) + half) + (r * square * p + (0.5 * _fma(r, r, -square) + dr))
    t = u + tail
    t_error = (u - t) + tail
    ph = 1.0 + t
    pl = ((1.0 - ph) + t) + t_error
    k_half = (k * 0.5 + fm.SHIFT) - fm.SHIFT
    y = (ph + pl) * math.ldexp(1.0, int(k_half)) * math.ldexp(1.0, int(k - k_half))
    return INF if x > fm.EXP_OVERFLOW else 0.0 if x < fm.EXP_UNDERFLOW else y


def test_exp_is_the_operations_written_in_its_source():
    x = sample("exp", 500, seed=2)
    compiled = np.array([fm.exp(float(v)) for v in x])
    python = np.array([_python_exp(float(v)) for v in x])
    assert np.array_equal(compiled.view(np.int64), python.view(np.int64))


def test_the_module_is_public_as_fastgrad_math():
    import fastgrad as fg

    assert fg.math is fm and "math" in fg.__all__
    assert set(fm.__all__) <= set(dir(fm))


def test_coefficients_are_what_the_generator_prints():
    generated = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "make_math_coefficients.py")], capture_output=True, text=True, check=True
    ).stdout
    assert generated == (ROOT / "fastgrad" / "_math_coefficients.py").read_text()
