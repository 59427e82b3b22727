"""Draws are never stored: peak memory does not grow with n."""

import pytest

CODE = """
import resource, fastgrad as fg
fg.compare(fg.Normal(2.0, 1.0), "square", n={n}, seed=0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
"""


@pytest.mark.subprocess
def test_peak_memory_is_flat_in_n(python_runner):
    small = int(python_runner(CODE.format(n=10**6)).split()[-1])
    large = int(python_runner(CODE.format(n=10**8)).split()[-1])
    assert large - small < 64 * 1024, f"peak RSS grew by {(large - small) / 1024:.0f} MiB"


VARIANTS = """
import resource, fastgrad as fg
fg.compare(fg.Normal(2.0, 1.0), "square", n={n}, seed=0, wrt="loc",
           estimators=["score+optimal-baseline", "score+loo(8)", "pathwise+antithetic", "measure-valued+decoupled"])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
"""


@pytest.mark.subprocess
def test_estimator_variants_do_not_store_the_draws(python_runner):
    small = int(python_runner(VARIANTS.format(n=8 * 10**5)).split()[-1])
    large = int(python_runner(VARIANTS.format(n=8 * 10**7)).split()[-1])
    assert large - small < 64 * 1024, f"peak RSS grew by {(large - small) / 1024:.0f} MiB"
