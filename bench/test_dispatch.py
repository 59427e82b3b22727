"""Dispatch overhead of running in batches from Python (progress, Ctrl-C, checkpoints need the batches).

The same compare (10**9 draws, 2 threads) runs with the default batches (a
short first batch, then about 0.5 s each) and as one single batch, in
alternating rounds of one session; the overhead is the ratio of the median
times, minus 1. It includes everything batches cost: the Python between
them (merging chunk records, progress, the checkpoint clock) and the
threads waiting for the slowest range at the end of each batch.
"""

import statistics

import pytest

import fastgrad as fg
from fastgrad import _jobs

N = 10**9
ROUNDS = 7


def _run(monkeypatch, one_batch):
    with monkeypatch.context() as patch:
        if one_batch:
            patch.setattr(_jobs, "FIRST_BATCH_CHUNKS", 10**9)
            patch.setattr(_jobs, "MAX_BATCH_CHUNKS", 10**9)
        return fg.compare(fg.Normal(2.0, 1.0), "square", N, seed=0).seconds


@pytest.mark.benchmark(group="dispatch")
def test_dispatch_overhead(benchmark, record, monkeypatch):
    _run(monkeypatch, False)  # compile or load outside the timing
    batched, single = [], []

    def rounds():
        for _ in range(ROUNDS):
            batched.append(_run(monkeypatch, False))
            single.append(_run(monkeypatch, True))

    benchmark.pedantic(rounds, rounds=1, warmup_rounds=0)
    overhead = statistics.median(batched) / statistics.median(single) - 1.0
    record(
        "dispatch: batches of ~0.5 s vs one batch",
        N,
        draws_per_second=N / statistics.median(batched),
        dispatch_overhead=overhead,
        batched_median_seconds=statistics.median(batched),
        single_batch_median_seconds=statistics.median(single),
    )
