"""Each newer family's compare against vectorised NumPy/SciPy doing the same estimator work, one session.

fastgrad: ``compare`` (score and pathwise for every parameter where the
pathwise estimator exists; the Poisson and the Categorical: score and
measure-valued, their two estimators) with f = x**2 (the Dirichlet: sum of
squares; the MultivariateNormal too) on 2 threads. NumPy/SciPy: the same draws' law (``Generator.gamma``,
``Generator.poisson``, ``Generator.choice``; a Beta or Dirichlet as
normalised Gamma draws, as fastgrad makes them; a MultivariateNormal as
``loc + L eps`` with SciPy's triangular solve for its scores), the same per-draw values,
and their means and variances, on whole arrays. For a Gamma shape (and a
Beta's or Dirichlet's concentration) the pathwise factor needs
``dz/dshape``, which neither library offers: the baseline takes SciPy's
central difference quotient of the inverse CDF at the draw's quantile,
``(gammaincinv(a + h, u) - gammaincinv(a - h, u)) / 2h`` (about 1e-7
relative: less accurate than fastgrad's 1e-13, and the cheapest SciPy route).
"""

import numpy as np
import pytest
from scipy import special

import fastgrad as fg

SHAPE, RATE = 2.5, 1.5
POISSON_RATE = 3.0
BETA = (2.5, 1.5)
CONCENTRATION = (1.5, 2.0, 3.0)
PROBS = (0.1, 0.2, 0.3, 0.4)
LOC = (1.0, -0.5, 2.0)
SCALE_TRIL = ((0.8, 0.0, 0.0), (0.3, 1.2, 0.0), (-0.4, 0.5, 0.7))
N = 10**7  # fastgrad
N_NUMPY = {"gamma": 10**6, "poisson": 10**7, "beta": 10**6, "dirichlet": 10**6,
           "categorical": 10**7, "mvn": 10**6}  # (gammaincinv: about 1.5 us a draw)  # fmt: skip
NAMES = ["gamma", "poisson", "beta", "dirichlet", "categorical", "mvn"]


def _distribution(name):
    return {"gamma": fg.Gamma(SHAPE, RATE), "poisson": fg.Poisson(POISSON_RATE), "beta": fg.Beta(*BETA),
            "dirichlet": fg.Dirichlet(CONCENTRATION), "categorical": fg.Categorical(PROBS),
            "mvn": fg.MultivariateNormal(LOC, SCALE_TRIL)}[name]  # fmt: skip


def _function(name):
    return fg.functions.sum_of_squares() if name in ("dirichlet", "mvn") else "square"


def _fastgrad(name, n):
    if name in ("poisson", "categorical"):  # (discrete: score and measure-valued, their two estimators)
        return fg.compare(_distribution(name), "square", n, seed=1, threads=2, estimators=["score", "measure-valued"])
    return fg.compare(_distribution(name), _function(name), n, seed=1, threads=2)


def _shape_grad(alpha, z):
    """SciPy's central difference of the inverse CDF at each draw's quantile: ``dz/dalpha`` to about 1e-7."""
    u = special.gammainc(alpha, z)
    h = 1e-5 * alpha
    return (special.gammaincinv(alpha + h, u) - special.gammaincinv(alpha - h, u)) / (2.0 * h)


def _numpy_gamma(generator, n):
    z = generator.gamma(SHAPE, 1.0, n)
    x = z / RATE
    f, df = x * x, 2.0 * x
    grad = _shape_grad(SHAPE, z)
    rows = [f * (np.log(z) - special.digamma(SHAPE)), f * (SHAPE - z) / RATE, df * grad / RATE, df * (-x / RATE)]
    return [(row.mean(), row.var(ddof=1)) for row in rows]


def _numpy_poisson(generator, n):
    x = generator.poisson(POISSON_RATE, n).astype(np.float64)
    f = x * x
    rows = [f * (x / POISSON_RATE - 1.0), (x + 1.0) ** 2 - f]
    return [(row.mean(), row.var(ddof=1)) for row in rows]


def _numpy_joint(generator, n, alphas, size):
    """Beta (``size`` 1: f of the first component) or Dirichlet: score and pathwise rows of every concentration."""
    g = np.array([generator.gamma(a, 1.0, n) for a in alphas])
    total = g.sum(axis=0)
    x = g / total
    f = np.sum(x[:size] ** 2, axis=0)
    grads = 2.0 * x[:size]
    dot = np.sum(x[:size] * grads, axis=0)
    digamma_total = special.digamma(sum(alphas))
    rows = [f * (np.log(g[k]) - np.log(total) + digamma_total - special.digamma(a)) for k, a in enumerate(alphas)]
    for k, a in enumerate(alphas):
        rows.append(_shape_grad(a, g[k]) / total * ((grads[k] if k < size else 0.0) - dot))
    return [(row.mean(), row.var(ddof=1)) for row in rows]


def _numpy_categorical(generator, n):
    """Score and measure-valued rows of every probability: f(x) (1[x = k]/p_k - 1) and f(k) - f(x)."""
    probs = np.array(PROBS)
    x = generator.choice(probs.size, n, p=probs)
    f = (x * x).astype(np.float64)
    rows = [f * ((x == k) / p - 1.0) for k, p in enumerate(probs)]
    rows += [float(k * k) - f for k in range(probs.size)]
    return [(row.mean(), row.var(ddof=1)) for row in rows]


def _numpy_mvn(generator, n):
    """Score and pathwise rows of every loc_a and L_ab: f w_a, f (w_a eps_b - delta_ab / L_aa); 2 x_a, 2 x_a eps_b."""
    from scipy.linalg import solve_triangular

    scale = np.array(SCALE_TRIL)
    eps = generator.standard_normal((len(LOC), n))
    x = np.array(LOC)[:, None] + scale @ eps
    f = np.sum(x * x, axis=0)
    w = solve_triangular(scale, eps, trans="T", lower=True)
    lower = [(a, b) for a in range(len(LOC)) for b in range(a + 1)]
    rows = [f * w[a] for a in range(len(LOC))]
    rows += [f * (w[a] * eps[b] - (1.0 / scale[a, a] if a == b else 0.0)) for a, b in lower]
    rows += [2.0 * x[a] for a in range(len(LOC))] + [2.0 * x[a] * eps[b] for a, b in lower]
    return [(row.mean(), row.var(ddof=1)) for row in rows]


def _numpy_beta(generator, n):
    return _numpy_joint(generator, n, BETA, 1)


def _numpy_dirichlet(generator, n):
    return _numpy_joint(generator, n, CONCENTRATION, len(CONCENTRATION))


@pytest.mark.benchmark(group="families")
@pytest.mark.parametrize("name", NAMES)
def test_fastgrad_family(benchmark, record, name):
    _fastgrad(name, 10**5)  # compile or load outside the timing
    result = benchmark.pedantic(_fastgrad, args=(name, N), rounds=5, warmup_rounds=1)
    assert result.n == N
    record(f"fastgrad compare, 2 threads: {name}", N, threads=2, family=name)


@pytest.mark.benchmark(group="families")
@pytest.mark.parametrize("name", NAMES)
def test_numpy_family(benchmark, record, name):
    generator = np.random.default_rng(1)
    work = {"gamma": _numpy_gamma, "poisson": _numpy_poisson, "beta": _numpy_beta, "dirichlet": _numpy_dirichlet,
            "categorical": _numpy_categorical, "mvn": _numpy_mvn}[name]  # fmt: skip
    n = N_NUMPY[name]
    rows = benchmark.pedantic(work, args=(generator, n), rounds=3, warmup_rounds=1)
    second = "measure-valued" if name in ("poisson", "categorical") else "pathwise"
    exact = fg.compare(_distribution(name), _function(name), 10**4, seed=0, estimators=["score", second])
    first = exact.results[0]
    truth = np.ravel(first.analytic_mean[first.wrt[0]])[0]
    assert abs(rows[0][0] - truth) < 5 * (rows[0][1] / n) ** 0.5  # the same work
    record(f"NumPy/SciPy vectorised: {name}", n, threads=1, family=name)
