"""DiagNormal throughput against vectorised NumPy, D = 1 ... 1000, and flat memory at D = 1000.

Problem: ``f(x) = sum_i x_i**2`` under ``DiagNormal(loc = 2, scale = 1)``, both
estimators, gradients with respect to every ``loc_i`` and ``scale_i``,
per-component means and variances. Each size does the same number of
normal components (``n * D = 1.6e7``).
"""

import numpy as np
import pytest

import fastgrad as fg

from conftest import run_python

COMPONENTS = 16_000_000
DIMS = (1, 10, 100, 1000)


def numpy_vectorised(dim, n):
    """What a NumPy user writes: all draws as an (n, D) array, per-component variances."""
    generator = np.random.default_rng(0)
    loc, scale = np.full(dim, 2.0), np.ones(dim)

    def run():
        eps = generator.standard_normal((n, dim))
        x = loc + scale * eps
        f = np.einsum("ij,ij->i", x, x)[:, None]
        score_loc = (f * eps / scale).var(axis=0)
        score_scale = (f * (eps * eps - 1.0) / scale).var(axis=0)
        path_loc = (2.0 * x).var(axis=0)
        path_scale = (2.0 * x * eps).var(axis=0)
        return score_loc.sum() / path_loc.sum(), score_scale.sum() / path_scale.sum()

    return run


def fastgrad_compare(dim, n):
    d = fg.DiagNormal(np.full(dim, 2.0), np.ones(dim))
    function = fg.functions.sum_of_squares()

    def run():
        r = fg.compare(d, function, n=n, seed=0)
        return r.total_variance_ratio["loc"], r.total_variance_ratio["scale"]

    return run


@pytest.mark.benchmark(group="diagnormal")
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("implementation", ["fastgrad compare, 2 threads", "NumPy vectorised"])
def test_diagnormal_throughput(benchmark, record, implementation, dim):
    n = COMPONENTS // dim
    run = (fastgrad_compare if implementation.startswith("fastgrad") else numpy_vectorised)(dim, n)
    run()  # compile or load outside the timing
    loc_ratio, _ = benchmark.pedantic(run, rounds=7, warmup_rounds=0)
    assert loc_ratio > 1
    components = n * dim
    record(f"{implementation}, D = {dim}", n, components_per_second=components / benchmark.stats.stats.median, dim=dim)


MEMORY = """
import resource, numpy as np, fastgrad as fg
d = fg.DiagNormal(np.full(1000, 2.0), np.ones(1000))
r = fg.compare(d, fg.functions.sum_of_squares(), n={n}, seed=0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.benchmark(group="memory")
def test_diagnormal_memory_flat_at_d_1000(benchmark, record):
    small = int(run_python(MEMORY.format(n=1_000)))
    large = benchmark.pedantic(lambda: int(run_python(MEMORY.format(n=200_000))), rounds=1, iterations=1)
    growth = (large - small) / 1024
    record("fastgrad DiagNormal D = 1000, n = 2e5 vs 1e3", 200_000, peak_rss_growth_mib=growth)
    assert growth < 64
