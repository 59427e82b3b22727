"""The seed problem as an optimisation: fastgrad.optimize against vectorised NumPy doing the same experiment.

``min_theta E_{N(theta, 1)}[x**2]`` from theta = 2, SGD with a constant step, one draw a step, many replicates:
fastgrad on 2 threads (replicates in parallel, the steps of each fused in the kernel) against NumPy with all
replicates as one array per step (``standard_normal`` and the update on whole arrays). Figures are replicate-steps
per second (the summary's "draws/s": one draw a step).
"""

import numba
import numpy as np
import pytest

import fastgrad as fg
from fastgrad import rng

REPLICATES, STEPS, ETA = 10_000, 1_000, 0.01
#: Rounds of each seed-case row, the median of which is reported: a call of fastgrad's is about 10 ms on 2 threads,
#: and on a shared machine one round in three can lose its second core for part of it (3 rounds until 2026-12-07).
ROUNDS = 7


def _fastgrad(estimator, replicates, steps, threads=2):
    return fg.optimize(fg.Normal(2.0, 1.0), "square", "loc", estimators=[estimator], steps=steps,
                       learning_rate=ETA, replicates=replicates, seed=1, log_every=steps, threads=threads)  # fmt: skip


@numba.njit
def _bound(replicates, steps):
    """What fastgrad's own draws cost, nothing else: each replicate's normals, a stream started per block of 512."""
    state = np.empty(rng.STATE_SIZE, np.uint64)
    words = np.empty(512, np.uint64)
    rejected = np.empty(512, np.int64)
    noise = np.empty(512)
    total = 0.0
    for r in range(replicates):
        for k in range(0, steps, 512):
            rng.start_stream(state, 1, r * 2**32 + k // 512)
            rng.take_words(state, words, 512)
            rng.normals_from_words(state, words, noise, rejected, 512)
            total += noise[0]
    return total


def _numpy(estimator, generator, replicates, steps):
    theta = np.full(replicates, 2.0)
    for _ in range(steps):
        eps = generator.standard_normal(replicates)
        x = theta + eps
        theta -= ETA * (2.0 * x if estimator == "pathwise" else x * x * eps)  # score: f(x) (x - theta) / scale**2
    return theta


@pytest.mark.benchmark(group="optimisation")
@pytest.mark.parametrize("estimator", ["pathwise", "score"])
def test_fastgrad_optimize(benchmark, record, estimator):
    _fastgrad(estimator, 10, 10)  # compile or load outside the timing
    result = benchmark.pedantic(_fastgrad, args=(estimator, REPLICATES, STEPS), rounds=ROUNDS, warmup_rounds=0)
    mean = result[estimator].parameters["loc"][-1, 0]
    assert abs(mean - 2.0 * (1 - 2 * ETA) ** STEPS) < 0.05
    record(f"fastgrad optimize, 2 threads: {estimator}", REPLICATES * STEPS, threads=2)


@pytest.mark.benchmark(group="optimisation")
@pytest.mark.parametrize("estimator", ["pathwise", "score"])
def test_numpy_optimize(benchmark, record, estimator):
    generator = np.random.default_rng(1)
    theta = benchmark.pedantic(_numpy, args=(estimator, generator, REPLICATES, STEPS), rounds=ROUNDS, warmup_rounds=0)
    assert abs(theta.mean() - 2.0 * (1 - 2 * ETA) ** STEPS) < 0.05
    record(f"NumPy vectorised optimise: {estimator}", REPLICATES * STEPS, threads=1)


@pytest.mark.benchmark(group="optimisation")
def test_fastgrad_optimize_one_thread(benchmark, record):
    _fastgrad("pathwise", 10, 10, threads=1)
    benchmark.pedantic(_fastgrad, args=("pathwise", REPLICATES, STEPS, 1), rounds=ROUNDS, warmup_rounds=0)
    record("fastgrad optimize, 1 thread: pathwise", REPLICATES * STEPS, threads=1)


@pytest.mark.benchmark(group="optimisation")
def test_bound_optimize(benchmark, record):
    """The bound the 1-thread row is read against: fastgrad's normals alone, drawn as the kernel draws them."""
    _bound(2, 600)
    benchmark.pedantic(_bound, args=(REPLICATES, STEPS), rounds=ROUNDS, warmup_rounds=0)
    record("bound, 1 thread: the normals alone (a stream started a block)", REPLICATES * STEPS, threads=1)


#: Every family's optimisation, one draw a step, SGD on every parameter (their natural ones): family ->
#: (distribution, function, estimator). The joint families and the DiagNormal step a replicate at a time through the
#: vector-general filler, the Gamma through the general one.
FAMILY_CASES = {
    "DiagNormal D=2": (fg.DiagNormal([1.0, -0.5], [0.8, 1.2]), fg.functions.sum_of_squares(), "pathwise"),
    "MultivariateNormal D=2": (fg.MultivariateNormal([1.0, -0.5], [[0.8, 0.0], [0.3, 1.2]]),
                               fg.functions.sum_of_squares(), "pathwise"),
    "Categorical K=3": (fg.Categorical([0.2, 0.3, 0.5]), "square", "score"),
    "Gamma shape, rate": (fg.Gamma(2.5, 1.5), "square", "pathwise"),
    "Beta": (fg.Beta(2.5, 1.5), "square", "pathwise"),
    "Dirichlet K=3": (fg.Dirichlet([1.5, 2.0, 3.0]), fg.functions.sum_of_squares(), "pathwise"),
}  # fmt: skip
FAMILY_REPLICATES, FAMILY_STEPS = 10_000, 200


def _family(name, replicates, steps):
    distribution, function, estimator = FAMILY_CASES[name]
    return fg.optimize(distribution, function, estimators=[estimator], steps=steps, learning_rate=0.01,
                       replicates=replicates, seed=1, log_every=steps, threads=2)  # fmt: skip


@pytest.mark.benchmark(group="optimisation-families")
@pytest.mark.parametrize("name", list(FAMILY_CASES))
def test_fastgrad_optimize_family(benchmark, record, name):
    _family(name, 10, 1)  # compile or load outside the timing
    result = benchmark.pedantic(_family, args=(name, FAMILY_REPLICATES, FAMILY_STEPS), rounds=3, warmup_rounds=0)
    assert result[FAMILY_CASES[name][2]].diverged == 0
    record(f"fastgrad optimize, 2 threads: {name} ({FAMILY_CASES[name][2]})", FAMILY_REPLICATES * FAMILY_STEPS,
           threads=2)  # fmt: skip
