"""Start-up: a new process with a warm on-disk cache, and compilation from a cold one."""

import tempfile
import time

import pytest

from conftest import run_python

CODE = """
import time
t0 = time.perf_counter()
import fastgrad as fg
r = fg.compare(fg.Normal(2.0, 1.0), "square", n=100_000, seed=0)
print(time.perf_counter() - t0)
"""


@pytest.mark.benchmark(group="startup")
def test_first_call_with_warm_cache(benchmark, record):
    run_python(CODE)  # make sure the cache is warm

    def new_process():
        started = time.perf_counter()
        inside = float(run_python(CODE).split()[-1])
        return time.perf_counter() - started, inside

    whole, inside = benchmark.pedantic(new_process, rounds=5, iterations=1)
    benchmark.extra_info["import_and_compare_seconds"] = inside
    benchmark.extra_info["process_seconds"] = whole
    record("first call, warm cache", 100_000, seconds=benchmark.stats.stats.median, inside_seconds=inside)


@pytest.mark.benchmark(group="startup")
def test_first_call_with_cold_cache(benchmark, record):
    def new_process_cold():
        with tempfile.TemporaryDirectory() as cache:
            started = time.perf_counter()
            run_python(CODE, NUMBA_CACHE_DIR=cache)
            return time.perf_counter() - started

    benchmark.pedantic(new_process_cold, rounds=1, iterations=1)
    record("first call, cold cache (compiles)", 100_000, seconds=benchmark.stats.stats.median)
