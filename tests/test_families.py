"""Exponential and Bernoulli: every built-in function x every estimator that exists, against analytic truth."""

import math

import numpy as np
import pytest
from scipy import integrate

import fastgrad as fg
from fastgrad import _analytic, rng

BUILTINS = {
    "linear": fg.functions.linear(),
    "square": fg.functions.square(),
    "shifted_square": fg.functions.shifted_square(k=0.8),
    "cos": fg.functions.cos(omega=1.7),
    "quartic": fg.functions.quartic(),
}
EXPONENTIAL = fg.Exponential(1.6)
BERNOULLI = fg.Bernoulli(0.3)
N = 1_000_000

# Runs (each built-in's kernel a compile of its own) for the functions that differ in kind: a polynomial of each
# parity of degree and a non-polynomial one for the Exponential; for the Bernoulli, whose draws are 0 and 1 so that
# any function is two numbers, one polynomial and one not. Every built-in's exact values are checked below without
# a run. One worker runs the module, so that its module-scoped runs are made once.
pytestmark = pytest.mark.xdist_group("families")
EXPONENTIAL_RUNS = ["square", "cos", "quartic"]
BERNOULLI_RUNS = ["square", "cos"]


@pytest.fixture(scope="module", params=EXPONENTIAL_RUNS)
def exponential_comparison(request):
    return fg.compare(EXPONENTIAL, BUILTINS[request.param], n=N, seed=23)


@pytest.fixture(scope="module", params=BERNOULLI_RUNS)
def bernoulli_score(request):
    return fg.estimate(BERNOULLI, BUILTINS[request.param], n=N, estimator="score", seed=29)


def assert_within(value, truth, stderr, sigmas=5.0):
    if stderr == 0:
        assert value == pytest.approx(truth, rel=1e-12, abs=1e-12)
    else:
        assert abs(value - truth) < sigmas * stderr, f"{value} vs {truth}: {(value - truth) / stderr:.1f} stderr"


# --- estimates against the exact values ----------------------------------------------------------


@pytest.mark.parametrize("estimator", ["score", "pathwise"])
def test_exponential_unbiased_with_the_analytic_variance(exponential_comparison, estimator):
    result = getattr(exponential_comparison, estimator)
    assert_within(result.mean["rate"], result.analytic_mean["rate"], result.stderr["rate"])
    assert_within(result.variance["rate"], result.analytic_variance["rate"], result.variance_stderr["rate"])


def test_bernoulli_score_unbiased_with_the_analytic_variance(bernoulli_score):
    r = bernoulli_score
    assert_within(r.mean["p"], r.analytic_mean["p"], r.stderr["p"])
    assert_within(r.variance["p"], r.analytic_variance["p"], r.variance_stderr["p"])


# --- the exact values against independent numerics ---------------------------------------------


def exponential_truth(f, df, rate):
    """Gradient and per-draw variances by quadrature of the densities' own formulas."""
    density = lambda x: rate * math.exp(-rate * x)  # noqa: E731
    score = lambda x: 1 / rate - x  # noqa: E731
    path = lambda x: -x / rate  # noqa: E731  dx/drate at fixed eps = rate x

    def expect(g):
        return integrate.quad(lambda x: g(x) * density(x), 0, math.inf, epsabs=1e-13, epsrel=1e-12, limit=200)[0]

    gradient = expect(lambda x: f(x) * score(x))
    return (
        gradient,
        expect(lambda x: (f(x) * score(x)) ** 2) - gradient**2,
        expect(lambda x: (df(x) * path(x)) ** 2) - gradient**2,
    )


PLAIN = {
    "linear": (lambda x: x, lambda x: 1.0),
    "square": (lambda x: x * x, lambda x: 2 * x),
    "shifted_square": (lambda x: (x - 0.8) ** 2, lambda x: 2 * (x - 0.8)),
    "cos": (lambda x: math.cos(1.7 * x), lambda x: -1.7 * math.sin(1.7 * x)),
    "quartic": (lambda x: x**4, lambda x: 4 * x**3),
}


def exact(distribution, function, estimators):
    """The exact values a run would print (no kernel needed)."""
    return _analytic.estimator_moments(distribution, function, estimators, distribution.parameters)


@pytest.mark.parametrize("name", list(BUILTINS))
def test_exponential_exact_values_match_quadrature(name):
    found = exact(EXPONENTIAL, BUILTINS[name], ["score", "pathwise"])
    gradient, score_var, path_var = exponential_truth(*PLAIN[name], EXPONENTIAL.rate)
    assert found["score"]["rate"][0] == pytest.approx(gradient, rel=1e-9, abs=1e-12)
    assert found["pathwise"]["rate"][0] == pytest.approx(gradient, rel=1e-9, abs=1e-12)
    assert found["score"]["rate"][1] == pytest.approx(score_var, rel=1e-8)
    assert found["pathwise"]["rate"][1] == pytest.approx(path_var, rel=1e-8)


@pytest.mark.parametrize("name", list(BUILTINS))
def test_bernoulli_exact_values_match_the_two_point_sum(name):
    f, _ = PLAIN[name]
    p = BERNOULLI.p
    analytic_mean, analytic_variance = exact(BERNOULLI, BUILTINS[name], ["score"])["score"]["p"]
    values = {1: f(1.0) / p, 0: -f(0.0) / (1 - p)}  # f(x) * d/dp log q(x)
    mean = p * values[1] + (1 - p) * values[0]
    assert mean == pytest.approx(f(1.0) - f(0.0), rel=1e-12, abs=1e-15)  # d/dp [p f(1) + (1-p) f(0)]
    assert analytic_mean == pytest.approx(mean, rel=1e-12, abs=1e-15)
    second = p * values[1] ** 2 + (1 - p) * values[0] ** 2
    assert analytic_variance == pytest.approx(second - mean**2, rel=1e-12, abs=1e-15)


# --- the noise is exactly the documented transform of the stream's words ----------------------------


def test_exponential_noise_is_minus_log_of_open_closed_uniforms():
    n = rng.CHUNK_SIZE
    words = rng.random_words(5, 0, n)
    eps = -np.log(((words >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53)
    rate = EXPONENTIAL.rate
    # square, the matrix's kernel: per draw 2x (-x / rate), x = eps / rate
    g = fg.estimate(EXPONENTIAL, "square", n=n, estimator="pathwise", seed=5)
    x = eps * (1 / rate)
    assert g.mean["rate"] == pytest.approx(np.mean(2.0 * x * (-x * (1 / rate))), rel=1e-12)
    assert eps.min() > 0 and eps.max() < 36.8


def test_bernoulli_draws_are_uniforms_below_p():
    n = rng.CHUNK_SIZE
    u = rng.uniforms(6, 0, n)
    x = (u < BERNOULLI.p).astype(np.float64)
    g = fg.estimate(BERNOULLI, "square", n=n, estimator="score", seed=6)  # (the matrix's kernel)
    per_draw = x / BERNOULLI.p - (1 - x) * 0.0 / (1 - BERNOULLI.p)  # x**2 = x: f(0) = 0, f(1) = 1
    assert g.mean["p"] == pytest.approx(per_draw.mean(), rel=1e-12)


# --- what does not exist is refused, clearly -------------------------------------------------


def test_bernoulli_has_no_pathwise_estimator():
    with pytest.raises(ValueError, match=r"Bernoulli has no pathwise .* estimator='score'"):
        fg.compare(BERNOULLI, "square", n=100)
    with pytest.raises(ValueError, match="Bernoulli has no pathwise"):
        fg.estimate(BERNOULLI, "square", n=100, estimator="pathwise")
    with pytest.raises(ValueError, match="Bernoulli has no pathwise"):
        fg.variance_curve(BERNOULLI, "square", (10,), repeats=10)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: fg.Exponential(0.0), ValueError, "rate must be positive"),
        (lambda: fg.Exponential(math.inf), ValueError, "rate must be finite"),
        (lambda: fg.Exponential("2"), TypeError, "rate must be a real number"),
        (lambda: fg.Bernoulli(0.0), ValueError, "p must be strictly between 0 and 1"),
        (lambda: fg.Bernoulli(1.0), ValueError, "p must be strictly between 0 and 1"),
        (lambda: fg.Bernoulli(math.nan), ValueError, "p must be finite"),
        (lambda: fg.Bernoulli(True), TypeError, "p must be a real number"),
    ],
)
def test_bad_parameters(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_wrt_names_the_family_parameters():
    with pytest.raises(ValueError, match=r"wrt must contain parameter names from \['rate', 'log_rate'\]"):
        fg.compare(EXPONENTIAL, "square", n=100, wrt="loc")


# --- reproducibility -----------------------------------------------------------------------------


def test_exponential_thread_count_does_not_change_a_bit():
    n = 3 * rng.CHUNK_SIZE + 77
    one = fg.compare(EXPONENTIAL, "square", n=n, seed=8, threads=1)
    two = fg.compare(EXPONENTIAL, "square", n=n, seed=8, threads=2)
    for estimator in ("score", "pathwise"):
        a, b = getattr(one, estimator), getattr(two, estimator)
        assert (a.mean, a.variance, a.fourth_moment) == (b.mean, b.variance, b.fourth_moment)


def test_exponential_curve_matches_analytic_over_n():
    curve = fg.variance_curve(EXPONENTIAL, "square", (10, 1000), repeats=2000, seed=3)
    for estimator in ("score", "pathwise"):
        for i, _ in enumerate(curve.sample_sizes):
            low, high = curve.variance_ci[estimator]["rate"][i]
            se_log = (math.log(high) - math.log(low)) / (2 * 1.959963984540054)
            truth = curve.analytic_variance[estimator]["rate"][i]
            assert abs(math.log(curve.variance[estimator]["rate"][i] / truth)) < 5 * se_log
