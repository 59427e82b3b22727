"""The exact reference values against numerical integration and closed forms."""

import math

import numpy as np
import pytest
from scipy import integrate, stats

import fastgrad as fg
from fastgrad._analytic import estimator_moments
from fastgrad.functions import BUILTINS

FUNCTIONS = [
    fg.functions.linear(),
    fg.functions.square(),
    fg.functions.shifted_square(k=1.5),
    fg.functions.cos(omega=1.7),
    fg.functions.quartic(),
    fg.functions.exp_quadratic(k=0.8),
    fg.functions.logistic(a=1.5, b=-0.5),
]
DISTRIBUTIONS = [fg.Normal(2.0, 1.0), fg.Normal(-0.3, 0.6)]


def quad_moments(distribution, function, estimator, parameter):
    """Mean and variance of the per-draw gradient by adaptive quadrature over eps."""
    mu, sigma = distribution.loc, distribution.scale
    f = function.exact()
    h = f if estimator == "score" else f.derivative()
    if estimator == "score":
        factor = (lambda e: e / sigma) if parameter == "loc" else (lambda e: (e * e - 1) / sigma)
    else:
        factor = (lambda e: 1.0) if parameter == "loc" else (lambda e: e)

    def value(e):
        return h(mu + sigma * e) * factor(e)

    first = integrate.quad(lambda e: value(e) * stats.norm.pdf(e), -40, 40, limit=500, epsabs=1e-13)[0]
    second = integrate.quad(lambda e: value(e) ** 2 * stats.norm.pdf(e), -40, 40, limit=500, epsabs=1e-13)[0]
    return first, second - first * first


@pytest.mark.parametrize("distribution", DISTRIBUTIONS, ids=repr)
@pytest.mark.parametrize("function", FUNCTIONS, ids=repr)
def test_exact_moments_match_quadrature(distribution, function):
    exact = estimator_moments(distribution, function, ("score", "pathwise"), ("loc", "scale"))
    for estimator in ("score", "pathwise"):
        for parameter in ("loc", "scale"):
            mean, variance = quad_moments(distribution, function, estimator, parameter)
            assert exact[estimator][parameter][0] == pytest.approx(mean, rel=1e-9, abs=1e-12)
            assert exact[estimator][parameter][1] == pytest.approx(variance, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("distribution", DISTRIBUTIONS, ids=repr)
@pytest.mark.parametrize("function", FUNCTIONS, ids=repr)
def test_score_and_pathwise_have_the_same_mean(distribution, function):
    exact = estimator_moments(distribution, function, ("score", "pathwise"), ("loc", "scale"))
    for parameter in ("loc", "scale"):
        assert exact["score"][parameter][0] == pytest.approx(exact["pathwise"][parameter][0], rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("theta", [0.0, 0.5, 2.0, 3.0, -1.25])
def test_seed_closed_forms(theta):
    exact = estimator_moments(fg.Normal(theta, 1.0), fg.functions.square(), ("score", "pathwise"), ("loc",))
    assert exact["score"]["loc"] == (2 * theta, theta**4 + 14 * theta**2 + 15)
    assert exact["pathwise"]["loc"] == (2 * theta, 4.0)


def test_seed_numbers():
    exact = estimator_moments(fg.Normal(2.0, 1.0), fg.functions.square(), ("score", "pathwise"), ("loc",))
    assert exact["score"]["loc"][1] == 87.0
    assert exact["pathwise"]["loc"][1] == 4.0
    assert exact["score"]["loc"][1] / exact["pathwise"]["loc"][1] == 21.75


def test_polynomial_variances_are_exact_at_large_loc():
    # Var(4 x**3) at loc = 1e4: float64 E[h^2] - E[h]^2 would lose ~7 digits here.
    exact = estimator_moments(fg.Normal(1e4, 1.0), fg.functions.quartic(), ("pathwise",), ("loc",))
    mu = 10**4
    # Var(4 x^3) = 16 (E x^6 - (E x^3)^2) = 16 (9 mu^4 + 36 mu^2 + 15) for x ~ N(mu, 1), in integers:
    assert exact["pathwise"]["loc"][1] == float(16 * (9 * mu**4 + 36 * mu**2 + 15))


@pytest.mark.parametrize("function", FUNCTIONS, ids=repr)
def test_compiled_cores_match_exact_form(function):
    exact = function.exact()
    derivative = exact.derivative()
    params = function.param_vector
    for x in np.linspace(-3.0, 4.0, 15):
        assert function.f(x, params) == pytest.approx(exact(x), rel=1e-13, abs=1e-13)
        assert function.df(x, params) == pytest.approx(derivative(x), rel=1e-13, abs=1e-13)


def test_every_builtin_is_tested():
    assert {f.name for f in FUNCTIONS} == set(BUILTINS)


def test_user_functions_have_no_analytic_values():
    import numba

    f = numba.njit(lambda x: math.sin(x))
    assert estimator_moments(fg.Normal(), fg.Function(f), ("score",), ("loc",)) is None


def test_remembered_moments_are_the_computed_ones_and_cannot_be_altered():
    from fastgrad import _analytic

    distribution, function = fg.Normal(1.5, 0.5), fg.functions.shifted_square(k=0.25)
    key_args = (distribution, function, ("score", "pathwise"), ("loc", "scale"))
    fresh = _analytic._estimator_moments(*key_args)
    first = estimator_moments(*key_args)
    first["score"]["loc"] = (0.0, 0.0)  # a caller changing its copy
    assert estimator_moments(*key_args) == fresh
    # a different parameter of the same built-in is a different entry
    other = estimator_moments(distribution, fg.functions.shifted_square(k=1.0), ("score",), ("loc",))
    assert other["score"]["loc"] != fresh["score"]["loc"]
    assert len(_analytic._MOMENTS) <= 64


# --- the quadrature-exact built-ins (exp_quadratic, logistic): against closed forms and mpmath ---------------


@pytest.mark.parametrize("k, loc, scale", [(0.8, 2.0, 1.0), (3.0, -0.3, 0.6), (1e-3, 5.0, 2.0), (50.0, 0.1, 0.05)])
def test_exp_quadratic_matches_its_gaussian_closed_form(k, loc, scale):
    """E[exp(-k x**2)] = exp(-k loc**2 / d) / sqrt(d), d = 1 + 2 k scale**2, and its loc derivative."""
    exact = estimator_moments(fg.Normal(loc, scale), fg.functions.exp_quadratic(k), ("score",), ("loc",))
    d = 1 + 2 * k * scale * scale
    mean = math.exp(-k * loc * loc / d) / math.sqrt(d)
    assert exact["score"]["loc"][0] == pytest.approx(mean * (-2 * k * loc / d), rel=1e-12, abs=1e-300)
    # the score's second moment: E[exp(-2 k x**2) z**2] / scale**2, by the same closed form at 2k (Stein)
    d2 = 1 + 4 * k * scale * scale
    base = math.exp(-2 * k * loc * loc / d2) / math.sqrt(d2)
    shift = -4 * k * loc * scale / d2  # E[z e(x)] / E[e(x)], z's mean under the tilted law
    second = base * (1 / d2 + shift * shift) / scale**2
    assert exact["score"]["loc"][1] == pytest.approx(second - exact["score"]["loc"][0] ** 2, rel=1e-11)


@pytest.mark.parametrize("family", ["normal", "exponential", "laplace", "bernoulli"])
def test_logistic_expectations_match_mpmath(family):
    import mpmath

    a, b = 2.5, -0.75
    sigma = lambda x: 1 / (1 + mpmath.exp(-(a * x + b)))  # noqa: E731
    distribution = {"normal": fg.Normal(0.4, 1.3), "exponential": fg.Exponential(1.7), "laplace": fg.Laplace(0.4, 0.9),
                    "bernoulli": fg.Bernoulli(0.3)}[family]  # fmt: skip
    parameter = distribution.parameters[0]
    exact = estimator_moments(distribution, fg.functions.logistic(a, b), ("score",), (parameter,))
    mean, variance = exact["score"][parameter]
    if family == "bernoulli":  # d/dp E[f] = f(1) - f(0)
        assert mean == pytest.approx(float(sigma(1) - sigma(0)), rel=1e-14)
        return

    # E[f(x)] differentiated numerically in mpmath (the score's mean is d/dtheta E[f])
    def expectation(shift):
        if family == "exponential":
            rate = 1.7 + shift
            return mpmath.quad(lambda x: sigma(x) * rate * mpmath.exp(-rate * x), [0, 1, mpmath.inf])
        loc = 0.4 + shift
        if family == "normal":
            return mpmath.quad(lambda x: sigma(x) * mpmath.npdf(x, loc, 1.3), [-mpmath.inf, loc, mpmath.inf])
        return mpmath.quad(lambda x: sigma(x) * mpmath.exp(-abs(x - loc) / 0.9) / 1.8, [-mpmath.inf, loc, mpmath.inf])

    with mpmath.workdps(30):
        derivative = mpmath.diff(expectation, 0)
    assert mean == pytest.approx(float(derivative), rel=1e-11)
    assert variance > 0
