"""Shared benchmark plumbing: record draws/s per implementation, print speed-ups at the end.

Run with ``pytest bench --benchmark-only``. Every implementation runs in the
same session as the ones it is compared with, so the ratios printed at the
end are measured under the same conditions.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: name -> {"draws_per_second": ..., "variance_ratio": ..., "group": ...}
MEASURED = {}

#: Baselines the fused kernel is compared with in the summary, per group.
BASELINES = {
    "seed comparison": ("seed article (NumPy)", "NumPy default_rng, vectorised", "Numba np.random in prange"),
}
FASTGRAD = {"seed comparison": ("fastgrad compare, 2 threads", "fastgrad compare, 1 thread")}


@pytest.fixture
def record(benchmark):
    """Store draws/s (from the median time) and the variance ratio of a finished benchmark."""

    def store(name, n, variance_ratio=None, **extra):
        median = benchmark.stats.stats.median
        benchmark.extra_info["draws_per_second"] = n / median
        if variance_ratio is not None:
            benchmark.extra_info["variance_ratio"] = variance_ratio
        benchmark.extra_info.update(extra)
        MEASURED[name] = {"group": benchmark.group, **benchmark.extra_info}

    return store


def run_python(code, **env):
    environment = dict(os.environ, **{k: str(v) for k, v in env.items()})
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, cwd=ROOT)
    if result.returncode != 0:
        raise AssertionError(result.stderr)
    return result.stdout


def pytest_terminal_summary(terminalreporter):
    if not MEASURED:
        return
    write = terminalreporter.write_line
    write("")
    write("fastgrad benchmark summary (draws/s from median times, same session)")
    for group in sorted({m["group"] for m in MEASURED.values()}):
        if group == "memory":
            continue
        write(f"  [{group}]")
        for name, m in MEASURED.items():
            if m["group"] == group:
                ratio = f"  variance ratio {m['variance_ratio']:.3f}" if "variance_ratio" in m else ""
                write(f"    {name:<36} {m['draws_per_second'] / 1e6:9.1f} M draws/s{ratio}")
        for fast in FASTGRAD.get(group, ()):
            if fast not in MEASURED:
                continue
            for base in BASELINES.get(group, ()):
                if base in MEASURED:
                    speedup = MEASURED[fast]["draws_per_second"] / MEASURED[base]["draws_per_second"]
                    write(f"    {fast} vs {base}: {speedup:.1f}x")
        one, two = "fastgrad compare, 1 thread", "fastgrad compare, 2 threads"
        if group == "seed comparison" and one in MEASURED and two in MEASURED:
            scaling = MEASURED[two]["draws_per_second"] / MEASURED[one]["draws_per_second"]
            write(f"    thread scaling, 2 threads / 1 thread: {scaling:.2f}x")
    memory = [m for m in MEASURED.values() if "peak_rss_growth_mib" in m]
    for m in memory:
        write(
            f"  [memory] peak RSS, n = 1e9 minus n = 1e6: {m['peak_rss_growth_mib']:.1f} MiB (limit 64 MiB); "
            f"kernel {m['kernel_draws_per_second'] / 1e6:.0f} M draws/s"
        )
