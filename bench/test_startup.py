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


@pytest.mark.benchmark(group="startup")
def test_first_call_from_a_read_only_prefilled_cache(benchmark, record, tmp_path):
    """The read-only install (issue 16, fault 7): the package's own cache filled by ``fastgrad warmup``, then
    made read-only, and read by a process that cannot write there (as root: without CAP_DAC_OVERRIDE)."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import fastgrad

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from test_cache import _read_only, _without_override, _writable

    site = tmp_path / "site"
    shutil.copytree(Path(fastgrad.__file__).parent, site / "fastgrad", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env.update(PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1", HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path))
    warm = [sys.executable, "-m", "fastgrad", "warmup", "--families", "normal", "--functions", "square"]
    subprocess.run(warm, check=True, capture_output=True, env=env, cwd=site)
    _read_only(site)

    def new_process():
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, cwd=site,
                                preexec_fn=_without_override)  # fmt: skip
        assert result.returncode == 0 and "warning" not in result.stderr, result.stderr
        return time.perf_counter() - started, float(result.stdout.split()[-1])

    try:
        _, inside = benchmark.pedantic(new_process, rounds=5, iterations=1)
    finally:
        _writable(site)
    benchmark.extra_info["import_and_compare_seconds"] = inside
    record("first call, read-only prefilled cache", 100_000, seconds=benchmark.stats.stats.median,
           inside_seconds=inside)  # fmt: skip
