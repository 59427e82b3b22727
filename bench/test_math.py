"""fastgrad.math on an array, one function at a time, against NumPy's own ufunc on the same array (1 thread).

fastgrad's loop runs a vector of values at a time, as its kernels call these
functions: 8 lanes where Numba compiles for AVX-512, else 4
(``fastgrad._simd.LANES``); NumPy's ufuncs use their own SIMD code where
the CPU has it (AVX-512 here for exp, log, sin, cos, tanh). NumPy has no
erf, erfc, ndtri, lgamma or digamma: SciPy's ufuncs (``scipy.special``) are
the baseline there. "values/s" is the array length over the median time.
"""

import numba
import numpy as np
import pytest
from scipy import special

import fastgrad.math as fm
from fastgrad._simd import LANES, load4, load8, store4, store8

N = 2**22
_rng = np.random.default_rng(0)


def _numpy_sigmoid(x, out):
    """1 / (1 + exp(-x)) in place: NumPy has no logistic ufunc (scipy.special.expit is one)."""
    np.negative(x, out=out)
    np.exp(out, out=out)
    np.add(out, 1.0, out=out)
    return np.divide(1.0, out, out=out)


#: name -> (NumPy's way, the inputs' range)
FUNCTIONS = {
    "exp": (np.exp, (-20.0, 20.0)),
    "expm1": (np.expm1, (-2.0, 2.0)),
    "log": (np.log, (1e-3, 1e3)),
    "log1p": (np.log1p, (-0.5, 2.0)),
    "sin": (np.sin, (-10.0, 10.0)),
    "cos": (np.cos, (-10.0, 10.0)),
    "tanh": (np.tanh, (-5.0, 5.0)),
    "sigmoid": (lambda x, out: _numpy_sigmoid(x, out), (-20.0, 20.0)),
    "softplus": (lambda x, out: np.logaddexp(0.0, x, out=out), (-20.0, 20.0)),
    "erf": (special.erf, (-5.0, 5.0)),
    "erfc": (special.erfc, (-5.0, 25.0)),
    "ndtri": (special.ndtri, (1e-6, 1.0)),
    "lgamma": (special.gammaln, (0.01, 100.0)),
    "digamma": (special.psi, (0.01, 100.0)),
}
#: Functions NumPy lacks: SciPy's ufuncs are their baseline.
SCIPY = ("erf", "erfc", "ndtri", "lgamma", "digamma")


def peer(name):
    """Who the baseline of function ``name`` is: NumPy, or SciPy for what NumPy lacks."""
    return "SciPy" if name in SCIPY else "NumPy"


_INPUTS = {name: _rng.uniform(*span, N) for name, (_, span) in FUNCTIONS.items()}
_OUT = np.empty(N)


@numba.njit
def _apply4(function, x, out):
    rows = out.reshape(1, -1)
    for i in range(0, x.size, 4):
        store4(rows, 0, i, function(load4(x, i)))


@numba.njit
def _apply8(function, x, out):
    rows = out.reshape(1, -1)
    for i in range(0, x.size, 8):
        store8(rows, 0, i, function(load8(x, i)))


_apply = _apply8 if LANES == 8 else _apply4


def _fastgrad(name):
    function, x = getattr(fm, name), _INPUTS[name]
    return lambda: _apply(function, x, _OUT)


def _numpy(name):
    ufunc, x = FUNCTIONS[name][0], _INPUTS[name]
    return lambda: ufunc(x, out=_OUT)


@pytest.mark.benchmark(group="math")
@pytest.mark.parametrize("name", list(FUNCTIONS))
@pytest.mark.parametrize("who", ["fastgrad.math", "peer"])
def test_math(benchmark, record, name, who):
    run = _fastgrad(name) if who == "fastgrad.math" else _numpy(name)
    run()
    benchmark.pedantic(run, rounds=15, warmup_rounds=1)
    record(f"{who if who == 'fastgrad.math' else peer(name)} {name}", N, threads=1, function=name)


# --- gamma_sample_grad: scalar, one draw at a time ----------------------------------------------
#
# dx/dalpha of unit-rate Gamma(alpha) draws. NumPy and SciPy have no such function; the peer is what one would
# write without it: a central difference of SciPy's inverse CDF at the draw's own quantile,
# (gammaincinv(a + h, u) - gammaincinv(a - h, u)) / 2h with u = gammainc(a, x) and h = 1e-5 a (three ufunc calls
# per draw; its relative error, measured on 20,000 draws per shape: medians 5e-12 (alpha = 100) to 2e-10 (0.1),
# maxima 9e-11 to 1.8e-7, against fastgrad's 6e-15).

GAMMA_N = 2**16
GAMMA_SHAPES = (0.1, 1.0, 10.0, 100.0)
_GAMMA_DRAWS = {a: _rng.gamma(a, size=GAMMA_N) for a in GAMMA_SHAPES}
_GAMMA_OUT = np.empty(GAMMA_N)


@numba.njit
def _gamma_grads(x, alpha, out):
    for i in range(x.size):
        out[i] = fm.gamma_sample_grad(x[i], alpha)


def _scipy_gamma_grads(x, alpha, out):
    u = special.gammainc(alpha, x)
    h = 1e-5 * alpha
    np.subtract(special.gammaincinv(alpha + h, u), special.gammaincinv(alpha - h, u), out=out)
    return np.divide(out, 2.0 * h, out=out)


@pytest.mark.benchmark(group="gamma_sample_grad")
@pytest.mark.parametrize("alpha", GAMMA_SHAPES)
@pytest.mark.parametrize("who", ["fastgrad.math", "SciPy"])
def test_gamma_sample_grad(benchmark, record, alpha, who):
    x = _GAMMA_DRAWS[alpha]
    if who == "fastgrad.math":
        run = lambda: _gamma_grads(x, alpha, _GAMMA_OUT)  # noqa: E731
    else:
        run = lambda: _scipy_gamma_grads(x, alpha, _GAMMA_OUT)  # noqa: E731
    run()
    benchmark.pedantic(run, rounds=7, warmup_rounds=1)
    record(f"{who} gamma_sample_grad alpha={alpha:g}", GAMMA_N, threads=1, function="gamma_sample_grad",
           alpha=alpha)  # fmt: skip
