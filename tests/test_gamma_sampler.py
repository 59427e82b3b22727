"""The Gamma sampler (fastgrad.rng.standard_gamma): exact in law, reproducible, and refusing bad shapes."""

import math

import numba
import numpy as np
import pytest
from scipy import special, stats

from fastgrad import rng

N = 200_000
SMALLEST_NORMAL = 2.2250738585072014e-308


@pytest.fixture(scope="module", params=[0.5, 1.0, 7.5, 1e4])
def draws(request):
    alpha = request.param
    return alpha, rng.standard_gammas(11, 3, alpha, N)


def test_kolmogorov_smirnov_against_scipy(draws):
    alpha, x = draws
    assert stats.kstest(x, stats.gamma(alpha).cdf).pvalue > 1e-3


def test_mean_and_variance_within_five_standard_errors(draws):
    alpha, x = draws
    # Gamma(a): mean a, variance a, central fourth moment 3a**2 + 6a, so Var(s**2) is about (2a**2 + 6a) / n
    assert abs(x.mean() - alpha) < 5 * math.sqrt(alpha / N)
    assert abs(x.var() - alpha) < 5 * math.sqrt((2 * alpha**2 + 6 * alpha) / N)


def test_a_tiny_shape_is_exact_through_its_underflow():
    # at alpha = 1e-3 about half the draws lie below the smallest normal double: the fraction that does is
    # binomial with P(alpha, smallest normal), and the rest, mapped through the CDF, are uniform above it
    alpha = 1e-3
    x = rng.standard_gammas(5, 0, alpha, N)
    p = special.gammainc(alpha, SMALLEST_NORMAL)
    below = np.count_nonzero(x < SMALLEST_NORMAL)
    assert abs(below - N * p) < 5 * math.sqrt(N * p * (1 - p))
    u = (special.gammainc(alpha, x[x >= SMALLEST_NORMAL]) - p) / (1 - p)
    assert stats.kstest(u, "uniform").pvalue > 1e-3


def test_any_split_reads_the_same_draws():
    whole = rng.standard_gammas(2, 9, 0.7, 1000)
    state = rng.stream_state(2, 9)
    first, second = np.empty(333), np.empty(667)
    rng.fill_gammas(state, 0.7, first)
    rng.fill_gammas(state, 0.7, second)
    assert np.array_equal(np.concatenate([first, second]), whole)


def test_callable_from_njit_with_the_same_draws():
    @numba.njit
    def draw(seed, stream, alpha, n):
        state = rng.stream_state(seed, stream)
        out = np.empty(n)
        for i in range(n):
            out[i] = rng.standard_gamma(state, alpha)
        return out

    assert np.array_equal(draw(4, 1, 3.25, 500), rng.standard_gammas(4, 1, 3.25, 500))


def test_streams_and_shapes_give_different_draws():
    a = rng.standard_gammas(0, 0, 2.0, 100)
    assert not np.array_equal(a, rng.standard_gammas(0, 1, 2.0, 100))
    assert not np.array_equal(a, rng.standard_gammas(1, 0, 2.0, 100))
    assert not np.array_equal(a, rng.standard_gammas(0, 0, 2.5, 100))


@pytest.mark.parametrize(
    "alpha, error",
    [(0.0, ValueError), (-1.0, ValueError), (math.inf, ValueError), (math.nan, ValueError), ("2", TypeError),
     (True, TypeError)],
)  # fmt: skip
def test_bad_shapes_are_refused_naming_alpha(alpha, error):
    with pytest.raises(error, match="alpha must be a finite number > 0"):
        rng.standard_gammas(0, 0, alpha, 10)
