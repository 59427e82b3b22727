"""Natural parameterisations: ``log_scale``, ``log_rate`` and ``logits`` as ``wrt`` names, computed natively.

One table of (distribution, natural parameter, its parameter). Checked:

* the factors are the cores' own (``eps**2 - 1``), bit for bit the formula, not the parameter's factor rescaled
  (``scale * ((eps**2 - 1) / scale)`` rounds differently);
* the exact references of every estimator the family has are the parameter's times ``dtheta/deta`` (its square for
  variances): computed from the natural factors, they check them against an independent chain rule;
* runs (a SIMD one, a general one with measure-valued rows) are unbiased with their exact variances,
  and their parameter's rows are the bits of a run without the natural parameter;
* bad names are refused naming the accepted ones, natural ones included.
"""

import math
from fractions import Fraction

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _analytic
from fastgrad import math as fm
from fastgrad.distributions import FAMILIES, NATURAL_DERIVATIVES, NaturalView

#: name -> (distribution, natural parameter, the parameter it is of, estimators the family has)
CASES = {
    "normal": (fg.Normal(1.5, 0.8), "log_scale", "scale", ["score", "pathwise", "measure-valued+coupled"]),
    "laplace": (fg.Laplace(0.5, 1.5), "log_scale", "scale", ["score", "pathwise", "measure-valued+coupled"]),
    "exponential": (fg.Exponential(1.7), "log_rate", "rate", ["score", "pathwise", "measure-valued+decoupled"]),
    "gamma": (fg.Gamma(2.5, 1.5), "log_rate", "rate", ["score", "pathwise", "measure-valued+coupled"]),
    "gamma-shape": (fg.Gamma(2.5, 1.5), "log_shape", "shape", ["score", "pathwise"]),
    "poisson": (fg.Poisson(3.0), "log_rate", "rate", ["score", "measure-valued+coupled"]),
    "bernoulli": (fg.Bernoulli(0.3), "logits", "p", ["score", "measure-valued+coupled"]),
}

#: The natural factors' formulas: (score, path) of (eps, x, parameters).
FORMULAS = {
    "normal": (lambda e, x, d: e * e - 1.0, lambda e, x, d: d.scale * e),
    "laplace": (lambda e, x, d: abs(e) - 1.0, lambda e, x, d: d.scale * e),
    "exponential": (lambda e, x, d: 1.0 - e, lambda e, x, d: -x),
    "gamma": (lambda e, x, d: d.shape - e, lambda e, x, d: -x),
    "gamma-shape": (
        lambda e, x, d: d.shape * (fm.log(e) - fm.digamma(d.shape)),
        lambda e, x, d: d.shape * (fm.gamma_sample_grad(e, d.shape) / d.rate),
    ),
    "poisson": (lambda e, x, d: x - d.rate, None),
    "bernoulli": (lambda e, x, d: x - d.p, None),
}


@pytest.mark.parametrize("name", CASES)
def test_the_natural_factors_are_the_cores_own(name):
    distribution, natural, of, _ = CASES[name]
    family = FAMILIES[distribution.family.name + "+natural"]
    j = family.parameters.index(natural)
    base = distribution.family.parameters.index(of)
    theta = distribution.theta
    score, path = FORMULAS[name]
    generator = np.random.default_rng(1)
    eps = generator.uniform(0.05, 6.0, 200) if name != "bernoulli" else generator.uniform(0, 1, 200)
    if name in ("poisson",):
        eps = np.floor(eps)
    rescaled_differs = 0
    for e in eps:
        x = family.transform(e, theta)
        assert family.score_factor(j, e, x, theta) == score(e, x, distribution)
        if path is not None:
            assert family.path_factor(j, e, x, theta) == pytest.approx(path(e, x, distribution), rel=1e-13)
            if name != "gamma-shape":  # (the Gamma's implicit gradient: the run's fit, within 1e-13 of the series)
                assert family.path_factor(j, e, x, theta) == path(e, x, distribution)
        chain = NATURAL_DERIVATIVES[natural](getattr(distribution, of))
        rescaled_differs += chain * family.score_factor(base, e, x, theta) != score(e, x, distribution)
    # (Poisson's and Bernoulli's factors are exact products; log_shape's is shape times the shape's: no form of
    # shape (log z - digamma(shape)) rounds better)
    if name in ("normal", "laplace", "exponential", "gamma"):
        assert rescaled_differs > 0  # the rescaled factor is not the same number: what native means


@pytest.mark.parametrize("name", CASES)
def test_the_exact_references_are_the_chain_rule(name):
    distribution, natural, of, estimators = CASES[name]
    view = NaturalView(distribution)
    chain = float(NATURAL_DERIVATIVES[natural](Fraction(getattr(distribution, of))))
    function = fg.functions.resolve("square")
    plain = [e for e in estimators if e in ("score", "pathwise")]
    found = _analytic.estimator_moments(view, function, plain, [of, natural])
    for estimator in plain:
        (mean, variance), (natural_mean, natural_variance) = found[estimator][of], found[estimator][natural]
        assert natural_mean == pytest.approx(mean * chain, rel=1e-12, abs=1e-300)
        assert natural_variance == pytest.approx(variance * chain**2, rel=1e-10, abs=1e-300)
    h = function.exact()
    for estimator in (e for e in estimators if e.startswith("measure-valued")):
        coupled = estimator.endswith("coupled") and not estimator.endswith("decoupled")
        j, k = view.parameters.index(of), view.parameters.index(natural)
        mean, variance = _analytic._weak_moments(view, h, j, coupled)
        natural_mean, natural_variance = _analytic._weak_moments(view, h, k, coupled)
        assert natural_mean == pytest.approx(mean * chain, rel=1e-12)
        assert natural_variance == pytest.approx(variance * chain**2, rel=1e-12)


#: Runs: four draws at a time (Normal), the general filler with measure-valued rows (Gamma). (Each is a kernel
#: compile of its own; the other families' natural factors are checked above against the cores and the references.)
RUNS = ["normal", "gamma"]


@pytest.mark.parametrize("name", RUNS)
def test_runs_are_unbiased_and_leave_the_parameters_rows_alone(name):
    distribution, natural, of, estimators = CASES[name]
    specs = None if name == "normal" else estimators  # (the Normal's: the classic compare, the plain filler)
    n = 2**18
    result = fg.compare(distribution, "square", n, seed=5, estimators=specs, wrt=[of, natural])
    without = fg.compare(distribution, "square", n, seed=5, estimators=specs, wrt=[of])
    rows = [result.score, result.pathwise] if specs is None else [result[e] for e in result.estimators]
    rows_without = [without.score, without.pathwise] if specs is None else [without[e] for e in without.estimators]
    for row, alone in zip(rows, rows_without, strict=True):
        assert row.mean[of] == alone.mean[of] and row.variance[of] == alone.variance[of]
        mean, truth, stderr = row.mean[natural], row.analytic_mean[natural], row.stderr[natural]
        assert abs(mean - truth) < 5 * stderr, (row.estimator, mean, truth, stderr)
        variance, exact, spread = row.variance[natural], row.analytic_variance[natural], row.variance_stderr[natural]
        assert abs(variance - exact) < 5 * spread, (row.estimator, variance, exact, spread)


def test_natural_names_are_offered_where_they_exist_and_refused_elsewhere():
    with pytest.raises(ValueError, match=r"from \['loc', 'scale', 'log_scale'\]; got 'log_rate'"):
        fg.compare(fg.Normal(), "square", 1000, seed=0, wrt=["log_rate"])
    with pytest.raises(ValueError, match=r"from \['p', 'logits'\]; got 'log_scale'"):
        fg.estimate(fg.Bernoulli(0.5), "square", 1000, seed=0, estimator="score", wrt="log_scale")
    with pytest.raises(ValueError, match="weak derivative for rate, log_rate only, not for shape"):
        fg.compare(fg.Gamma(2.0, 1.0), "square", 1000, seed=0, estimators=["measure-valued"], wrt=["shape", "log_rate"])


def test_the_view_reads_the_natural_values_and_forwards_the_rest():
    view = NaturalView(fg.Bernoulli(0.25))
    assert view.logits == math.log(0.25 / 0.75) and view.p == 0.25
    assert view.to_dict() == fg.Bernoulli(0.25).to_dict() and repr(view) == repr(fg.Bernoulli(0.25))
    assert NaturalView(fg.DiagNormal([0.0, 1.0], [1.0, 2.0])).log_scale == (0.0, math.log(2.0))
