"""Each newer family's compare against vectorised NumPy/SciPy doing the same estimator work, one session.

fastgrad: ``compare`` (score and pathwise for both parameters where the
pathwise estimator exists; the Poisson: score and measure-valued, its two
estimators) with f = x**2 on 2 threads. NumPy/SciPy: the same draws' law
(``Generator.gamma``, ``Generator.poisson``), the same per-draw values, and
their means and variances, on whole arrays. For the Gamma's shape the
pathwise factor needs ``dz/dshape``, which neither library offers: the
baseline takes SciPy's central difference quotient of the inverse CDF at the
draw's quantile, ``(gammaincinv(a + h, u) - gammaincinv(a - h, u)) / 2h``
(about 1e-7 relative: less accurate than fastgrad's 1e-13, and the cheapest
SciPy route).
"""

import numpy as np
import pytest
from scipy import special

import fastgrad as fg

SHAPE, RATE = 2.5, 1.5
POISSON_RATE = 3.0
N = 10**7  # fastgrad
N_NUMPY = {"gamma": 10**6, "poisson": 10**7}  # (SciPy's gammaincinv: about 1.5 us a draw)


def _fastgrad(name, n):
    if name == "gamma":
        return fg.compare(fg.Gamma(SHAPE, RATE), "square", n, seed=1, threads=2)
    return fg.compare(fg.Poisson(POISSON_RATE), "square", n, seed=1, threads=2,
                      estimators=["score", "measure-valued"])  # fmt: skip


def _numpy_gamma(generator, n):
    z = generator.gamma(SHAPE, 1.0, n)
    x = z / RATE
    f, df = x * x, 2.0 * x
    u = special.gammainc(SHAPE, z)
    h = 1e-5 * SHAPE
    grad = (special.gammaincinv(SHAPE + h, u) - special.gammaincinv(SHAPE - h, u)) / (2.0 * h)
    rows = [f * (np.log(z) - special.digamma(SHAPE)), f * (SHAPE - z) / RATE, df * grad / RATE, df * (-x / RATE)]
    return [(row.mean(), row.var(ddof=1)) for row in rows]


def _numpy_poisson(generator, n):
    x = generator.poisson(POISSON_RATE, n).astype(np.float64)
    f = x * x
    rows = [f * (x / POISSON_RATE - 1.0), (x + 1.0) ** 2 - f]
    return [(row.mean(), row.var(ddof=1)) for row in rows]


@pytest.mark.benchmark(group="families")
@pytest.mark.parametrize("name", ["gamma", "poisson"])
def test_fastgrad_family(benchmark, record, name):
    _fastgrad(name, 10**5)  # compile or load outside the timing
    result = benchmark.pedantic(_fastgrad, args=(name, N), rounds=5, warmup_rounds=1)
    assert result.n == N
    record(f"fastgrad compare, 2 threads: {name}", N, threads=2, family=name)


@pytest.mark.benchmark(group="families")
@pytest.mark.parametrize("name", ["gamma", "poisson"])
def test_numpy_family(benchmark, record, name):
    generator = np.random.default_rng(1)
    work = _numpy_gamma if name == "gamma" else _numpy_poisson
    n = N_NUMPY[name]
    rows = benchmark.pedantic(work, args=(generator, n), rounds=3, warmup_rounds=1)
    exact = fg.compare(fg.Gamma(SHAPE, RATE) if name == "gamma" else fg.Poisson(POISSON_RATE), "square", 10**4,
                       seed=0, estimators=["score", "pathwise" if name == "gamma" else "measure-valued"])  # fmt: skip
    first = exact.results[0]
    assert abs(rows[0][0] - first.analytic_mean[first.wrt[0]]) < 5 * (rows[0][1] / n) ** 0.5  # the same work
    record(f"NumPy/SciPy vectorised: {name}", n, threads=1, family=name)
