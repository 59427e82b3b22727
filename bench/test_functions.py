"""Non-polynomial functions at polynomial speed: compare on functions of fastgrad.math, beside the seed case.

Two groups:

* ``functions``: each case's ``compare`` (score and pathwise, wrt loc and
  scale) on 2 threads, and vectorised NumPy doing the same estimator work
  (draws, f and f', the four per-draw rows, their means and variances) on
  one thread, each undisturbed, for the speed-ups over NumPy;
* ``functions (interleaved)``: fastgrad's own cases against its seed-shaped
  ``square`` case in interleaved rounds (each case once per round, 7
  rounds of 10**8 draws, medians), for the ratios the issue sets as targets.

The cases are one table (:data:`CASES`); ``bench/ab.py`` runs the same
shapes from two source trees, for the ratios against an older fastgrad.
"""

import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fastgrad as fg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import user_functions as uf

N = 10**7
#: Draws per timed call of the interleaved rounds: the issue's n; at 10**7 a call's fixed costs (threads,
#: the first short batch, the exact values) are a few percent of it and moved the ratios.
N_INTERLEAVED = 10**8
NORMAL = fg.Normal(1.0, 1.0)

#: case -> (distribution, function, estimators or None, NumPy's (f, f') or None)
CASES = {
    "square": (NORMAL, "square", None, (lambda x: x * x, lambda x: 2.0 * x)),
    "cos": (NORMAL, fg.functions.cos(1.0), None, (np.cos, lambda x: -np.sin(x))),
    "exp_quadratic": (
        NORMAL,
        fg.functions.exp_quadratic(0.5),
        None,
        (lambda x: np.exp(-0.5 * x * x), lambda x: -x * np.exp(-0.5 * x * x)),
    ),
    "logistic": (
        NORMAL,
        fg.functions.logistic(1.0, 0.0),
        None,
        (lambda x: 1.0 / (1.0 + np.exp(-x)), lambda x: np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x))) ** 2),
    ),
    "user fastgrad.math.exp": (NORMAL, fg.Function(uf.bump, uf.bump_derivative), None, None),
    "user math.exp": (NORMAL, fg.Function(uf.bump_libm, uf.bump_libm_derivative), None, None),
    "exponential square": (fg.Exponential(2.0), "square", None, None),
    "measure-valued,pathwise": (NORMAL, "square", ["measure-valued", "pathwise"], None),
}

#: (label, case, reference case, goal): fastgrad-only ratios of draws/s, interleaved.
TARGETS = [
    ("cos compare / square compare", "cos", "square", 0.5),
    ("exp_quadratic compare / square compare", "exp_quadratic", "square", 0.5),
    ("logistic compare / square compare", "logistic", "square", 0.5),
    ("user fastgrad.math.exp compare / square compare", "user fastgrad.math.exp", "square", 0.5),
    ("user fastgrad.math.exp / user math.exp", "user fastgrad.math.exp", "user math.exp", None),
    ("Exponential square / Normal square", "exponential square", "square", 0.8),
    ("measure-valued,pathwise / square compare", "measure-valued,pathwise", "square", None),
]


def fastgrad_case(name, threads=2):
    distribution, function, estimators, _ = CASES[name]
    extra = {"estimators": estimators} if estimators else {}

    def run(n):
        return fg.compare(distribution, function, n, seed=0, threads=threads, **extra)

    return run


_generator = np.random.default_rng(0)


def numpy_case(name):
    """Vectorised NumPy: the same draws' score and pathwise rows for loc and scale, their means and variances."""
    f, df = CASES[name][3]

    def run(n):
        eps = _generator.standard_normal(n)
        x = 1.0 + eps
        fx, dfx = f(x), df(x)
        rows = (fx * eps, fx * (eps * eps - 1.0), dfx, dfx * eps)
        return [(row.mean(), row.var()) for row in rows]

    return run


@pytest.mark.benchmark(group="functions")
@pytest.mark.parametrize("name", list(CASES))
def test_fastgrad_functions(benchmark, record, name):
    run = fastgrad_case(name)
    run(10**5)
    benchmark.pedantic(run, args=(N,), rounds=5, warmup_rounds=1)
    record(f"fastgrad compare, 2 threads: {name}", N, threads=2, case=name)


@pytest.mark.benchmark(group="functions")
@pytest.mark.parametrize("name", [name for name, case in CASES.items() if case[3] is not None])
def test_numpy_functions(benchmark, record, name):
    run = numpy_case(name)
    benchmark.pedantic(run, args=(N,), rounds=3, warmup_rounds=1)
    record(f"NumPy vectorised: {name}", N, threads=1, case=name)


@pytest.mark.benchmark(group="functions (interleaved)")
def test_functions_interleaved(benchmark, record):
    runs = {name: fastgrad_case(name) for name in CASES}
    for run in runs.values():
        run(10**5)
    seconds = {name: [] for name in runs}

    def rounds():
        for _ in range(7):
            for name, run in runs.items():
                started = time.perf_counter()
                run(N_INTERLEAVED)
                seconds[name].append(time.perf_counter() - started)

    benchmark.pedantic(rounds, rounds=1, iterations=1)
    rate = {name: N_INTERLEAVED / float(np.median(times)) for name, times in seconds.items()}
    ratios = {label: rate[a] / rate[b] for label, a, b, _ in TARGETS}
    spread = {}
    for label, a, b, _ in TARGETS:
        per_round = [tb / ta for ta, tb in zip(seconds[a], seconds[b], strict=True)]
        spread[label] = (min(per_round), max(per_round))
    benchmark.extra_info.update(draws_per_second=rate, ratios=ratios, per_round_min_max=spread)
    record("functions interleaved", N_INTERLEAVED, interleaved=True, ratios=ratios, rates=rate, spread=spread)
