"""The input boundary, fuzzed: every public constructor and entry point, and the command line.

Generated arguments must either work or be refused with a ``ValueError`` or
``TypeError`` (fastgrad's own subclasses included) whose message names the
argument. Never another exception, never a hang (counts are kept small), and
never a file written by a refused call. A fixed number of examples from a
fixed seed (``derandomize``), so the suite's time and results do not vary.
"""

import contextlib
import io
import os
import warnings

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import fastgrad as fg
from fastgrad import cli, functions

FUZZ = settings(max_examples=80, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip

#: Values of every kind a caller might pass by mistake (or on purpose).
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.integers(min_value=10**300, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e-300, max_value=1e-300),
    st.text(max_size=12),
    st.sampled_from([np.float64(1.5), np.int64(3), np.float32(0.5), np.bool_(True), 1 + 2j, b"1", object()]),
)
anything = st.one_of(
    scalars,
    st.lists(scalars, max_size=4),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=4).map(np.array),
    st.tuples(scalars, scalars),
    st.dictionaries(st.text(max_size=4), scalars, max_size=2),
)


@numba.njit
def _scalar(x):
    return x * x


@numba.njit
def _vector(x):
    return x.sum()


#: name -> (constructor, its parameters, a valid value for each)
CONSTRUCTORS = {
    "Normal": (fg.Normal, {"loc": 2.0, "scale": 1.0}),
    "Exponential": (fg.Exponential, {"rate": 2.0}),
    "Bernoulli": (fg.Bernoulli, {"p": 0.3}),
    "Laplace": (fg.Laplace, {"loc": 0.0, "scale": 1.0}),
    "Gamma": (fg.Gamma, {"shape": 2.0, "rate": 1.0}),
    "Poisson": (fg.Poisson, {"rate": 2.0}),
    "DiagNormal": (fg.DiagNormal, {"loc": [1.0, 2.0], "scale": [1.0, 0.5]}),
    "shifted_square": (functions.shifted_square, {"k": 1.0}),
    "cos": (functions.cos, {"omega": 1.0}),
    "quadratic": (functions.quadratic, {"diag": [1.0, 2.0]}),
    "linear_form": (functions.linear_form, {"weights": [1.0, 2.0]}),
    "sum_cos": (functions.sum_cos, {"omega": 1.0}),
    "Function": (fg.Function, {"f": _scalar, "df": None}),
    "VectorFunction": (fg.VectorFunction, {"f": _vector, "grad_f": None}),
}


def _refused_naming(call, names):
    """Run ``call``; if it raises, it must be a ValueError/TypeError naming one of ``names``.

    fastgrad's own warnings (precision, intervals) are allowed: generated values are often extreme.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fg.FastgradWarning)
            return call()
    except (ValueError, TypeError) as error:
        message = str(error)
        assert any(name in message for name in names), f"{type(error).__name__}: {message!r} names none of {names}"
    return None


@pytest.mark.parametrize("name", list(CONSTRUCTORS))
@FUZZ
@given(data=st.data())
def test_constructors_accept_or_refuse_naming_the_argument(name, data):
    constructor, valid = CONSTRUCTORS[name]
    fuzzed = data.draw(st.sets(st.sampled_from(sorted(valid)), min_size=1))
    kwargs = {key: data.draw(anything, label=key) if key in fuzzed else value for key, value in valid.items()}
    _refused_naming(lambda: constructor(**kwargs), sorted(fuzzed))


#: Small, valid arguments of each entry point; one of them is replaced by a generated value.
ENTRY_POINTS = {
    "compare": (fg.compare, {"distribution": fg.Normal(2.0, 1.0), "function": "square", "n": 256, "seed": 0,
                             "wrt": None, "threads": None, "nan_policy": "raise", "estimators": None,
                             "pilot": None, "progress": None, "checkpoint_every": 60.0, "shard": None}),
    "estimate": (fg.estimate, {"distribution": fg.Normal(2.0, 1.0), "function": "square", "n": 256,
                               "estimator": "score", "seed": 0, "wrt": None, "threads": None,
                               "nan_policy": "raise", "pilot": None, "progress": None, "shard": None}),
    "variance_curve": (fg.variance_curve, {"distribution": fg.Normal(2.0, 1.0), "function": "square",
                                           "sample_sizes": [8, 16], "repeats": 10, "seed": 0, "wrt": None,
                                           "threads": None, "estimators": None, "pilot": None,
                                           "nan_policy": "raise", "progress": None, "shard": None}),
}  # fmt: skip

#: Plausible values of each argument, drawn half the time, so that generated calls also run (not only fail).
PLAUSIBLE = {
    "distribution": [fg.Normal(0.0, 2.0), fg.Exponential(1.0), fg.Bernoulli(0.5), fg.DiagNormal([1.0], [1.0])],
    "function": ["linear", "cos", functions.cos(2.0), functions.sum_of_squares(), _scalar],
    "n": [1, 2, 16, 1000, 10**5, 2.5, -3],
    "sample_sizes": [[8], [1], [10, 10], [], (16, 32), np.array([8, 16])],
    "repeats": [1, 2, 10, 0],
    "seed": [0, 7, -1, 2**64, 2**64 - 1, np.uint64(3), "7"],
    "wrt": ["loc", "scale", ["scale", "loc"], ("loc",), "rate", [], ["loc", "loc"]],
    "threads": [1, 2, 0, -1],
    "nan_policy": ["omit", "raise", "ignore"],
    "estimators": [["score", "pathwise+antithetic"], ["score+loo(4)"], ["measure-valued"], "score", []],
    "estimator": ["pathwise", "score+cv", "measure-valued", "score+optimal-baseline"],
    "pilot": [0, 100, 1, -5],
    "progress": [True, False],
    "checkpoint_every": [0.0, 1.0, -1.0, float("nan")],
    "shard": ["0/2", (1, 2), "2/2", (0, 0), "a/b"],
}

#: Arguments whose valid values set the amount of work: generated ones above these are not run.
WORK_LIMITS = {"n": 10**5, "repeats": 100, "sample_sizes": 10**4, "pilot": 10**5, "threads": 64}


def _too_much_work(key, value):
    limit = WORK_LIMITS.get(key)
    if limit is None:
        return False
    values = value if isinstance(value, (list, tuple, np.ndarray)) else [value]
    # Counts beyond 2**64 must be refused at once, so they are run; valid large ones would only take long.
    return any(isinstance(item, (int, float, np.integer, np.floating)) and limit < item <= 2**64 for item in values)


@pytest.mark.parametrize("name", list(ENTRY_POINTS))
@FUZZ
@given(data=st.data())
def test_entry_points_run_or_refuse_naming_the_argument(name, data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    entry, valid = ENTRY_POINTS[name]
    key = data.draw(st.sampled_from(sorted(valid)), label="argument")
    value = data.draw(st.one_of(anything, st.sampled_from(PLAUSIBLE[key])), label=key)
    assume(not _too_much_work(key, value))
    kwargs = dict(valid, **{key: value})
    positional = [kwargs.pop(k) for k in ("distribution", "function") + (("n",) if "n" in kwargs else ())]
    if name == "variance_curve":
        positional += [kwargs.pop("sample_sizes"), kwargs.pop("repeats")]
    names = [key, key.replace("_", " ")] + (["size"] if key == "sample_sizes" else [])
    if type(value).__module__.startswith("fastgrad"):
        # A valid object refused in combination (Bernoulli has no pathwise; a DiagNormal needs a vector
        # function): the message names the object, e.g. "Bernoulli has no pathwise ... estimator".
        names.append(type(value).__name__)
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            _refused_naming(lambda: entry(*positional, **kwargs), names)
        except fg.NonFiniteValuesError:
            pass  # a generated function parameter can make the values non-finite: a clear, documented refusal
    assert os.listdir(tmp_path) == []  # nothing written: no checkpoint or output was asked for


@FUZZ
@given(st.lists(anything.map(repr), max_size=4))
def test_merge_refuses_what_is_not_a_list_of_partials(tmp_path, monkeypatch, parts):
    monkeypatch.chdir(tmp_path)
    _refused_naming(lambda: fg.merge(parts), ["partial", "part", "PART", "cannot read"])


#: Options of each command, and tokens to give them (small counts only, so that nothing runs long).
OPTIONS = ["--loc", "--scale", "--rate", "--p", "--dist", "--f", "--df", "-n", "--seed", "--wrt", "--threads",
           "--estimators", "--estimator", "--pilot", "--nan-policy", "--sizes", "--repeats", "--dim", "--weights",
           "--shard", "--checkpoint-every", "--progress", "--no-progress", "--families", "--functions"]  # fmt: skip
TOKENS = st.one_of(
    st.sampled_from(["2", "0", "-1", "1e3", "1000", "0.5", "nan", "inf", "-inf", "1e400", "", "x", "007", "1,2",
                     "square", "cos(omega=2)", "normal", "exponential", "bernoulli", "diagnormal", "laplace",
                     "score", "pathwise", "score+baseline(1e16)", "loc", "scale", "raise", "omit", "0/2", "3/2",
                     "user.py:f", "mod:f", "--", "-"]),
    st.text(max_size=8).filter(lambda t: not t.startswith("-") or t == "-"),
)  # fmt: skip


@FUZZ
@given(
    command=st.sampled_from(["compare", "estimate", "curve", "merge", "warmup", "nonsense"]),
    options=st.lists(st.tuples(st.sampled_from(OPTIONS), TOKENS), max_size=5),
)
def test_the_command_line_exits_with_a_status_never_a_traceback(tmp_path, monkeypatch, command, options):
    monkeypatch.chdir(tmp_path)
    argv = [command] + [token for pair in options for token in pair]
    if command == "warmup":
        argv.append("--list")  # compiling every kernel is not for a fuzz test
    if command in ("compare", "estimate") and "-n" not in argv:
        argv += ["-n", "1000"]
    if command == "curve":
        argv += ["--repeats", "10", "--sizes", "10,20"]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(argv)
    assert isinstance(status, int) and status in (0, 1, 2, 3), (argv, status, err.getvalue())
    if status == 2:
        assert err.getvalue().count("\n") == 1 and "error:" in err.getvalue(), err.getvalue()
    assert os.listdir(tmp_path) == []
