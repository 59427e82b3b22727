"""Four- and eight-lane vectors (fastgrad._simd) and the vector value loop: the same bits as scalar code."""

import numba
import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _kernels, _simd
from fastgrad._simd import lane, like, load4, load8, splat4, store4, store8
from fastgrad.distributions import FAMILIES
from fastgrad.functions import BUILTINS

import user_functions as uf


@numba.njit
def _lanes(v):
    return np.array([lane(v, 0), lane(v, 1), lane(v, 2), lane(v, 3)])


@numba.njit
def _operators(a, b, s, k):
    x = load4(a, 0)
    y = load4(b, 0)
    out = np.empty((12, 4))
    out[0] = _lanes(x + y)
    out[1] = _lanes(x - y)
    out[2] = _lanes(x * y)
    out[3] = _lanes(x / y)
    out[4] = _lanes(-x)
    out[5] = _lanes(s + x)
    out[6] = _lanes(x - s)
    out[7] = _lanes(s * x)
    out[8] = _lanes(s / x)
    out[9] = _lanes(k * x)  # an integer operand is converted as scalar code converts it
    out[10] = _lanes(x - k)
    out[11] = _lanes(like(1.5, x) * x)
    return out


def test_vector_operators_round_each_lane_as_scalar_code_does():
    generator = np.random.default_rng(3)
    a = generator.normal(size=4) * 1e3
    b = generator.normal(size=4) * 1e-3
    a[3] = -0.0
    s, k = 0.1, 3
    got = _operators(a, b, s, k)
    with np.errstate(divide="ignore"):  # s / -0.0 is -inf, in both
        expected = [a + b, a - b, a * b, a / b, -a, s + a, a - s, s * a, s / a, k * a, a - k, 1.5 * a]
    for row, want in zip(got, expected, strict=True):
        np.testing.assert_array_equal(row.view(np.uint64), np.asarray(want, dtype=np.float64).view(np.uint64))


@numba.njit
def _store(values, row, i, number):
    store4(values, row, i, splat4(2.5))
    store4(values, row + 1, i + 1, number)


def test_store4_writes_four_places_of_one_row():
    values = np.zeros((3, 8))
    _store(values, 1, 2, 7)
    expected = np.zeros((3, 8))
    expected[1, 2:6] = 2.5
    expected[2, 3:7] = 7.0
    np.testing.assert_array_equal(values, expected)


def test_like_gives_a_number_for_a_number():
    assert numba.njit(lambda x: like(1.0, x))(3.0) == 1.0


@numba.njit
def _eight(a, b, s):
    x, y = load8(a, 0), load8(b, 0)
    out = np.empty((6, 8))
    store8(out, 0, 0, x + y)
    store8(out, 1, 0, x * y)
    store8(out, 2, 0, s / x)
    store8(out, 3, 0, _simd.fma(x, y, s))
    store8(out, 4, 0, _simd.where(x < y, x, y))
    store8(out, 5, 0, -x)
    return out


def test_eight_lane_vectors_round_each_lane_as_scalar_code_does():
    a = np.random.default_rng(5).normal(size=8)
    b = np.random.default_rng(6).normal(size=8)
    scalar_fma = numba.njit(lambda x, y: _simd.fma(x, y, 0.3))
    fused = [scalar_fma(x, y) for x, y in zip(a, b, strict=True)]
    expected = np.array([a + b, a * b, 0.3 / a, fused, np.where(a < b, a, b), -a])
    np.testing.assert_array_equal(_eight(a, b, 0.3).view(np.uint64), expected.view(np.uint64))


def test_vectors_of_two_widths_do_not_mix():
    with pytest.raises(numba.TypingError):
        numba.njit(lambda a: load4(a, 0) + load8(a, 0))(np.zeros(8))


def test_the_vector_width_setting_is_checked(monkeypatch):
    monkeypatch.setenv("FASTGRAD_LANES", "4")
    assert _simd._lanes_from_environment() == 4
    monkeypatch.setenv("FASTGRAD_LANES", "16")
    with pytest.raises(ValueError, match="FASTGRAD_LANES must be 4 or 8"):
        _simd._lanes_from_environment()


@numba.njit
def _both_value_loops(key, theta, fparams, noise, m, need_f, need_df):
    n_rows = 2 * _kernels._n_params(key)
    keep = np.ones(n_rows, np.bool_)
    scalar = np.full((n_rows, m), np.nan)
    vector = np.full((n_rows, m), np.nan)
    _kernels._values_scalar(key, None, None, theta, fparams, need_f, need_df, keep, noise, scalar, 0, m)
    _kernels._values_simd(key, None, None, theta, fparams, need_f, need_df, keep, noise, vector, m)
    return scalar, vector


# Each case compiles its own loops (~2.5 s), so four cover the vector forms: the seed case, a longer
# product chain, a constant derivative (a number times a vector), and the other family (negation) with
# a function parameter.
CASES = [
    ("normal", fg.Normal(2.0, 1.0), "square", ()),
    ("normal", fg.Normal(-0.7, 3.1), "quartic", ()),
    ("normal", fg.Normal(0.3, 0.2), "linear", ()),
    ("exponential", fg.Exponential(0.4), "shifted_square", (-2.0,)),
    # fastgrad.math in the cores: cos with its huge-argument lanes (1e300 below), exp, sigmoid
    ("normal", fg.Normal(0.5, 40.0), "cos", (3.0,)),
    ("normal", fg.Normal(0.2, 1.5), "exp_quadratic", (0.3,)),
    ("exponential", fg.Exponential(0.7), "logistic", (2.0, -1.0)),
]


# every case at the kernels' width here (_simd.LANES), and cos, whose huge lanes are width-specific code, at the other
WIDTHS = [(*case, None) for case in CASES] + [(*CASES[-3], 12 - _simd.LANES)]


@pytest.mark.parametrize(("family", "distribution", "function", "params", "lanes"), WIDTHS)
def test_vector_value_loop_matches_the_scalar_one_bit_for_bit(family, distribution, function, params, lanes,
                                                               monkeypatch):  # fmt: skip
    # 509 draws: 127 groups of four (63 of eight) and a scalar tail of one (five).
    if lanes is not None:
        monkeypatch.setattr(_simd, "LANES", lanes)  # (read when the key is typed: kernels of that width)
    noise = np.random.default_rng(11).normal(size=509) * 2
    noise[:3] = (0.0, -0.0, 1e300)
    key = _kernels.KernelKey(family, function)
    fparams = tuple(float(p) for p in params) or (0.0,)
    scalar, vector = _both_value_loops(key, distribution.theta, fparams, noise, noise.size, True, True)
    np.testing.assert_array_equal(vector.view(np.uint64), scalar.view(np.uint64))


def test_vector_cores_are_chosen_only_where_family_and_function_allow_them():
    def key(family, function):
        return _kernels.KernelKeyType(family, function, "")

    assert _kernels._simd_cores(key("normal", "square"))
    assert _kernels._simd_cores(key("normal", "cos"))  # fastgrad.math.cos: lane-generic
    assert not _kernels._simd_cores(key("bernoulli", "square"))  # a branch on the draw
    assert not _kernels._simd_cores(key("laplace", "square"))  # a branch on the noise's sign
    assert not _kernels._simd_cores(key("normal", _kernels.USER))
    assert {name for name, b in BUILTINS.items() if not b.simd} == set()  # every built-in is lane-generic
    assert {name for name, f in FAMILIES.items() if f.simd} == {
        "normal",
        "exponential",
        "normal+natural",
        "exponential+natural",
    }


@pytest.mark.parametrize(("family", "distribution", "function", "params"), CASES[-3:])
def test_value_and_derivative_together_give_their_bits_alone(family, distribution, function, params):
    """A built-in's shared core (cos and sin from one reduction) gives the bits of its value and derivative."""
    noise = np.random.default_rng(12).normal(size=509) * 2
    noise[:3] = (0.0, -0.0, 1e300)
    key = _kernels.KernelKey(family, function)
    fparams = tuple(float(p) for p in params)
    # (every argument given: an omitted one is another signature, compiled again)
    both, _ = _both_value_loops(key, distribution.theta, fparams, noise, noise.size, True, True)
    value, _ = _both_value_loops(key, distribution.theta, fparams, noise, noise.size, True, False)
    derivative, _ = _both_value_loops(key, distribution.theta, fparams, noise, noise.size, False, True)
    half = both.shape[0] // 2
    np.testing.assert_array_equal(value[:half].view(np.uint64), both[:half].view(np.uint64))
    np.testing.assert_array_equal(derivative[half:].view(np.uint64), both[half:].view(np.uint64))


# --- users' functions on lanes: those that type on vectors run four draws at a time, with the same bits ---

LANES = {
    "bump": (uf.bump, uf.bump_derivative, True),
    "math.exp": (uf.bump_libm, None, False),
    "power": (uf.bump_power, None, False),
    "branch": (uf.bump_branch, None, False),
    "fastmath": (uf.bump_fastmath, None, False),
    "constant": (uf.constant, None, False),
    "derivative-without": (uf.bump, uf.bump_libm, False),
}


@pytest.mark.parametrize("name", list(LANES))
def test_user_functions_run_on_lanes_only_where_every_lane_does_one_draws_operations(name):
    f, df, expected = LANES[name]
    assert _kernels.runs_on_lanes(fg.Function(f, df)) is expected


@numba.njit
def _user_value_loops(one_key, lanes_key, f, df, theta, noise, m):
    """The value rows of a user's function one draw at a time (USER) and on lanes (USER_LANES), compare-style."""
    n_rows = 2 * _kernels._n_params(one_key)
    keep = np.ones(n_rows, np.bool_)
    scalar = np.full((n_rows, m), np.nan)
    vector = np.full((n_rows, m), np.nan)
    _kernels._values_scalar(one_key, f, df, theta, (0.0,), True, True, keep, noise, scalar, 0, m)
    _kernels._values_simd(lanes_key, f, df, theta, (0.0,), True, True, keep, noise, vector, m)
    return scalar, vector


def test_a_user_function_on_lanes_gives_the_bits_of_one_draw_at_a_time():
    """The plain filler's loops here; the kernels' choice of lanes, and the general filler (every variant,
    measure-valued on lanes too), in tests/test_reference_results.py, whose ``variants-user-scale`` case (a
    user's ``x * x``, now on lanes) must reproduce the figures written when users' functions ran one draw at
    a time."""
    noise = np.random.default_rng(13).normal(size=509) * 2
    noise[:3] = (0.0, -0.0, 1e300)
    one = _kernels.KernelKey("normal", _kernels.USER)
    lanes = _kernels.KernelKey("normal", _kernels.USER_LANES)
    scalar, vector = _user_value_loops(one, lanes, uf.bump, uf.bump_derivative, fg.Normal(0.5, 1.3).theta, noise,
                                       noise.size)  # fmt: skip
    assert _kernels.runs_on_lanes(fg.Function(uf.bump, uf.bump_derivative))
    np.testing.assert_array_equal(vector.view(np.uint64), scalar.view(np.uint64))


def test_the_reference_case_of_a_users_function_runs_on_lanes():
    """The check above relies on it: the reference file's user-function variant case takes the lanes."""
    assert _kernels.runs_on_lanes(fg.Function(uf.square, uf.square_derivative))
