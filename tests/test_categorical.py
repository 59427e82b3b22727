"""Categorical: the sampler, the exact references against closed forms, logits, and what it refuses.

The matrix (tests/test_matrix.py) runs every estimator of the family, for
``probs`` and ``logits`` together, against these references (unbiased, exact
variances, bit-identical in every run mode). Here the references are
checked against the closed forms they must equal: with ``F = E[f]``,
``d/dprobs[k] = f(k) - F`` and ``d/dlogits[k] = probs[k] (f(k) - F)``; the
score's second moment ``p_k f(k)**2 (1/p_k - 1)**2 + sum_{x != k} p_x f(x)**2``;
the measure-valued values ``c (f(k) - f(x))``, of variance ``c**2 Var f``.
"""

import math

import numpy as np
import pytest
from scipy import stats

import fastgrad as fg
from fastgrad import categorical, rng
from fastgrad.distributions import NaturalView
from fastgrad.estimators import parse_estimators

CASES = [
    ([0.2, 0.3, 0.5], "square"),
    ([0.7, 0.1, 0.1, 0.05, 0.05], "cos"),
    ([1e-6, 1 - 2e-6, 1e-6], "quartic"),
]


def draws(probs, n, seed=3):
    theta = fg.Categorical(probs).theta
    noise = np.empty(n)
    categorical._categorical_noise(rng.stream_state(seed, 0), noise, n, theta)
    return noise


@pytest.mark.parametrize(("probs", "name"), CASES)
def test_the_references_are_the_closed_forms(probs, name):
    distribution = NaturalView(fg.Categorical(probs))
    function = fg.functions.resolve(name)
    specs = parse_estimators(["score", "measure-valued+coupled", "measure-valued+decoupled"])
    found = categorical._moments(distribution, function, specs, None, ("probs", "logits"))
    p = np.array(probs)
    f = function.exact().evaluate(np.arange(len(p), dtype=float))
    mean_f = float(p @ f)
    var_f = float(p @ (f - mean_f) ** 2)
    for k in range(len(p)):
        gradient = f[k] - mean_f
        second = p[k] * f[k] ** 2 * (1 / p[k] - 1) ** 2 + sum(p[x] * f[x] ** 2 for x in range(len(p)) if x != k)
        for parameter, c in (("probs", 1.0), ("logits", p[k])):
            means, variances = found[0][parameter]
            assert means[k] == pytest.approx(c * gradient, rel=1e-12, abs=1e-14)
            if parameter == "probs":
                assert variances[k] == pytest.approx(second - gradient**2, rel=1e-10)
            for s in (1, 2):
                means, variances = found[s][parameter]
                assert means[k] == pytest.approx(c * gradient, rel=1e-12, abs=1e-14)
                assert variances[k] == pytest.approx(c * c * var_f, rel=1e-10, abs=1e-300)


@pytest.mark.parametrize("probs", [[0.2, 0.3, 0.5], [0.9, 0.05, 0.03, 0.02], [1e-3, 0.5, 0.499]])
def test_the_sampler_draws_each_category_with_its_probability(probs):
    n = 200_000
    x = draws(probs, n)
    counts = np.bincount(x.astype(np.int64), minlength=len(probs))
    assert counts.sum() == n
    assert stats.chisquare(counts, n * np.array(probs)).pvalue > 1e-4


def test_a_uniform_on_a_cumulative_sum_goes_to_the_next_category():
    cumulative = np.array([0.25, 0.5, 1.0])
    assert categorical._category(0.0, cumulative) == 0
    assert categorical._category(np.nextafter(0.25, 0), cumulative) == 0
    assert categorical._category(0.25, cumulative) == 1  # x is the first k with u < c_k
    assert categorical._category(0.5, cumulative) == 2
    assert categorical._category(1 - 2**-53, cumulative) == 2


def test_logits_are_the_log_probabilities():
    view = NaturalView(fg.Categorical([0.25, 0.75]))
    assert view.logits == (math.log(0.25), math.log(0.75))


@pytest.mark.parametrize(
    ("probs", "message"),
    [
        ([1.0], "at least 2 categories"),
        ([0.5, 0.6], "must sum to 1"),
        ([0.5, -0.5, 1.0], "probs[1] must be positive"),
        ([1e-17, 1.0 - 1e-17], "probs[0] must be at least 2**-53"),
        (0.5, "probs must be a sequence"),
    ],
)
def test_bad_probabilities_are_refused_naming_the_argument(probs, message):
    with pytest.raises((TypeError, ValueError)) as refused:
        fg.Categorical(probs)
    assert message in str(refused.value)


def test_pathwise_is_refused_and_f_takes_the_category():
    with pytest.raises(ValueError, match="discrete"):
        fg.compare(fg.Categorical([0.5, 0.5]), "square", 1000, seed=0, estimators=["score", "pathwise"])
    with pytest.raises(TypeError):
        fg.compare(fg.Categorical([0.5, 0.5]), fg.functions.sum_of_squares(), 1000, seed=0)
