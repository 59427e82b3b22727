"""The variance curve (seed case) in fastgrad and in the seed article's style: one NumPy call per repeat.

Both compute, for every sample size n, ``REPEATS`` independent n-draw
score-function and pathwise estimates of d/dtheta E[x**2] under N(2, 1)
and the variance of each across repeats. fastgrad also computes the
intervals, kurtoses and the ratio's co-moments.
"""

import numpy as np
import pytest

import fastgrad as fg

from conftest import MEASURED

THETA = 2.0
SIZES = (10, 100, 1_000, 10_000, 100_000)
REPEATS = 100
DRAWS = REPEATS * sum(SIZES)
BASELINE = "seed article loop (NumPy)"


def seed_article_loop():
    """The article's way: a fresh np.random.normal array per repeat, estimates by array arithmetic."""
    variances = []
    for n in SIZES:
        score = np.empty(REPEATS)
        pathwise = np.empty(REPEATS)
        for r in range(REPEATS):
            x = np.random.normal(THETA, 1.0, n)  # noqa: NPY002 - the article's code, on purpose
            score[r] = np.mean(x**2 * (x - THETA))
            pathwise[r] = np.mean(2 * x)
        variances.append((score.var(ddof=1), pathwise.var(ddof=1)))
    return variances


def fastgrad_curve(threads):
    def run():
        curve = fg.variance_curve(fg.Normal(THETA, 1.0), "square", SIZES, REPEATS, seed=0, wrt="loc", threads=threads)
        return list(zip(curve.variance["score"]["loc"], curve.variance["pathwise"]["loc"], strict=True))

    return run


IMPLEMENTATIONS = {
    BASELINE: seed_article_loop,  # first, so the fastgrad entries can store their speed-up over it
    "fastgrad variance_curve, 2 threads": fastgrad_curve(2),
    "fastgrad variance_curve, 1 thread": fastgrad_curve(1),
}


@pytest.mark.benchmark(group="variance curve")
@pytest.mark.parametrize("name", list(IMPLEMENTATIONS))
def test_variance_curve(benchmark, record, name):
    implementation = IMPLEMENTATIONS[name]
    implementation()  # compile or load from the cache outside the timing
    rounds = 5 if name == BASELINE else 15
    variances = benchmark.pedantic(implementation, rounds=rounds, warmup_rounds=0)
    for n, (score, pathwise) in zip(SIZES, variances, strict=True):
        # 100 repeats: the log of a sample variance has a standard error of about sqrt(2 / 100) = 0.14 (more for
        # heavy tails); a factor of 2 either way is over 4 of them.
        assert 0.5 < score * n / 87.0 < 2.0 and 0.5 < pathwise * n / 4.0 < 2.0
    extra = {"threads": 1 if "1 thread" in name or name == BASELINE else 2, "sizes": list(SIZES), "repeats": REPEATS}
    if name != BASELINE and BASELINE in MEASURED:
        extra["speedup_over_seed_article_loop"] = (DRAWS / benchmark.stats.stats.median) / MEASURED[BASELINE][
            "draws_per_second"
        ]
    record(name, DRAWS, **extra)
