"""Argument checks shared by the API and the command line: every one runs before any work starts.

Each check names the argument, what is accepted and what it got, and
returns the value normalised (ints as ``int``, tuples for sequences).
"""

import secrets

import numba
import numpy as np

from fastgrad._checks import real
from fastgrad.distributions import DISTRIBUTIONS, DiagNormal, draws_vectors
from fastgrad.functions import SeparableFunction, VectorFunction, resolve

#: Largest ``n``: counts are float64 in the moment records, exact up to 2**53.
MAX_DRAWS = 2**53

NAN_POLICIES = ("raise", "omit")

#: Draws of the independent pilot stream that estimates optimal baselines and
#: control-variate coefficients, by default.
DEFAULT_PILOT = 100_000


def check_target(distribution, function):
    """Check the distribution and the function together; return the function resolved.

    A scalar family takes a built-in name, a :class:`~fastgrad.Function` or an
    ``@njit`` function; a :class:`~fastgrad.DiagNormal` a function of a vector.
    """
    if not isinstance(distribution, (*DISTRIBUTIONS, DiagNormal)):
        accepted = ", ".join(f"fastgrad.{cls.__name__}" for cls in (*DISTRIBUTIONS, DiagNormal))
        raise TypeError(f"distribution must be one of {accepted}; got {distribution!r}")
    if draws_vectors(distribution):  # DiagNormal, Dirichlet
        if not isinstance(function, (SeparableFunction, VectorFunction)):
            raise TypeError(
                f"a {type(distribution).__name__} needs a function of a vector: fastgrad.functions.sum_of_squares(), "
                "quadratic(diag), linear_form(weights), sum_cos(omega), or fastgrad.VectorFunction(f, grad_f); "
                f"got {function!r}"
            )
        function.weights_for(distribution.dim)  # checks the number of weights
        return function
    return resolve(function)


def check_nan_policy(nan_policy):
    if not isinstance(nan_policy, str) or nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {list(NAN_POLICIES)}; got {nan_policy!r}")
    return nan_policy


def check_n(n):
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        hint = " (write 10**8, not 1e8)" if isinstance(n, float) and float(n).is_integer() else ""
        raise TypeError(f"n must be an integer number of draws, 2 <= n <= 2**53; got {n!r}{hint}")
    n = int(n)
    if not 2 <= n <= MAX_DRAWS:
        why = " (a variance needs at least two draws)" if n == 1 else ""
        raise ValueError(f"n must be an integer number of draws, 2 <= n <= 2**53 = {MAX_DRAWS:,}; got {n}{why}")
    return n


def check_sample_sizes(sample_sizes):
    accepted = "a non-empty sequence of different integers >= 1, e.g. [10, 100, 1000]"
    if isinstance(sample_sizes, (str, bytes)) or not hasattr(sample_sizes, "__iter__"):
        raise TypeError(f"sample_sizes must be {accepted}; got {sample_sizes!r}")
    sizes = list(sample_sizes)
    if not sizes:
        raise ValueError(f"sample_sizes must be {accepted}; got an empty sequence")
    for size in sizes:
        if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, np.integer)):
            raise TypeError(f"sample_sizes must be {accepted}; got {size!r} in it")
        if not 1 <= size <= MAX_DRAWS:
            raise ValueError(f"sample_sizes must be {accepted} (and <= 2**53); got {size!r} in it")
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"sample_sizes must be {accepted}; {sorted(sizes)} repeats a size")
    return tuple(sorted(int(size) for size in sizes))


def check_repeats(repeats, sizes):
    if isinstance(repeats, (bool, np.bool_)) or not isinstance(repeats, (int, np.integer)):
        raise TypeError(f"repeats must be an integer >= 2 (estimates per sample size); got {repeats!r}")
    if repeats < 2:
        raise ValueError(f"repeats must be an integer >= 2 (a variance needs two estimates); got {repeats}")
    if int(repeats) * sum(sizes) > MAX_DRAWS:
        raise ValueError(
            f"repeats * sum(sample_sizes) must be at most 2**53 draws; got {int(repeats):,} * {sum(sizes):,}"
        )
    return int(repeats)


def check_seed(seed):
    if seed is None:
        return secrets.randbits(64)
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be None or an integer in [0, 2**64); got {seed!r}")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must be None or an integer in [0, 2**64); got {seed!r}")
    return int(seed)


def check_wrt(wrt, parameters, natural=()):
    """``wrt`` as a tuple of names from ``parameters`` or the family's ``natural`` ones (None: ``parameters``)."""
    if wrt is None:
        return tuple(parameters)
    parameters = tuple(parameters) + tuple(natural)
    names = (wrt,) if isinstance(wrt, str) else wrt
    try:
        names = tuple(names)
    except TypeError:
        raise TypeError(
            f"wrt must be a parameter name or a sequence of them, from {list(parameters)}; got {wrt!r}"
        ) from None
    if not names:
        raise ValueError(f"wrt must name at least one parameter from {list(parameters)}")
    for name in names:
        if not isinstance(name, str) or name not in parameters:
            raise ValueError(f"wrt must contain parameter names from {list(parameters)}; got {name!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"wrt must not repeat a parameter; got {names!r}")
    return names


def check_threads(threads):
    available = numba.config.NUMBA_NUM_THREADS
    if threads is None:
        return None
    if isinstance(threads, (bool, np.bool_)) or not isinstance(threads, (int, np.integer)):
        raise TypeError(f"threads must be an integer from 1 to {available}; got {threads!r}")
    if not 1 <= threads <= available:
        raise ValueError(f"threads must be an integer from 1 to {available} (NUMBA_NUM_THREADS); got {threads!r}")
    return int(threads)


def check_job_options(progress, checkpoint, checkpoint_every, shard, comm):
    """Validate the long-run options; return them as Job keyword arguments."""
    import os
    from pathlib import Path

    from fastgrad._jobs import output_target

    if progress is not None and not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"progress must be None (on when stderr is a terminal), True or False; got {progress!r}")
    if checkpoint is not None:
        if not isinstance(checkpoint, (str, os.PathLike)):
            raise TypeError(f"checkpoint must be a file path; got {checkpoint!r}")
        output_target(Path(checkpoint), "checkpoint")
    if not isinstance(checkpoint_every, (int, float, np.integer, np.floating)) or isinstance(
        checkpoint_every, (bool, np.bool_)
    ):
        raise ValueError(f"checkpoint_every must be a number of seconds >= 0; got {checkpoint_every!r}")
    # (an int beyond float64 is refused by real(), not an OverflowError)
    if not real("checkpoint_every", checkpoint_every) >= 0:
        raise ValueError(f"checkpoint_every must be a number of seconds >= 0; got {checkpoint_every!r}")
    if shard is not None:
        accepted = "a pair (i, K) of integers with 0 <= i < K, e.g. (0, 4)"
        try:
            index, count = shard
        except (TypeError, ValueError):
            raise TypeError(f"shard must be {accepted}; got {shard!r}") from None
        for value in (index, count):
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"shard must be {accepted}; got {shard!r}")
        if not 0 <= index < count:
            raise ValueError(f"shard must be {accepted}; got {shard!r}")
        shard = (int(index), int(count))
    if comm is not None:
        if not (hasattr(comm, "Get_rank") and hasattr(comm, "Get_size") and hasattr(comm, "gather")):
            raise TypeError(f"comm must be an mpi4py communicator (e.g. mpi4py.MPI.COMM_WORLD); got {comm!r}")
        if shard is not None:
            raise ValueError("give shard or comm, not both: under MPI every rank is a shard already")
    return {
        "progress": None if progress is None else bool(progress),
        "checkpoint": checkpoint,
        "checkpoint_every": float(checkpoint_every),
        "shard": shard,
        "comm": comm,
    }


def check_pilot(pilot):
    accepted = "an integer number of pilot draws, 2 <= pilot <= 2**53"
    if pilot is None:
        return DEFAULT_PILOT
    if isinstance(pilot, (bool, np.bool_)) or not isinstance(pilot, (int, np.integer)):
        raise TypeError(f"pilot must be {accepted}; got {pilot!r}")
    if not 2 <= pilot <= MAX_DRAWS:
        raise ValueError(f"pilot must be {accepted}; got {pilot!r}")
    return int(pilot)
