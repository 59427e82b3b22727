"""fastgrad.math.gamma_sample_grad: dx/dalpha of a unit-rate Gamma(alpha) draw, against mpmath.

The references are ``tests/data/gamma_sample_grad.csv`` (1,329 points, by
``tools/gamma_grad_reference.py --write``: mpmath at 50 digits); a sample of
its rows is recomputed here, so the table cannot drift from its generator.
"""

import math
import sys
from pathlib import Path

import mpmath
import numba
import numpy as np
import pytest

import fastgrad.math as fm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from gamma_grad_reference import _far_tail, points, read, reference, relative_error

#: The promise in docs/math.md (the issue asked for 1e-12; the largest error measured is 1.5e-14).
RELATIVE = 1e-13
#: Where the exact value is below 1e-300 (x near the smallest subnormal), the error is absolute.
ABSOLUTE = 1e-300


@pytest.fixture(scope="module")
def table():
    return read()


def assert_within_the_promise(table, gradient):
    """``gradient(x, alpha)`` at every table point: within RELATIVE, or ABSOLUTE where the exact value is tiny."""
    alpha, x, _, text = table
    worst = (0.0, None)
    for a, xi, exact in zip(alpha, x, text, strict=True):
        value = gradient(xi, a)
        error, tiny = relative_error(value, exact)
        if tiny:
            assert abs(value - float(exact)) <= ABSOLUTE, (a, xi)
        elif error > worst[0]:
            worst = (error, (a, xi))
    assert worst[0] < RELATIVE, worst


def test_every_table_point_is_within_the_promise(table):
    assert_within_the_promise(table, fm.gamma_sample_grad)


def test_the_table_covers_the_shapes_and_both_tails(table):
    alpha, x, _, _ = table
    assert alpha.min() == 1e-3 and alpha.max() == 1e4
    assert x.min() == 5e-324 and x.max() == 1e300
    assert len(alpha) == len(points())


@pytest.mark.parametrize("row", [0, 97, 313, 512, 700, 901, 1111, 1328])
def test_the_table_is_what_mpmath_gives(table, row):
    alpha, x, _, text = table
    assert mpmath.nstr(reference(x[row], alpha[row]), 25, min_fixed=0, max_fixed=0) == text[row]


@pytest.mark.parametrize("a, x", [(0.001, 5.0), (0.5, 60.0), (50.0, 4000.0)])
def test_the_two_references_agree(a, x):
    # the table's difference quotient of Q and its quadrature of the far tail, two independent routes
    with mpmath.workdps(50):
        a, x = mpmath.mpf(a), mpmath.mpf(x)
        assert abs(reference(x, a) / _far_tail(x, a) - 1) < mpmath.mpf(10) ** -40


def test_the_series_and_the_fraction_agree_where_they_meet():
    # each branch computed on the other's side of the switch x = max(a + sqrt(a), 1): two methods, one value
    worst = 0.0
    for a in np.logspace(-3, 4, 113):
        x = max(a + math.sqrt(a), fm.GAMMA_GRAD_SERIES)
        ph, pl, ph1, pl1 = fm._gamma_grad_constants(a)
        for point in (x, math.nextafter(x, math.inf)):
            series, fraction = fm._gamma_grad_series(point, a, ph1, pl1), fm._gamma_grad_fraction(point, a, ph, pl)
            worst = max(worst, abs(series / fraction - 1))
    assert worst < RELATIVE


@pytest.mark.parametrize(
    "x, alpha, expected",
    [
        (0.0, 1.0, 0.0),
        (-0.0, 1.0, -0.0),
        (math.inf, 2.0, math.inf),
        (-1.0, 1.0, math.nan),
        (1.0, 0.0, math.nan),
        (1.0, -2.0, math.nan),
        (1.0, math.inf, math.nan),
        (math.nan, 1.0, math.nan),
        (1.0, math.nan, math.nan),
    ],
)
def test_special_values(x, alpha, expected):
    value = fm.gamma_sample_grad(x, alpha)
    if math.isnan(expected):
        assert math.isnan(value)
    else:
        assert value == expected and math.copysign(1.0, value) == math.copysign(1.0, expected)


def test_the_exponential_case_is_closed_form():
    # alpha = 1: dP/dalpha = -e**-x (log x + euler) - E1(x) (integrate t**(a-1) log t e**-t by parts), so
    # dx/dalpha = log x + euler + e**x E1(x): an independent check of the table's route
    with mpmath.workdps(30):
        for x in (1e-8, 0.3, 1.0, 2.7, 30.0, 700.0):
            exact = mpmath.log(x) + mpmath.euler + mpmath.exp(x) * mpmath.e1(x)
            assert abs(fm.gamma_sample_grad(x, 1.0) / exact - 1) < RELATIVE, x


def test_the_kernels_form_with_digamma_given_has_the_same_bits(table):
    alpha, x, _, _ = table
    for a in np.unique(alpha):
        constants = fm._gamma_grad_constants(a)
        for xi in x[alpha == a]:
            value = fm.gamma_sample_grad(xi, a)
            assert fm._gamma_sample_grad_at(xi, a, constants) == value or (math.isnan(value)), (a, xi)


def test_callable_from_njit_with_the_same_bits():
    @numba.njit
    def grads(xs, alpha, out):
        for i in range(xs.size):
            out[i] = fm.gamma_sample_grad(xs[i], alpha)

    xs = np.random.default_rng(1).gamma(3.5, size=64)
    out = np.empty_like(xs)
    grads(xs, 3.5, out)
    assert [float(v) for v in out] == [fm.gamma_sample_grad(float(v), 3.5) for v in xs]


# --- the kernels' per-run fit (fastgrad.math._gamma_grad_fit): the same promise, and the series' bits outside it ---


def test_the_kernels_fit_keeps_the_promise_at_every_table_point(table):
    runs = {a: (fm._gamma_grad_constants(a), fm._gamma_grad_fit(a)) for a in np.unique(table[0])}  # a fit per shape
    assert_within_the_promise(table, lambda x, a: fm._gamma_grad_from_fit(x, a, *runs[a]))


@pytest.mark.parametrize("a", [0.5, 1.0, 2.5, 10.0, 100.0, 999.0, 1e3, 1e4])
def test_the_fit_covers_the_draws_and_agrees_with_the_series(a):
    from fastgrad import rng

    constants = fm._gamma_grad_constants(a)
    fit = fm._gamma_grad_fit(a)
    assert fit[6].shape[0] >= 16 and fit[0] == (a < fm.GAMMA_FIT_LINEAR_FROM)  # octaves below 1,000, z above
    z = rng.standard_gammas(3, 0, a, 5000)
    fitted = np.array([fm._gamma_grad_fitted(v, fit) for v in z])
    assert not np.any(np.isnan(fitted))  # every draw here is in the fit
    series = np.array([fm._gamma_sample_grad_at(v, a, constants) for v in z])
    assert np.max(np.abs(fitted / series - 1.0)) < 5e-14


def test_outside_the_fit_and_without_one_the_draws_get_the_series_bits():
    for a, xs in [(2.5, [1e-12, 100.0, 1e3, 5e-324]), (1e-3, [1e-300, 0.5, 3.0]), (0.1, [0.1]), (2e4, [2e4, 2.01e4])]:
        constants = fm._gamma_grad_constants(a)
        fit = fm._gamma_grad_fit(a)
        for x in xs:
            assert fm._gamma_grad_from_fit(x, a, constants, fit) == fm._gamma_sample_grad_at(x, a, constants)
    for a in (1e-3, 0.1, 2e4):  # no fit: the bulk spans too many octaves, or beyond the accuracy table's shapes
        assert fm._gamma_grad_fit(a)[6].shape[0] == 0
