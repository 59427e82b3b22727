"""MultivariateNormal(loc, scale_tril): exact values against closed forms, its sampler, its layout, bad input.

Every (specification, mode) cell of the family is tests/test_matrix.py's; here what is particular to it.
"""

import json
import math

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import cli
from fastgrad.estimators import parse_estimator
from fastgrad.mvn import exact_moments

LOC = [1.0, -0.5, 2.0]
L = [[0.8, 0.0, 0.0], [0.3, 1.2, 0.0], [-0.4, 0.5, 0.7]]
LOWER = [(a, b) for a in range(3) for b in range(a + 1)]

# One worker: the module's runs share the family's kernel (compiled once a process).
pytestmark = pytest.mark.xdist_group("mvn")


def _exact(distribution, function, specs):
    return exact_moments(distribution, function, [parse_estimator(s) for s in specs], None, ("loc", "scale_tril"))


@pytest.mark.parametrize("weights", [[1.0, 1.0, 1.0], [0.5, -2.0, 1.5]])
def test_quadratic_form_means_and_pathwise_variances_match_closed_forms(weights):
    """f = sum_a w_a x_a**2: E f = sum_a w_a (loc_a**2 + Sigma_aa), so d/dloc_a = 2 w_a loc_a, d/dL_ab = 2 w_a L_ab;
    the pathwise values 2 w_a x_a and 2 w_a x_a eps_b have variances 4 w_a**2 Sigma_aa and
    4 w_a**2 (loc_a**2 + Sigma_aa + L_ab**2) (Isserlis: E[x_a**2 eps_b**2] = loc_a**2 + Sigma_aa + 2 L_ab**2)."""
    distribution = fg.MultivariateNormal(LOC, L)
    scale, loc, w = np.array(L), np.array(LOC), np.array(weights)
    sigma = np.diag(scale @ scale.T)
    (score, pathwise) = _exact(distribution, fg.functions.quadratic(weights), ["score", "pathwise"])
    loc_grad = 2 * w * loc
    tril_grad = [2 * w[a] * scale[a, b] for a, b in LOWER]
    for result in (score, pathwise):
        np.testing.assert_allclose(result["loc"][0], loc_grad, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(result["scale_tril"][0], tril_grad, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(pathwise["loc"][1], 4 * w**2 * sigma, rtol=1e-12)
    np.testing.assert_allclose(pathwise["scale_tril"][1],
                               [4 * w[a] ** 2 * (loc[a] ** 2 + sigma[a] + scale[a, b] ** 2) for a, b in LOWER],
                               rtol=1e-12)  # fmt: skip


@pytest.mark.parametrize(
    "function", [fg.functions.quadratic([0.5, -2.0, 1.5]), fg.functions.linear_form([1.0, -3.0, 0.5])], ids=str
)
@pytest.mark.parametrize("spec", ["pathwise", "pathwise+antithetic"])
def test_the_closed_forms_above_three_components_are_the_rules_at_three(function, spec):
    """mvn.pathwise_closed_forms (what runs above D = 3 use) against the Gauss-Hermite rule, at D = 3."""
    from fastgrad.mvn import _quadratic_coefficients, pathwise_closed_forms

    distribution = fg.MultivariateNormal(LOC, L)
    quadratic = _quadratic_coefficients(distribution.component_functions(function))
    forms = pathwise_closed_forms(distribution, quadratic, parse_estimator(spec).antithetic)
    (rule,) = _exact(distribution, function, [spec])
    for parameter in ("loc", "scale_tril"):
        for got, expected in zip(forms[parameter], rule[parameter], strict=True):
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


SCORE_SPECS = ["score", "score+antithetic", "score+loo(4)", "score+optimal-baseline",
               "score+optimal-baseline+antithetic", "score+cv", "score+cv+antithetic"]  # fmt: skip


@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("name", ["quadratic", "linear_form", "sum_of_squares"])
def test_the_score_closed_forms_above_three_components_are_the_rules_at_three(dim, name):
    """mvn.score_closed_forms (Gaussian moments of degree 8 by integration by parts; what runs above D = 3 use)
    against the Gauss-Hermite rule, every score variant, with baselines and control-variate matrices drawn at random."""
    from fastgrad.mvn import _quadratic_coefficients, score_closed_forms

    weights = {"quadratic": [0.5, -2.0, 1.5], "linear_form": [1.0, -3.0, 0.5]}
    function = getattr(fg.functions, name)(*([weights[name][:dim]] if name in weights else []))
    distribution = fg.MultivariateNormal(LOC[:dim], [row[:dim] for row in L[:dim]])
    quadratic = _quadratic_coefficients(distribution.component_functions(function))
    pairs = dim + dim * (dim + 1) // 2
    rng = np.random.default_rng(dim)
    for text in SCORE_SPECS:
        spec = parse_estimator(text)
        coef = {"optimal": rng.normal(size=pairs), "cv": rng.normal(size=(pairs, pairs))}.get(spec.baseline)
        (rule,) = exact_moments(distribution, function, [spec], [coef], ("loc", "scale_tril"))
        forms = score_closed_forms(distribution, quadratic, spec, coef, ("loc", "scale_tril"))
        for parameter in ("loc", "scale_tril"):
            for got, expected in zip(forms[parameter], rule[parameter], strict=True):
                np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12, err_msg=f"{text} {parameter}")


def test_sum_cos_means_match_the_marginals_closed_form():
    """E cos(w x_a) = cos(w loc_a) exp(-w**2 Sigma_aa / 2): its gradient through loc_a, and through L_ab by
    dSigma_aa/dL_ab = 2 L_ab (the rule converges to about 1e-13 for a smooth f)."""
    omega = 0.7
    distribution = fg.MultivariateNormal(LOC, L)
    scale, loc = np.array(L), np.array(LOC)
    sigma = np.diag(scale @ scale.T)
    damp = np.exp(-(omega**2) * sigma / 2)
    (pathwise,) = _exact(distribution, fg.functions.sum_cos(omega), ["pathwise"])
    np.testing.assert_allclose(pathwise["loc"][0], -omega * np.sin(omega * loc) * damp, rtol=1e-12)
    d_sigma = [-(omega**2) / 2 * np.cos(omega * loc[a]) * damp[a] * 2 * scale[a, b] for a, b in LOWER]
    np.testing.assert_allclose(pathwise["scale_tril"][0], d_sigma, rtol=1e-11, atol=1e-14)


def test_a_diagonal_scale_tril_draws_the_diagnormals_values():
    """The same normals, loc_a + L_aa eps_a: the pathwise values wrt loc (df/dx_a) are the DiagNormal's, bit for bit."""
    scales = [0.8, 1.2, 2.0]
    diagonal = [[s if a == b else 0.0 for b in range(3)] for a, s in enumerate(scales)]
    function = fg.functions.sum_of_squares()  # (the matrix test's kernels)
    mvn = fg.estimate(fg.MultivariateNormal(LOC, diagonal), function, 3 * 65536, estimator="pathwise", seed=5,
                      wrt="loc")  # fmt: skip
    diag = fg.estimate(fg.DiagNormal(LOC, scales), function, 3 * 65536, estimator="pathwise", seed=5, wrt="loc")
    assert mvn.mean["loc"].tolist() == diag.mean["loc"].tolist()
    assert mvn.variance["loc"].tolist() == diag.variance["loc"].tolist()


@pytest.mark.parametrize("spec", ["measure-valued+coupled", "measure-valued+decoupled"])
def test_a_diagonal_scale_tril_has_the_diagnormals_weak_derivative_sides(spec):
    """The same uniforms per component: with a diagonal L the sides are the DiagNormal's up to the rounding of
    the conditional mean x_a - w_a / kappa_a**2 (= loc_a) and of 1 / kappa_a (= L_aa)."""
    scales = [0.8, 1.2, 2.0]
    diagonal = [[s if a == b else 0.0 for b in range(3)] for a, s in enumerate(scales)]
    function = fg.functions.sum_of_squares()
    mvn = fg.estimate(fg.MultivariateNormal(LOC, diagonal), function, 65536, estimator=spec, seed=5, wrt="loc")
    diag = fg.estimate(fg.DiagNormal(LOC, scales), function, 65536, estimator=spec, seed=5, wrt="loc")
    np.testing.assert_allclose(mvn.mean["loc"], diag.mean["loc"], rtol=1e-13)
    np.testing.assert_allclose(mvn.variance["loc"], diag.variance["loc"], rtol=1e-12)


def test_results_hold_the_lower_triangle_row_by_row():
    r = fg.compare(fg.MultivariateNormal(LOC, L), fg.functions.sum_of_squares(), 2**16, seed=1,
                   estimators=["pathwise"])  # fmt: skip
    assert r.pathwise.mean["loc"].shape == (3,) and r.pathwise.mean["scale_tril"].shape == (6,)
    for k, (a, b) in enumerate(LOWER):  # d/dL_ab E[sum x**2] = 2 L_ab, within 5 standard errors
        assert abs(r.pathwise.mean["scale_tril"][k] - 2 * L[a][b]) < 5 * r.pathwise.stderr["scale_tril"][k]
    data = r.to_dict()
    assert data["distribution"] == {"family": "MultivariateNormal", "loc": LOC, "scale_tril": L}


def test_two_hundred_components_have_closed_forms_and_a_run_checks_against_them():
    """D = 200 (20 300 pairs a specification): the score and pathwise rows against their closed forms, means and
    variances (the score's are Gaussian moments of degree 8 of the quadratic form)."""
    dim = 200
    scale = np.tril(np.full((dim, dim), 0.01)) + np.eye(dim)
    loc = np.linspace(-1.0, 1.0, dim)
    r = fg.compare(fg.MultivariateNormal(loc, scale), fg.functions.sum_of_squares(), 2_000, seed=2,
                   estimators=["score", "pathwise"])  # fmt: skip
    assert r.analytic_note is None
    rows, cols = np.tril_indices(dim)
    for result in (r.score, r.pathwise):
        np.testing.assert_allclose(result.analytic_mean["loc"], 2 * loc, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(result.analytic_mean["scale_tril"], 2 * scale[rows, cols], rtol=1e-13, atol=1e-15)
        for p in ("loc", "scale_tril"):
            z = (result.mean[p] - result.analytic_mean[p]) / result.stderr[p]
            z_variance = (result.variance[p] - result.analytic_variance[p]) / result.variance_stderr[p]
            # 20 300 z-scores of a correct estimator: none beyond 5.5 (probability about 1e-3 under normality)
            assert np.abs(z).max() < 5.5 and np.abs(z_variance).max() < 5.5, (result.estimator, p)


def test_above_three_components_a_function_that_is_not_quadratic_has_no_exact_values_and_says_why():
    distribution = fg.MultivariateNormal([0.0] * 4, np.eye(4))
    assert distribution.exact_values_note(fg.functions.sum_of_squares()) is None
    assert distribution.exact_values_note(fg.functions.sum_cos(1.0)).startswith("exact values are computed for D <= 3")
    specs = [parse_estimator("pathwise")]
    assert exact_moments(distribution, fg.functions.sum_cos(1.0), specs, None, ("loc",)) == [None]


BAD = {
    "not-square": (lambda: fg.MultivariateNormal([0.0, 0.0], [[1.0, 0.0]]), ValueError, "scale_tril must be 2 x 2"),
    "upper": (lambda: fg.MultivariateNormal([0.0, 0.0], [[1.0, 0.5], [0.0, 1.0]]), ValueError, "scale_tril[0][1]"),
    "diagonal": (lambda: fg.MultivariateNormal([0.0, 0.0], [[1.0, 0.0], [0.5, 0.0]]), ValueError, "scale_tril[1][1]"),
    "nan": (lambda: fg.MultivariateNormal([0.0, 0.0], [[1.0, 0.0], [math.nan, 1.0]]), ValueError, "scale_tril[1][0]"),
    "loc-nan": (lambda: fg.MultivariateNormal([0.0, math.inf], [[1.0, 0.0], [0.0, 1.0]]), ValueError, "loc[1]"),
    "flat": (lambda: fg.MultivariateNormal([0.0], [1.0]), TypeError, "scale_tril must be a D x D matrix"),
    "too-many": (lambda: fg.MultivariateNormal([0.0] * 1001, np.eye(1001)), ValueError, "1 to 1000 components"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_parameters_are_refused_naming_them(name):
    construct, exception, words = BAD[name]
    with pytest.raises(exception) as caught:
        construct()
    assert words in str(caught.value)


def test_a_control_variate_beyond_128_pairs_is_refused_with_the_count():
    """D = 15 has 15 + 120 = 135 (parameter, component) pairs; score+cv is offered up to 128 (D <= 14)."""
    with pytest.raises(ValueError, match=r"offered up to 128 .*pairs \(MultivariateNormal at D = 15 has 135\)"):
        fg.compare(fg.MultivariateNormal([0.0] * 15, np.eye(15)), fg.functions.sum_of_squares(), 100,
                   estimators=["score+cv"])  # fmt: skip
    fg.compare(fg.MultivariateNormal([0.0] * 14, np.eye(14)), fg.functions.sum_of_squares(), 100, seed=0,
               estimators=["score+cv"], pilot=1000)  # fmt: skip


def test_measure_valued_for_scale_tril_is_refused_with_the_reason():
    words = r"weak derivative for loc only, not for scale_tril \(the weak derivative of an entry of scale_tril is not"
    with pytest.raises(ValueError, match=words + r" derived here\); pass wrt=\['loc'\]"):
        fg.compare(fg.MultivariateNormal([0.0], [[1.0]]), fg.functions.sum_of_squares(), 100,
                   estimators=["measure-valued"])  # fmt: skip


@pytest.mark.parametrize("name", ["sum_of_squares", "sum_cos", "linear_form"])
def test_the_measure_valued_exact_values_at_one_component_are_the_normals(name):
    """At D = 1 the conditional law of x_0 is the whole law: the Normal's weak derivative, quadrature for quadrature."""
    from fastgrad._analytic import _weak_moments
    from fastgrad.mvn import weak_moments

    function = {"sum_of_squares": fg.functions.sum_of_squares(), "sum_cos": fg.functions.sum_cos(0.7),
                "linear_form": fg.functions.linear_form([2.0])}[name]  # fmt: skip
    distribution = fg.MultivariateNormal([0.7], [[1.3]])
    (h,) = distribution.component_functions(function)
    for coupled in (True, False):
        means, variances = weak_moments(distribution, [h], coupled)
        mean, variance = _weak_moments(fg.Normal(0.7, 1.3), h, 0, coupled)
        np.testing.assert_allclose([means[0], variances[0]], [mean, variance], rtol=1e-13)


def test_the_coupled_measure_valued_values_of_a_quadratic_form_have_their_closed_form():
    """f = sum_a w_a x_a**2: the value is R (2 w_a) 2 m / sqrt(2 pi) (R Rayleigh, m the conditional mean, spread
    tau_a**2 = Sigma_aa - 1 / (Sigma^-1)_aa), so its mean is 2 w_a loc_a and its variance
    16 w_a**2 (loc_a**2 + tau_a**2) / pi - 4 w_a**2 loc_a**2, at any D (here 5)."""
    from fastgrad.mvn import weak_moments

    rng = np.random.default_rng(5)
    scale = np.tril(rng.normal(size=(5, 5)) * 0.5, -1) + np.diag([0.5, 0.8, 1.0, 1.3, 2.0])
    loc, w = np.linspace(-1.0, 2.0, 5), np.array([0.5, -2.0, 1.5, 1.0, 0.25])
    distribution = fg.MultivariateNormal(loc, scale)
    sigma = scale @ scale.T
    tau2 = np.diag(sigma) - 1.0 / np.diag(np.linalg.inv(sigma))
    means, variances = weak_moments(distribution, distribution.component_functions(fg.functions.quadratic(w)), True)
    np.testing.assert_allclose(means, 2 * w * loc, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(variances, 16 * w**2 * (loc**2 + tau2) / np.pi - 4 * w**2 * loc**2, rtol=1e-12)


def test_the_cli_takes_a_matrix(capsys, tmp_path):
    path = tmp_path / "out.json"
    status = cli.main(["compare", "--dist", "mvn", "--loc", "1,-0.5,2", "--scale-tril",
                       "0.8,0,0;0.3,1.2,0;-0.4,0.5,0.7", "--f", "sum_of_squares", "-n", "65536", "--seed", "1",
                       "--json", str(path)])  # fmt: skip
    assert status == 0
    api = fg.compare(fg.MultivariateNormal(LOC, L), fg.functions.sum_of_squares(), 65536, seed=1)
    data, expected = json.loads(path.read_text()), api.to_dict()
    assert data["distribution"] == expected["distribution"]
    assert data["estimators"]["pathwise"] == json.loads(json.dumps(expected["estimators"]["pathwise"]))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--loc", "1,2"], "--scale-tril: required with --dist mvn"),
        (["--scale-tril", "1,1;0,1"], "--scale-tril: scale_tril[0][1] must be 0"),
        (["--scale-tril", "1,0;x,1"], "expected a matrix"),
        (["--scale-tril", "1,0;0,1", "--dim", "3"], "sizes differ"),
    ],
)
def test_the_cli_refuses_bad_matrices(capsys, argv, message):
    status = cli.main(["compare", "--dist", "mvn", *argv, "--f", "sum_of_squares", "-n", "100"])
    assert status == 2 and message in capsys.readouterr().err


def test_a_run_with_exact_values_for_some_estimators_only_says_so():
    from types import SimpleNamespace

    from fastgrad._format import _exact_values_line

    some = [SimpleNamespace(analytic_variance=None), SimpleNamespace(analytic_variance={"loc": [1.0]})]
    assert _exact_values_line(some, "why").startswith("exact values for some estimators only: why")
    assert _exact_values_line(some[:1], "why").startswith("no exact values: why")


def test_the_log_diagonal_references_are_scale_trils_times_the_diagonal():
    """``log_diag_scale_tril``'s exact values: below the diagonal ``scale_tril``'s, on it ``L_aa`` times theirs (and
    ``L_aa**2`` times the variances), with ``scale_tril``'s own coefficients; ``d E[sum x_i**2] / d log L_aa =
    2 L_aa**2``. (The kernels' native values are checked against the same references by the optimisation below: one
    unbiased step per estimator.)"""
    from fastgrad.distributions import NaturalView

    distribution = fg.MultivariateNormal(LOC[:2], [row[:2] for row in L[:2]])
    function = fg.functions.sum_of_squares()
    specs = [parse_estimator(s) for s in ("score", "score+optimal-baseline", "pathwise+antithetic")]
    coefficients = [None, np.array([0.5, -0.2, 0.3, 0.1, 0.7, 0.3, 0.1, 0.7]), None]
    wrt = ("scale_tril", "log_diag_scale_tril")
    found = exact_moments(NaturalView(distribution), function, specs, coefficients, wrt)
    plain = exact_moments(distribution, function, specs, [None, coefficients[1][:5], None], ("scale_tril",))
    factor = np.array([0.8, 1.0, 1.2])
    for s in range(3):
        assert found[s]["scale_tril"] == plain[s]["scale_tril"]
        assert np.allclose(found[s]["log_diag_scale_tril"][0], np.array(plain[s]["scale_tril"][0]) * factor, rtol=1e-15)
        assert np.allclose(found[s]["log_diag_scale_tril"][1], np.array(plain[s]["scale_tril"][1]) * factor**2,
                           rtol=1e-15)  # fmt: skip
    assert found[2]["log_diag_scale_tril"][0] == pytest.approx([2 * 0.64, 2 * 0.3, 2 * 1.44], rel=1e-13)


def test_the_kernel_parameters_rebuilt_in_a_step_are_the_runs():
    distribution = fg.MultivariateNormal(LOC, L)
    theta = distribution.theta
    rebuilt = tuple(np.zeros_like(row) for row in theta)
    fg.mvn._theta_into(np.concatenate([LOC, distribution.flat("scale_tril")]), rebuilt)
    for k in range(3):
        assert rebuilt[k].tolist() == theta[k].tolist()
    assert rebuilt[3] == pytest.approx(theta[3], rel=1e-15)  # (kappa: triangular solves here, LAPACK's inverse there)


def test_optimize_moves_loc_and_the_cholesky_factor_one_unbiased_step_at_a_time_on_any_thread_count():
    """SGD on ``loc``, ``scale_tril`` below the diagonal and the logarithm of its diagonal, ``E[sum x_i**2] = sum
    loc_i**2 + sum L_ab**2``: after one step the mean over replicates is ``loc - 2 eta loc``, ``L_ab - 2 eta L_ab`` and
    ``log L_aa - 2 eta L_aa**2`` within 5 standard errors; the exact objective logged is the marginals'."""
    distribution = fg.MultivariateNormal(LOC[:2], [row[:2] for row in L[:2]])
    function = fg.functions.sum_of_squares()
    eta, replicates = 0.05, 4000
    start = np.concatenate([LOC[:2], distribution.flat("scale_tril")])
    diagonal = np.array([False, False, True, False, True])
    expected = np.where(diagonal, np.log(np.abs(start)) - 2 * eta * start**2, start - 2 * eta * start)
    # (no pilot here: its kernel would be one more compile, about 15 s; every value of the four is native)
    estimators = ["score", "score+antithetic", "pathwise", "pathwise+antithetic"]
    one = fg.optimize(distribution, function, estimators=estimators, steps=1, learning_rate=eta, replicates=replicates,
                      seed=2, threads=1)  # fmt: skip
    for estimator in estimators:
        final = one[estimator].final
        moved = np.where(diagonal, np.log(np.abs(final)), final)
        stderr = moved.std(axis=0, ddof=1) / math.sqrt(replicates)
        mean = np.array([math.fsum(column) for column in moved.T]) / replicates  # (exact where all are equal: loc's
        # antithetic pathwise values are 2 loc whatever the draw)
        assert np.all(np.abs(mean - expected) <= 5 * stderr), (estimator, mean, expected)
        exact = np.sum(final * final, axis=1)
        assert one[estimator].objective[-1, 0] == pytest.approx(exact.mean(), rel=1e-13)
        assert one[estimator].parameters["log_diag_scale_tril[2]"][-1, 0] == pytest.approx(np.log(final[:, 4]).mean())
        assert one[estimator].parameters["log_diag_scale_tril[1]"][-1, 0] == pytest.approx(final[:, 3].mean())
    several = dict(estimators=["score"], steps=20, learning_rate=0.02, replicates=20, seed=3, log_every=5,
                   optimizer="adam")  # fmt: skip
    a = fg.optimize(distribution, function, threads=1, **several)
    b = fg.optimize(distribution, function, threads=2, **several)
    assert a["score"].final.tolist() == b["score"].final.tolist()
