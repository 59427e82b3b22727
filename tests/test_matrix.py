"""The matrix of issue 15: every family x run kind x estimator specification x run mode, from one table.

A *cell* is (family, kind, specification): ``compare`` and ``curve`` cells run
every specification defined for the family in one call (so every
specification is walked through the same kernel, on the same draws);
``estimate`` cells run one specification each (curves for the general
filler's family: ``CURVE_FAMILIES``). Every cell is checked

* against the exact answer: each row unbiased within 5 standard errors and
  its per-draw variance within 5 variance standard errors (for curves, the
  mean within 5 standard errors and the variance within 5 log-scale
  standard errors at every size);
* in every run mode, bit for bit against its plain run: 2 threads against 1,
  with progress shown, stopped by Ctrl-C (equal to a run of the draws it
  finished), resumed from a checkpoint taken mid-run (in this process, and
  after a real ``kill -9`` of another process for every family and every
  kind at least once, ``KILLED``), split into two shards and merged, and on
  two MPI ranks. Every ``compare`` cell and the Normal's curve run every mode (a
  compare cell holds every specification of its family: each one's rows,
  its pilot coefficients, auxiliary streams and leave-one-out groups go
  through every mode there); an ``estimate`` cell, the same rows laid out
  alone, runs 2 threads and shards (its own plan layout, and its merge
  rebuilt from an estimate's fingerprint), and its Ctrl-C, checkpoint and
  MPI runs are its compare cell's (``ESTIMATE_MODES``);

and every undefined cell is refused before any work with a ``ValueError``
naming the estimator, the family and the reason.

Adding a family or an estimator is a row here: a ``FAMILIES`` entry (with the
specifications it cannot give in ``UNDEFINED``) or a ``SPECS`` entry.
"""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _jobs, _kernels

# Two halves of the table, each on one worker, about equal in kernel compiles (so each cell's plain run below is
# computed once, on its family's worker, with its family's kernels): a cell's kill -9 and MPI runs go with its half.
HALVES = {"normal": 0, "exponential": 0, "bernoulli": 0, "diagnormal": 0, "mvn": 0, "mvn-loc": 0, "beta": 1,
          "laplace": 1, "gamma": 1, "poisson": 1, "gamma-rate": 1, "dirichlet": 1, "categorical": 1}  # fmt: skip


def half_group(half):
    """The xdist group of a half of the table."""
    return pytest.mark.xdist_group(f"matrix-{half}")


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# --- the table ---------------------------------------------------------------------------------

#: family -> (expression of the distribution, function): expressions, so a child process rebuilds them.
FAMILIES = {
    "normal": ("fg.Normal(1.5, 0.8)", "'square'"),
    "exponential": ("fg.Exponential(2.0)", "'square'"),
    "bernoulli": ("fg.Bernoulli(0.3)", "'square'"),
    "diagnormal": ("fg.DiagNormal([1.5, -0.5, 0.0], [0.8, 1.2, 2.0])", "fg.functions.sum_of_squares()"),
    "laplace": ("fg.Laplace(0.5, 1.5)", "'square'"),
    "gamma": ("fg.Gamma(2.5, 1.5)", "'square'"),
    "poisson": ("fg.Poisson(3.0)", "'square'"),
    "gamma-rate": ("fg.Gamma(2.5, 1.5)", "'square'"),
    "beta": ("fg.Beta(2.5, 1.5)", "'square'"),
    "dirichlet": ("fg.Dirichlet([1.5, 2.0, 3.0])", "fg.functions.sum_of_squares()"),
    "categorical": ("fg.Categorical([0.2, 0.3, 0.5])", "'square'"),
    "mvn": ("fg.MultivariateNormal([1.0, -0.5], [[0.8, 0.0], [0.3, 1.2]])", "fg.functions.sum_of_squares()"),
    "mvn-loc": ("fg.MultivariateNormal([1.0, -0.5], [[0.8, 0.0], [0.3, 1.2]])", "fg.functions.sum_of_squares()"),
}

#: Rows for some parameters only (``wrt``), and only the specifications that need that (the rest are the full row's).
WRT = {"gamma-rate": ["rate"], "categorical": ["probs", "logits"], "mvn-loc": ["loc"]}
ONLY = {"gamma-rate": ("measure-valued+coupled", "measure-valued+decoupled"),
        "mvn-loc": ("measure-valued+coupled", "measure-valued+decoupled")}  # fmt: skip

#: Every specification the pipeline has.
SPECS = (
    "score",
    "score+baseline(1.5)",
    "score+optimal-baseline",
    "score+cv",
    "score+loo(4)",
    "score+antithetic",
    "score+optimal-baseline+antithetic",
    "pathwise",
    "pathwise+antithetic",
    "measure-valued+coupled",
    "measure-valued+decoupled",
)

#: (family, specification) cells that are not defined, with the reason the refusal must give.
UNDEFINED = {
    ("exponential", "score+antithetic"): "symmetric about 0",
    ("exponential", "score+optimal-baseline+antithetic"): "symmetric about 0",
    ("exponential", "pathwise+antithetic"): "symmetric about 0",
    ("bernoulli", "score+antithetic"): "symmetric about 0",
    ("bernoulli", "score+optimal-baseline+antithetic"): "symmetric about 0",
    ("bernoulli", "pathwise"): "discrete",
    ("bernoulli", "pathwise+antithetic"): "discrete",
    ("gamma", "score+antithetic"): "symmetric about 0",
    ("gamma", "score+optimal-baseline+antithetic"): "symmetric about 0",
    ("gamma", "pathwise+antithetic"): "symmetric about 0",
    ("gamma", "measure-valued+coupled"): "weak derivative for rate only",
    ("gamma", "measure-valued+decoupled"): "weak derivative for rate only",
    ("poisson", "score+antithetic"): "symmetric about 0",
    ("poisson", "score+optimal-baseline+antithetic"): "symmetric about 0",
    ("poisson", "pathwise"): "discrete",
    ("poisson", "pathwise+antithetic"): "discrete",
    **{(family, spec): reason for family in ("beta", "dirichlet") for spec, reason in (
        ("score+antithetic", "symmetric about 0"),
        ("score+optimal-baseline+antithetic", "symmetric about 0"),
        ("pathwise+antithetic", "symmetric about 0"),
        ("measure-valued+coupled", "no weak derivative"),
        ("measure-valued+decoupled", "no weak derivative"),
    )},
    ("categorical", "score+antithetic"): "symmetric about 0",
    ("categorical", "score+optimal-baseline+antithetic"): "symmetric about 0",
    ("categorical", "pathwise"): "discrete",
    ("categorical", "pathwise+antithetic"): "discrete",
    ("mvn", "measure-valued+coupled"): "weak derivative for loc only",
    ("mvn", "measure-valued+decoupled"): "weak derivative for loc only",
}  # fmt: skip

KINDS = ("compare", "estimate", "curve")
MODES = ("threads", "progress", "interrupt", "checkpoint", "shard")
#: The modes of an estimate cell (the rest are its compare cell's: see the module's docstring).
ESTIMATE_MODES = ("threads", "shard")


def _modes(cell):
    """The run modes a cell runs in."""
    family, kind, _ = cell
    return ESTIMATE_MODES if kind == "estimate" or (kind == "curve" and family != "normal") else MODES


N = 2**18  # 4 chunks of a scalar family, 12 of the DiagNormal's (a run stops and resumes between chunks)
SIZES = (8, 64)
REPEATS = 4096  # 294 912 draws: 4.5 chunks of a scalar family
SEED = 11
PILOT = 20_000


def defined(family):
    return [spec for spec in ONLY.get(family, SPECS) if (family, spec) not in UNDEFINED]


#: Families whose curves are run: the general filler's. The curve sink reads the filler's value rows and their
#: kept-row list the same way whatever the filler, and a curve's exact values are its compare's over n, so a curve
#: cell per family would add one kernel compile each (6-23 s) and test nothing new: the Gamma's was a cell until the
#: suite's time budget asked for it back, the DiagNormal's (the vector-general filler's, 23 s cold) likewise; the
#: DiagNormal's plain curve is tests/test_hardening.py's.
CURVE_FAMILIES = ("normal",)

CELLS = (
    [(family, "compare", None) for family in FAMILIES]
    + [(family, "curve", None) for family in CURVE_FAMILIES]
    + [(family, "estimate", spec) for family in FAMILIES for spec in defined(family)]
)


def _cell_id(cell):
    family, kind, spec = cell
    return f"{family}-{kind}" + (f"-{spec}" if spec else "")


def _in_half(cell):
    """``cell`` as a pytest parameter marked with its half of the table's worker group."""
    return pytest.param(cell, marks=half_group(HALVES[cell[0]]), id=_cell_id(cell))


def _build(family):
    distribution, function = FAMILIES[family]
    return eval(distribution), eval(function)  # (our own table)


def run_cell(family, kind, spec, n=None, sizes=None, **options):
    """Run one cell with the table's sizes (or ``n`` draws / ``sizes``); return the result."""
    distribution, function = _build(family)
    common = dict(seed=SEED, threads=options.pop("threads", 1), wrt=WRT.get(family), **options)
    if kind == "compare":
        return fg.compare(distribution, function, n or N, estimators=defined(family), pilot=PILOT, **common)
    if kind == "estimate":
        needs = fg.estimators.parse_estimator(spec).needs_pilot
        return fg.estimate(distribution, function, n or N, estimator=spec, pilot=PILOT if needs else None, **common)
    return fg.variance_curve(distribution, function, sizes or SIZES, REPEATS, estimators=defined(family), pilot=PILOT,
                             **common)  # fmt: skip


VOLATILE = {"seconds", "draws_per_second", "threads", "interrupted", "n_requested", "sample_sizes_requested"}


def figures(result):
    """A result's figures (its JSON form without timings, thread counts and interruption notes)."""

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in VOLATILE}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return json.dumps(strip(result.to_dict()), sort_keys=True, allow_nan=False)


_plain = {}


def plain(cell):
    if cell not in _plain:
        _plain[cell] = run_cell(*cell)
    return _plain[cell]


@pytest.fixture
def one_chunk_batches(monkeypatch):
    """Batches of one chunk, so that a run stops, checkpoints and shows progress between chunks."""
    monkeypatch.setattr(_jobs, "FIRST_BATCH_CHUNKS", 1)
    monkeypatch.setattr(_jobs, "TARGET_BATCH_SECONDS", 0.0)


def after_main_batches(monkeypatch, count, action):
    """Call ``action()`` once, after the run's (not the pilot's) ``count``-th kernel call."""
    calls = [0]
    original = _kernels.Kernel.__call__

    def wrapped(self, *args):
        original(self, *args)
        if int(self.run.stream_base) == 0:
            calls[0] += 1
            if calls[0] == count:
                action()

    monkeypatch.setattr(_kernels.Kernel, "__call__", wrapped)


# --- every defined cell: the exact answer -----------------------------------------------------------


def _rows(result):
    return [result] if isinstance(result, fg.EstimatorResult) else [result[e] for e in result.estimators]


def _zero_variance_floor(mean):
    """What rounding leaves of an exactly zero variance: per-draw values agree to about 2**-40 relative."""
    return (2.0**-40 * (1.0 + np.max(np.abs(mean)))) ** 2


@pytest.mark.parametrize("cell", [_in_half(cell) for cell in CELLS])
def test_every_cell_is_unbiased_with_its_exact_variance(cell):
    result = plain(cell)
    if cell[1] == "curve":
        _check_curve(result)
        return
    rows = _rows(result)
    assert [row.estimator for row in rows[: len(rows)]]  # every row present
    for row in rows:
        assert row.analytic_mean is not None, row.estimator  # built-in functions: exact values for every row
        for p in row.wrt:
            mean, truth = np.atleast_1d(row.mean[p]), np.atleast_1d(row.analytic_mean[p])
            stderr = np.atleast_1d(row.stderr[p])
            variance, exact = np.atleast_1d(row.variance[p]), np.atleast_1d(row.analytic_variance[p])
            spread = np.atleast_1d(row.variance_stderr[p])
            for i in range(len(mean)):
                where = f"{row.estimator} d/d{p}[{i}]"
                if exact[i] <= _zero_variance_floor(truth[i]):  # an exactly zero variance, up to rounding
                    assert abs(mean[i] - truth[i]) <= 2.0**-40 * (1 + abs(truth[i])), where
                    assert variance[i] <= _zero_variance_floor(truth[i]), where
                    continue
                assert abs(mean[i] - truth[i]) < 5 * stderr[i], (where, mean[i], truth[i], stderr[i])
                assert abs(variance[i] - exact[i]) < 5 * spread[i], (where, variance[i], exact[i], spread[i])


def _check_curve(curve):
    assert curve.analytic_variance is not None
    for e in curve.estimators:
        for p in curve.wrt:
            truth_mean = np.atleast_1d(curve.analytic_gradient[p])
            for k, n in enumerate(curve.sample_sizes):
                where = f"{e} d/d{p} n={n}"
                mean, stderr = np.atleast_1d(curve.mean[e][p][k]), np.atleast_1d(curve.mean_stderr[e][p][k])
                variance, exact = curve.variance[e][p][k], curve.analytic_variance[e][p][k]
                if exact <= _zero_variance_floor(truth_mean):
                    assert variance <= _zero_variance_floor(truth_mean), where
                    continue
                # (a component whose estimates are all equal has stderr 0: then exactly the truth, up to rounding)
                floor = 2.0**-40 * (1 + np.abs(truth_mean))
                assert np.all(np.abs(mean - truth_mean) < 5 * stderr + floor), (where, mean, truth_mean, stderr)
                low, high = curve.variance_ci[e][p][k]
                log_sd = math.log(high / low) / (2 * 1.959963984540054)
                assert abs(math.log(variance / exact)) < 5 * log_sd, (where, variance, exact)


# --- every defined cell in every run mode: the same bits ------------------------------------------


@pytest.mark.parametrize(
    ("cell", "mode"),
    [
        pytest.param(cell, mode, marks=half_group(HALVES[cell[0]]), id=f"{_cell_id(cell)}-{mode}")
        for cell in CELLS
        for mode in _modes(cell)
    ],
)
def test_every_cell_in_every_mode_has_the_plain_runs_bits(cell, mode, tmp_path, monkeypatch, capsys,
                                                          one_chunk_batches):  # fmt: skip
    expected = figures(plain(cell))
    kind = cell[1]
    if mode == "threads":
        assert figures(run_cell(*cell, threads=2)) == expected
    elif mode == "progress":
        capsys.readouterr()
        result = run_cell(*cell, progress=True)
        assert "fastgrad: " in capsys.readouterr().err
        assert figures(result) == expected
    elif mode == "interrupt":
        after_main_batches(monkeypatch, 2, lambda: os.kill(os.getpid(), signal.SIGINT))  # (a curve size is done)
        stopped = run_cell(*cell)
        assert stopped.interrupted == "SIGINT"
        monkeypatch.undo()
        if kind == "curve":
            assert 0 < len(stopped.sample_sizes) < len(SIZES)
            again = run_cell(*cell, sizes=stopped.sample_sizes)
        else:
            assert 0 < stopped.n + stopped.n_omitted < N
            again = run_cell(*cell, n=stopped.n + stopped.n_omitted)
        assert figures(stopped) == figures(again)
    elif mode == "checkpoint":
        path, taken = tmp_path / "run.ckpt", tmp_path / "mid-run.ckpt"
        after_main_batches(monkeypatch, 2, lambda: shutil.copyfile(path, taken))  # the file a kill -9 would leave
        assert figures(run_cell(*cell, checkpoint=path, checkpoint_every=0.0)) == expected
        assert 0 < _checkpoint_next(taken) < _checkpoint_next(path)
        monkeypatch.undo()
        assert figures(run_cell(*cell, checkpoint=taken)) == expected
    else:
        parts = [run_cell(*cell, shard=(i, 2)) for i in range(2)]
        assert all(isinstance(part, fg.Partial) for part in parts)
        assert figures(fg.merge(parts)) == expected


def _checkpoint_next(path):
    return json.loads(path.read_text())["parts"][0]["next"]


# --- every undefined cell: refused before any work --------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("family", "spec"), sorted(UNDEFINED))
def test_every_undefined_cell_is_refused_with_the_reason(family, spec, kind):
    distribution, function = _build(family)
    started = time.perf_counter()
    with pytest.raises(ValueError) as refused:
        if kind == "compare":
            fg.compare(distribution, function, fg.MAX_DRAWS, estimators=["score", spec], seed=0)
        elif kind == "estimate":
            fg.estimate(distribution, function, fg.MAX_DRAWS, estimator=spec, seed=0)
        else:
            fg.variance_curve(distribution, function, [10**9], 10**6, estimators=["score", spec], seed=0)
    message = str(refused.value)
    assert time.perf_counter() - started < 5  # before any draw of 2**53 (or 10**15)
    assert UNDEFINED[family, spec] in message
    assert type(distribution).__name__ in message
    parsed = fg.estimators.parse_estimator(spec)
    assert parsed.name in message or (kind == "estimate" and parsed.base in message)


@half_group(1)
def test_a_user_function_has_every_row_and_says_it_has_no_exact_values():
    import numba

    @numba.njit
    def f(x):
        return x[0] * x[0] + x[1]

    @numba.njit
    def grad(x, out):
        out[0] = 2.0 * x[0]
        out[1] = 1.0

    specs = ["score", "score+optimal-baseline", "score+loo(4)", "pathwise+antithetic", "measure-valued"]
    table = fg.compare(fg.DiagNormal([1.0, 0.5], [1.0, 2.0]), fg.VectorFunction(f, grad), 4096, seed=1,
                       estimators=specs, pilot=PILOT)  # fmt: skip
    assert table.estimators == (*specs[:-1], "measure-valued+coupled", "pathwise")
    for e in table.estimators:
        assert table[e].analytic_mean is None and table[e].analytic_variance is None
        assert abs(table[e].mean["loc"][1] - 1.0) < 5 * table[e].stderr["loc"][1] + 1e-12


# --- a real kill -9 (every family and kind at least once), and two MPI ranks for every cell -----------------

CHILD = """
import sys, time
sys.path.insert(0, {tests!r})
import fastgrad as fg
from fastgrad import _jobs, _kernels
from test_matrix import run_cell
_jobs.FIRST_BATCH_CHUNKS, _jobs.TARGET_BATCH_SECONDS = 1, 0.0
original = _kernels.Kernel.__call__
def slowed(self, *args):  # so that the kill lands mid-run, whatever the machine
    original(self, *args)
    time.sleep(0.1)
_kernels.Kernel.__call__ = slowed
run_cell({family!r}, {kind!r}, {spec!r}, checkpoint={path!r}, checkpoint_every=0.0)
"""

#: The runs killed for real, each in a process of its own: every family and every kind at least once (the
#: estimate ones with a pilot, whose coefficients come back on resume). Every cell is also resumed, in this
#: process, from the checkpoint file a kill -9 would leave (the "checkpoint" mode above).
KILLED = [
    ("normal", "compare", None),
    ("normal", "estimate", "score+cv"),
    ("exponential", "compare", None),
    ("bernoulli", "estimate", "score+loo(4)"),
    ("diagnormal", "compare", None),
    ("normal", "curve", None),
    ("laplace", "estimate", "measure-valued+decoupled"),
    ("gamma", "estimate", "pathwise"),
    ("poisson", "estimate", "measure-valued+coupled"),
    ("beta", "estimate", "score+cv"),
    ("dirichlet", "compare", None),
    ("categorical", "estimate", "measure-valued+decoupled"),
    ("mvn", "estimate", "score+optimal-baseline+antithetic"),
]


@pytest.mark.subprocess
@pytest.mark.parametrize(("family", "kind", "spec"), [pytest.param(*cell, marks=half_group(HALVES[cell[0]]),
                                                                   id=_cell_id(cell)) for cell in KILLED])  # fmt: skip
def test_a_run_killed_mid_run_resumes_with_the_same_bits(family, kind, spec, tmp_path):
    path = tmp_path / "killed.ckpt"
    code = CHILD.format(tests=os.path.join(ROOT, "tests"), family=family, kind=kind, spec=spec, path=str(path))
    child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (path.exists() and _checkpoint_next(path) >= 2):
        assert child.poll() is None, child.communicate()[1].decode()
        assert time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.communicate()
    assert child.returncode == -signal.SIGKILL
    n_chunks = json.loads(path.read_text())["n_chunks"]
    assert 2 <= _checkpoint_next(path) < n_chunks
    assert figures(run_cell(family, kind, spec, checkpoint=path)) == figures(plain((family, kind, spec)))


MPI_CHILD = """
import json, sys
sys.path.insert(0, {tests!r})
from mpi4py import MPI
from test_matrix import CELLS, HALVES, figures, run_cell
out = {{}}
for cell in [cell for cell in CELLS if HALVES[cell[0]] == {half} and cell[1] != "estimate"]:
    result = run_cell(*cell, comm=MPI.COMM_WORLD)
    if MPI.COMM_WORLD.Get_rank() == 0:
        out["/".join(str(c) for c in cell)] = figures(result)
    else:
        assert result is None
if MPI.COMM_WORLD.Get_rank() == 0:
    with open({path!r}, "w") as handle:
        json.dump(out, handle)
"""


@pytest.mark.subprocess
@pytest.mark.parametrize("half", [pytest.param(half, marks=half_group(half)) for half in (0, 1)])
def test_every_cell_on_two_mpi_ranks_has_the_plain_runs_bits(half, tmp_path):
    mpiexec = shutil.which("mpiexec", path=sysconfig.get_path("scripts")) or shutil.which("mpiexec")
    if mpiexec is None:
        pytest.fail("mpiexec not found: the test extra installs mpi4py and mpich (pip install -e '.[test]')")
    path = tmp_path / "mpi.json"
    script = tmp_path / "cells.py"
    script.write_text(MPI_CHILD.format(tests=os.path.join(ROOT, "tests"), path=str(path), half=half))
    done = subprocess.run([mpiexec, "-n", "2", sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = json.loads(path.read_text())
    for cell in (cell for cell in CELLS if HALVES[cell[0]] == half and cell[1] != "estimate"):
        assert found["/".join(str(c) for c in cell)] == figures(plain(cell)), cell
