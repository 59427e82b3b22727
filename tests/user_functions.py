"""User functions shared by the tests (module level, so each compiles once per session)."""

import math

import numba


@numba.njit
def square(x):
    return x * x


@numba.njit
def square_derivative(x):
    return 2.0 * x


@numba.njit
def log_abs(x):
    """Finite except at x == 0; never 0 for our normals, so all finite."""
    return math.log(abs(x))


@numba.njit
def nan_above_one(x):
    """NaN for x > 1: a function that is undefined on part of the support."""
    return math.nan if x > 1.0 else x


@numba.njit
def nan_above_one_derivative(x):
    return math.nan if x > 1.0 else 1.0


@numba.njit
def raises_above_five(x):
    """x**2, but raises for x > 5 (about once in 3.5 million standard normal draws) and is NaN for x < -50.

    One function for the tests of a function that raises (draws from N(0, 1)) and of draws that are all NaN
    (from N(-100, 1)): kernels specialised on a user's function compile in every process that runs them, so the
    two kinds of test share theirs (18 s of a cold suite run).
    """
    if x > 5.0:
        raise ValueError("x above 5")
    if x < -50.0:
        return math.nan
    return x * x


@numba.njit
def raises_above_five_derivative(x):
    """The derivative of :func:`raises_above_five` where it is defined: 2 x, NaN for x < -50."""
    return math.nan if x < -50.0 else 2.0 * x


# --- functions of fastgrad.math: they type on 4-lane vectors, so the kernels run them four draws at a time ---

import fastgrad.math as fm  # noqa: E402


@numba.njit
def bump(x):
    """exp(-x**2 / 2), written to vectorise: x * x, not x ** 2."""
    return fm.exp(-0.5 * x * x)


@numba.njit
def bump_derivative(x):
    return -x * fm.exp(-0.5 * x * x)


@numba.njit
def bump_libm(x):
    """The same with math.exp: no vector form, one draw at a time."""
    return math.exp(-0.5 * x * x)


@numba.njit
def bump_power(x):
    return fm.exp(-0.5 * x**2)


@numba.njit
def bump_branch(x):
    return fm.exp(-0.5 * x * x) if x > 0 else 1.0


@numba.njit(fastmath=True)
def bump_fastmath(x):
    return fm.exp(-0.5 * x * x)


@numba.njit
def constant(x):
    return 2.0


@numba.njit
def bump_libm_derivative(x):
    return -x * math.exp(-0.5 * x * x)
