"""DiagNormal: per-component estimates against exact values, D = 1 equal to Normal bit for bit, large D."""

import json
import math

import numba
import numpy as np
import pytest
from scipy import integrate

import fastgrad as fg
from fastgrad import rng
from fastgrad._analytic import estimator_moments, separable_moments

# One worker runs the module: its module-scoped comparisons (a kernel each) are then made once, not on both workers.
pytestmark = pytest.mark.xdist_group("diagnormal")

D3 = fg.DiagNormal([2.0, -0.5, 0.3], [1.0, 0.7, 1.6])
FUNCTIONS = {
    "sum_of_squares": fg.functions.sum_of_squares(),
    "quadratic": fg.functions.quadratic([0.5, 2.0, -1.0]),
    "linear_form": fg.functions.linear_form([1.0, -3.0, 0.25]),
    "sum_cos": fg.functions.sum_cos(1.3),
}


@numba.njit
def user_sum_of_squares(x):
    total = 1.0 * (x[0] * x[0])
    for i in range(1, x.size):
        total += 1.0 * (x[i] * x[i])
    return total


@numba.njit
def user_sum_of_squares_gradient(x, out):
    for i in range(x.size):
        out[i] = 1.0 * (2.0 * x[i])


def assert_within(values, truths, stderrs, sigmas=5.0):
    """|value - truth| < sigmas * stderr per component.

    A per-draw value that is exactly constant (pathwise of a linear form) has
    a true variance of 0, but its mean and variance carry rounding from the
    block sums (about 1e-16 relative per addition); the standard error is
    floored at 1e-12 relative for those.
    """
    values, truths, stderrs = (np.asarray(a, dtype=float) for a in (values, truths, stderrs))
    floor = 1e-12 * np.maximum(np.abs(truths), 1.0)
    z = np.abs(values - truths) / np.maximum(stderrs, floor)
    assert np.all(z < sigmas), f"largest |z| {z.max():.1f}"


@pytest.fixture(scope="module", params=list(FUNCTIONS))
def d3_comparison(request):
    return fg.compare(D3, FUNCTIONS[request.param], n=400_000, seed=31)


@pytest.mark.parametrize("estimator", ["score", "pathwise"])
@pytest.mark.parametrize("parameter", ["loc", "scale"])
def test_every_component_unbiased_with_the_analytic_variance(d3_comparison, estimator, parameter):
    r = getattr(d3_comparison, estimator)
    assert r.mean[parameter].shape == (3,)
    assert_within(r.mean[parameter], r.analytic_mean[parameter], r.stderr[parameter])
    assert_within(r.variance[parameter], r.analytic_variance[parameter], r.variance_stderr[parameter])
    assert r.total_variance[parameter] == pytest.approx(float(np.sum(r.variance[parameter])), rel=1e-15)
    assert r.analytic_total_variance[parameter] == pytest.approx(float(np.sum(r.analytic_variance[parameter])))


LARGE = 300
LARGE_FUNCTIONS = {
    "sum_of_squares": fg.functions.sum_of_squares(),
    "quadratic": fg.functions.quadratic(np.linspace(-2.0, 2.0, LARGE)),
    "linear_form": fg.functions.linear_form(np.linspace(0.5, 3.0, LARGE)),
    "sum_cos": fg.functions.sum_cos(0.7),
}


@pytest.fixture(scope="module", params=list(LARGE_FUNCTIONS))
def large_comparison(request):
    d = fg.DiagNormal(np.linspace(-1.0, 1.0, LARGE), np.linspace(0.5, 1.5, LARGE))
    return fg.compare(d, LARGE_FUNCTIONS[request.param], n=30_000, seed=5)


@pytest.mark.parametrize("estimator", ["score", "pathwise"])
def test_large_dimension_every_component(large_comparison, estimator):
    # 600 components per estimator and statistic: at 5 standard errors a false failure has odds below 1e-3.
    e = getattr(large_comparison, estimator)
    for parameter in ("loc", "scale"):
        assert e.mean[parameter].shape == (LARGE,)
        assert_within(e.mean[parameter], e.analytic_mean[parameter], e.stderr[parameter])
        assert_within(e.variance[parameter], e.analytic_variance[parameter], e.variance_stderr[parameter])
        # The components are estimated jointly and this ignores their correlation: allow 10 standard errors.
        total_se = math.sqrt(float(np.sum(e.variance_stderr[parameter] ** 2)))
        truth = e.analytic_total_variance[parameter]
        assert abs(e.total_variance[parameter] - truth) < max(10 * total_se, 1e-12 * max(truth, 1.0))


# --- exact values against independent computations ---------------------------------------------


def test_one_component_exact_values_are_the_normal_ones():
    d1 = fg.DiagNormal([0.4], [1.3])
    for vector, scalar in (
        (fg.functions.sum_cos(1.1), fg.functions.cos(1.1)),
        (fg.functions.sum_of_squares(), "square"),
    ):
        mine = separable_moments(d1, vector, ("score", "pathwise"), ("loc", "scale"))
        truth = estimator_moments(fg.Normal(0.4, 1.3), fg.functions.resolve(scalar), ("score", "pathwise"),
                                  ("loc", "scale"))  # fmt: skip
        for e in mine:
            for p in mine[e]:
                assert mine[e][p][0][0] == pytest.approx(truth[e][p][0], rel=1e-14, abs=1e-14)
                assert mine[e][p][1][0] == pytest.approx(truth[e][p][1], rel=1e-14, abs=1e-14)


def test_two_component_score_variance_matches_quadrature():
    d = fg.DiagNormal([0.5, -1.0], [0.8, 1.4])
    function = fg.functions.quadratic([2.0, -0.5])
    exact = separable_moments(d, function, ("score",), ("loc", "scale"))
    density = lambda z: math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)  # noqa: E731

    def expect(g):
        inner = lambda z1, z0: g(z0, z1) * density(z0) * density(z1)  # noqa: E731
        return integrate.dblquad(inner, -12, 12, -12, 12, epsabs=1e-11, epsrel=1e-11)[0]

    def f(z0, z1):
        x0, x1 = 0.5 + 0.8 * z0, -1.0 + 1.4 * z1
        return 2.0 * x0 * x0 - 0.5 * x1 * x1

    factors = {"loc": lambda z, s: z / s, "scale": lambda z, s: (z * z - 1) / s}
    for parameter, factor in factors.items():
        g = lambda z0, z1, factor=factor: f(z0, z1) * factor(z1, 1.4)  # noqa: E731  component 1
        mean = expect(g)
        variance = expect(lambda z0, z1, g=g: g(z0, z1) ** 2) - mean**2
        assert exact["score"][parameter][0][1] == pytest.approx(mean, rel=1e-8, abs=1e-10)
        assert exact["score"][parameter][1][1] == pytest.approx(variance, rel=1e-8)


# --- the layout: D = 1 is the scalar kernel; noise is the chunk stream -----------------------------


def test_one_dimension_equals_normal_bit_for_bit():
    n = 3 * rng.CHUNK_SIZE + 999
    vector = fg.compare(fg.DiagNormal([2.0], [1.0]), fg.functions.sum_of_squares(), n=n, seed=7)
    scalar = fg.compare(fg.Normal(2.0, 1.0), "square", n=n, seed=7)
    for estimator in ("score", "pathwise"):
        v, s = getattr(vector, estimator), getattr(scalar, estimator)
        for p in ("loc", "scale"):
            assert float(v.mean[p][0]).hex() == float(s.mean[p]).hex()
            assert float(v.variance[p][0]).hex() == float(s.variance[p]).hex()
    for p in ("loc", "scale"):
        assert float(vector.variance_ratio[p][0]).hex() == float(scalar.variance_ratio[p]).hex()


def test_draws_take_consecutive_normals_of_the_chunk_stream():
    dim, n = 3, 1000
    d = fg.DiagNormal([0.0, 0.0, 0.0], [1.0, 2.0, 0.5])
    r = fg.compare(d, fg.functions.linear_form([1.0, 1.0, 1.0]), n=n, seed=4, wrt="scale")
    eps = rng.standard_normals(4, 0, n * dim).reshape(n, dim)
    # pathwise wrt scale_i for a linear form: w_i * eps_i
    assert np.allclose(r.pathwise.mean["scale"], eps.mean(axis=0), rtol=1e-12, atol=1e-15)


def test_thread_count_does_not_change_a_bit():
    d = fg.DiagNormal(np.linspace(0, 1, 40), np.ones(40))
    n = 5 * (rng.CHUNK_SIZE // 40) + 17
    one = fg.compare(d, fg.functions.sum_of_squares(), n=n, seed=2, threads=1)
    two = fg.compare(d, fg.functions.sum_of_squares(), n=n, seed=2, threads=2)
    for estimator in ("score", "pathwise"):
        for p in ("loc", "scale"):
            assert np.array_equal(getattr(one, estimator).variance[p], getattr(two, estimator).variance[p])


def test_user_vector_function_matches_the_builtin_bit_for_bit():
    d = fg.DiagNormal([1.0, -2.0, 0.5, 0.0], [1.0, 0.5, 2.0, 1.0])
    user = fg.compare(d, fg.VectorFunction(user_sum_of_squares, user_sum_of_squares_gradient), n=50_000, seed=3)
    builtin = fg.compare(d, fg.functions.sum_of_squares(), n=50_000, seed=3)
    assert user.score.analytic_mean is None and user.analytic_total_variance_ratio is None
    for estimator in ("score", "pathwise"):
        for p in ("loc", "scale"):
            assert np.array_equal(getattr(user, estimator).mean[p], getattr(builtin, estimator).mean[p])


@pytest.mark.parametrize("estimator", ["score", "pathwise"])
def test_estimate_one_estimator(estimator):
    g = fg.estimate(D3, FUNCTIONS["quadratic"], n=300_000, estimator=estimator, seed=12, wrt="scale")
    assert g.wrt == ("scale",) and g.seed == 12 and g.n == 300_000
    assert_within(g.mean["scale"], g.analytic_mean["scale"], g.stderr["scale"])
    assert_within(g.variance["scale"], g.analytic_variance["scale"], g.variance_stderr["scale"])
    data = json.loads(json.dumps(g.to_dict(), allow_nan=False))
    assert data["dim"] == 3 and list(data["estimators"]) == [estimator] and data["kind"] == "estimate"
    assert len(data["estimators"][estimator]["variance"]["scale"]) == 3
    assert "fastgrad.estimate" in str(g) and "D = 3 components" in str(g)


def test_score_only_user_function_needs_no_gradient():
    g = fg.estimate(D3, fg.VectorFunction(user_sum_of_squares), n=200_000, estimator="score", seed=6)
    truth = fg.estimate(D3, FUNCTIONS["sum_of_squares"], n=2, estimator="score", seed=0).analytic_mean
    assert g.analytic_mean is None
    for p in ("loc", "scale"):
        assert_within(g.mean[p], truth[p], g.stderr[p])


# --- output -----------------------------------------------------------------------------------


def test_to_dict_is_strict_json_and_the_table_shows_totals():
    r = fg.compare(D3, FUNCTIONS["linear_form"], n=10_000, seed=1)
    data = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert data["dim"] == 3 and data["distribution"]["family"] == "DiagNormal"
    assert len(data["estimators"]["score"]["mean"]["loc"]) == 3
    assert data["total_variance_ratio"]["loc"] is None  # pathwise variance 0 wrt loc: ratio inf -> null
    text = str(r)
    assert "D = 3 components" in text and "total (trace) per-draw variance" in text


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: fg.DiagNormal([0.0, 1.0], [1.0]), ValueError, "same length"),
        (lambda: fg.DiagNormal([], []), ValueError, "non-empty"),
        (lambda: fg.DiagNormal([0.0], [0.0]), ValueError, r"scale\[0\] must be positive"),
        (lambda: fg.DiagNormal([math.nan], [1.0]), ValueError, r"loc\[0\] must be finite"),
        (lambda: fg.DiagNormal(1.0, 1.0), TypeError, "loc must be a sequence"),
        (lambda: fg.DiagNormal([[0.0]], [[1.0]]), ValueError, "1-D"),
        (lambda: fg.functions.quadratic([1.0, "a"]), TypeError, r"diag\[1\] must be a real number"),
        (lambda: fg.functions.linear_form([]), ValueError, "weights must be a non-empty 1-D sequence"),
    ],
)
def test_bad_parameters(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_bad_combinations():
    with pytest.raises(TypeError, match="a DiagNormal needs a function of a vector"):
        fg.compare(D3, "square", n=100)
    with pytest.raises(ValueError, match="quadratic has 2 weights but the distribution has 3 components"):
        fg.compare(D3, fg.functions.quadratic([1.0, 2.0]), n=100)
    with pytest.raises(ValueError, match="needs the gradient"):
        fg.compare(D3, fg.VectorFunction(user_sum_of_squares), n=100)
    with pytest.raises(ValueError, match="offered up to 128"):
        fg.variance_curve(fg.DiagNormal([0.0] * 65, [1.0] * 65), FUNCTIONS["sum_of_squares"], (10,), repeats=10,
                          estimators=["score+cv"])  # fmt: skip
    with pytest.raises(ValueError, match="or use estimator='score'"):
        fg.estimate(D3, fg.VectorFunction(user_sum_of_squares), n=100, estimator="pathwise")
    with pytest.raises(TypeError, match=r"must accept \(x, out\)"):
        fg.VectorFunction(user_sum_of_squares, user_sum_of_squares)


# --- the trace ratio's interval ---------------------------------------------------------------


def test_trace_ratio_interval_covers_the_truth():
    # Batch means over 30 independent chunks; measured coverage 0.965 over 200 seeds (docs/families.md).
    # 100 seeds x 2 parameters: the binomial standard error is about 0.015; 0.90 is over 4 of them below.
    per_chunk = rng.CHUNK_SIZE // 3
    hits = total = 0
    for seed in range(100):
        r = fg.compare(D3, FUNCTIONS["quadratic"], n=30 * per_chunk, seed=seed)
        for p in ("loc", "scale"):
            low, high = r.total_variance_ratio_ci[p]
            hits += low < r.analytic_total_variance_ratio[p] < high
            total += 1
    assert hits / total > 0.90


def test_trace_ratio_interval_needs_ten_chunks():
    r = fg.compare(D3, FUNCTIONS["quadratic"], n=9 * (rng.CHUNK_SIZE // 3), seed=0)
    assert all(math.isnan(v) for p in ("loc", "scale") for v in r.total_variance_ratio_ci[p])
    r = fg.compare(D3, FUNCTIONS["quadratic"], n=10 * (rng.CHUNK_SIZE // 3), seed=0)
    low, high = r.total_variance_ratio_ci["loc"]
    assert low < r.total_variance_ratio["loc"] < high
    assert "95% CI" in str(r) and len(r.to_dict()["total_variance_ratio_ci95"]["scale"]) == 2


def test_student_quantile():
    from fastgrad.results import Z95, _student_quantile

    stats = pytest.importorskip("scipy.stats")
    for df in (9, 19, 50, 1000):
        assert _student_quantile(Z95, df) == pytest.approx(stats.t.ppf(0.975, df), abs=5e-3)
