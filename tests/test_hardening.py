"""Faults found by probing the API and the CLI as a demanding user would, each tested as its class."""

import json
import math
from pathlib import Path

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastgrad as fg
from fastgrad import cli
from fastgrad.estimators import EstimatorSpec, parse_estimator, parse_estimators

import user_functions


def _quietly(construct):
    """``construct()`` without its PrecisionWarning (parameters at float64's edges, warned where that is tested)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fg.PrecisionWarning)
        return construct()


# --- exact values that do not fit a float64: the run's figures stay, the exact ones are None ---------------

#: (distribution, function, estimators): runs whose exact values overflow float64 arithmetic.
OVERFLOWING = {
    "normal-1e50-quartic": (fg.Normal(1e50, 1e40), "quartic", None),
    "exponential-1e-100-square": (fg.Exponential(1e-100), "square", None),
    "exponential-1e300-square": (_quietly(lambda: fg.Exponential(1e300)), "square", None),
    "normal-1e100-square-variants": (  # (square: its variants' kernel is the matrix test's)
        _quietly(lambda: fg.Normal(1e100, 1e10)),
        "square",
        ["score+baseline(1)", "pathwise+antithetic"],
    ),
    "diagnormal-1e100-sum_of_squares": (fg.DiagNormal([1e100, 1.0], [1e90, 1.0]), fg.functions.sum_of_squares(), None),
}


#: Cases also run as curves: the curve sink's exact values with the plain and vector fillers (a variant curve's come
#: from the same _analytic as the variant compare's; every other case's curve kernel would be one more compile).
CURVES = ("exponential-1e300-square", "diagnormal-1e100-sum_of_squares")

#: The DiagNormal's plain curve kernel is compiled by two tests here: on one worker, once.
DIAGNORMAL_CURVE = pytest.mark.xdist_group("hardening-diagnormal-curve")


@pytest.mark.parametrize(
    "name, kind",
    [pytest.param(n, k, marks=DIAGNORMAL_CURVE) if (n, k) == ("diagnormal-1e100-sum_of_squares", "curve") else (n, k)
     for n in OVERFLOWING for k in ("compare", "estimate", "curve") if k != "curve" or n in CURVES],
)  # fmt: skip
@pytest.mark.filterwarnings("ignore::fastgrad.PrecisionWarning")  # (their variances overflow too: tested below)
def test_exact_values_that_overflow_are_none_and_say_why(name, kind):
    distribution, function, estimators = OVERFLOWING[name]
    extra = {"estimators": estimators, "pilot": 2_000} if estimators else {}
    if kind == "compare":
        result = fg.compare(distribution, function, 20_000, seed=0, **extra)
        rows = result.results
    elif kind == "estimate":
        result = fg.estimate(distribution, function, 20_000, estimator=(estimators or ["score"])[0], seed=0)
        rows = [result]
    else:
        result = fg.variance_curve(distribution, function, [10, 100], repeats=20, seed=0, **extra)
        rows = []
    assert result.analytic_note is not None and "float64" in result.analytic_note
    for row in rows:
        assert row.analytic_mean is None and row.analytic_variance is None
        assert row.n == 20_000  # the run's own figures are all there
    assert "no exact values" in str(result)
    json.dumps(result.to_dict(), allow_nan=False)


def test_the_cli_prints_the_run_and_why_it_has_no_exact_values(capsys, tmp_path):
    out = tmp_path / "out.json"
    status = cli.main(["compare", "--loc", "1e50", "--f", "quartic", "-n", "1e4", "--seed", "0", "--json", str(out)])
    printed = capsys.readouterr().out
    assert status == 0
    assert "no exact values: the exact values do not fit a float64" in printed and "d/dloc" in printed
    data = json.loads(out.read_text())
    assert "float64" in data["analytic_note"] and data["estimators"]["score"]["analytic_mean"] is None


def test_finite_exact_values_have_no_note():
    result = fg.compare(fg.Normal(2.0, 1.0), "square", 10_000, seed=0)
    assert result.analytic_note is None and result.analytic_gradient is not None


# --- parameters: one check for every real parameter, of distributions and functions alike ----------------

#: (what, construct, exception, words the message must contain)
BAD_PARAMETERS = {
    "normal-int-beyond-float64": (lambda: fg.Normal(10**400, 1.0), ValueError, "loc"),
    "exponential-int-beyond-float64": (lambda: fg.Exponential(10**400), ValueError, "rate"),
    "cos-int-beyond-float64": (lambda: fg.functions.cos(omega=10**400), ValueError, "omega"),
    "diagnormal-int-beyond-float64": (lambda: fg.DiagNormal([1.0, 10**400], [1.0, 1.0]), ValueError, "loc[1]"),
    "normal-bool": (lambda: fg.Normal(True, 1.0), TypeError, "loc"),
    "diagnormal-bool": (lambda: fg.DiagNormal([True, 1.0], [1.0, 1.0]), TypeError, "loc[0]"),
    "diagnormal-bool-array": (lambda: fg.DiagNormal([0.0, 1.0], [1.0, True]), TypeError, "scale[1]"),
    "quadratic-2d": (lambda: fg.functions.quadratic([[1.0, 2.0], [3.0, 4.0]]), ValueError, "1-D"),
    "diagnormal-2d": (lambda: fg.DiagNormal([[1.0, 2.0]], [[1.0, 1.0]]), ValueError, "1-D"),
}


@pytest.mark.parametrize("name", list(BAD_PARAMETERS))
def test_bad_parameters_are_refused_naming_them(name):
    construct, exception, words = BAD_PARAMETERS[name]
    with pytest.raises(exception, match=None) as caught:
        construct()
    assert words in str(caught.value)


# --- a user function that raises during the draws -------------------------------------------------------

RAISING = fg.Function(user_functions.raises_above_five, user_functions.raises_above_five_derivative)


#: The tests of RAISING (and of its NaN side, ALWAYS_NAN below) run on one worker (--dist loadgroup), with the other
#: tests of tests/user_functions.py's square (test_estimators, test_jobs, test_reference_results): kernels
#: specialised on a user's function are compiled in each process that runs them (Numba cannot cache them), 4-14 s
#: each here.
ONE_WORKER = pytest.mark.xdist_group("user-functions")


@ONE_WORKER
@pytest.mark.parametrize("kind", ["compare", "estimate", "curve", "variants"])
def test_a_user_function_that_raises_is_named_with_its_error(kind):
    distribution = fg.Normal(0.0, 1.0)
    calls = {
        "compare": lambda: fg.compare(distribution, RAISING, 10**7, seed=0),
        "estimate": lambda: fg.estimate(distribution, RAISING, 10**7, estimator="measure-valued", seed=0),
        "curve": lambda: fg.variance_curve(distribution, RAISING, [10**5], repeats=100, seed=0),
        "variants": lambda: fg.compare(distribution, RAISING, 10**7, seed=0, estimators=["score+loo(4)", "pathwise"]),
    }
    with pytest.raises(fg.UserFunctionError, match="the function 'raises_above_five' raised ValueError: x above 5 "
                                                   "while evaluating draws") as caught:  # fmt: skip
        calls[kind]()
    assert isinstance(caught.value.__cause__, ValueError)


@ONE_WORKER
def test_draws_finished_before_the_function_raised_are_in_the_checkpoint(tmp_path, monkeypatch):
    from fastgrad import _jobs

    monkeypatch.setattr(_jobs, "FIRST_BATCH_CHUNKS", 1)  # batches of one chunk: every chunk before the fault is kept
    checkpoint = tmp_path / "run.ckpt"
    with pytest.raises(fg.UserFunctionError, match="saved in the checkpoint") as caught:
        fg.compare(fg.Normal(0.0, 1.0), RAISING, 10**8, seed=0, threads=1, checkpoint=checkpoint)
    done = caught.value.draws_done
    assert done > 0 and done % 65_536 == 0 and caught.value.checkpoint == checkpoint
    saved = fg.Partial.load(checkpoint)
    (part,) = saved.parts
    assert part.next * 65_536 == done
    # it holds exactly what the same values (x**2, where nothing raised) give over those draws
    clean_checkpoint = tmp_path / "clean.ckpt"
    square = fg.Function(user_functions.square, user_functions.square_derivative)
    fg.compare(fg.Normal(0.0, 1.0), square, done, seed=0, threads=1, checkpoint=clean_checkpoint)
    (clean,) = fg.Partial.load(clean_checkpoint).parts
    assert clean.next == part.next
    np.testing.assert_array_equal(clean.records, part.records)


@ONE_WORKER
def test_the_cli_exits_3_naming_the_function(capsys):
    status = cli.main(["compare", "--f", "user_functions:raises_above_five",
                       "--df", "user_functions:raises_above_five_derivative", "-n", "1e7", "--seed", "0"])  # fmt: skip
    assert status == cli.USER_FUNCTION_FAILED == 3
    assert "the function 'raises_above_five' raised ValueError: x above 5" in capsys.readouterr().err


# --- user functions of the wrong shape: refused when the run is prepared, naming what they must return ----


@numba.njit
def _vector_returns_array(x):
    return x * 2.0


@numba.njit
def _vector_returns_tuple(x):
    return x[0], x[1]


@numba.njit
def _vector_returns_nothing(x):
    x[0] + 1.0


@numba.njit
def _gradient_of_one_argument(x):
    return 2.0 * x


@numba.njit
def _scalar_returns_array(x):
    return np.array([x, x])


@numba.njit
def _vector_sum(x):
    return np.sum(x)


#: (construct, words of the message)
WRONG_SHAPES = {
    "vector-f-returns-array": (lambda: fg.VectorFunction(_vector_returns_array), "f must return a real number"),
    "vector-f-returns-tuple": (lambda: fg.VectorFunction(_vector_returns_tuple), "f must return a real number"),
    "vector-f-returns-nothing": (lambda: fg.VectorFunction(_vector_returns_nothing), "f must return a real number"),
    "vector-grad-one-argument": (lambda: fg.VectorFunction(_vector_sum, _gradient_of_one_argument),
                                 "grad_f must accept (x, out)"),
    "scalar-f-returns-array": (lambda: fg.Function(_scalar_returns_array), "f must return a real number"),
    "scalar-df-returns-array": (lambda: fg.Function(user_functions.square, _scalar_returns_array),
                                "df must return a real number"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(WRONG_SHAPES))
def test_user_functions_of_the_wrong_shape_are_refused_when_made(name):
    construct, words = WRONG_SHAPES[name]
    with pytest.raises(TypeError) as caught:
        construct()
    message = str(caught.value)
    assert words in message and len(message.splitlines()) == 1  # one line, not Numba's typing trace


# --- nan_policy="omit" with nothing left to average: an error, never a mean of 0 --------------------------

#: NaN at every draw of N(-100, 1): RAISING's function and derivative (its kernels are the raising tests').
ALWAYS_NAN = RAISING
NAN_EVERYWHERE = fg.Normal(-100.0, 1.0)


@ONE_WORKER
@pytest.mark.parametrize("kind", ["compare", "estimate", "curve", "variants"])
def test_omit_with_every_draw_non_finite_is_an_error(kind):
    normal = NAN_EVERYWHERE
    calls = {
        "compare": lambda: fg.compare(normal, ALWAYS_NAN, 10**5, seed=0, nan_policy="omit"),
        "estimate": lambda: fg.estimate(normal, ALWAYS_NAN, 10**5, estimator="score", seed=0, nan_policy="omit"),
        "curve": lambda: fg.variance_curve(normal, ALWAYS_NAN, [10, 100], repeats=10, seed=0, nan_policy="omit"),
        "variants": lambda: fg.compare(normal, ALWAYS_NAN, 10**5, seed=0, nan_policy="omit",
                                       estimators=["score+loo(4)", "pathwise"]),
    }  # fmt: skip
    with pytest.raises(fg.NonFiniteValuesError, match=r"nan_policy='omit'.*leaving 0"):
        calls[kind]()


@ONE_WORKER
def test_the_cli_exits_1_when_omit_leaves_nothing(capsys):
    status = cli.main(["compare", "--loc", "-100", "--f", "user_functions:raises_above_five",
                       "--df", "user_functions:raises_above_five_derivative", "-n", "1e5", "--seed", "0",
                       "--nan-policy", "omit"])  # fmt: skip
    assert status == 1 and "leaving 0" in capsys.readouterr().err


# --- canonical estimator names read back, for every specification -----------------------------------------

finite_floats = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def estimator_specs(draw):
    base = draw(st.sampled_from(["score", "pathwise", "measure-valued"]))
    if base == "measure-valued":
        return EstimatorSpec(base, coupled=draw(st.booleans()))
    antithetic = draw(st.booleans())
    if base == "pathwise":
        return EstimatorSpec(base, antithetic=antithetic)
    kind = draw(st.sampled_from(["none", "constant", "optimal", "cv", "loo"]))
    if kind == "loo":
        return EstimatorSpec(base, baseline="loo", group=draw(st.integers(2, 65536)))
    baseline = {"none": None, "optimal": "optimal", "cv": "cv"}.get(kind)
    if kind == "constant":
        baseline = draw(finite_floats)
    return EstimatorSpec(base, baseline=baseline, antithetic=antithetic)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(estimator_specs())
def test_every_canonical_name_reads_back(spec):
    name = spec.name
    assert parse_estimator(name) == spec
    assert parse_estimator(name).name == name
    assert parse_estimators([name, "pathwise" if spec.base != "pathwise" else "score"])[0] == spec


@pytest.mark.parametrize(
    "text",
    [
        "score+baseline(1e16)",
        "score+baseline(1e+16)",
        "score+baseline(-2.5e-300)",
        "score+baseline(5e-324)+antithetic",
        "score+baseline(1.7976931348623157e308)",
    ],
)
def test_exponent_baselines_read_back(text):
    assert parse_estimator(parse_estimator(text).name) == parse_estimator(text)


def test_shards_of_an_exponent_baseline_merge(tmp_path):
    spec = ["score+baseline(1e16)", "pathwise"]
    parts = [fg.compare(fg.Normal(2.0, 1.0), "square", 200_000, seed=1, estimators=spec, shard=(k, 2))
             for k in range(2)]  # fmt: skip
    merged = fg.merge(parts)
    whole = fg.compare(fg.Normal(2.0, 1.0), "square", 200_000, seed=1, estimators=spec)
    assert merged["score+baseline(1e+16)"].mean == whole["score+baseline(1e16)"].mean


# --- every to_dict() is strict JSON ------------------------------------------------------------------------

_DIAG = fg.DiagNormal([1.0, 2.0], [1.0, 0.5])
_VARIANTS = ["score+optimal-baseline", "score+loo(4)", "pathwise+antithetic", "measure-valued"]


def _merged(call):
    return fg.merge([call(shard=(k, 2)) for k in range(2)])


#: Every kind of result: plain and variant runs, scalar and DiagNormal, curves, merges, tiny and overflowing runs
#: (x**2 wherever the function is not the point: its kernels are the matrix test's, no compile of their own).
RESULTS = {
    "compare": lambda: fg.compare(fg.Normal(2.0, 1.0), "square", 10_000, seed=0),
    "compare-variants": lambda: fg.compare(fg.Normal(2.0, 1.0), "square", 10_000, seed=0, estimators=_VARIANTS,
                                           pilot=1_000),
    "estimate": lambda: fg.estimate(fg.Exponential(2.0), "square", 10_000, estimator="score+cv", seed=0, pilot=1_000),
    "compare-diagnormal": lambda: fg.compare(_DIAG, fg.functions.sum_of_squares(), 10_000, seed=0),
    "compare-diagnormal-variants": lambda: fg.compare(_DIAG, fg.functions.sum_of_squares(), 10_000, seed=0,
                                                      estimators=_VARIANTS, pilot=1_000),
    "curve": lambda: fg.variance_curve(fg.Normal(2.0, 1.0), "square", [4, 40], repeats=20, seed=0),
    "curve-variants": lambda: fg.variance_curve(fg.Normal(2.0, 1.0), "square", [4, 40], repeats=20, seed=0,
                                                estimators=["score+loo(4)", "score+optimal-baseline"], pilot=1_000),
    "curve-diagnormal": lambda: fg.variance_curve(_DIAG, fg.functions.sum_of_squares(), [4, 40], repeats=20, seed=0),
    "merged-compare-variants": lambda: _merged(lambda **shard: fg.compare(fg.Normal(2.0, 1.0), "square", 200_000,
                                                                          seed=0, estimators=_VARIANTS, **shard)),
    "merged-curve-variants": lambda: _merged(lambda **shard: fg.variance_curve(
        fg.Normal(2.0, 1.0), "square", [12, 100], repeats=50, seed=0, estimators=["score+loo(4)", "pathwise"],
        **shard)),
    "two-draws": lambda: fg.compare(fg.Normal(2.0, 1.0), "square", 2, seed=0),
    "overflowing": lambda: _quietly(lambda: fg.compare(fg.Normal(1e50, 1e40), "quartic", 1_000, seed=0)),
}  # fmt: skip


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=DIAGNORMAL_CURVE) if n == "curve-diagnormal" else n for n in RESULTS]
)
def test_every_to_dict_is_strict_json(name):
    data = RESULTS[name]().to_dict()
    assert json.loads(json.dumps(data, allow_nan=False)) == data


# --- merge refuses parts from another fastgrad, stream layout or record layout ----------------------------


@pytest.mark.parametrize("key, value", [("stream_layout", 0), ("record_layout", 99), ("fastgrad", "0.0.1"),
                                        ("chunk_size", 4096)])  # fmt: skip
def test_merge_refuses_parts_of_another_layout_naming_both(tmp_path, key, value):
    parts = [fg.compare(fg.Normal(2.0, 1.0), "square", 200_000, seed=0, shard=(k, 2)) for k in range(2)]
    paths = []
    for k, part in enumerate(parts):  # both alike: they agree with each other, not with this fastgrad
        part.fingerprint[key] = value
        paths.append(tmp_path / f"part{k}.json")
        part.save(paths[-1])
    before = [path.read_bytes() for path in paths]
    with pytest.raises(fg.PartialError, match=f"written with {key} {value!r}; this fastgrad has {key} "):
        fg.merge(paths)
    assert [path.read_bytes() for path in paths] == before


# --- one checkpoint, one run at a time -------------------------------------------------------------------


@pytest.mark.subprocess
def test_a_second_run_on_a_checkpoint_in_use_is_refused_naming_the_holder(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    checkpoint = tmp_path / "run.ckpt"
    lock = tmp_path / "run.ckpt.lock"
    holder = subprocess.Popen([sys.executable, "-m", "fastgrad", "compare", "--f", "square", "-n", "1e12",
                               "--seed", "0", "--checkpoint", str(checkpoint), "--checkpoint-every", "0.2",
                               "--no-progress"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (lock.exists() and lock.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lock.read_text().strip() == str(holder.pid)
        with pytest.raises(fg.PartialError, match=f"in use by another run \\(pid {holder.pid}"):
            fg.compare(fg.Normal(0.0, 1.0), "square", 10**6, seed=1, checkpoint=checkpoint)
        while not checkpoint.exists() and time.monotonic() < deadline:  # it is running (signals handled)
            time.sleep(0.05)
    finally:
        holder.send_signal(signal.SIGTERM)
        _, errors = holder.communicate(timeout=120)
    assert holder.returncode == 143, errors and checkpoint.exists() and not lock.exists()
    assert os.listdir(tmp_path) == ["run.ckpt"]  # nothing else left behind
    assert fg.Partial.load(checkpoint).parts[0].next > 0  # the holder's checkpoint is intact


# --- a checkpoint that cannot be written: warn, finish, return everything -----------------------------------


def _remove_when_saved(directory, checkpoint):
    """Remove ``directory`` (checkpoint and all) as soon as its first checkpoint is there."""
    import shutil
    import threading
    import time

    def remove():
        deadline = time.monotonic() + 60
        while not checkpoint.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        shutil.rmtree(directory)

    thread = threading.Thread(target=remove)
    thread.start()
    return thread


def test_a_checkpoint_directory_removed_mid_run_warns_and_the_run_finishes(tmp_path):
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    checkpoint = directory / "run.ckpt"
    n = 5 * 10**8  # (a short first batch, then batches of about 0.5 s: saves after the removal fail; at 2e8 the run
    # could finish before a loaded machine scheduled the remover's thread)
    remover = _remove_when_saved(directory, checkpoint)
    with pytest.warns(fg.CheckpointWarning, match="could not write the checkpoint") as caught:
        result = fg.compare(fg.Normal(2.0, 1.0), "square", n, seed=0, checkpoint=checkpoint, checkpoint_every=0.01)
    remover.join()
    assert sum(issubclass(w.category, fg.CheckpointWarning) for w in caught) == 1  # once, not at every save
    assert result.n == n and result.interrupted is None
    assert result.score.mean == fg.compare(fg.Normal(2.0, 1.0), "square", n, seed=0).score.mean


def test_the_cli_writes_the_result_and_exits_4_when_its_checkpoint_failed(tmp_path, capsys):
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    checkpoint, out = directory / "run.ckpt", tmp_path / "out.json"
    remover = _remove_when_saved(directory, checkpoint)
    status = cli.main(["compare", "--f", "square", "-n", "1e9", "--seed", "0", "--checkpoint", str(checkpoint),
                       "--checkpoint-every", "0.01", "--json", str(out), "--no-progress"])  # fmt: skip
    remover.join()
    captured = capsys.readouterr()
    assert status == cli.CHECKPOINT_FAILED == 4
    assert "warning: could not write the checkpoint" in captured.err and "d/dloc" in captured.out
    assert json.loads(out.read_text())["n"] == 10**9


# --- output files: links followed, special files refused, the umask respected ------------------------------


def _compare_writing(path, option):
    return cli.main(["compare", "--f", "square", "-n", "1e4", "--seed", "0", option, str(path), "--no-progress"])


@pytest.mark.parametrize("option", ["--json", "--checkpoint"])
def test_writing_through_a_symbolic_link_updates_its_target(tmp_path, option, capsys):
    target, link = tmp_path / "target", tmp_path / "link"
    link.symlink_to(target.name)
    assert _compare_writing(link, option) == 0, capsys.readouterr().err
    assert link.is_symlink() and target.is_file() and target.stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "target"]  # no temporary or lock file left


@pytest.mark.parametrize("option", ["--json", "--checkpoint"])
@pytest.mark.parametrize("special", ["fifo", "/dev/null", "directory"])
def test_special_files_are_refused_before_any_work_and_left_alone(tmp_path, option, special, capsys):
    import os
    import stat

    if special == "fifo":
        path = tmp_path / "fifo"
        os.mkfifo(path)
    elif special == "directory":
        path = tmp_path
    else:
        path = Path(special)
    before = os.stat(path).st_mode
    assert _compare_writing(path, option) == 2
    error = capsys.readouterr().err
    assert f"argument {option}:" in error and ("regular files" in error or "is a directory" in error)
    assert os.stat(path).st_mode == before and not stat.S_ISREG(before)


def test_written_files_respect_the_umask_and_keep_an_existing_mode(tmp_path, capsys):
    import os

    old = os.umask(0o027)
    try:
        fresh, kept = tmp_path / "fresh.json", tmp_path / "kept.json"
        kept.write_text("{}")
        kept.chmod(0o664)
        for path in (fresh, kept):
            assert _compare_writing(path, "--json") == 0, capsys.readouterr().err
        checkpoint = tmp_path / "run.ckpt"
        fg.compare(fg.Normal(2.0, 1.0), "square", 10**4, seed=0, checkpoint=checkpoint)
    finally:
        os.umask(old)
    assert fresh.stat().st_mode & 0o777 == 0o640 and checkpoint.stat().st_mode & 0o777 == 0o640
    assert kept.stat().st_mode & 0o777 == 0o664


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the umask from /proc (Linux)")
def test_the_umask_is_read_without_being_changed(monkeypatch):
    """Setting the umask to read it changes it for every thread meanwhile: on Linux it is only read."""
    import os

    from fastgrad import _jobs

    old = os.umask(0o027)
    try:
        with monkeypatch.context() as patch:
            patch.setattr(os, "umask", lambda mask: pytest.fail("os.umask was called"))
            assert _jobs._umask() == 0o027
    finally:
        os.umask(old)


# --- small rough edges, each made consistent ---------------------------------------------------------------

#: (command-line arguments, exit status, words of the error; None: it runs)
COMMAND_LINES = {
    "seed-with-leading-zeros": (["compare", "--f", "square", "-n", "1e4", "--seed", "007"], 0, None),
    "seed-hexadecimal": (["compare", "--f", "square", "-n", "1e4", "--seed", "0x1f"], 0, None),
    "parameter-given-twice": (["compare", "--f", "cos(omega=2,omega=3)", "-n", "1e4"], 2, "omega is given twice"),
    "curve-beyond-memory": (["curve", "--f", "square", "--sizes", "10", "--repeats", str(2**40)], 2,
                            "argument --repeats: repeats * len(sample_sizes) is too large for this machine"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(COMMAND_LINES))
def test_command_line_rough_edges(name, capsys):
    argv, status, words = COMMAND_LINES[name]
    assert cli.main(argv) == status
    if words is not None:
        assert words in capsys.readouterr().err


def test_a_seed_with_leading_zeros_is_that_seed(capsys):
    cli.main(["compare", "--f", "square", "-n", "1e4", "--seed", "007"])
    assert "seed 7," in capsys.readouterr().out


# --- checkpoints and partial results: fuzzed, every file either runs or is refused naming its field -------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip


def _fields(body, prefix=()):
    """Every (path, value) of a JSON body, nested objects and lists included."""
    items = body.items() if isinstance(body, dict) else enumerate(body) if isinstance(body, list) else ()
    for key, value in items:
        yield (*prefix, key)
        yield from _fields(value, (*prefix, key))


@pytest.fixture(scope="module")
def checkpoint_body(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "run.ckpt"
    fg.compare(fg.Normal(2.0, 1.0), "square", 3 * 65_536, seed=0, checkpoint=path)
    return json.loads(path.read_text())


def _with_checksum(body):
    from fastgrad._jobs import _digest

    body = {key: value for key, value in body.items() if key != "sha256"}
    return json.dumps({"sha256": _digest(body), **body})


@settings(max_examples=150, derandomize=True, deadline=None)
@given(data=st.data())
def test_mutated_checkpoints_run_or_are_refused_naming_a_field(checkpoint_body, tmp_path_factory, data):
    import copy

    body = copy.deepcopy(checkpoint_body)
    paths = [path for path in _fields(body) if path[0] != "sha256"]
    path = data.draw(st.sampled_from(paths))
    parent = body
    for key in path[:-1]:
        parent = parent[key]
    if data.draw(st.booleans()) and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(json_values)
    try:
        text = _with_checksum(body)
    except (TypeError, ValueError):
        return  # not JSON at all (e.g. mixed key types): nothing a file could hold
    checkpoint = tmp_path_factory.mktemp("mutated") / "run.ckpt"
    checkpoint.write_text(text)
    try:
        fg.Partial.load(checkpoint)
    except fg.PartialError as error:
        assert "run.ckpt" in str(error)
    try:
        fg.compare(fg.Normal(2.0, 1.0), "square", 3 * 65_536, seed=0, checkpoint=checkpoint)
    except (ValueError, TypeError):
        assert checkpoint.read_text() == text  # refused: the file is left as it was


@settings(max_examples=50, derandomize=True, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_files_that_are_not_checkpoints_are_refused(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("junk") / "junk.ckpt"
    path.write_bytes(content)
    with pytest.raises(fg.PartialError, match=r"junk\.ckpt"):
        fg.Partial.load(path)


#: Hand edits with a recomputed checksum (the probes' own): each refused naming its field.
HAND_EDITS = {
    "fingerprint-missing": (lambda b: b.pop("fingerprint"), "fingerprint must be"),
    "n-chunks-text": (lambda b: b.__setitem__("n_chunks", "many"), "n_chunks must be an integer"),
    "next-beyond-the-end": (lambda b: b["parts"][0].__setitem__("next", 10**6), "parts[0].next must be"),
    "levels-not-a-list": (lambda b: b["parts"][0].__setitem__("levels", 3), "parts[0].levels must be"),
    "seconds-negative": (lambda b: b["parts"][0].__setitem__("seconds", -1), "parts[0].seconds must be"),
    # a checkpoint of stream layout 3 (the Gamma's shape gradients from the series) cannot be continued by layout 4
    "stream-layout-3": (
        lambda b: b["fingerprint"].__setitem__("stream_layout", 3),
        "was written with stream_layout 3; this fastgrad has stream_layout 4",
    ),
}


@pytest.mark.parametrize("name", list(HAND_EDITS))
def test_hand_edited_checkpoints_are_refused_naming_the_field(checkpoint_body, tmp_path, name):
    import copy

    edit, words = HAND_EDITS[name]
    body = copy.deepcopy(checkpoint_body)
    edit(body)
    path = tmp_path / "run.ckpt"
    path.write_text(_with_checksum(body))
    with pytest.raises(fg.PartialError, match=words.replace("[", r"\[").replace("]", r"\]")):
        fg.compare(fg.Normal(2.0, 1.0), "square", 3 * 65_536, seed=0, checkpoint=path)


# --- a stop asked during the pilot: the run stops before its first batch, with its checkpoint -------------


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_signal_during_the_pilot_stops_the_run_with_a_partial_result(tmp_path, monkeypatch, signum):
    import os
    import signal

    from fastgrad import _pilot

    pilot_run = _pilot.coefficients

    def signalled_pilot(*args):
        os.kill(os.getpid(), getattr(signal, signum))  # (handled before the pilot's next bytecode: during it)
        return pilot_run(*args)

    checkpoint = tmp_path / "run.ckpt"
    specs, n, pilot = ["score+cv", "pathwise"], 4 * 65_536, 10**5
    distribution = fg.Normal(2.0, 1.0)
    monkeypatch.setattr(_pilot, "coefficients", signalled_pilot)
    previous = signal.signal(getattr(signal, signum), lambda *_: None)  # (on a fault here, the worker lives)
    try:
        stopped = fg.compare(distribution, "square", n, seed=0, estimators=specs, pilot=pilot, checkpoint=checkpoint)
    finally:
        signal.signal(getattr(signal, signum), previous)
    monkeypatch.undo()
    assert stopped.interrupted == signum and stopped.n == 0 and stopped.n_requested == n
    assert checkpoint.exists()
    resumed = fg.compare(distribution, "square", n, seed=0, estimators=specs, pilot=pilot, checkpoint=checkpoint)
    whole = fg.compare(distribution, "square", n, seed=0, estimators=specs, pilot=pilot)
    assert resumed.interrupted is None and resumed.to_dict()["estimators"] == whole.to_dict()["estimators"]


def test_a_sigterm_while_the_kernel_compiles_stops_the_run_before_its_first_batch(tmp_path, monkeypatch):
    """The gap between the pilot and the first batch (the kernel's compilation) is held too."""
    import os
    import signal

    from fastgrad.estimators import Plan

    build = Plan.kernel

    def kernel_then_sigterm(self, *args, **kwargs):
        kernel = build(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # (handled before the next bytecode: the run has not started)
        return kernel

    checkpoint, n = tmp_path / "run.ckpt", 4 * 65_536
    distribution = fg.Normal(2.0, 1.0)
    monkeypatch.setattr(Plan, "kernel", kernel_then_sigterm)
    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # (on a fault here, the worker is not killed)
    try:
        stopped = fg.compare(distribution, "square", n, seed=0, checkpoint=checkpoint)
    finally:
        signal.signal(signal.SIGTERM, previous)
    monkeypatch.undo()
    assert stopped.interrupted == "SIGTERM" and stopped.n == 0 and checkpoint.exists()
    resumed = fg.compare(distribution, "square", n, seed=0, checkpoint=checkpoint)
    whole = fg.compare(distribution, "square", n, seed=0)
    assert resumed.interrupted is None and resumed.to_dict()["estimators"] == whole.to_dict()["estimators"]


#: A command line whose process gets SIGTERM after its last batch, while the result is being written (as
#: SLURM's early signal does when the run ends just before it): argv[1] is the JSON path.
_LATE_SIGTERM = """
import os, signal, sys
from fastgrad import cli
emit = cli._emit
def emit_after_sigterm(*args):
    os.kill(os.getpid(), signal.SIGTERM)
    return emit(*args)
cli._emit = emit_after_sigterm
sys.exit(cli.main(["compare", "--loc", "2", "--f", "square", "-n", "1e5", "--seed", "0", "--json", sys.argv[1]]))
"""


@pytest.mark.subprocess
def test_a_sigterm_after_the_last_batch_keeps_the_complete_result_and_exits_0(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "out.json"
    done = subprocess.run([sys.executable, "-c", _LATE_SIGTERM, str(out)], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "SIGTERM received with no draws left to stop: the result is complete" in done.stderr
    result = json.loads(out.read_text())
    assert result["interrupted"] is None and result["n"] == 10**5


#: A command line whose process gets SIGTERM after the command has returned, as the interpreter shuts down:
#: argv[1] is the JSON path.
_SHUTDOWN_SIGTERM = """
import atexit, os, signal, sys
from fastgrad import cli
atexit.register(lambda: os.kill(os.getpid(), signal.SIGTERM))
sys.argv = ["fastgrad", "compare", "--loc", "2", "--f", "square", "-n", "1e5", "--seed", "0", "--json", sys.argv[1]]
cli.main_exit()
"""


@pytest.mark.subprocess
def test_a_sigterm_after_the_command_returned_does_not_kill_a_complete_run(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "out.json"
    done = subprocess.run([sys.executable, "-c", _SHUTDOWN_SIGTERM, str(out)], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["interrupted"] is None


# --- no meaningless intervals: below MIN_INTERVAL_SAMPLES, variances and ratios come without them ----------


@pytest.mark.parametrize("n, has_intervals", [(2, False), (9, False), (10, True)])
def test_variance_intervals_need_enough_draws(n, has_intervals):
    import math

    c = fg.compare(fg.Normal(2.0, 1.0), "square", n, seed=0)
    low, _ = c.variance_ratio_ci["loc"]
    assert math.isfinite(c.variance_ratio["loc"]) and math.isfinite(c.score.variance["loc"])
    assert math.isfinite(low) == has_intervals and math.isfinite(c.score.variance_stderr["loc"]) == has_intervals
    assert ("no intervals on variances" in str(c)) != has_intervals
    json.dumps(c.to_dict(), allow_nan=False)


@pytest.mark.parametrize("repeats, has_intervals", [(2, False), (10, True)])
def test_curve_intervals_need_enough_repeats(repeats, has_intervals):
    import math

    c = fg.variance_curve(fg.Normal(2.0, 1.0), "square", [10, 100], repeats=repeats, seed=0)
    (low, _), _ = c.variance_ci["score"]["loc"]
    (ratio_low, _), _ = c.variance_ratio_ci["loc"]
    assert math.isfinite(low) == has_intervals and math.isfinite(ratio_low) == has_intervals
    assert ("no intervals on variances" in str(c)) != has_intervals


# --- precision: parameters the float64 draws cannot represent are refused, coarse ones warned -------------

UNREPRESENTABLE = {
    "normal-subnormal-scale": (lambda: fg.Normal(0.0, 1e-310), "scale must be at least 2.2250738585072014e-308"),
    "laplace-subnormal-scale": (lambda: fg.Laplace(0.0, 1e-310), "scale must be at least"),
    "diagnormal-subnormal-scale": (lambda: fg.DiagNormal([0.0, 0.0], [1.0, 1e-320]), "scale[1] must be at least"),
    "bernoulli-below-the-grid": (lambda: fg.Bernoulli(1e-17), "p must be at least 2**-53"),
}


@pytest.mark.parametrize("name", list(UNREPRESENTABLE))
def test_parameters_the_draws_cannot_represent_are_refused(name):
    construct, words = UNREPRESENTABLE[name]
    with pytest.raises(ValueError) as caught:
        construct()
    assert words in str(caught.value)


@pytest.mark.parametrize("construct", [lambda: fg.Normal(1e16, 1.0), lambda: fg.Laplace(-1e12, 1e-6),
                                       lambda: fg.DiagNormal([0.0, 1e16], [1.0, 1.0])])  # fmt: skip
def test_coarsely_quantised_draws_are_warned(construct):
    with pytest.warns(fg.PrecisionWarning, match="quantised in steps of"):
        construct()


def test_the_cli_prints_the_precision_warning_as_one_line(capsys):
    assert cli.main(["compare", "--loc", "1e16", "--f", "cos", "-n", "1e4", "--seed", "0"]) == 0
    error = capsys.readouterr().err
    assert error.count("fastgrad: warning: loc = 1e+16 is so large against scale = 1.0") == 1


def test_ordinary_parameters_are_not_warned():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fg.Normal(1e6, 1.0), fg.Normal(2.0, 1e-12), fg.DiagNormal([1e3] * 4, [0.5] * 4), fg.Bernoulli(1e-10)


# --- figures float64 cannot hold: tiny draws warned, lost variances NaN with one warning, never 0 ± 0 ------


@pytest.mark.parametrize("construct, words", [
    (lambda: fg.Normal(0.0, 1e-300), "loc = 0.0 and scale = 1e-300: the draws are about 1e-300 in size"),
    (lambda: fg.Laplace(1e-170, 1e-160), "the draws are about 1e-160 in size, below 1.49e-154"),
    (lambda: fg.Exponential(1e300), "rate = 1e+300: the draws are about 1e-300 in size"),
    (lambda: fg.DiagNormal([1.0, 0.0], [1.0, 1e-200]), "loc[1] = 0.0 and scale[1] = 1e-200: the draws"),
])  # fmt: skip
def test_draws_whose_squares_underflow_are_warned(construct, words):
    with pytest.warns(fg.PrecisionWarning, match="their squares underflow") as caught:
        construct()
    assert len(caught) == 1 and words in str(caught[0].message)


def _tiny_curve():
    return fg.variance_curve(_quietly(lambda: fg.Normal(0.0, 1e-300)), "square", [100, 1000], 20, seed=0)


LOST = {  # name: (run, which (estimator, parameter) variances are lost, whose intervals only, words of the warning)
    # pathwise 2x ~ 1e-300: squares underflow (before: 0 ± 0, ratio inf); the score's f = x**2 is 0 exactly
    "underflow": (lambda: fg.compare(_quietly(lambda: fg.Normal(0.0, 1e-300)), "square", 10**5, seed=0),
                  {("pathwise", "loc"), ("pathwise", "scale")}, set(), "underflow, below 2.23e-308"),
    # the score x * (x - loc) ~ 1e200 * eps: squares overflow (before: inf ± nan); pathwise d/dloc = 1: a true 0
    "overflow": (lambda: fg.compare(_quietly(lambda: fg.Normal(1e200, 1.0)), "linear", 10**5, seed=0),
                 {("score", "loc"), ("score", "scale")}, set(), "or overflow"),
    # values ~ 1e-100: variances fine, their fourth powers underflow (before: a zero-width interval)
    "fourth powers": (lambda: fg.compare(fg.Normal(0.0, 1e-100), "square", 10**5, seed=0), set(),
                      {(e, p) for e in ("score", "pathwise") for p in ("loc", "scale")}, "fourth powers underflow"),
    "estimate": (lambda: fg.estimate(_quietly(lambda: fg.Normal(0.0, 1e-300)), "square", 10**5, seed=0,
                                     estimator="pathwise"), {("pathwise", "loc"), ("pathwise", "scale")}, set(),
                 "per-draw variances of pathwise wrt loc, pathwise wrt scale"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(LOST))
def test_variances_float64_cannot_hold_are_nan_with_one_warning(name):
    run, lost, intervals_only, words = LOST[name]
    with pytest.warns(fg.PrecisionWarning, match="float64 cannot hold") as caught:
        result = run()
    assert len(caught) == 1 and words in str(caught[0].message)
    rows = result.results if hasattr(result, "results") else (result,)
    for row in rows:
        for p in row.wrt:
            gone, interval_gone = (row.estimator, p) in lost, (row.estimator, p) in intervals_only
            assert math.isfinite(row.mean[p])  # the means are kept
            assert math.isnan(row.variance[p]) == math.isnan(row.stderr[p]) == gone
            assert math.isnan(row.variance_stderr[p]) == (gone or interval_gone)
            if gone or interval_gone:
                assert f"{row.estimator} wrt {p}" in str(caught[0].message)
    if hasattr(result, "variance_ratio"):
        for p in result.wrt:
            assert math.isnan(result.variance_ratio[p]) == (("score", p) in lost or ("pathwise", p) in lost)
            if lost or intervals_only:
                assert all(math.isnan(v) for v in result.variance_ratio_ci[p])
    json.dumps(result.to_dict(), allow_nan=False)


def test_a_curve_of_variances_float64_cannot_hold_is_nan_with_one_warning():
    with pytest.warns(fg.PrecisionWarning, match="float64 cannot hold") as caught:
        curve = _tiny_curve()
    assert len(caught) == 1
    assert all(math.isnan(v) for v in curve.variance["pathwise"]["loc"])
    assert all(math.isnan(v) for v in curve.variance_ratio["loc"])
    json.dumps(curve.to_dict(), allow_nan=False)


def test_exact_zero_variances_are_kept_and_not_warned():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        linear = fg.compare(fg.Normal(2.0, 1.0), "linear", 10**4, seed=0)  # pathwise d/dloc = 1 for every draw
        weights = fg.compare(fg.DiagNormal([1.0, 2.0], [1.0, 1.0]), fg.functions.linear_form([1.0, 0.0]), 10**4,
                             seed=0)  # x_1 has weight 0: its pathwise gradients are 0 exactly  # fmt: skip
    assert linear.pathwise.variance["loc"] == linear.pathwise.variance_stderr["loc"] == 0.0
    assert weights.pathwise.variance["loc"][1] == weights.pathwise.mean["loc"][1] == 0.0
