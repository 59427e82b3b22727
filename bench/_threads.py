"""Run a call with Numba's thread count set for it, then put the count back."""

import numba


def on_threads(threads, call, *args):
    """Return ``call(*args)`` run with ``numba.set_num_threads(threads)``; restore the previous count."""
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        return call(*args)
    finally:
        numba.set_num_threads(previous)
