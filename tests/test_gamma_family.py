"""The Gamma family: its exact references against closed forms, and what it refuses.

The matrix (tests/test_matrix.py) runs every estimator of the family against
these references (unbiased, exact variances, bit-identical in every run
mode); here the references themselves are checked, independently
of the quadrature that computes them: the Gamma's moments
``E[z**n] = (a)_n``, ``E[z**n L] = (a)_n (digamma(a + n) - digamma(a))`` and
``E[z**n L**2] = (a)_n ((digamma(a + n) - digamma(a))**2 + trigamma(a + n))``
(``L = log z - digamma(a)``: derivatives in ``a`` of ``(a)_n``), and the
characteristic function ``E[e**(i w x)] = (1 - i w / rate)**-shape``; and the rate's measure-valued
references against plain quadratures of their definitions.
"""

import cmath
import math

import numpy as np
import pytest
from scipy import integrate, special

import fastgrad as fg
import fastgrad.math as fm
from fastgrad import _analytic
from fastgrad._api import NonFiniteValuesError

CASES = [(0.3, 2.0), (2.5, 1.5), (40.0, 0.25)]
RELATIVE = 1e-10  # the quadrature's references against closed forms


def rising(a, n):
    return math.prod(a + k for k in range(n))


def moments(estimators, shape, rate, function="square"):
    d = fg.Gamma(shape, rate)
    return _analytic.estimator_moments(d, fg.functions.resolve(function), estimators, ["shape", "rate"])


def close(value, exact, absolute=0.0):
    assert abs(value - exact) <= max(RELATIVE * abs(exact), absolute), (value, exact)


@pytest.mark.parametrize("shape, rate", CASES)
def test_square_references_are_the_closed_forms(shape, rate):
    a, b = shape, rate
    found = moments(["score", "pathwise"], a, b)
    digamma = special.digamma
    d2, d4 = digamma(a + 2) - digamma(a), digamma(a + 4) - digamma(a)
    # E[x**2] = (a)_2 / b**2: d/da = (2a + 1) / b**2, d/db = -2 (a)_2 / b**3
    score_shape_second = rising(a, 4) / b**4 * (d4**2 + special.polygamma(1, a + 4))
    score_rate_second = (a * a * rising(a, 4) - 2 * a * rising(a, 5) + rising(a, 6)) / b**6
    close(found["score"]["shape"][0], rising(a, 2) / b**2 * d2)
    close(found["score"]["shape"][0], (2 * a + 1) / b**2)
    close(found["score"]["shape"][1], score_shape_second - ((2 * a + 1) / b**2) ** 2)
    close(found["score"]["rate"][0], -2 * rising(a, 2) / b**3)
    close(found["score"]["rate"][1], score_rate_second - (2 * rising(a, 2) / b**3) ** 2)
    # pathwise: 2x dx/dshape = 2 z g / b**2 (its mean is d/da E[x**2] by the implicit function theorem), and
    # 2x dx/drate = -2 z**2 / b**3
    close(found["pathwise"]["shape"][0], (2 * a + 1) / b**2)
    close(found["pathwise"]["rate"][0], -2 * rising(a, 2) / b**3)
    close(found["pathwise"]["rate"][1], 4 * rising(a, 4) / b**6 - (2 * rising(a, 2) / b**3) ** 2)


def test_the_pathwise_shape_variance_is_an_independent_quadrature():
    # E[(2 z g / b**2)**2] by SciPy's QUADPACK over z, with fastgrad.math's g (checked against mpmath elsewhere)
    a, b = 2.5, 1.5

    def integrand(z):
        return (2 * z * fm.gamma_sample_grad(z, a) / b**2) ** 2 * math.exp((a - 1) * math.log(z) - z - math.lgamma(a))

    second = integrate.quad(integrand, 0, a, epsabs=0, epsrel=1e-13, limit=200)[0]
    second += integrate.quad(integrand, a, np.inf, epsabs=0, epsrel=1e-13, limit=200)[0]
    mean, variance = moments(["pathwise"], a, b)["pathwise"]["shape"]
    assert abs(variance - (second - mean**2)) <= 1e-9 * variance


@pytest.mark.parametrize("shape, rate", CASES)
def test_cos_references_are_the_characteristic_function(shape, rate):
    a, b, w = shape, rate, 1.0  # cos(omega x) with omega = 1
    phi = (1 - 1j * w / b) ** -a
    d_shape = -cmath.log(1 - 1j * w / b) * phi
    d_rate = -a * (1 - 1j * w / b) ** (-a - 1) * (1j * w / b**2)
    found = moments(["score", "pathwise"], a, b, "cos")
    for estimator in ("score", "pathwise"):
        # (the quadrature's error is about 1e-14 of the integral of |h q|, which is at most 1 + sqrt(a) / b here
        # (E|a - z| <= sqrt(a)): at shape 40 the characteristic function is 1e-25, and the error absolute)
        scale = 1e-13 * (1 + math.sqrt(a) / b)
        close(found[estimator]["shape"][0], d_shape.real, absolute=scale)
        close(found[estimator]["rate"][0], d_rate.real, absolute=scale)


def test_antithetic_and_the_shapes_measure_valued_are_refused_with_the_reason():
    d = fg.Gamma(2.0, 1.0)
    with pytest.raises(ValueError, match="symmetric about 0; Gamma's is not"):
        fg.compare(d, "square", n=1000, seed=0, estimators=["pathwise+antithetic"])
    reason = r"weak derivative for rate only, not for shape \(the shape's .*wrt=\['rate'\]"
    for wrt in (None, ["shape"], ["shape", "rate"]):
        with pytest.raises(ValueError, match=reason):
            fg.compare(d, "square", n=1000, seed=0, estimators=["measure-valued"], wrt=wrt)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"shape": 0.0}, ValueError, "shape must be positive"),
        ({"shape": 2e10}, ValueError, "shape must be at most 1e"),
        ({"rate": -1.0}, ValueError, "rate must be positive"),
        ({"shape": math.inf}, ValueError, "shape must be finite"),
        ({"rate": "2"}, TypeError, "rate must be a real number"),
    ],
)
def test_bad_parameters_are_refused_naming_them(kwargs, error, match):
    with pytest.raises(error, match=match):
        fg.Gamma(**kwargs)


def test_draws_below_the_smallest_double_make_the_shape_score_non_finite():
    # shape 0.005: 2.4 % of the draws lie below half the smallest subnormal (P = e**(-744.4 a) / Gamma(1 + a)) and are
    # 0, where log z is -inf
    d = fg.Gamma(0.005, 1.0)
    with pytest.raises(NonFiniteValuesError, match="nan_policy='omit'"):
        fg.compare(d, "square", n=20_000, seed=0, estimators=["score"], wrt=["shape"])
    kept = fg.compare(d, "square", n=20_000, seed=0, estimators=["score"], wrt=["shape"], nan_policy="omit")
    p = math.exp(-744.44 * 0.005) / math.gamma(1.005)
    assert abs(kept.to_dict()["n_omitted"] - 20_000 * p) < 5 * math.sqrt(20_000 * p * (1 - p))


def test_to_dict_and_the_command_line():
    assert fg.Gamma(2.0, 0.5).to_dict() == {"family": "Gamma", "shape": 2.0, "rate": 0.5}
    from fastgrad import cli

    assert cli.main(["compare", "--dist", "gamma", "--shape", "2", "--rate", "0.5", "--f", "square", "-n", "1e4",
                     "--seed", "0"]) == 0  # fmt: skip


def _weak_rate_closed_forms(function, a, b):
    """``(E h(x), E h(x)**2)`` under Gamma(a, b) and Gamma(a + 1, b), and ``E[h(x) h(x + y)]``, ``y ~ Exp(b)``."""
    if function == "square":  # E[x**n] = (a)_n / b**n, E[y**m] = m! / b**m
        plus, minus = (rising(a, 2) / b**2, rising(a, 4) / b**4), (rising(a + 1, 2) / b**2, rising(a + 1, 4) / b**4)
        cross = (rising(a, 4) + 2 * rising(a, 3) + 2 * rising(a, 2)) / b**4  # E[x**4 + 2 x**3 y + x**2 y**2]
        return plus, minus, cross
    # cos x: E[e**(i w x)] = (1 - i w / b)**-a; cos(x) cos(x + y) = (cos y + cos(2x + y)) / 2

    def char(w, shape):
        return (1 - 1j * w / b) ** -shape

    plus = (char(1, a).real, (1 + char(2, a).real) / 2)
    minus = (char(1, a + 1).real, (1 + char(2, a + 1).real) / 2)
    cross = (char(1, 1).real + (char(2, a) * char(1, 1)).real) / 2
    return plus, minus, cross


@pytest.mark.parametrize("shape, rate", CASES)
@pytest.mark.parametrize("function", ["square", "cos"])
def test_the_rates_measure_valued_references_are_the_closed_forms(shape, rate, function):
    # one value is c (h(x) - h(x')), c = shape / rate; coupled x' = x + y (y ~ Exp(rate)), decoupled x' independent
    c = shape / rate
    (plus, plus2), (minus, minus2), cross = _weak_rate_closed_forms(function, shape, rate)
    mean = c * (plus - minus)
    h = fg.functions.resolve(function).exact()
    coupled, decoupled = (_analytic._weak_moments(fg.Gamma(shape, rate), h, 1, kind) for kind in (True, False))
    scale = c * (plus2**0.5 + minus2**0.5)  # (the quadrature's error is relative to E|h|, which this bounds)
    assert abs(coupled[0] - mean) < 1e-12 * scale and abs(decoupled[0] - mean) < 1e-12 * scale
    assert decoupled[1] == pytest.approx(c * c * (plus2 - plus**2 + minus2 - minus**2), rel=1e-10)
    assert coupled[1] == pytest.approx(c * c * (plus2 - 2 * cross + minus2) - mean**2, rel=1e-9, abs=1e-13 * scale**2)


#: What optimize moves: parameter -> (its natural parameter, d E[x**2] / d natural at (a, b), estimators, step)
#: (the shape's score values reach hundreds: a step of 0.05 takes some replicates' shapes to 1e-6, whose next
#: draws underflow to 0 and whose scores are then NaN)
MOVES = {
    "rate": ("log_rate", lambda a, b: -2 * a * (a + 1) / b**2, ["score", "pathwise", "measure-valued"], 0.05),
    "shape": ("log_shape", lambda a, b: a * (2 * a + 1) / b**2, ["score", "pathwise"], 0.01),
}


@pytest.mark.xdist_group("gamma-optimize")  # (both cases run one kernel: the Gamma's with its natural parameters)
@pytest.mark.parametrize("moved", MOVES)
def test_optimize_moves_each_parameter_one_unbiased_step_at_a_time_on_any_thread_count(moved):
    """SGD on log_rate or log_shape: after one step, the mean over replicates is the start less eta dE[x**2]/d it.

    ``E[x**2] = a (a + 1) / b**2``: ``dE/dlog_rate = -2 a (a + 1) / b**2``, ``dE/dlog_shape = a (2 a + 1) / b**2``;
    the replicates' spread gives the standard error. The shape moves with every step in general, so the kernel
    takes the implicit gradient's series, not a per-run fit; a run is the same on one thread and on two.
    """
    shape, rate, replicates = 2.5, 1.5, 4000
    natural, derivative, estimators, eta = MOVES[moved]
    j = ("shape", "rate").index(moved)
    expected = math.log((shape, rate)[j]) - eta * derivative(shape, rate)
    one = fg.optimize(fg.Gamma(shape, rate), "square", moved, estimators=estimators, steps=1, learning_rate=eta,
                      replicates=replicates, seed=2, threads=1)  # fmt: skip
    for name in estimators:
        final = one[name].final
        assert np.all(final[:, 1 - j] == (shape, rate)[1 - j])
        moved_values = np.log(final[:, j])
        assert one[name].parameters[natural][-1, 0] == pytest.approx(moved_values.mean(), rel=1e-14)
        assert abs(moved_values.mean() - expected) < 5 * moved_values.std(ddof=1) / math.sqrt(replicates), name
        # the exact objective logged: E[x**2] at each replicate's parameters, a (a + 1) / b**2
        exact = final[:, 0] * (final[:, 0] + 1) / final[:, 1] ** 2
        assert one[name].objective[-1, 0] == pytest.approx(np.mean(exact))
    # the second step draws at the first step's parameters: its move is unbiased for the gradient there (a step
    # that drew its Gamma draws at the start's shape instead is off by many standard errors)
    two = fg.optimize(fg.Gamma(shape, rate), "square", moved, estimators=estimators, steps=2, learning_rate=eta,
                      replicates=replicates, seed=2, threads=1)  # fmt: skip
    for name in estimators:
        first, second = one[name].final, two[name].final
        move = np.log(second[:, j]) - np.log(first[:, j]) + eta * derivative(first[:, 0], first[:, 1])
        assert abs(move.mean()) < 5 * move.std(ddof=1) / math.sqrt(replicates), name
    several = dict(estimators=["pathwise"], steps=40, learning_rate=0.01, replicates=50, seed=3, log_every=10)
    a = fg.optimize(fg.Gamma(shape, rate), "square", moved, threads=1, **several)
    b = fg.optimize(fg.Gamma(shape, rate), "square", moved, threads=2, **several)
    assert a["pathwise"].final.tolist() == b["pathwise"].final.tolist()
    assert a["pathwise"].parameters[natural].tolist() == b["pathwise"].parameters[natural].tolist()


def test_a_shape_moved_past_the_largest_accepted_is_nan_in_the_kernel_parameters():
    """An optimisation whose shape passes MAX_SHAPE (1e10) stops there: its kernel parameters' shape is NaN, so the
    replicate's draws and parameters are NaN from that step (counted as diverged), not draws whose implicit gradient
    takes millions of terms (and is NaN itself past about 1e11)."""
    from fastgrad.gamma import MAX_SHAPE, _gamma_theta_of

    assert _gamma_theta_of(np.array([MAX_SHAPE, 2.0]))[0] == MAX_SHAPE
    for shape in (2e10, np.inf, np.nan):
        theta = _gamma_theta_of(np.array([shape, 2.0]))
        assert math.isnan(theta[0]) and theta[1] == 2.0
