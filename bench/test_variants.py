"""Estimator variants: the cost of each list, and the full seed-case table against vectorised NumPy.

Problem: ``f(x) = x**2`` under ``Normal(2, 1)``, gradient with respect to
``loc``. The NumPy baseline computes the same ten estimators on all draws held
in memory (what a NumPy user writes), with the baseline and control-variate
coefficients from a pilot of 100 000 draws, like fastgrad.
"""

import math

import numpy as np
import pytest

import fastgrad as fg

N = 2**23
ALL = [
    "score", "score+baseline(4)", "score+optimal-baseline", "score+cv", "score+loo(8)", "score+antithetic",
    "pathwise", "pathwise+antithetic", "measure-valued", "measure-valued+decoupled",
]  # fmt: skip
LISTS = {
    "classic compare (no estimators=)": None,
    "score,pathwise": ["score", "pathwise"],
    "score+optimal-baseline,score+cv,pathwise": ["score+optimal-baseline", "score+cv", "pathwise"],
    "score+loo(8),pathwise": ["score+loo(8)", "pathwise"],
    "score+antithetic,pathwise+antithetic": ["score+antithetic", "pathwise+antithetic"],
    "measure-valued,pathwise": ["measure-valued", "pathwise"],
    "all ten": ALL,
}


def numpy_all_ten(n):
    generator = np.random.default_rng(0)

    def run():
        pilot = generator.standard_normal(100_000)
        pf = (2.0 + pilot) ** 2
        b = np.sum(pf * pilot**2) / np.sum(pilot**2)
        controls = np.stack([pilot, pilot**2 - 1.0])
        coefficients = np.linalg.solve(np.cov(controls), np.cov(np.vstack([pf * pilot, controls]))[0, 1:])
        eps = generator.standard_normal(n)
        x = 2.0 + eps
        f = x * x
        fm = (2.0 - eps) ** 2
        score = f * eps
        rows = {
            "score": score,
            "score+baseline(4)": (f - 4.0) * eps,
            "score+optimal-baseline": (f - b) * eps,
            "score+cv": score - coefficients[0] * eps - coefficients[1] * (eps * eps - 1.0),
            "score+antithetic": 0.5 * (score - fm * eps),
            "pathwise": 2.0 * x,
            "pathwise+antithetic": 0.5 * (2.0 * x + 2.0 * (2.0 - eps)),
        }
        groups = eps.reshape(-1, 8)
        fg8 = f.reshape(-1, 8)
        rows["score+loo(8)"] = (8 * np.sum(fg8 * groups, axis=1) - fg8.sum(axis=1) * groups.sum(axis=1)) / 56.0
        r1 = np.sqrt(-2.0 * np.log(generator.random(n)))
        r2 = np.sqrt(-2.0 * np.log(generator.random(n)))
        c = 1.0 / math.sqrt(2.0 * math.pi)
        rows["measure-valued"] = c * ((2.0 + r1) ** 2 - (2.0 - r1) ** 2)
        rows["measure-valued+decoupled"] = c * ((2.0 + r1) ** 2 - (2.0 - r2) ** 2)
        return {name: (v.mean(), v.var(ddof=1)) for name, v in rows.items()}

    return run


@pytest.mark.benchmark(group="variants")
@pytest.mark.parametrize("name", [*LISTS, "NumPy vectorised, all ten"])
def test_variant_throughput(benchmark, record, name):
    if name.startswith("NumPy"):
        run = numpy_all_ten(N)
    else:
        estimators = LISTS[name]

        def run():
            return fg.compare(fg.Normal(2.0, 1.0), "square", N, seed=0, wrt="loc", estimators=estimators)

    run()  # compile or load outside the timing
    benchmark.pedantic(run, rounds=5, warmup_rounds=0)
    record(f"variants: {name}", N)
