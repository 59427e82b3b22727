"""The thread driver: every range exactly once, on several threads, errors and interrupts surface."""

import threading
import time

import numba
import pytest

from fastgrad import _parallel
from fastgrad._api import _numba_threads


def recorder():
    calls, lock = [], threading.Lock()

    def function(tag, lo, hi):
        with lock:
            calls.append((tag, lo, hi, threading.get_ident()))
        time.sleep(0.002)

    return function, calls


@pytest.mark.parametrize("count", [1, 2, 7, 64, 1000])
@pytest.mark.parametrize("threads", [1, 2])
def test_ranges_cover_every_item_exactly_once(count, threads):
    function, calls = recorder()
    with _numba_threads(threads):
        _parallel.for_ranges(function, ("t",), count)
    covered = sorted(i for _, lo, hi, _ in calls for i in range(lo, hi))
    assert covered == list(range(count))
    assert all(tag == "t" and hi > lo for tag, lo, hi, _ in calls)
    if threads == 1 or count == 1:
        assert len(calls) == 1
    else:
        expected = _parallel._ranges(count, threads)
        assert sorted((lo, hi) for _, lo, hi, _ in calls) == expected
        sizes = [hi - lo for lo, hi in expected]
        # guided: each range is 1 / (2 threads) of what is left, so the last to finish is one item long
        assert sizes == sorted(sizes, reverse=True) and sizes[-1] == 1
        assert sizes[0] == -(-count // (2 * threads))


@pytest.mark.parametrize("count", [2, 7, 64, 1000])
def test_equal_ranges_when_guided_is_off(count, monkeypatch):
    monkeypatch.setattr(_parallel, "GUIDED", False)
    function, calls = recorder()
    with _numba_threads(2):
        _parallel.for_ranges(function, ("t",), count)
    assert sorted(i for _, lo, hi, _ in calls for i in range(lo, hi)) == list(range(count))
    assert len(calls) == min(count, 2 * _parallel.RANGES_PER_THREAD)


def test_two_threads_are_used_and_the_caller_is_one_of_them():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 threads")
    function, calls = recorder()
    with _numba_threads(2):
        _parallel.for_ranges(function, ("t",), 64)
    idents = {ident for *_, ident in calls}
    assert len(idents) == 2 and threading.get_ident() in idents


@pytest.mark.parametrize("failing_call", [1, 2, 3])
def test_an_error_in_any_thread_stops_the_rest_and_is_raised(failing_call):
    calls, lock = [], threading.Lock()

    def function(lo, hi):
        with lock:
            calls.append(lo)
            mine = len(calls)
        if mine == failing_call:
            raise KeyboardInterrupt
        time.sleep(0.002)

    with _numba_threads(2), pytest.raises(KeyboardInterrupt):
        _parallel.for_ranges(function, (), 10_000)
    # no range is handed out after the interrupt: far fewer than all of them run
    assert len(calls) <= failing_call + 2
