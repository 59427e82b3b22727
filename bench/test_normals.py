"""The bound: drawing and summing standard normals, fastgrad's streams against NumPy's ziggurat."""

import numpy as np
import pytest
from _threads import on_threads

from fastgrad import _kernels

N = 10**7
_generator = np.random.default_rng(0)
_buffer = np.empty(N)


def numpy_standard_normal(n):
    """NumPy's ziggurat (PCG64), into a preallocated array: its fastest form."""
    _generator.standard_normal(out=_buffer[:n])
    return n


def fastgrad_normals(threads):
    def run(n):
        on_threads(threads, _kernels.normal_sum, n, 0)
        return n

    return run


IMPLEMENTATIONS = {
    "fastgrad normals-only, 2 threads": (fastgrad_normals(2), 2),
    "fastgrad normals-only, 1 thread": (fastgrad_normals(1), 1),
    "NumPy default_rng().standard_normal": (numpy_standard_normal, 1),
}


@pytest.mark.benchmark(group="normals")
@pytest.mark.parametrize("name", list(IMPLEMENTATIONS))
def test_normals(benchmark, record, name):
    implementation, threads = IMPLEMENTATIONS[name]
    implementation(10_000)
    benchmark.pedantic(implementation, args=(N,), rounds=15, warmup_rounds=1)
    record(name, N, threads=threads)
