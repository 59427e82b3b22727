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
import sys

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


#: The optimisation tests here and tests/test_cli.py's Categorical share their kernels (and the pilot's) in one worker.
OPTIMIZE_GROUP = pytest.mark.xdist_group("categorical-optimize")


@OPTIMIZE_GROUP
def test_optimize_moves_the_logits_one_unbiased_step_at_a_time_on_any_thread_count():
    """SGD on the logits: the probabilities become the softmax of ``log(probs) - eta g``.

    So ``log(p'_k / p'_0) = log(p_k / p_0) - eta (g_k - g_0)``, linear in the estimate ``g``: its mean over
    replicates after one step is the exact gradient's, ``g_k = probs[k] (f(k) - F)``, within 5 standard errors
    (score, the optimal baseline, measure-valued). The kernel parameters rebuilt each step are those of a
    Categorical of the moved probabilities (its ``theta``), and a run is the same on one thread and on two.
    """
    generator = np.random.default_rng(4)
    for size in (2, 3, 17):
        values = generator.dirichlet(np.ones(size))
        values = values / math.fsum(values)
        rebuilt = tuple(np.full(size, np.nan) for _ in range(3))
        categorical._theta_into(values, rebuilt)
        assert [row.tolist() for row in rebuilt] == [row.tolist() for row in fg.Categorical(values.tolist()).theta]
    probs, eta, replicates = np.array([0.2, 0.3, 0.5]), 0.5, 4000
    fx = np.arange(3.0) ** 2
    exact = probs * (fx - probs @ fx)
    expected = np.log(probs[1:] / probs[0]) - eta * (exact[1:] - exact[0])
    estimators = ["score", "score+optimal-baseline", "measure-valued"]
    one = fg.optimize(fg.Categorical(probs.tolist()), "square", estimators=estimators, steps=1, learning_rate=eta,
                      replicates=replicates, seed=2, threads=1)  # fmt: skip
    for name in estimators:
        final = one[name].final
        assert np.allclose(final.sum(axis=1), 1.0, rtol=0, atol=4e-16)
        moved = np.log(final[:, 1:] / final[:, :1])
        stderr = moved.std(axis=0, ddof=1) / math.sqrt(replicates)
        assert np.all(np.abs(moved.mean(axis=0) - expected) < 5 * stderr), (name, moved.mean(axis=0), expected)
        # the logged logits are the log-probabilities, and the exact objective sum_k probs[k] f(k)
        assert one[name].parameters["logits[2]"][-1, 0] == pytest.approx(np.mean(np.log(final[:, 2])), rel=1e-14)
        assert one[name].objective[-1, 0] == pytest.approx(np.mean(final @ fx), rel=1e-14)
    # the second step draws its categories at the first step's probabilities: its move is unbiased there
    two = fg.optimize(fg.Categorical(probs.tolist()), "square", estimators=estimators, steps=2, learning_rate=eta,
                      replicates=replicates, seed=2, threads=1)  # fmt: skip
    for name in estimators:
        first, second = one[name].final, two[name].final
        gradient = first * (fx - (first @ fx)[:, None])
        move = (np.log(second[:, 1:] / second[:, :1]) - np.log(first[:, 1:] / first[:, :1])
                + eta * (gradient[:, 1:] - gradient[:, :1]))  # fmt: skip
        assert np.all(np.abs(move.mean(axis=0)) < 5 * move.std(axis=0, ddof=1) / math.sqrt(replicates)), name
    several = dict(estimators=["score+optimal-baseline"], steps=30, learning_rate=0.05, replicates=40, seed=3,
                   log_every=10, optimizer="adam")  # fmt: skip
    a = fg.optimize(fg.Categorical(probs.tolist()), "square", threads=1, **several)
    b = fg.optimize(fg.Categorical(probs.tolist()), "square", threads=2, **several)
    assert a["score+optimal-baseline"].final.tolist() == b["score+optimal-baseline"].final.tolist()
    alone = fg.optimize(fg.Categorical(probs.tolist()), "square", threads=1, **{**several, "replicates": 1},
                        first_replicate=17)  # fmt: skip
    assert alone["score+optimal-baseline"].final.tolist() == a["score+optimal-baseline"].final[17:18].tolist()


@OPTIMIZE_GROUP
def test_optimize_resumes_and_merges_shards_bit_identically(tmp_path, monkeypatch):
    """A step's categories come from a stream of its own: a run stopped between segments and resumed from its
    checkpoint, and two shards merged, give the one run's numbers."""
    module = sys.modules["fastgrad.optimize"]
    monkeypatch.setattr(module, "TARGET_SEGMENT_SECONDS", 0.001)
    monkeypatch.setattr(module, "FIRST_SEGMENT", 1000)  # (a first segment of 33 steps, not all of them)
    kwargs = dict(estimators=["score+optimal-baseline"], steps=3000, learning_rate=0.05, replicates=30, seed=3,
                  log_every=100, optimizer="adam", threads=1)  # fmt: skip
    distribution = fg.Categorical([0.2, 0.3, 0.5])
    clean = fg.optimize(distribution, "square", **kwargs)
    segments, show = [], module._show_progress

    def stop_after_two_segments(job, *args):
        segments.append(args[0])
        if len(segments) == 2:
            job.stop_reason = "SIGINT"
        show(job, *args)

    monkeypatch.setattr(module, "_show_progress", stop_after_two_segments)
    path = tmp_path / "opt.ckpt"
    stopped = fg.optimize(distribution, "square", checkpoint=path, **kwargs)
    monkeypatch.setattr(module, "_show_progress", show)
    assert stopped.interrupted == "SIGINT" and 0 < stopped.steps_done < 3000
    resumed = fg.optimize(distribution, "square", checkpoint=path, **kwargs)
    name = "score+optimal-baseline"
    assert resumed[name].final.tolist() == clean[name].final.tolist()
    assert resumed[name].objective.tolist() == clean[name].objective.tolist()
    merged = fg.merge([fg.optimize(distribution, "square", shard=(i, 2), **kwargs) for i in range(2)])
    assert merged[name].final.tolist() == clean[name].final.tolist()
    assert merged[name].parameters["logits[1]"].tolist() == clean[name].parameters["logits[1]"].tolist()
