"""fastgrad.optimize: stochastic-gradient runs per estimator against their closed forms, reproducible, bad input.

The seed problem min_theta E_{N(theta, 1)}[x**2] with SGD and a constant step eta: the pathwise gradient of a draw is
2 x = 2 theta + 2 eps, so theta_{t+1} = (1 - 2 eta) theta_t - 2 eta eps_t: Gaussian, with mean (1 - 2 eta)**t theta_0
and variance 4 eta**2 (1 - (1 - 2 eta)**(2 t)) / (1 - (1 - 2 eta)**2). The score function's estimate is unbiased for
2 theta_t whatever theta_t is, so its mean follows the same recursion (its variance does not).
"""

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
from reference_optimize import CASES, PATH, run_case

import fastgrad as fg
from fastgrad import cli
from fastgrad.functions import ExpPoly

from conftest import ROOT, mpiexec

# One worker: the module's runs share two kernels (Normal with square, and with linear), compiled once a process.
pytestmark = pytest.mark.xdist_group("optimize")

ETA, STEPS, THETA0 = 0.01, 100, 2.0


REFERENCE = json.loads(PATH.read_text())["cases"]


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_every_float_of_the_reference_optimisations(case):
    """The step loop reproduces the reference file's runs bit for bit (see tests/reference_optimize.py)."""
    assert run_case(case) == REFERENCE[case[0]]


@pytest.fixture(scope="module")
def seed_runs():
    return fg.optimize(fg.Normal(THETA0, 1.0), "square", "loc", estimators=["pathwise", "score"], steps=STEPS,
                       learning_rate=ETA, replicates=4000, seed=11, log_every=25, optimum={"loc": 0.0},
                       tolerance=0.05)  # fmt: skip


def test_the_pathwise_mean_and_variance_follow_their_closed_forms(seed_runs):
    stats = seed_runs["pathwise"].parameters["loc"]
    replicates = seed_runs.replicates
    for row, t in zip(stats, seed_runs.steps, strict=True):
        mean = (1 - 2 * ETA) ** t * THETA0
        variance = 4 * ETA**2 * (1 - (1 - 2 * ETA) ** (2 * t)) / (1 - (1 - 2 * ETA) ** 2)
        assert abs(row[0] - mean) <= 5 * math.sqrt(variance / replicates) + 1e-15, t
        # theta_t is Gaussian: the sample variance's standard error is variance * sqrt(2 / (R - 1))
        assert abs(row[4] ** 2 - variance) <= 5 * variance * math.sqrt(2 / (replicates - 1)) + 1e-15, t


def test_the_score_functions_mean_follows_the_same_recursion(seed_runs):
    stats = seed_runs["score"].parameters["loc"]
    for row, t in zip(stats, seed_runs.steps, strict=True):
        assert abs(row[0] - (1 - 2 * ETA) ** t * THETA0) <= 5 * row[4] / math.sqrt(seed_runs.replicates) + 1e-15, t
    # the exact objective at each replicate's theta: E[x**2] = theta**2 + 1, its median from theta's
    final = seed_runs["score"].final[:, 0]
    assert seed_runs["score"].objective[-1, 2] == pytest.approx(np.median(final**2 + 1.0), rel=1e-12)


def test_threads_do_not_change_a_bit_and_a_replicate_reruns_alone(seed_runs):
    kwargs = dict(estimators=["score"], steps=STEPS, learning_rate=ETA, seed=11, log_every=25, optimum={"loc": 0.0},
                  tolerance=0.05)  # fmt: skip
    one = fg.optimize(fg.Normal(THETA0, 1.0), "square", "loc", replicates=4000, threads=1, **kwargs)
    assert one["score"].final.tolist() == seed_runs["score"].final.tolist()
    # the logged statistics too (with a second thread, a logged step's are computed on two)
    for name in ("loc", "scale"):
        assert one["score"].parameters[name].tolist() == seed_runs["score"].parameters[name].tolist()
    assert one["score"].objective.tolist() == seed_runs["score"].objective.tolist()
    assert one["score"].distance.tolist() == seed_runs["score"].distance.tolist()
    alone = fg.optimize(fg.Normal(THETA0, 1.0), "square", "loc", replicates=1, first_replicate=1234, **kwargs)
    assert alone["score"].final.tolist() == seed_runs["score"].final[1234:1235].tolist()


def test_steps_to_tolerance_are_the_first_steps_within_it(seed_runs):
    reached = seed_runs["pathwise"].reached
    assert np.all((reached == -1) | ((reached >= 1) & (reached <= STEPS)))
    r = int(np.flatnonzero(reached > 1)[0])
    kwargs = dict(estimators=["pathwise"], learning_rate=ETA, seed=11, replicates=1, first_replicate=r)
    at = fg.optimize(fg.Normal(THETA0, 1.0), "square", "loc", steps=int(reached[r]), **kwargs)
    before = fg.optimize(fg.Normal(THETA0, 1.0), "square", "loc", steps=int(reached[r]) - 1, **kwargs)
    assert abs(at["pathwise"].final[0, 0]) < 0.05 <= abs(before["pathwise"].final[0, 0])
    quantiles, never = seed_runs["pathwise"].steps_to_tolerance()
    assert never == int(np.sum(reached < 0)) and quantiles[0] == np.median(reached[reached >= 0])
    data = seed_runs.to_dict()
    assert data["estimators"]["pathwise"]["never_reached"] == never
    assert "function evaluations (median) to come within 0.05 of loc = 0 (first)" in str(seed_runs)


def test_settled_is_the_step_after_which_a_replicate_stays_within(seed_runs):
    """Against each replicate's whole path, step by step (replicates rerun alone for 1, 2, ... steps)."""
    score = seed_runs["score"]
    settled, reached = score.settled, score.reached
    assert np.all((settled == -1) | ((settled >= reached) & (settled <= STEPS)))
    kwargs = dict(estimators=["score"], learning_rate=ETA, seed=11, replicates=1, log_every=STEPS)
    for r in [int(np.flatnonzero(settled > reached)[0]), int(np.flatnonzero(settled < 0)[0])]:
        path = [THETA0] + [fg.optimize(fg.Normal(THETA0, 1.0), "square", "loc", steps=t, first_replicate=r,
                                       **kwargs)["score"].final[0, 0] for t in range(1, STEPS + 1)]  # fmt: skip
        outside = [t for t, theta in enumerate(path) if not abs(theta) < 0.05]
        assert settled[r] == (outside[-1] + 1 if outside[-1] < STEPS else -1), r
        assert reached[r] == next((t for t, theta in enumerate(path) if abs(theta) < 0.05), -1), r
    quantiles, outside_at_end = score.steps_to_settle()
    assert outside_at_end == int(np.sum(settled < 0)) and quantiles[0] == np.median(settled[settled >= 0])
    assert seed_runs.to_dict()["estimators"]["score"]["outside_at_end"] == outside_at_end


def test_a_positive_parameter_moves_through_its_logarithm(seed_runs):
    # the scale of N(0, 2) under E[x**2] = scale**2: reported as scale and log_scale, the same replicates
    r = fg.optimize(fg.Normal(0.0, 2.0), "square", "scale", estimators=["pathwise"], steps=20, learning_rate=0.05,
                    replicates=101, seed=3)  # fmt: skip
    assert r.optimized == ("log_scale",)
    scale, log_scale = r["pathwise"].parameters["scale"], r["pathwise"].parameters["log_scale"]
    np.testing.assert_allclose(log_scale[:, 2], np.log(scale[:, 2]), rtol=1e-15)  # the median of 101: one replicate
    assert scale[-1, 0] < 2.0  # E[x**2] falls with the scale


def test_sgd_and_adam_take_their_exact_steps_on_a_constant_gradient():
    """f(x) = x: every pathwise value is exactly 1, so SGD moves loc by the learning rate of each step and Adam by
    a / (1 + epsilon) (its bias-corrected moments of a constant gradient are 1)."""
    schedule = fg.schedules.inverse_power(0.1, 10.0, 0.75)
    sgd = fg.optimize(fg.Normal(2.0, 1.0), "linear", "loc", estimators=["pathwise"], steps=50,
                      learning_rate=schedule, replicates=3, seed=0)  # fmt: skip
    expected = 2.0 - math.fsum(schedule(t) for t in range(50))
    np.testing.assert_allclose(sgd["pathwise"].final[:, 0], expected, rtol=1e-13)
    adam = fg.optimize(fg.Normal(2.0, 1.0), "linear", "loc", estimators=["pathwise"], steps=50, learning_rate=0.01,
                       optimizer="adam", replicates=3, seed=0)  # fmt: skip
    np.testing.assert_allclose(adam["pathwise"].final[:, 0], 2.0 - 50 * 0.01 / (1 + 1e-8), rtol=1e-12)


BAD = {
    "steps": (dict(steps=-1), ValueError, "steps must be an integer from 1"),
    "steps-float": (dict(steps=10.0), TypeError, "steps must be an integer"),
    "learning-rate": (dict(learning_rate=0.0), ValueError, "learning_rate must be a finite number > 0"),
    "optimizer": (dict(optimizer="rmsprop"), ValueError, "optimizer must be one of ['sgd', 'adam']"),
    "loo-batch": (dict(estimators=["score+loo(4)"], batch=6), ValueError, "batch must be a multiple of"),
    "optimum": (dict(optimum={"scale": 1.0}, tolerance=0.1), ValueError, "optimum must be a dict with a value"),
    "tolerance": (dict(optimum={"loc": 0.0}), ValueError, "tolerance must be a number > 0"),
    "replicates": (dict(replicates=0), ValueError, "replicates must be an integer from 1"),
    "equal-cost-batch": (
        dict(estimators=["pathwise+antithetic"], batch=3, equal_cost=True),
        ValueError,
        "batch must be a multiple of 2 with equal_cost",
    ),
    "equal-cost-type": (dict(equal_cost="yes"), TypeError, "equal_cost must be True or False"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_refused_before_any_work(name):
    kwargs = dict(estimators=["score"], steps=10, learning_rate=0.1)
    change, exception, words = BAD[name]
    with pytest.raises(exception, match=words.replace("[", r"\[").replace("]", r"\]")):
        fg.optimize(fg.Normal(1.0, 1.0), "square", "loc", **{**kwargs, **change})


def test_a_family_without_theta_of_is_refused_saying_what_it_needs(monkeypatch):
    # (every built-in family has one; a family of one's own need not: docs/families.md, adding a family)
    monkeypatch.setattr(fg.Laplace, "family", dataclasses.replace(fg.Laplace.family, theta_of=None))
    with pytest.raises(ValueError, match=r"through the family's theta_of .* Laplace's family 'laplace' has none"):
        fg.optimize(fg.Laplace(0.0, 1.0), "square", steps=10, learning_rate=0.1)


@pytest.mark.parametrize("name", ["exp_quadratic", "logistic", "square", "cos"])
def test_the_exact_objective_of_every_builtin_is_the_analytic_engines(name):
    """Whole-array closed forms (polynomials, cos) and the engine a replicate at a time (exp_quadratic, logistic:
    functions without terms, which raised AttributeError before) give the engine's values."""
    module = sys.modules["fastgrad.optimize"]
    function = fg.functions.resolve(name)
    for distribution, rows in ((fg.Normal(1.0, 1.0), [[0.5, 0.7], [-1.0, 2.0], [3.0, 0.1]]),
                               (fg.Gamma(2.5, 1.5), [[0.4, 0.3], [2.5, 1.5], [30.0, 5.0]])):  # fmt: skip
        rows = np.array(rows)
        family = distribution.family
        got = module._exact_objective(distribution, function, rows)
        for row, value in zip(rows, got, strict=True):
            theta = family.theta_of(np.ascontiguousarray(row))
            expected = float(family.expectation(function.exact(), theta, (1,)))
            assert abs(value - expected) <= 1e-12 * max(1.0, abs(expected)), (distribution, row)


#: (distribution, function, a row of its parameters): the exact objective's paths (closed forms of a Normal,
#: a Gamma, a Beta, a DiagNormal's components; the engine a row at a time). (A Categorical's, a product of
#: matrices, is taken whole.)
EXACT_PATHS = [
    (fg.Normal(1.0, 1.0), "square", [0.5, 0.7]),
    (fg.Normal(1.0, 1.0), "cos", [0.5, 0.7]),
    (fg.Gamma(2.5, 1.5), "square", [2.5, 1.5]),
    (fg.Beta(2.5, 1.5), "square", [2.5, 1.5]),
    (fg.Normal(1.0, 1.0), "logistic", [0.5, 0.7]),
    (fg.DiagNormal([1.0, -0.5], [0.8, 1.2]), fg.functions.sum_of_squares(), [1.0, -0.5, 0.8, 1.2]),
]


@pytest.mark.parametrize("case", range(len(EXACT_PATHS)))
def test_the_exact_objective_of_many_rows_is_each_rows_own(case):
    """Many rows are taken in chunks, and rows that are all the same as one: each row's number is still the
    number of that row alone, bit for bit (equal rows; 10 000 rows spread about one, as a logged step's)."""
    module = sys.modules["fastgrad.optimize"]
    distribution, function, row = EXACT_PATHS[case]
    function = fg.functions.resolve(function) if isinstance(function, str) else function
    count = 300 if function.builtin.name == "logistic" else 10_000  # (the engine: 0.2 ms a row)
    spread = np.array(row) * np.exp(0.05 * np.random.default_rng(case).normal(size=(count, len(row))))
    for rows in (np.tile(row, (count, 1)), spread):
        got = module._exact_objective(distribution, function, rows)
        alone = np.concatenate([module._exact_rows(distribution, function, rows[i : i + 1]) for i in range(count)])
        np.testing.assert_array_equal(got.view(np.uint64), alone.view(np.uint64))


def test_logging_does_not_change_a_bit(seed_runs):
    """Logged steps are snapshots taken inside the kernel: logging every step or only at the end, the same run."""
    kwargs = dict(estimators=["pathwise"], steps=STEPS, learning_rate=ETA, replicates=300, seed=11)
    every = fg.optimize(fg.Normal(THETA0, 1.0), "square", "loc", log_every=1, **kwargs)
    end = fg.optimize(fg.Normal(THETA0, 1.0), "square", "loc", log_every=STEPS, **kwargs)
    assert every["pathwise"].final.tolist() == end["pathwise"].final.tolist()
    assert every["pathwise"].final.tolist() == seed_runs["pathwise"].final[:300].tolist()
    assert every["pathwise"].parameters["loc"][[0, -1]].tolist() == end["pathwise"].parameters["loc"].tolist()


def test_equal_cost_gives_two_evaluation_estimators_half_the_draws():
    """With equal_cost, batch counts evaluations: the antithetic pair draws batch / 2; on f = x**2 each pair's
    gradient is exactly 2 theta, so its replicates follow theta_t = (1 - 2 eta)**t theta_0 to rounding."""
    r = fg.optimize(fg.Normal(THETA0, 1.0), "square", "loc", estimators=["pathwise", "pathwise+antithetic"], steps=50,
                    learning_rate=ETA, batch=4, equal_cost=True, replicates=20, seed=3)  # fmt: skip
    assert (r["pathwise"].draws_per_step, r["pathwise"].evaluations_per_step) == (4, 4)
    assert (r["pathwise+antithetic"].draws_per_step, r["pathwise+antithetic"].evaluations_per_step) == (2, 4)
    np.testing.assert_allclose(r["pathwise+antithetic"].final[:, 0], (1 - 2 * ETA) ** 50 * THETA0, rtol=1e-12)
    assert r.to_dict()["estimators"]["pathwise+antithetic"]["draws_per_step"] == 2
    assert "batch 4 function evaluations (equal cost)" in str(r)


def test_plot_writes_both_panels(tmp_path):
    pytest.importorskip("matplotlib")
    r = fg.optimize(fg.Normal(THETA0, 1.0), "square", "loc", estimators=["pathwise", "pathwise+antithetic"],
                    steps=40, learning_rate=ETA, replicates=50, seed=3, optimum={"loc": 0.0},
                    tolerance=0.05)  # fmt: skip
    assert r.optimum_objective == 1.0  # E[x**2] at loc 0, scale 1
    path = r.plot(tmp_path / "opt.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from fastgrad.plotting import _optimization_quantity

    label, quantity, log = _optimization_quantity(r)
    assert log and label.startswith("excess objective")
    np.testing.assert_allclose(quantity["pathwise"][:, 0], r["pathwise"].objective[:, 2] - 1.0)


def _numbers(result):
    document = result.to_dict()
    for key in ("threads", "interrupted", "steps_done"):
        document.pop(key)
    return document


def test_ctrl_c_keeps_the_steps_done_which_are_the_full_runs_first_steps():
    kwargs = dict(estimators=["pathwise", "score"], learning_rate=ETA, replicates=1000, seed=5, log_every=50)
    fg.optimize(fg.Normal(THETA0, 1.0), "square", "loc", steps=10, **kwargs)  # compiled before the clock
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    stopped = fg.optimize(fg.Normal(THETA0, 1.0), "square", "loc", steps=10**8, progress=False, **kwargs)
    timer.join()
    assert stopped.interrupted == "SIGINT" and 0 < stopped.steps_done < 10**8 and stopped.steps_requested == 10**8
    assert "interrupted (SIGINT) after step" in str(stopped)
    again = fg.optimize(fg.Normal(THETA0, 1.0), "square", "loc", steps=stopped.steps_done, **kwargs)
    shared = np.isin(again.steps, stopped.steps)
    assert shared.sum() == len(stopped.steps)
    for name in kwargs["estimators"]:
        assert stopped[name].final.tolist() == again[name].final.tolist()
        assert stopped[name].parameters["loc"].tolist() == again[name].parameters["loc"][shared].tolist()


def test_a_checkpoint_resumes_bit_identically_and_another_runs_is_refused(tmp_path, monkeypatch):
    """Adam's moments, a pilot's baseline and the steps to tolerance all carry over a stop, on both kernels.

    (The plain kernel runs the first three estimators, the general one the leave-one-out baseline.)
    """
    monkeypatch.setattr(sys.modules["fastgrad.optimize"], "TARGET_SEGMENT_SECONDS", 0.01)
    path = tmp_path / "opt.ckpt"
    kwargs = dict(estimators=["pathwise", "score+optimal-baseline", "measure-valued", "score+loo(4)"], batch=4,
                  learning_rate=ETA, optimizer="adam", replicates=100, seed=5, steps=20_000, log_every=1000,
                  optimum={"loc": 0.0}, tolerance=0.05)  # fmt: skip
    clean = fg.optimize(fg.Normal(THETA0, 1.0), "square", "loc", **kwargs)
    module, segments = sys.modules["fastgrad.optimize"], []
    show = module._show_progress

    def stop_after_three_segments(job, *args):  # (as Ctrl-C does, at a step that depends on nothing but this)
        segments.append(args[0])
        if len(segments) == 3:
            job.stop_reason = "SIGINT"
        show(job, *args)

    monkeypatch.setattr(module, "_show_progress", stop_after_three_segments)
    stopped = fg.optimize(fg.Normal(THETA0, 1.0), "square", "loc", checkpoint=path, **kwargs)
    monkeypatch.setattr(module, "_show_progress", show)
    assert stopped.interrupted == "SIGINT" and stopped.steps_done == segments[2] < 20_000
    assert json.loads(path.read_text())["step"] == stopped.steps_done
    resumed = fg.optimize(fg.Normal(THETA0, 1.0), "square", "loc", checkpoint=path, **kwargs)
    assert resumed.interrupted is None and resumed.steps_done == 20_000
    assert _numbers(resumed) == _numbers(clean)
    before = path.read_bytes()
    with pytest.raises(fg.PartialError, match="is from a different run: seed is 5 there and 6 here"):
        fg.optimize(fg.Normal(THETA0, 1.0), "square", "loc", checkpoint=path, **{**kwargs, "seed": 6})
    assert path.read_bytes() == before  # refused, not written over
    path.write_text(path.read_text().replace('"step": 20000', '"step": 19999'))
    with pytest.raises(fg.PartialError, match="is corrupted: its SHA-256 checksum"):
        fg.optimize(fg.Normal(THETA0, 1.0), "square", "loc", checkpoint=path, **kwargs)


@pytest.mark.subprocess
def test_cli_sigterm_exits_143_with_the_partial_json(tmp_path):
    out = tmp_path / "partial.json"
    command = [sys.executable, "-m", "fastgrad", "optimize", "--loc", "2", "--f", "square", "--wrt", "loc",
               "--estimators", "pathwise", "--steps", "1e9", "--lr", "0.01", "--replicates", "1000", "--seed", "0",
               "--json", str(out), "--progress"]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "fastgrad" in process.stderr.read(10)  # progress lines start with "\rfastgrad:"
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 143, err
    data = json.loads(out.read_text())
    assert data["interrupted"] == "SIGTERM" and data["steps_requested"] == 10**9 and 0 < data["steps_done"] < 10**9
    assert f"interrupted (SIGTERM) after step {data['steps_done']:,} of 1,000,000,000" in err


SHARDED = dict(estimators=["pathwise", "score+optimal-baseline"], steps=300, learning_rate=ETA, replicates=101, seed=4,
               log_every=7, optimum={"loc": 0.0}, tolerance=0.05, optimizer="adam")  # fmt: skip


@pytest.fixture(scope="module")
def sharded_single():
    return fg.optimize(fg.Normal(THETA0, 1.0), "square", "loc", **SHARDED)


def test_shards_merge_bit_identically_and_bad_sets_are_refused(tmp_path, sharded_single):
    parts = [fg.optimize(fg.Normal(THETA0, 1.0), "square", "loc", shard=(i, 3), **SHARDED) for i in range(3)]
    assert [p.replicates for p in parts] == [(0, 33), (33, 67), (67, 101)]
    paths = []
    for i, part in enumerate(parts):
        paths.append(tmp_path / f"part{i}.json")
        part.save(paths[-1])
    merged = fg.merge(paths[::-1])  # any order
    assert _numbers(merged) == _numbers(sharded_single)
    assert _numbers(fg.merge(parts)) == _numbers(sharded_single)
    with pytest.raises(fg.PartialError, match=r"leaves replicates \[33, 67\) to no shard"):
        fg.merge([paths[0], paths[2]])
    with pytest.raises(fg.PartialError, match="overlaps another"):
        fg.merge([paths[0], paths[0], paths[1], paths[2]])
    other = fg.optimize(fg.Normal(THETA0, 1.0), "square", "loc", shard=(1, 3), **{**SHARDED, "seed": 5})
    with pytest.raises(fg.PartialError, match="is from a different run: seed is 5 there and 4 here"):
        fg.merge([parts[0], other, parts[2]])
    with pytest.raises(ValueError, match="shard must split the replicates into at most 101 ranges"):
        fg.optimize(fg.Normal(THETA0, 1.0), "square", "loc", shard=(0, 102), **SHARDED)


def test_shards_of_a_natural_parameters_run_merge():
    # (the partials' fingerprint names log_scale, not scale: merging them raised ValueError before)
    kwargs = dict(estimators=["pathwise"], steps=10, learning_rate=ETA, replicates=10, seed=1)
    parts = [fg.optimize(fg.Normal(THETA0, 1.0), "square", "scale", shard=(i, 2), **kwargs) for i in range(2)]
    single = fg.optimize(fg.Normal(THETA0, 1.0), "square", "scale", **kwargs)
    assert _numbers(fg.merge(parts)) == _numbers(single)


def test_cli_shards_and_merge(tmp_path, capsys, sharded_single):
    common = ["optimize", "--loc", "2", "--f", "square", "--estimators", "pathwise,score+optimal-baseline",
              "--steps", "300", "--lr", "0.01", "--replicates", "101", "--seed", "4", "--log-every", "7",
              "--optimum", "loc=0", "--tolerance", "0.05", "--optimizer", "adam"]  # fmt: skip
    for i in range(2):
        assert cli.main([*common, "--shard", f"{i}/2", "--json", str(tmp_path / f"p{i}.json")]) == 0
    assert "shard 1/2: replicates [50, 101), step 300 of 300" in capsys.readouterr().out
    out = tmp_path / "merged.json"
    assert cli.main(["merge", str(tmp_path / "p0.json"), str(tmp_path / "p1.json"), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    data.pop("run")
    expected = json.loads(json.dumps(sharded_single.to_dict()))
    for document in (data, expected):
        document.pop("threads")
    assert data == expected


@pytest.mark.subprocess
def test_mpi_two_ranks_agree_with_one_process_and_their_checkpoint_resumes_anywhere(tmp_path, sharded_single):
    out, checkpoint = tmp_path / "mpi.json", tmp_path / "mpi.ckpt"
    command = [mpiexec(), "-n", "2", sys.executable, "-m", "fastgrad", "optimize", "--loc", "2", "--f", "square",
               "--estimators", "pathwise,score+optimal-baseline", "--steps", "300", "--lr", "0.01", "--replicates",
               "101", "--seed", "4", "--log-every", "7", "--optimum", "loc=0", "--tolerance", "0.05", "--optimizer",
               "adam", "--threads", "1", "--mpi", "--json", str(out), "--checkpoint", str(checkpoint)]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("fastgrad.optimize") == 1  # rank 0 prints, rank 1 does not
    data = json.loads(out.read_text())
    assert data.pop("run")["mpi_ranks"] == 2
    expected = json.loads(json.dumps(sharded_single.to_dict()))
    for document in (data, expected):
        document.pop("threads")
    assert data == expected
    # the checkpoint holds every replicate: one process resumes it (finished: the same numbers)
    resumed = fg.optimize(fg.Normal(THETA0, 1.0), "square", "loc", checkpoint=checkpoint, **SHARDED)
    assert _numbers(resumed) == _numbers(sharded_single)


def test_diagnormal_components_follow_their_closed_forms():
    """f = sum_i x_i**2: each loc_i is the seed problem with its own scale: mean (1 - 2 eta)**t loc_i and variance
    4 scale_i**2 eta**2 (1 - (1 - 2 eta)**(2 t)) / (1 - (1 - 2 eta)**2); E[f] = sum_i loc_i**2 + scale_i**2."""
    loc, scale = [2.0, -1.0, 0.5], [1.0, 1.0, 2.0]
    r = fg.optimize(fg.DiagNormal(loc, scale), fg.functions.sum_of_squares(), "loc", estimators=["pathwise"], steps=60,
                    learning_rate=ETA, replicates=2000, seed=2, log_every=20, optimum={"loc": [0.0, 0.0, 0.0]},
                    tolerance=0.1)  # fmt: skip
    for i in range(3):
        for row, t in zip(r["pathwise"].parameters[f"loc[{i}]"], r.steps, strict=True):
            mean = (1 - 2 * ETA) ** t * loc[i]
            variance = 4 * scale[i] ** 2 * ETA**2 * (1 - (1 - 2 * ETA) ** (2 * t)) / (1 - (1 - 2 * ETA) ** 2)
            assert abs(row[0] - mean) <= 5 * math.sqrt(variance / 2000) + 1e-15, (i, t)
            assert abs(row[4] ** 2 - variance) <= 5 * variance * math.sqrt(2 / 1999) + 1e-15, (i, t)
    final = r["pathwise"].final
    assert final.shape == (2000, 6) and np.all(final[:, 3:] == scale)
    expected = np.median(np.sum(final[:, :3] ** 2, axis=1) + sum(s**2 for s in scale))
    assert r["pathwise"].objective[-1, 2] == pytest.approx(expected, rel=1e-12)
    assert r.optimum_objective == pytest.approx(6.0)
    one = fg.optimize(fg.DiagNormal(loc, scale), fg.functions.sum_of_squares(), "loc", estimators=["pathwise"],
                      steps=60, learning_rate=ETA, replicates=1, first_replicate=77, seed=2, threads=1)  # fmt: skip
    assert one["pathwise"].final.tolist() == final[77:78].tolist()


def test_a_one_component_diagnormal_is_the_normal_bit_for_bit():
    """The vector kernel against the scalar one: the same draws, values and updates (Adam, loc and log_scale)."""
    kwargs = dict(estimators=["pathwise", "score"], steps=300, learning_rate=ETA, replicates=50, seed=3,
                  optimizer="adam", log_every=100)  # fmt: skip
    scalar = fg.optimize(fg.Normal(THETA0, 1.5), "square", ["loc", "scale"], **kwargs)
    vector = fg.optimize(fg.DiagNormal([THETA0], [1.5]), fg.functions.sum_of_squares(), ["loc", "scale"], **kwargs)
    for name in kwargs["estimators"]:
        assert vector[name].final.tolist() == scalar[name].final.tolist()
        assert vector[name].parameters["log_scale[0]"].tolist() == scalar[name].parameters["log_scale"].tolist()
        assert vector[name].objective.tolist() == scalar[name].objective.tolist()


def test_diverging_replicates_are_counted_and_left_out_of_the_statistics():
    """The score function's noise grows with x**2: at a large step some replicates overflow to inf and NaN.

    They are counted and reported; NumPy's overflow warnings about them are not repeated.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        r = fg.optimize(fg.Normal(THETA0, 1.0), "square", "loc", estimators=["score"], steps=200, learning_rate=0.1,
                        replicates=200, seed=3)  # fmt: skip
    t = r["score"]
    finite = np.isfinite(t.final[:, 0])
    assert 0 < t.diverged == int(np.sum(~finite)) < 200
    assert t.parameters["loc"][-1, 5] == finite.sum()
    assert t.parameters["loc"][-1, 2] == np.median(t.final[finite, 0])
    json.dumps(r.to_dict(), allow_nan=False)  # no NaN or inf in the JSON
    assert f"score {t.diverged:,} of 200 replicates" in str(r)


@pytest.mark.parametrize(
    "kind", ["normal", "ties", "with-infinities", "few", "one", "constant", "zeros", "huge", "strided", "many"]
)
def test_the_statistics_are_numpys_bit_for_bit(kind):
    """The logged statistics, computed in one compiled call, are NumPy's ``mean``, ``quantile`` and ``std(ddof=1)``
    of the finite values, bit for bit: its pairwise sums, its quantiles' interpolation. (NumPy 2's sums, on any
    NumPy: NumPy 1 sums more than 8192 values a buffer at a time, so its mean and spread may differ by an ulp or
    two, and fastgrad's do not follow it.)

    ``ties`` has ties of 0.0 and -0.0 (``np.round``; their order may give either zero, as NumPy's own sorts do
    from one CPU to another: there the numbers are compared, not the bits), ``zeros`` only those, ``huge``
    squares that overflow, ``many`` more values than NumPy sums in one pass.
    """
    module = sys.modules["fastgrad.optimize"]
    values = np.random.default_rng(3).normal(size=10_001) + 2.0
    if kind == "ties":
        values = np.round(values - 2.0, 1)
    elif kind == "with-infinities":
        values[::97] = np.inf
        values[::89] = np.nan
    elif kind == "few":
        values = values[:3]
    elif kind == "one":
        values = values[:1]
    elif kind == "constant":
        values = np.full(4_000, -0.75)
    elif kind == "zeros":
        values = np.where(values < 2.0, -0.0, 0.0)
    elif kind == "huge":
        values = values * 1e300
    elif kind == "strided":
        values = np.stack([values, values]).T[:, 0]
    elif kind == "many":
        values = np.random.default_rng(4).normal(size=100_003)
    finite = values[np.isfinite(values)]
    with np.errstate(over="ignore"):
        numpy = np.array([np.mean(finite), *np.quantile(finite, module.QUANTILES),
                          np.std(finite, ddof=1) if finite.size > 1 else 0.0, finite.size])  # fmt: skip
    got = module._statistics(values)
    if np.lib.NumpyVersion(np.__version__) < "2.0.0":  # (NumPy 1 sums in buffers of 8192 values: not its bits)
        # (the two sums' orders differ: a few rounding errors of the sum of the magnitudes apart)
        with np.errstate(over="ignore"):
            assert abs(got[0] - numpy[0]) <= 4 * np.finfo(float).eps * np.mean(np.abs(finite))
        np.testing.assert_array_max_ulp(got[4], numpy[4], maxulp=4)
        got, numpy = got[[1, 2, 3, 5]], numpy[[1, 2, 3, 5]]
    if kind in ("ties", "zeros"):
        np.testing.assert_array_equal(got, numpy)
    else:
        np.testing.assert_array_equal(got.view(np.uint64), numpy.view(np.uint64))


@pytest.mark.parametrize("value", [2.0, -0.0, 0.1, -3.7e-5, 1e300, 5e-324, 1 / 3])
def test_the_statistics_of_equal_values_need_no_copies(value):
    """At the start every replicate is alike: its statistics come from one value and a count (NumPy's pairwise
    sums replayed), the numbers of the whole array, bit for bit, for counts across the sums' cases."""
    module = sys.modules["fastgrad.optimize"]
    for count in (1, 2, 7, 8, 9, 127, 128, 129, 1000, 8193, 10_000):
        whole = module._statistics(np.full(count, value))
        np.testing.assert_array_equal(module._statistics_of_equal(value, count).view(np.uint64), whole.view(np.uint64))


@pytest.mark.parametrize("degree", range(9))
def test_the_normal_polynomial_objective_in_real_arithmetic_is_the_complex_ones(degree):
    """A polynomial's exact objective under a Normal is computed in real arithmetic: the complex closed form's
    numbers wherever either is finite, bit for bit, and non-finite where it is (its NaN, here inf), over
    parameters across the doubles' range (x**degree, and a polynomial of every degree to it)."""
    module = sys.modules["fastgrad.optimize"]
    rng = np.random.default_rng(degree)
    n = 3000
    loc = np.concatenate([rng.normal(size=n) * 10.0 ** rng.integers(-300, 300, n), rng.normal(size=n) * 3,
                          [0.0, -0.0, 5e-324, -1e-310, 1e154, -1e154, 1e308, np.inf, -np.inf, np.nan]])  # fmt: skip
    scale = np.concatenate([np.abs(rng.normal(size=n)) * 10.0 ** rng.integers(-300, 300, n),
                            np.abs(rng.normal(size=n)) + 0.01,
                            [1.0, 0.5, 1.0, 1.0, 1.0, 1e155, 1.0, 1.0, 1.0, 1e-320]])  # fmt: skip
    for h in (ExpPoly.polynomial([0] * degree + [1]), ExpPoly.polynomial(rng.normal(size=degree + 1).tolist())):
        with np.errstate(all="ignore"):
            real = module._normal_polynomial(h, loc, scale)
            complex_ = module._normal_expectations(h, loc, scale)
        finite = np.isfinite(complex_)
        np.testing.assert_array_equal(np.isfinite(real), finite)
        np.testing.assert_array_equal(real[finite].view(np.uint64), complex_[finite].view(np.uint64))
