"""Beta and Dirichlet: the sampler, the exact references against closed forms, and what they refuse.

The matrix (tests/test_matrix.py) runs every estimator of both families against
these references (unbiased, exact variances, bit-identical in every run mode).
Here the references themselves are checked, independently of the quadrature
over the Gamma draws that computes them, against the Dirichlet's moments:
for a monomial ``x**e`` (exponents ``e``), ``E[x**e] = prod_i (alpha_i)_(e_i) /
(alpha_0)_|e|``, and under the law tilted by ``x**e`` (a Dirichlet(alpha + e))
``log x_k`` has mean ``digamma(alpha_k + e_k) - digamma(alpha_0 + |e|)`` and
variance ``trigamma(alpha_k + e_k) - trigamma(alpha_0 + |e|)``: so every
``E[x**e (log x_k - c)**r]``, ``r <= 2``, is in closed form, and with it the
mean of every estimator and the variance of the score function's.
"""

import math

import mpmath
import numpy as np
import pytest
from scipy import special, stats

import fastgrad as fg
from fastgrad import dirichlet, rng
from fastgrad.estimators import parse_estimators

#: (distribution, function): the references (one component at a time, dirichlet.component_moments) against closed
#: forms in 30-digit arithmetic, within 2e-11 relative (measured: at most 5.2e-12, the score's mean for
#: Beta(1e3, 0.01)'s b), concentrations from 1e-3 to 1e3: small ones spread their mass over thousands of units of
#: logit x.
CASES = [
    (fg.Beta(2.5, 1.5), "square"),
    (fg.Beta(0.3, 5.0), "quartic"),
    (fg.Beta(1e-3, 0.01), "square"),
    (fg.Beta(0.01, 40.0), "quartic"),
    (fg.Beta(1e3, 0.01), "square"),
    (fg.Dirichlet([1.5, 2.0, 3.0]), fg.functions.sum_of_squares()),
    (fg.Dirichlet([0.4, 2.0, 30.0]), fg.functions.quadratic([1.0, -2.0, 0.5])),
    (fg.Dirichlet([1e-3, 0.7, 2.0]), fg.functions.sum_of_squares()),
    (fg.Dirichlet([0.01, 0.01, 0.01]), fg.functions.sum_of_squares()),
    (fg.Dirichlet([0.05, 0.7, 2.0, 9.0, 150.0, 1e3]), fg.functions.quadratic([1.0, -2.0, 0.5, 3.0, 1.0, -1.0])),
]
POWERS = {"square": 2, "quartic": 4, "sum_of_squares": 2, "quadratic": 2}


def tilted(alphas, e, k, c, r):
    """``E[x**e (log x_k - c)**r]`` under Dirichlet(alphas), r in 0, 1, 2 (mpmath numbers)."""
    a0, n = mpmath.fsum(alphas), sum(e)
    moment = mpmath.fprod(mpmath.rf(a, m) for a, m in zip(alphas, e, strict=True)) / mpmath.rf(a0, n)
    mean = mpmath.digamma(alphas[k] + e[k]) - mpmath.digamma(a0 + n) - c
    variance = mpmath.psi(1, alphas[k] + e[k]) - mpmath.psi(1, a0 + n)
    return moment * (1, mean, mean * mean + variance)[r]


def polynomial_terms(distribution, function):
    """``f = sum_i w_i x_i**n`` as (weights over the draw's components, n)."""
    function = fg.functions.resolve(function) if isinstance(function, str) else function
    n = POWERS[function.name]
    if isinstance(distribution, fg.Beta):
        return [1.0], n
    return list(function.weights_for(distribution.dim)), n


def closed_forms(distribution, function):
    """Per (parameter, component) ``r``: the gradient, and the score function's per-draw variance."""
    with mpmath.workdps(30):
        alphas = [mpmath.mpf(a) for a in distribution.concentration]
        weights, n = polynomial_terms(distribution, function)
        dim = len(alphas)

        def unit(i, m):
            return [m if j == i else 0 for j in range(dim)]

        out = []
        for k in range(dim):
            c = mpmath.digamma(alphas[k]) - mpmath.digamma(mpmath.fsum(alphas))
            mean = mpmath.fsum(w * tilted(alphas, unit(i, n), k, c, 1) for i, w in enumerate(weights))
            second = 0
            for i, wi in enumerate(weights):
                for j, wj in enumerate(weights):
                    e = [a + b for a, b in zip(unit(i, n), unit(j, n), strict=True)]
                    second += wi * wj * tilted(alphas, e, k, c, 2)
            out.append((float(mean), float(second - mean * mean)))
        return out


@pytest.mark.parametrize("case", CASES, ids=[f"{case[0]!r}-{case[1]}" for case in CASES])
def test_the_references_are_the_closed_forms(case):
    distribution, function = case
    function = fg.functions.resolve(function) if isinstance(function, str) else function
    specs = parse_estimators(["score", "pathwise"])
    found = dirichlet.noise_moments(distribution, function, specs, None, distribution.parameters)
    truth = closed_forms(distribution, function)
    for r, (mean, variance) in enumerate(truth):
        if isinstance(distribution, fg.Beta):
            parameter, i = distribution.parameters[r], None
        else:
            parameter, i = "concentration", r

        def pick(spec, what, parameter=parameter, i=i):
            value = found[spec][parameter][what]
            return value if i is None else value[i]

        # the score function and the pathwise estimator are both unbiased: their means are the gradient
        assert pick(0, 0) == pytest.approx(mean, rel=2e-11, abs=1e-300)
        assert pick(1, 0) == pytest.approx(mean, rel=2e-11, abs=1e-300)
        assert pick(0, 1) == pytest.approx(variance, rel=2e-11)
        assert pick(1, 1) > 0


@pytest.mark.parametrize(
    ("distribution", "function"),
    [(fg.Beta(0.7, 2.5), "cos"), (fg.Beta(2.5, 1.5), "quartic"), (fg.Dirichlet([0.7, 2.5]), "quadratic")],
    ids=str,
)
def test_one_component_at_a_time_is_the_whole_draws_quadrature_for_two_components(distribution, function):
    """Every specification (baselines, control variate, leave-one-out, pathwise variances), any built-in: the
    component engine against the K-dimensional rule over the Gamma draws (about 2e-14 for K = 2)."""
    function = fg.functions.quadratic([1.0, -2.0]) if function == "quadratic" else fg.functions.resolve(function)
    specs = parse_estimators(["score", "pathwise", "score+loo(4)", "score+optimal-baseline", "score+cv"])
    pairs = 2
    rng_ = np.random.default_rng(2)
    multivariate = isinstance(distribution, fg.Dirichlet)
    baselines = rng_.normal(size=pairs)
    coefficients = [None, None, None, baselines if multivariate else np.diag(baselines), rng_.normal(size=(2, 2))]
    hs = distribution.component_functions(function)
    new = dirichlet.component_moments(distribution, hs, specs, coefficients, distribution.parameters)
    function_key = dirichlet._function_key(function)
    dirichlet._GRID_FUNCTIONS.setdefault(function_key, function)
    from fastgrad._analytic import grid_moments

    weights, fx, scores, paths = dirichlet._grid(distribution, function_key, 16)
    old = grid_moments(distribution, specs, coefficients, distribution.parameters, weights, fx, scores, paths)
    for spec, a, b in zip(specs, new, old, strict=True):
        for parameter in distribution.parameters:
            np.testing.assert_allclose(a[parameter], b[parameter], rtol=1e-12, err_msg=spec.name)


def test_the_digamma_difference_and_trigamma_match_mpmath():
    with mpmath.workdps(40):
        for a in (1e-3, 0.3, 2.5, 19.5, 40.0, 1e3, 1e6):
            assert dirichlet._trigamma(a) == pytest.approx(float(mpmath.psi(1, a)), rel=1e-15)
            for b in (1e-8, 0.01, 2.0, 1e3, 1e5):
                truth = float(mpmath.digamma(mpmath.mpf(a) + b) - mpmath.digamma(a))
                assert dirichlet.digamma_difference(a, b) == pytest.approx(truth, rel=1e-15)


def test_the_gradient_of_the_mean_is_the_closed_form():
    # d/da E[x] = b / (a + b)**2 for a Beta: the doctest's case, and the quadrature's mean against it
    found = dirichlet.noise_moments(fg.Beta(2.0, 3.0), fg.functions.resolve("linear"), parse_estimators(["pathwise"]),
                                    None, ("a", "b"))  # fmt: skip
    assert found[0]["a"][0] == pytest.approx(3.0 / 25.0, rel=1e-13)
    assert found[0]["b"][0] == pytest.approx(-2.0 / 25.0, rel=1e-13)


def test_rows_of_gamma_draws_are_the_gamma_sampler_in_the_streams_order():
    alphas = np.array([0.5, 3.0, 2.0])
    state = rng.stream_state(5, 1)
    rows = np.empty(3 * 1000)
    dirichlet._rows_noise(state, rows, 1000, (alphas,))
    # one at a time through standard_gamma, in the same order, gives the same bits
    state = rng.stream_state(5, 1)
    one_by_one = np.array([rng.standard_gamma(state, alphas[k % 3]) for k in range(3000)])
    assert np.array_equal(rows, one_by_one)


@pytest.mark.parametrize("alphas", [(0.5, 0.5), (2.5, 1.5), (0.3, 2.0, 7.0)])
def test_dirichlet_draws_have_the_right_marginals(alphas):
    # x_k ~ Beta(alpha_k, alpha_0 - alpha_k): Kolmogorov-Smirnov on 20 000 draws of each component
    alphas = np.array(alphas)
    n = 20_000
    state = rng.stream_state(3, 0)
    rows = np.empty(alphas.size * n)
    dirichlet._rows_noise(state, rows, n, (alphas,))
    g = rows.reshape(n, alphas.size)
    x = g / g.sum(axis=1, keepdims=True)
    for k, a in enumerate(alphas):
        assert stats.kstest(x[:, k], stats.beta(a, alphas.sum() - a).cdf).pvalue > 1e-4


@pytest.mark.xdist_group("matrix-1")  # (with the matrix's Beta and Dirichlet cells: their kernels, in one process)
def test_a_beta_run_is_a_dirichlet_runs_first_component():
    # the same streams and the same cores: Beta(a, b)'s values are Dirichlet([a, b])'s with f of x_1 only (in the
    # first chunk: a Dirichlet's chunks hold 65 536 / K draws, a Beta's 65 536); square, the matrix's kernels
    beta = fg.estimate(fg.Beta(2.0, 3.0), "square", 2**15, estimator="pathwise", seed=4)
    dirichlet_run = fg.estimate(fg.Dirichlet([2.0, 3.0]), fg.functions.quadratic([1.0, 0.0]), 2**15,
                                estimator="pathwise", seed=4)  # fmt: skip
    assert beta.mean["a"] == dirichlet_run.mean["concentration"][0]
    assert beta.mean["b"] == dirichlet_run.mean["concentration"][1]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: fg.Dirichlet([1.0]), "at least 2 components"),
        (lambda: fg.Dirichlet([1.0, -2.0]), "concentration[1] must be positive"),
        (lambda: fg.Dirichlet([1.0, 2e10]), "concentration[1] must be at most"),
        (lambda: fg.Dirichlet(2.0), "concentration must be a sequence"),
        (lambda: fg.Beta(0.0, 1.0), "a must be positive"),
        (lambda: fg.Beta(1.0, math.inf), "b must be"),
    ],
)
def test_bad_parameters_are_refused_naming_the_argument(make, message):
    with pytest.raises((TypeError, ValueError)) as refused:
        make()
    assert message in str(refused.value)


def test_a_dirichlet_needs_a_function_of_a_vector_and_a_beta_of_a_number():
    with pytest.raises(TypeError, match="Dirichlet needs a function of a vector"):
        fg.compare(fg.Dirichlet([1.0, 2.0]), "square", 1000, seed=0)
    with pytest.raises(TypeError):
        fg.compare(fg.Beta(1.0, 2.0), fg.functions.sum_of_squares(), 1000, seed=0)


@pytest.mark.xdist_group("matrix-1")
def test_exact_values_beyond_three_components_for_polynomials_and_none_for_other_functions():
    d = fg.Dirichlet([1.0, 2.0, 3.0, 4.0])
    result = fg.compare(d, fg.functions.sum_of_squares(), 4096, seed=0)
    assert result.analytic_note is None and len(result.pathwise.analytic_variance["concentration"]) == 4
    assert len(result.pathwise.mean["concentration"]) == 4
    specs = parse_estimators(["score"])
    assert dirichlet.noise_moments(d, fg.functions.sum_cos(1.0), specs, None, d.parameters) == [None]
    assert "above it for polynomial functions only" in d.exact_values_note(fg.functions.sum_cos(1.0))
    # at K = 3 the rule over the K Gamma draws is used for sum_cos, but not below concentrations of 0.5
    small = fg.Dirichlet([0.3, 2.0, 5.0])
    assert dirichlet.noise_moments(small, fg.functions.sum_cos(1.0), specs, None, small.parameters) == [None]
    assert "concentration >= 0.5" in small.exact_values_note(fg.functions.sum_cos(1.0))
    assert small.exact_values_note(fg.functions.sum_of_squares()) is None


# --- the Beta's implicit gradient through its own CDF (the reference for PyTorch's Dirichlet) -----------------


@pytest.mark.parametrize("a", [0.3, 1.0, 4.5])
def test_beta_sample_grad_matches_the_closed_form_at_b_one(a):
    """I_x(a, 1) = x**a, so dx/da = -x**a log(x) / (a x**(a - 1)) = -x log(x) / a."""
    from fastgrad.dirichlet import beta_sample_grad

    x = np.array([1e-8, 0.01, 0.3, 0.5, 0.9, 0.999])
    np.testing.assert_allclose(beta_sample_grad(x, a, 1.0), -x * np.log(x) / a, rtol=1e-13)


@pytest.mark.parametrize("a", [0.01, 0.5, 2.5, 40.0])
@pytest.mark.parametrize("b", [0.3, 3.0, 50.0])
def test_beta_sample_grad_matches_mpmath(a, b):
    """-(dI_x/da) / q(x) by mpmath (a numerical derivative of betainc at 40 digits), at three quantiles."""
    import mpmath

    from fastgrad.dirichlet import beta_sample_grad

    mpmath.mp.dps = 40
    worst = 0.0
    for quantile in (0.01, 0.5, 0.99):
        x = float(special.betaincinv(a, b, quantile))
        cdf_a = mpmath.diff(lambda t, x=x: mpmath.betainc(t, b, 0, x, regularized=True), a)
        density = mpmath.power(x, a - 1) * mpmath.power(1 - x, b - 1) / mpmath.beta(a, b)
        exact = float(-cdf_a / density)
        worst = max(worst, abs(beta_sample_grad(x, a, b) / exact - 1.0))
    assert worst < 1e-11, worst


def test_the_log_concentrations_references_are_the_concentrations_times_alpha():
    # d/dlog a = a d/da: the Beta's E[x] = a / (a + b), so d/dlog_a = a b / (a + b)**2 and d/dlog_b = -a b / (a + b)**2;
    # variances times a**2 (b**2), with the concentrations' own coefficients (an optimal baseline's here)
    from fastgrad.distributions import NaturalView

    beta, function = fg.Beta(2.0, 3.0), fg.functions.resolve("linear")
    specs = parse_estimators(["pathwise", "score+optimal-baseline"])
    coefficients = [None, np.array([0.3, -0.2, 0.6, -0.6])]
    view = NaturalView(beta)
    found = dirichlet.noise_moments(view, function, specs, coefficients, ("a", "log_a", "log_b"))
    plain = dirichlet.noise_moments(beta, function, specs, [None, coefficients[1][:2]], ("a", "b"))
    assert found[0]["log_a"][0] == pytest.approx(6.0 / 25.0, rel=1e-13)
    assert found[0]["log_b"][0] == pytest.approx(-6.0 / 25.0, rel=1e-13)
    for s in range(2):
        assert found[s]["a"] == plain[s]["a"]
        assert found[s]["log_a"] == (plain[s]["a"][0] * 2.0, plain[s]["a"][1] * 4.0)
        assert found[s]["log_b"] == (plain[s]["b"][0] * 3.0, plain[s]["b"][1] * 9.0)


@pytest.mark.parametrize("alphas", [(2.5, 1.5), (0.7, 2.0, 30.0)])
def test_the_kernel_parameters_rebuilt_in_a_step_are_the_runs_without_the_fit(alphas):
    """What an optimisation's step rebuilds (``_theta_into``) is ``Dirichlet.theta``'s numbers without the fit of
    the implicit gradient: bit for bit, but the digamma difference of K > 2, whose total is summed in order."""
    theta = dirichlet._theta(alphas)
    rebuilt = tuple(np.full_like(row, np.nan) for row in theta)
    dirichlet._theta_into(np.array(alphas), rebuilt)
    for k in (0, 2, 3, 4, 5):
        assert rebuilt[k].tolist() == theta[k].tolist()
    if len(alphas) == 2:
        assert rebuilt[1].tolist() == theta[1].tolist()
    else:
        assert rebuilt[1] == pytest.approx(theta[1], rel=4e-16, abs=0)
    no_fit = fg.math._no_fit()
    for k in range(6):
        assert np.all(rebuilt[6 + k] == float(no_fit[k]))
    assert np.all(rebuilt[12] == 0.0)


#: family -> (distribution, function, d E[f] / d log(alpha) at the start, estimators): SGD's one step's mean.
MOVES = {
    "beta": (fg.Beta(2.5, 1.5), "square", ["score", "pathwise"]),
    "dirichlet": (fg.Dirichlet([1.5, 2.0, 3.0]), fg.functions.linear_form([1.0, 0.0, 2.0]), ["score", "pathwise"]),
}  # fmt: skip


def _log_gradient(name, alphas):
    """``d E[f] / d log(alpha_k)`` of MOVES' functions at rows of concentrations: the Beta's ``E[x**2]``, the
    Dirichlet's ``sum w_i x_i``."""
    alphas = np.atleast_2d(alphas)
    if name == "beta":
        a, b = alphas[:, :1], alphas[:, 1:]
        m2 = a * (a + 1) / ((a + b) * (a + b + 1))
        own = np.concatenate([1 / a + 1 / (a + 1), 0 * b], axis=1)
        return alphas * m2 * (own - (1 / (a + b) + 1 / (a + b + 1)))
    weights, total = np.array([1.0, 0.0, 2.0]), alphas.sum(axis=1, keepdims=True)
    return alphas * (weights - (alphas @ weights)[:, None] / total) / total


@pytest.mark.parametrize("name", MOVES)  # (no pilot: a pilot's kernel is one more compile, about 10 s)
def test_optimize_moves_the_concentrations_one_unbiased_step_at_a_time_on_any_thread_count(name):
    """SGD on the log-concentrations: the mean over replicates after one step is ``log(alpha) - eta dE/dlog(alpha)``
    within 5 standard errors (score or its optimal baseline, and pathwise through the implicit gradient's series),
    the exact objective logged is the closed form at each replicate's concentrations, and a run is the same on one
    thread and on two."""
    distribution, function, estimators = MOVES[name]
    eta, replicates = 0.5, 4000
    expected = np.log(distribution.concentration) - eta * _log_gradient(name, distribution.concentration)[0]
    one = fg.optimize(distribution, function, estimators=estimators, steps=1, learning_rate=eta, replicates=replicates,
                      seed=2, threads=1)  # fmt: skip
    for estimator in estimators:
        moved = np.log(one[estimator].final)
        stderr = moved.std(axis=0, ddof=1) / math.sqrt(replicates)
        assert np.all(np.abs(moved.mean(axis=0) - expected) < 5 * stderr), (estimator, moved.mean(axis=0), expected)
        alphas = one[estimator].final
        if name == "beta":
            a, b = alphas[:, 0], alphas[:, 1]
            exact = a * (a + 1) / ((a + b) * (a + b + 1))
        else:
            exact = alphas @ np.array([1.0, 0.0, 2.0]) / alphas.sum(axis=1)
        assert one[estimator].objective[-1, 0] == pytest.approx(exact.mean(), rel=1e-13)
    # the second step draws its Gamma draws at the first step's concentrations: its move is unbiased there
    two = fg.optimize(distribution, function, estimators=estimators, steps=2, learning_rate=eta, replicates=replicates,
                      seed=2, threads=1)  # fmt: skip
    for estimator in estimators:
        first, second = one[estimator].final, two[estimator].final
        move = np.log(second) - np.log(first) + eta * _log_gradient(name, first)
        assert np.all(np.abs(move.mean(axis=0)) < 5 * move.std(axis=0, ddof=1) / math.sqrt(replicates)), estimator
    several = dict(estimators=["pathwise"], steps=20, learning_rate=0.02, replicates=20, seed=3, log_every=5)
    a = fg.optimize(distribution, function, threads=1, **several)
    b = fg.optimize(distribution, function, threads=2, **several)
    assert a["pathwise"].final.tolist() == b["pathwise"].final.tolist()


def test_a_concentration_moved_past_the_largest_accepted_is_nan_in_the_kernel_parameters():
    # (as the Gamma's shape: the replicate diverges at that step; the others keep their values)
    theta = tuple(np.zeros_like(row) for row in dirichlet._theta((1.0, 2.0, 3.0)))
    dirichlet._theta_into(np.array([1.0, 2e10, 1e10]), theta)
    assert theta[0][0] == 1.0 and math.isnan(theta[0][1]) and theta[0][2] == 1e10
