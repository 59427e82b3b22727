"""Thread scaling, 1 … N threads: fastgrad's fused compare and normals-only kernels, and the machine's ceiling.

    python bench/scaling.py                       # 1, 2, 4, … up to every thread Numba may use
    python bench/scaling.py --threads 1,2 --n 1e8 --rounds 9

Rounds are interleaved: each round runs every (kernel, thread count) once,
in turn, so that load drifting on a shared machine does not land on one
thread count. Draws/s come from the median round. The ceiling is the
benchmarks' eight-chain compute loop (``bench/test_targets.py``), ``n``
iterations over 256 chunks: no memory traffic, so its speed-up is what the
machine gives a second, fourth, … thread at that moment (SMT siblings,
turbo limits, neighbours).

Prints a Markdown table for ``docs/performance.md``. Not a pytest file (no
``test_`` prefix): scaling beyond the development machine's 2 cores is
measured where more cores are available.
"""

import argparse
import os
import platform
import time

import numba
import numpy as np
from _threads import on_threads
from test_normals import fastgrad_normals
from test_seed_comparison import fastgrad_compare
from test_targets import _busy_compute


def _thread_counts(text):
    try:
        counts = sorted({int(part) for part in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated thread counts like 1,2,4; got {text!r}") from None
    limit = numba.config.NUMBA_NUM_THREADS
    if not counts or counts[0] < 1 or counts[-1] > limit:
        message = f"thread counts must be between 1 and {limit} (NUMBA_NUM_THREADS); got {text!r}"
        raise argparse.ArgumentTypeError(message)
    return counts


def _draws(text):
    try:
        n = int(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of draws like 2e8; got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"the number of draws must be positive; got {text!r}")
    return n


def ceiling(threads):
    def run(n):
        on_threads(threads, _busy_compute, 256, max(1, n // 256))

    return run


def _processor():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _default_counts():
    limit = numba.config.NUMBA_NUM_THREADS
    counts = {1 << k for k in range(limit.bit_length()) if 1 << k <= limit}
    return sorted(counts | {limit})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=_thread_counts, default=_default_counts(), help="comma-separated counts")
    parser.add_argument("--n", type=_draws, default=2 * 10**8, help="draws per kernel call (default 2e8)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds; the median is reported (default 7)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"argument --rounds: must be at least 1; got {args.rounds}")

    kernels = {}
    for threads in args.threads:
        kernels["compare", threads] = fastgrad_compare(threads)
        kernels["normals-only", threads] = fastgrad_normals(threads)
        kernels["ceiling", threads] = ceiling(threads)
    for kernel in kernels.values():
        kernel(10_000)  # compile, or load from the cache, outside the timing
    seconds = {key: [] for key in kernels}
    for _ in range(args.rounds):
        for key, kernel in kernels.items():
            started = time.perf_counter()
            kernel(args.n)
            seconds[key].append(time.perf_counter() - started)
    median = {key: float(np.median(times)) for key, times in seconds.items()}

    print(
        f"{_processor()}, {os.cpu_count()} logical CPUs, "
        f"Python {platform.python_version()}, Numba {numba.__version__}, NumPy {np.__version__}; "
        f"n = {args.n:.0e}, median of {args.rounds} interleaved rounds\n"
    )
    print("| threads | compare, M draws/s | speed-up | normals-only, M draws/s | speed-up | ceiling speed-up |")
    print("|---|---|---|---|---|---|")
    first = args.threads[0]
    for threads in args.threads:
        row = [str(threads)]
        for kernel in ("compare", "normals-only"):
            row.append(f"{args.n / median[kernel, threads] / 1e6:.0f}")
            row.append(f"{median[kernel, first] / median[kernel, threads]:.2f}x")
        row.append(f"{median['ceiling', first] / median['ceiling', threads]:.2f}x")
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
