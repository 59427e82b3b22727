"""The Poisson family: its sampler (exact in law), its log-probabilities, its exact references, its refusals.

The matrix (tests/test_matrix.py) runs every estimator of the family against
these references (unbiased, exact variances, bit-identical in every run
mode); here the sampler is checked against SciPy's probabilities, and the
references against independent forms: plain sums of ``f(k) q(k) P(k)`` with
SciPy's probabilities, and the closed forms ``d/drate E[x**2] = 1 + 2 rate``,
``E[cos(w x)] = Re exp(rate (e**(i w) - 1))``.
"""

import cmath
import math

import mpmath
import numba
import numpy as np
import pytest
from scipy import stats

import fastgrad as fg
from fastgrad import _analytic, rng
from fastgrad.rng import _STIRLING_ERRORS

N = 400_000
RATES = [1e-3, 0.5, 3.5, 9.99, 10.0, 37.2, 1e3, 1e6]  # both sides of the switch from inversion to rejection at 10


@pytest.mark.parametrize("rate", RATES)
def test_draws_follow_the_poisson_law(rate):
    x = rng.poissons(3, 1, rate, N)
    assert np.array_equal(x, np.floor(x)) and x.min() >= 0
    # chi-square over the counts expected at least 5 times, the rest pooled
    counts = np.arange(x.min(), x.max() + 1)
    p = stats.poisson.pmf(counts, rate)
    observed = np.array([np.count_nonzero(x == k) for k in counts])
    expected = N * p
    keep = expected >= 5
    observed = np.append(observed[keep], N - observed[keep].sum())
    expected = np.append(expected[keep], N - expected[keep].sum())
    if expected[-1] < 1e-9:  # nothing pooled
        observed, expected = observed[:-1], expected[:-1]
    if len(expected) == 1:  # rate 1e-3: one cell of 0s, the rest pooled
        assert abs(observed[0] - expected[0]) < 5 * math.sqrt(N * p[0] * (1 - p[0]))
        return
    assert stats.chisquare(observed, expected * observed.sum() / expected.sum()).pvalue > 1e-3


def test_any_split_reads_the_same_draws():
    for rate in (2.5, 45.0):
        whole = rng.poissons(2, 9, rate, 1000)
        state = rng.stream_state(2, 9)
        first, second = np.empty(333), np.empty(667)
        rng.fill_poissons(state, rate, first)
        rng.fill_poissons(state, rate, second)
        assert np.array_equal(np.concatenate([first, second]), whole)


def test_callable_from_njit_with_the_same_draws():
    @numba.njit
    def draw(seed, stream, rate, n):
        state = rng.stream_state(seed, stream)
        out = np.empty(n)
        for i in range(n):
            out[i] = rng.poisson(state, rate)
        return out

    for rate in (0.7, 150.0):
        assert np.array_equal(draw(4, 1, rate, 500), rng.poissons(4, 1, rate, 500))


def test_the_stirling_table_is_mpmaths():
    mpmath.mp.dps = 40
    for k in range(1, 15):
        exact = mpmath.loggamma(k + 1) - (k + mpmath.mpf(1) / 2) * mpmath.log(k) + k - mpmath.log(2 * mpmath.pi) / 2
        assert _STIRLING_ERRORS[k] == float(exact)


def test_log_probabilities_are_accurate_without_cancellation():
    # near the mode k log(rate) - rate - lgamma(k + 1) cancels numbers of size rate: at 1e12 the naive form keeps
    # 4 digits; the saddle-point form keeps 14
    mpmath.mp.dps = 40
    generator = np.random.default_rng(0)
    worst = 0.0
    for rate in [1e-3, 0.7, 9.5, 10.0, 37.2, 1e3, 1e6, 1e9, 1e12]:
        spread = 6 * math.sqrt(rate) + 20
        counts = {0, 1, 2, 14, 15, 16, int(rate), int(3 * rate) + 3}
        counts |= {max(0, int(k)) for k in rate + spread * generator.uniform(-1, 1, 40)}
        for k in sorted(counts):
            exact = k * mpmath.log(rate) - rate - mpmath.loggamma(k + 1)
            error = abs(rng.poisson_log_pmf(float(k), rate) - float(exact)) / max(1.0, abs(float(exact)))
            worst = max(worst, error)
    assert worst < 2e-14


@pytest.mark.parametrize("rate, error, match", [
    (0.0, ValueError, "rate must be a finite number > 0"),
    (math.nan, ValueError, "rate must be a finite number > 0"),
    ("2", TypeError, "rate must be a finite number > 0"),
])  # fmt: skip
def test_bad_sampler_rates_are_refused_naming_rate(rate, error, match):
    with pytest.raises(error, match=match):
        rng.poissons(0, 0, rate, 10)


# --- exact references ------------------------------------------------------------------------


def summed(values, rate):
    """``E[values(k)]`` by a plain sum with SciPy's probabilities (independent of fastgrad's), normalised.

    (At rate 250 SciPy's probabilities sum to 1 - 3e-13: unnormalised, a variance of 0 would read 3e-13.)
    """
    k = np.arange(0, int(rate + 60 * math.sqrt(rate) + 200))
    p = stats.poisson.pmf(k, rate)
    return float(np.sum(p * values(k.astype(float))) / np.sum(p))


def moments(estimators, rate, function):
    return _analytic.estimator_moments(fg.Poisson(rate), fg.functions.resolve(function), estimators, ["rate"])


@pytest.mark.parametrize("rate", [0.3, 3.0, 250.0])
def test_score_references_are_the_closed_forms_and_the_sums(rate):
    found = moments(["score"], rate, "square")["score"]["rate"]
    assert found[0] == 1 + 2 * rate  # exact: rationals throughout
    second = summed(lambda k: (k * k * (k / rate - 1)) ** 2, rate)
    assert found[1] == pytest.approx(second - (1 + 2 * rate) ** 2, rel=1e-11)
    w = 1.0  # E[cos(w x)] = Re exp(rate (e**(iw) - 1)): its derivative Re (e**(iw) - 1) exp(rate (e**(iw) - 1))
    found = moments(["score"], rate, "cos")["score"]["rate"]
    s = cmath.exp(1j * w)
    assert found[0] == pytest.approx(((s - 1) * cmath.exp(rate * (s - 1))).real, rel=1e-12, abs=1e-15)
    second = summed(lambda k: (np.cos(w * k) * (k / rate - 1)) ** 2, rate)
    assert found[1] + found[0] ** 2 == pytest.approx(second, rel=1e-11)


@pytest.mark.parametrize("rate", [0.3, 3.0, 250.0])
@pytest.mark.parametrize("function", ["square", "cos", "logistic"])
def test_measure_valued_references_are_the_sums(rate, function):
    f = fg.functions.resolve(function).exact().evaluate
    mean = summed(lambda k: f(k + 1) - f(k), rate)
    h = fg.functions.resolve(function).exact()
    coupled, decoupled = (_analytic._weak_moments(fg.Poisson(rate), h, 0, coupled) for coupled in (True, False))
    scale = summed(lambda k: abs(f(k)) + abs(f(k + 1)), rate)
    assert abs(coupled[0] - mean) <= 1e-12 * scale and abs(decoupled[0] - mean) <= 1e-12 * scale
    assert coupled[1] == pytest.approx(summed(lambda k: (f(k + 1) - f(k)) ** 2, rate) - mean**2, rel=1e-10, abs=1e-14)
    plus = summed(lambda k: f(k + 1) ** 2, rate) - summed(lambda k: f(k + 1), rate) ** 2
    minus = summed(lambda k: f(k) ** 2, rate) - summed(f, rate) ** 2
    assert decoupled[1] == pytest.approx(plus + minus, rel=1e-10, abs=1e-14)


def test_pathwise_and_antithetic_are_refused_with_the_reason():
    d = fg.Poisson(2.0)
    with pytest.raises(ValueError, match="discrete"):
        fg.compare(d, "square", n=1000, seed=0, estimators=["pathwise"])
    with pytest.raises(ValueError, match="symmetric about 0; Poisson's is not"):
        fg.compare(d, "square", n=1000, seed=0, estimators=["score+antithetic"])


@pytest.mark.parametrize("rate, error, match", [
    (0.0, ValueError, "rate must be positive"),
    (1e-17, ValueError, r"rate must be between 2\*\*-53"),
    (2e9, ValueError, r"rate must be between 2\*\*-53 \(1.1e-16\) and 1e\+09"),
    (math.inf, ValueError, "rate must be finite"),
    (True, TypeError, "rate must be a real number"),
])  # fmt: skip
def test_bad_parameters_are_refused_naming_them(rate, error, match):
    with pytest.raises(error, match=match):
        fg.Poisson(rate)


def test_to_dict_and_the_command_line():
    assert fg.Poisson(2.0).to_dict() == {"family": "Poisson", "rate": 2.0}
    from fastgrad import cli

    assert cli.main(["compare", "--dist", "poisson", "--rate", "2", "--f", "square", "-n", "1e4", "--seed", "0",
                     "--estimators", "score,measure-valued"]) == 0  # fmt: skip
