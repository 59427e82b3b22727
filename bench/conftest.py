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
    "seed comparison": (
        "seed article (NumPy)",
        "NumPy default_rng, vectorised",
        "Numba np.random in prange",
        "PyTorch, closed-form tensors",  # optional peers: only when installed
        "PyTorch, vmap(grad)",
        "JAX, jit(vmap(grad))",
    ),
    "normals": ("NumPy default_rng().standard_normal",),
    "variance curve": ("seed article loop (NumPy)",),
}
FASTGRAD = {
    "seed comparison": ("fastgrad compare, 2 threads", "fastgrad compare, 1 thread"),
    "normals": ("fastgrad normals-only, 2 threads", "fastgrad normals-only, 1 thread"),
    "variance curve": ("fastgrad variance_curve, 2 threads", "fastgrad variance_curve, 1 thread"),
}


@pytest.fixture
def record(benchmark):
    """Store draws/s (from the median time) and the variance ratio of a finished benchmark."""

    def store(name, n, variance_ratio=None, **extra):
        median = benchmark.stats.stats.median
        benchmark.extra_info.setdefault("draws_per_second", n / median)
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


def _rate(name):
    return MEASURED[name]["draws_per_second"] if name in MEASURED else None


def _target(write, label, value, goal, unit="x", higher=True):
    if value is None:
        return
    met = value >= goal if higher else value <= goal
    shown = f"{value:.2f}{unit}" if unit != "%" else f"{100 * value:.0f} %"
    aim = f"{goal:g}{unit}" if unit != "%" else f"{100 * goal:.0f} %"
    write(f"    {label:<66} {shown:>9}   target {'>=' if higher else '<='} {aim:<7} {'met' if met else 'NOT met'}")


def _ratio(a, b):
    ra, rb = _rate(a), _rate(b)
    return ra / rb if ra and rb else None


def pytest_terminal_summary(terminalreporter):
    if not MEASURED:
        return
    write = terminalreporter.write_line
    write("")
    write("fastgrad benchmark summary (draws/s from median times, same session)")
    for group in sorted({m["group"] for m in MEASURED.values()}):
        if group in ("memory", "startup", "targets (interleaved)", "functions (interleaved)"):
            continue
        write(f"  [{group}]")
        for name, m in MEASURED.items():
            if m["group"] == group:
                ratio = f"  variance ratio {m['variance_ratio']:.3f}" if "variance_ratio" in m else ""
                if "components_per_second" in m:
                    ratio += f"  {m['components_per_second'] / 1e6:8.1f} M components/s"
                unit = "values" if group == "math" else "draws"  # (fastgrad.math: array values per second)
                write(f"    {name:<40} {m['draws_per_second'] / 1e6:9.3f} M {unit}/s{ratio}")
        if group == "dispatch":
            for m in MEASURED.values():
                if "dispatch_overhead" in m:
                    write(
                        f"    median {m['batched_median_seconds']:.4f} s in batches vs "
                        f"{m['single_batch_median_seconds']:.4f} s as one batch: dispatch overhead "
                        f"{100 * m['dispatch_overhead']:+.2f} % (target < 2 %)"
                    )
        if group == "math":
            for function in dict.fromkeys(m["function"] for m in MEASURED.values() if m["group"] == group):
                from test_math import peer

                speedup = _ratio(f"fastgrad.math {function}", f"{peer(function)} {function}")
                if speedup:
                    write(f"    {function}: fastgrad.math vs {peer(function)}'s ufunc, one thread: {speedup:.2f}x")
        if group == "functions":
            for case in dict.fromkeys(m["case"] for m in MEASURED.values() if m["group"] == group):
                speedup = _ratio(f"fastgrad compare, 2 threads: {case}", f"NumPy vectorised: {case}")
                if speedup and case == "cos":
                    _target(write, "cos: fastgrad compare (2 threads) / NumPy vectorised", speedup, 10)
                elif speedup:
                    write(f"    {case}: fastgrad compare (2 threads) vs NumPy vectorised: {speedup:.1f}x")
        if group == "reference gradients":
            for alpha in dict.fromkeys(n.rsplit("=", 1)[1] for n in MEASURED if n.startswith("fastgrad draws + dx/da")):
                for peer in ("PyTorch", "JAX"):
                    speedup = _ratio(f"fastgrad draws + dx/da, alpha={alpha}", f"{peer} draws + dx/da, alpha={alpha}")
                    if speedup:
                        write(f"    alpha = {alpha}: fastgrad vs {peer}, draws with their dx/dalpha: {speedup:.1f}x")
        if group == "gamma pathwise":
            speedup = _ratio(
                "fastgrad estimate pathwise (shape), 2 threads", "PyTorch rsample + autograd (shape), 2 threads"
            )
            _target(write, "Gamma pathwise (shape): fastgrad / PyTorch rsample + autograd, 2 threads", speedup, 5)
        if group == "optimisation":
            for estimator in ("pathwise", "score"):
                ours = f"fastgrad optimize, 2 threads: {estimator}"
                speedup = _ratio(ours, f"NumPy vectorised optimise: {estimator}")
                if speedup:
                    _target(write, f"optimise, {estimator}: fastgrad (2 threads) / NumPy vectorised", speedup, 10)
        if group == "families":
            for family in dict.fromkeys(m["family"] for m in MEASURED.values() if m["group"] == group):
                speedup = _ratio(f"fastgrad compare, 2 threads: {family}", f"NumPy/SciPy vectorised: {family}")
                if speedup:
                    write(f"    {family}: fastgrad compare (2 threads) vs NumPy/SciPy vectorised: {speedup:.1f}x")
        if group == "variants":
            speedup = _ratio("variants: all ten", "variants: NumPy vectorised, all ten")
            if speedup:
                write(f"    all ten estimators: fastgrad (2 threads) vs NumPy vectorised: {speedup:.1f}x")
        if group == "diagnormal":
            for dim in sorted({m["dim"] for m in MEASURED.values() if m["group"] == group}):
                speedup = _ratio(f"fastgrad compare, 2 threads, D = {dim}", f"NumPy vectorised, D = {dim}")
                if speedup:
                    write(f"    D = {dim}: fastgrad compare (2 threads) vs NumPy vectorised: {speedup:.1f}x")
        for fast in FASTGRAD.get(group, ()):
            for base in BASELINES.get(group, ()):
                speedup = _ratio(fast, base)
                if speedup:
                    write(f"    {fast} vs {base}: {speedup:.1f}x")
    interleaved = MEASURED.get("interleaved targets")
    if interleaved:
        from test_targets import TARGETS

        write("  [fastgrad-only ratios, interleaved rounds: each kernel once per round, 9 rounds, medians]")
        for name, rate in interleaved["rates"].items():
            write(f"    {name:<40} {rate / 1e6:9.1f} M draws/s")
        for label, _, _, goal in TARGETS:
            value = interleaved["ratios"][label]
            if goal is None:
                write(f"    {label:<66} {value:>8.2f}x   (reference)")
            else:
                _target(write, label, value, goal, unit="%" if goal < 1 else "x")
            low, high = interleaved["spread"][label]
            if goal is not None and goal < 1:
                write(f"      round by round: {100 * low:.0f}-{100 * high:.0f} %")
            else:
                write(f"      round by round: {low:.2f}x-{high:.2f}x")
    functions = MEASURED.get("functions interleaved")
    if functions:
        from test_functions import TARGETS as FUNCTION_TARGETS

        write(
            "  [non-polynomial functions, fastgrad-only ratios: 7 interleaved rounds of 1e8 draws, medians, 2 threads]"
        )
        for name, rate in functions["rates"].items():
            write(f"    {name:<40} {rate / 1e6:9.1f} M draws/s")
        for label, _, _, goal in FUNCTION_TARGETS:
            value = functions["ratios"][label]
            if goal is None:
                write(f"    {label:<66} {value:>8.2f}x   (reported)")
            else:
                _target(write, label, value, goal, unit="%")
            low, high = functions["spread"][label]
            write(f"      round by round: {low:.2f}x-{high:.2f}x")
    fused2, fused1 = "fastgrad compare, 2 threads", "fastgrad compare, 1 thread"
    bound2, bound1 = "fastgrad normals-only, 2 threads", "fastgrad normals-only, 1 thread"
    write("  [targets, from the per-implementation benchmarks above (each baseline undisturbed)]")
    _target(
        write,
        "fused compare (2 threads) / NumPy default_rng vectorised",
        _ratio(fused2, BASELINES["seed comparison"][1]),
        12,
    )
    _target(
        write, "fused compare (2 threads) / seed article NumPy", _ratio(fused2, BASELINES["seed comparison"][0]), 15
    )
    _target(write, "fused compare / normals-only bound (2 threads)", _ratio(fused2, bound2), 0.85, unit="%")
    _target(write, "fused compare / normals-only bound (1 thread)", _ratio(fused1, bound1), 0.85, unit="%")
    _target(
        write,
        "normals-only (1 thread) / NumPy standard_normal",
        _ratio(bound1, "NumPy default_rng().standard_normal"),
        2.5,
    )
    _target(write, "fused compare: 2 threads / 1 thread", _ratio(fused2, fused1), 1.8)
    _target(write, "normals-only: 2 threads / 1 thread", _ratio(bound2, bound1), 1.8)
    for name, m in MEASURED.items():
        if "peak_rss_growth_mib" in m:
            _target(write, f"peak RSS growth (MiB): {name}", m["peak_rss_growth_mib"], 64, unit="", higher=False)
    if "first call, warm cache" in MEASURED:
        m = MEASURED["first call, warm cache"]
        _target(
            write,
            "new process, warm cache: import + small compare (s, in process)",
            m["inside_seconds"],
            1.5,
            unit="",
            higher=False,
        )
        write(f"    {'  (whole process incl. interpreter start, median)':<66} {m['seconds']:>8.2f}s")
    if "first call, read-only prefilled cache" in MEASURED:
        m = MEASURED["first call, read-only prefilled cache"]
        _target(write, "new process, read-only prefilled cache (s, whole process, median)", m["seconds"], 1.5,
                unit="", higher=False)  # fmt: skip
    if "first call, cold cache (compiles)" in MEASURED:
        write(
            f"    {'new process, cold cache: import + small compare (compiles)':<66} "
            f"{MEASURED['first call, cold cache (compiles)']['seconds']:>8.1f}s"
        )
