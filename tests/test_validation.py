"""Every bad argument gets a clear error naming it, before any work starts."""

import math

import numba
import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _kernels

import user_functions as uf


@pytest.fixture(autouse=True)
def no_work(monkeypatch):
    """Any attempt to run a kernel during these tests is a failure: validation must come first."""

    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the arguments were validated")

    monkeypatch.setattr(_kernels.Kernel, "__init__", forbidden)


def call(**overrides):
    arguments = {"distribution": fg.Normal(2.0, 1.0), "function": "square", "n": 1000, "seed": 0} | overrides
    return fg.compare(**arguments)


@pytest.mark.parametrize(
    ("n", "error", "match"),
    [
        (0, ValueError, "n must be an integer number of draws"),
        (-5, ValueError, "n must be an integer number of draws"),
        (1, ValueError, "at least two draws"),
        (1.5, TypeError, "n must be an integer"),
        (1e8, TypeError, "write 10\\*\\*8"),
        ("10", TypeError, "n must be an integer"),
        (True, TypeError, "n must be an integer"),
        (10**30, ValueError, "2\\*\\*53"),
        (2**53 + 1, ValueError, "2\\*\\*53"),
    ],
)
def test_bad_n(n, error, match):
    with pytest.raises(error, match=match):
        call(n=n)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"scale": 0.0}, ValueError, "scale must be positive"),
        ({"scale": -1.0}, ValueError, "scale must be positive"),
        ({"scale": math.nan}, ValueError, "scale must be finite"),
        ({"scale": math.inf}, ValueError, "scale must be finite"),
        ({"scale": "1"}, TypeError, "scale must be a real number"),
        ({"loc": math.nan}, ValueError, "loc must be finite"),
        ({"loc": -math.inf}, ValueError, "loc must be finite"),
        ({"loc": None}, TypeError, "loc must be a real number"),
        ({"loc": True}, TypeError, "loc must be a real number"),
        ({"loc": 1 + 2j}, TypeError, "loc must be a real number"),
    ],
)
def test_bad_distribution_parameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        fg.Normal(**({"loc": 0.0, "scale": 1.0} | kwargs))


def test_numpy_scalars_are_accepted():
    d = fg.Normal(np.float32(1.5), np.int64(2))
    assert d.loc == 1.5 and d.scale == 2.0 and isinstance(d.scale, float)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"distribution": "normal"}, TypeError, "distribution must be one of fastgrad.Normal"),
        ({"function": "cube"}, ValueError, "function must be one of \\['cos', 'exp_quadratic', 'linear', 'logistic'"),
        ({"function": 3}, TypeError, "function must be a built-in name"),
        ({"function": lambda x: x}, TypeError, "function must be a built-in name"),
        (
            {"wrt": "mean"},
            ValueError,
            "wrt must contain parameter names from \\['loc', 'scale', 'log_scale'\\]; got 'mean'",
        ),
        ({"wrt": ()}, ValueError, "wrt must name at least one parameter"),
        ({"wrt": ("loc", "loc")}, ValueError, "must not repeat"),
        ({"wrt": 3}, TypeError, "wrt must be a parameter name"),
        ({"seed": -1}, ValueError, "seed must be None or an integer in \\[0, 2\\*\\*64\\)"),
        ({"seed": 2**64}, ValueError, "seed must be None or an integer"),
        ({"seed": 1.0}, TypeError, "seed must be None or an integer"),
        ({"seed": "0"}, TypeError, "seed must be None or an integer"),
        ({"threads": 0}, ValueError, "threads must be an integer from 1 to"),
        ({"threads": 10**6}, ValueError, "threads must be an integer from 1 to"),
        ({"threads": "2"}, TypeError, "threads must be an integer"),
        ({"nan_policy": "ignore"}, ValueError, "nan_policy must be one of \\['raise', 'omit'\\]"),
    ],
)
def test_bad_compare_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        call(**kwargs)


def test_unknown_estimator():
    with pytest.raises(ValueError, match="estimator 'reinforce': must start with one of \\['score', 'pathwise'"):
        fg.estimate(fg.Normal(), "square", n=100, estimator="reinforce")


def test_pathwise_without_derivative_says_what_is_missing():
    with pytest.raises(ValueError, match="pathwise estimator needs the derivative of log_abs"):
        fg.compare(fg.Normal(), fg.Function(uf.log_abs), n=100)
    with pytest.raises(ValueError, match="Function\\(f, df\\)"):
        fg.estimate(fg.Normal(), uf.log_abs, n=100, estimator="pathwise")


def test_user_function_must_be_njit():
    def plain(x):
        return x

    with pytest.raises(TypeError, match="f must be a Numba @njit function"):
        fg.Function(plain)
    with pytest.raises(TypeError, match="df must be a Numba @njit function"):
        fg.Function(uf.square, plain)


def test_user_function_must_take_one_float():
    @numba.njit
    def two_arguments(x, y):
        return x + y

    @numba.njit
    def returns_tuple(x):
        return (x, x)

    with pytest.raises(TypeError, match=r"f must accept \(x\) with x a float64"):
        fg.Function(two_arguments)
    with pytest.raises(TypeError, match="f must return a real number"):
        fg.Function(returns_tuple)


def test_builtin_parameters_are_checked():
    with pytest.raises(ValueError, match="omega must be finite"):
        fg.functions.cos(omega=math.inf)
    with pytest.raises(TypeError, match="k must be a real number"):
        fg.functions.shifted_square(k="1")


def test_kernel_dispatch_names_refuse_plain_python_calls():
    with pytest.raises(TypeError, match="resolved when a kernel is compiled"):
        _kernels._transform(None, 0.0, (0.0, 1.0, 1.0))
