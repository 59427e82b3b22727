"""Draws are never stored: peak RSS at n = 1e9 stays within 64 MiB of n = 1e6."""

import pytest

from conftest import run_python

CODE = """
import resource, time, fastgrad as fg
t = time.perf_counter()
r = fg.compare(fg.Normal(2.0, 1.0), "square", n={n}, seed=0, wrt="loc")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, r.draws_per_second, r.variance_ratio["loc"])
"""


@pytest.mark.benchmark(group="memory")
def test_peak_rss_flat_up_to_a_billion_draws(benchmark, record):
    small = int(run_python(CODE.format(n=10**6)).split()[0])

    def large():
        return run_python(CODE.format(n=10**9)).split()

    rss, draws_per_second, ratio = benchmark.pedantic(large, rounds=1, iterations=1)
    growth_mib = (int(rss) - small) / 1024
    benchmark.extra_info["peak_rss_n1e6_mib"] = small / 1024
    benchmark.extra_info["peak_rss_n1e9_mib"] = int(rss) / 1024
    record(
        "fastgrad compare, n = 1e9",
        10**9,
        variance_ratio=float(ratio),
        peak_rss_growth_mib=growth_mib,
        kernel_draws_per_second=float(draws_per_second),
    )
    assert growth_mib < 64
