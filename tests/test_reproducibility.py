"""Same seed, same numbers, bit for bit: on any number of threads, in any batch size, in any process."""

import json

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _kernels, rng

N = 5 * rng.CHUNK_SIZE + 12_345  # six chunks, the last partial


def bits(comparison):
    """Every number of a comparison, as exact hex strings."""
    out = {}
    for estimator in ("score", "pathwise"):
        result = getattr(comparison, estimator)
        for field in ("mean", "variance", "third_moment", "fourth_moment"):
            for p, value in getattr(result, field).items():
                out[f"{estimator}.{field}.{p}"] = float(value).hex()
    for p, value in comparison.variance_ratio.items():
        out[f"ratio.{p}"] = float(value).hex()
    return out


def test_same_seed_same_numbers_different_seed_different_numbers():
    a = fg.compare(fg.Normal(2.0, 1.0), "square", n=N, seed=123)
    b = fg.compare(fg.Normal(2.0, 1.0), "square", n=N, seed=123)
    c = fg.compare(fg.Normal(2.0, 1.0), "square", n=N, seed=124)
    assert bits(a) == bits(b)
    assert bits(a)["score.mean.loc"] != bits(c)["score.mean.loc"]


def test_thread_count_does_not_change_a_bit():
    one = fg.compare(fg.Normal(2.0, 1.0), "cos", n=N, seed=7, threads=1)
    two = fg.compare(fg.Normal(2.0, 1.0), "cos", n=N, seed=7, threads=2)
    assert one.threads == 1 and two.threads == 2
    assert bits(one) == bits(two)


def test_batch_size_does_not_change_a_bit(monkeypatch):
    reference = fg.compare(fg.Normal(2.0, 1.0), "quartic", n=N, seed=3)
    for batch in (1, 2, 5):
        monkeypatch.setattr(_kernels, "BATCH_CHUNKS", batch)
        assert bits(fg.compare(fg.Normal(2.0, 1.0), "quartic", n=N, seed=3)) == bits(reference)


def test_a_longer_run_starts_with_the_same_draws():
    # Chunk c always reads stream (seed, c): a run of n draws is a prefix of a longer run.
    short = fg.estimate(fg.Normal(), "square", n=rng.CHUNK_SIZE, seed=2, estimator="pathwise", wrt="scale")
    eps = rng.standard_normals(2, 0, rng.CHUNK_SIZE)
    assert short.mean["scale"] == pytest.approx(np.mean(2 * eps * eps), rel=1e-12)


@pytest.mark.subprocess
def test_fresh_processes_with_1_and_2_threads_agree_bit_for_bit(python_runner):
    code = (
        "import json, fastgrad as fg\n"
        f"r = fg.compare(fg.Normal(2.0, 1.0), 'square', n={N}, seed=99)\n"
        "import numba\n"
        "print(json.dumps({'threads': numba.get_num_threads(), 'd': r.to_dict()}, default=str))\n"
    )

    def run(threads):
        out = json.loads(python_runner(code, NUMBA_NUM_THREADS=threads).strip().splitlines()[-1])
        assert out["threads"] == threads
        data = out["d"]
        for key in ("seconds", "draws_per_second", "threads"):
            data.pop(key)
        return json.dumps(data, sort_keys=True)

    assert run(1) == run(2)


CACHE_PROBE = """
import fastgrad as fg
from fastgrad import _kernels
fg.compare(fg.Normal(2.0, 1.0), "square", n=1000, seed=0)
for dispatcher in (_kernels._cached_kernel,):
    print(sum(dispatcher.stats.cache_hits.values()), sum(dispatcher.stats.cache_misses.values()))
"""


@pytest.mark.subprocess
def test_builtin_kernels_load_from_the_disk_cache_in_a_new_process(python_runner):
    python_runner(CACHE_PROBE)  # the first process may compile
    ((kernel_hits, kernel_misses),) = [line.split() for line in python_runner(CACHE_PROBE).splitlines() if line]
    assert (kernel_hits, kernel_misses) == ("1", "0")
