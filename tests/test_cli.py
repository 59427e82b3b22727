"""The ``fastgrad`` command line: in-process for argument handling, in subprocesses end to end."""

import json
import os
import subprocess
import sys

import pytest

import fastgrad as fg
from fastgrad import cli

from conftest import ROOT


def run_cli(*args, module=False):
    """Run the installed console script (or ``python -m fastgrad``) with no stdin; return the CompletedProcess."""
    if module:
        command = [sys.executable, "-m", "fastgrad", *args]
    else:
        script = os.path.join(os.path.dirname(sys.executable), "fastgrad")
        command = [script, *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600, stdin=subprocess.DEVNULL)


# --- end to end, in fresh processes -----------------------------------------------------------


@pytest.mark.subprocess
def test_compare_end_to_end_json_matches_the_api(tmp_path):
    out = tmp_path / "out.json"
    done = run_cli("compare", "--loc", "2", "--scale", "1", "--f", "square", "-n", "1e6", "--seed", "0",
                   "--wrt", "loc,scale", "--threads", "2", "--json", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "variance ratio score/pathwise" in done.stdout and f"wrote {out}" in done.stdout
    data = json.loads(out.read_text())
    api = fg.compare(fg.Normal(2.0, 1.0), "square", 10**6, seed=0, wrt=("loc", "scale")).to_dict()
    for key in ("seconds", "draws_per_second", "threads"):
        data.pop(key), api.pop(key)
    run = data.pop("run")
    assert data == api
    assert set(run) == {"fastgrad", "numba", "numpy", "python", "threads", "threads_source", "mpi_ranks", "seed",
                        "wall_seconds", "started_utc", "command"}  # fmt: skip
    assert run["fastgrad"] == fg.__version__ and run["seed"] == 0 and run["threads"] == 2
    assert run["threads_source"] == "--threads" and run["mpi_ranks"] == 1
    assert run["command"][:2] == ["fastgrad", "compare"]
    assert not list(tmp_path.glob(".out.json.*"))  # no temporary file left behind


@pytest.mark.subprocess
def test_curve_end_to_end_with_plot_and_json_via_python_m(tmp_path):
    png, out = tmp_path / "curve.png", tmp_path / "curve.json"
    done = run_cli("curve", "--loc", "2", "--f", "square", "--sizes", "10,100,1000", "--repeats", "200",
                   "--seed", "3", "--wrt", "loc", "--plot", str(png), "--json", str(out), module=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "fastgrad.variance_curve" in done.stdout
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 10_000
    data = json.loads(out.read_text())
    assert data["kind"] == "variance_curve" and data["repeats"] == 200 and data["sample_sizes"] == [10, 100, 1000]
    assert data["run"]["command"][0] == "python -m fastgrad"
    api = fg.variance_curve(fg.Normal(2.0, 1.0), "square", (10, 100, 1000), repeats=200, seed=3, wrt="loc")
    assert data["points"] == api.to_dict()["points"]


@pytest.mark.subprocess
def test_json_to_stdout_is_only_json():
    done = run_cli("compare", "--f", "cos(omega=1.5)", "--loc", "0.5", "--scale", "2", "-n", "10**5",
                   "--seed", "1", "--json", "-")  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["function"]["parameters"] == {"omega": 1.5} and data["n"] == 100_000


@pytest.mark.subprocess
def test_bad_arguments_exit_2_with_one_line_before_any_work(tmp_path):
    done = run_cli("compare", "--f", "square", "-n", "1e8.5", "--json", str(tmp_path / "x.json"))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert done.stderr.startswith("fastgrad compare: error: argument -n:")
    assert done.stdout == "" and not (tmp_path / "x.json").exists()
    help_text = run_cli("curve", "--help")
    assert help_text.returncode == 0 and "examples:" in help_text.stdout and "--repeats" in help_text.stdout


# --- argument handling, in process ---------------------------------------------------------------


def error_of(capsys, *args):
    status = cli.main(list(args))
    captured = capsys.readouterr()
    assert status == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (("compare", "--f", "square"), "the following arguments are required: -n"),
        (("compare", "-n", "100"), "the following arguments are required: --f"),
        (("compare", "--f", "square", "-n", "abc"), "argument -n: expected a whole number"),
        (("compare", "--f", "square", "-n", "1"), "argument -n: n must be an integer number of draws"),
        (("compare", "--f", "square", "-n", "1e300"), "argument -n: expected a whole number"),
        (("compare", "--f", "sqaure", "-n", "100"), "argument --f: expected one of cos, exp_quadratic, linear"),
        (("compare", "--f", "cos(omega=x)", "-n", "100"), "argument --f: omega must be a real number"),
        (("compare", "--f", "square(k=1)", "-n", "100"), "argument --f: square takes no parameters"),
        (("compare", "--f", "cos(omega=inf)", "-n", "100"), "argument --f: omega must be finite"),
        (("compare", "--f", "square", "-n", "100", "--scale", "0"), "argument --scale: scale must be positive"),
        (("compare", "--f", "square", "-n", "100", "--wrt", "mu"), "argument --wrt: wrt must contain"),
        (("compare", "--f", "square", "-n", "100", "--seed", "-3"), "argument --seed: seed must be"),
        (("compare", "--f", "square", "-n", "100", "--threads", "99"), "argument --threads: threads must be"),
        (("compare", "--f", "square", "-n", "100", "--nan-policy", "skip"), "argument --nan-policy: invalid choice"),
        (("compare", "--f", "square", "-n", "100", "--dist", "cauchy"), "argument --dist: invalid choice"),
        (("curve", "--f", "square", "--sizes", "10,x"), "argument --sizes: expected comma-separated"),
        (("curve", "--f", "square", "--sizes", "10,10"), "argument --sizes: sample_sizes must be"),
        (("curve", "--f", "square", "--repeats", "1"), "argument --repeats: repeats must be an integer >= 2"),
        (("curve", "--f", "square", "--bogus"), "unrecognized arguments: --bogus"),
        (("frobnicate",), "invalid choice: 'frobnicate'"),
        ((), "choose a command: compare, estimate, curve, optimize, merge, warmup"),
        (("estimate", "--f", "square", "-n", "100"), "the following arguments are required: --estimator"),
        (("compare", "--dist", "bernoulli", "--f", "square", "-n", "100"), "Bernoulli has no pathwise"),
        (
            ("compare", "--dist", "exponential", "--loc", "1", "--f", "square", "-n", "100"),
            "argument --loc: applies to --dist normal, not --dist exponential",
        ),
        (
            ("estimate", "--dist", "bernoulli", "--p", "1.5", "--f", "square", "-n", "100", "--estimator", "score"),
            "argument --p: p must be strictly between 0 and 1",
        ),
        (
            (
                "compare",
                "--dist",
                "diagnormal",
                "--loc",
                "1,2",
                "--scale",
                "1,2,3",
                "--f",
                "sum_of_squares",
                "-n",
                "100",
            ),
            "lengths differ: [2, 3]",
        ),
        (
            ("compare", "--dist", "diagnormal", "--f", "square", "-n", "100"),
            "argument --f: with --dist diagnormal or dirichlet, expected one of sum_of_squares",
        ),
        (
            ("compare", "--dist", "dirichlet", "--f", "sum_of_squares", "-n", "100"),
            "argument --concentration: required with --dist dirichlet",
        ),
        (
            ("compare", "--dist", "dirichlet", "--concentration", "2", "--f", "sum_of_squares", "-n", "100"),
            "argument --concentration: one number needs --dim K",
        ),
        (
            ("compare", "--dist", "dirichlet", "--concentration", "1,-2", "--f", "sum_of_squares", "-n", "100"),
            "argument --concentration: concentration[1] must be positive",
        ),
        (
            ("compare", "--dist", "beta", "--concentration", "1,2", "--f", "square", "-n", "100"),
            "argument --concentration: applies to --dist dirichlet, not --dist beta",
        ),
        (
            ("compare", "--dist", "diagnormal", "--f", "quadratic", "-n", "100"),
            "argument --f: quadratic takes its weights from --weights",
        ),
        (
            ("compare", "--dist", "diagnormal", "--loc", "1,2", "--f", "quadratic", "--weights", "1", "-n", "100"),
            "argument --weights: quadratic has 1 weights but the distribution has 2 components",
        ),
        (("compare", "--loc", "1,2", "--f", "square", "-n", "100"), "argument --loc: --dist normal takes one number"),
        (("compare", "--dim", "3", "--f", "square", "-n", "100"), "argument --dim: applies to a vector --dist"),
        (
            (
                "compare",
                "--dist",
                "diagnormal",
                "--loc",
                "1,2",
                "--scale",
                "1,-1",
                "--f",
                "sum_of_squares",
                "-n",
                "100",
            ),
            "argument --scale: scale[1] must be positive",
        ),
        (
            ("compare", "--f", "square", "--weights", "1,2", "-n", "100"),
            "argument --weights: only with --dist diagnormal",
        ),
        (
            ("compare", "--dist", "diagnormal", "--loc", "x,1", "--f", "sum_of_squares", "-n", "100"),
            "argument --loc: expected a real number or comma-separated reals",
        ),
        (("optimize", "--f", "square", "--steps", "0", "--lr", "0.1"), "argument --steps: steps must be an integer"),
        (("optimize", "--f", "square", "--steps", "5", "--lr", "-1"), "argument --lr: learning_rate must be"),
        (("optimize", "--f", "square", "--steps", "5"), "the following arguments are required: --lr"),
        (
            ("optimize", "--f", "square", "--steps", "5", "--lr", "0.1", "--optimum", "loc"),
            "expected P=V[,V...][,P=V...]",
        ),
        (
            ("optimize", "--f", "square", "--steps", "5", "--lr", "0.1", "--optimum", "loc=0"),
            "argument --tolerance: tolerance must be a number > 0",
        ),
        (
            ("optimize", "--f", "square", "--steps", "5", "--lr", "0.1", "--lr-decay", "10"),
            "argument --lr-decay: expected T0,P",
        ),
        (
            ("optimize", "--f", "square", "--steps", "5", "--lr", "0.1", "--optimum", "1,loc=0"),
            "expected P=V[,V...][,P=V...]",
        ),
    ],
)
def test_bad_arguments(capsys, args, message):
    assert message in error_of(capsys, *args)


def test_output_paths_are_checked_before_the_run(capsys, tmp_path):
    missing = tmp_path / "no" / "out.json"
    assert "argument --json: directory" in error_of(capsys, "compare", "--f", "square", "-n", "100", "--json",
                                                    str(missing))  # fmt: skip
    assert "is a directory" in error_of(capsys, "curve", "--f", "square", "--plot", str(tmp_path))


def test_plot_without_matplotlib_is_a_usage_error(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    line = error_of(capsys, "curve", "--f", "square", "--plot", str(tmp_path / "c.png"))
    assert "pip install 'fastgrad[plot]'" in line


@pytest.mark.parametrize("text, value", [("100", 100), ("1_000", 1000), ("1e8", 10**8), ("10**8", 10**8),
                                         ("2**53", 2**53), ("1.5e3", 1500)])  # fmt: skip
def test_counts_are_read_exactly(text, value):
    assert cli._count(text) == value


def test_non_finite_run_exits_1(capsys):
    status = cli.main(["compare", "--f", "square", "--loc", "1e160", "-n", "1000", "--seed", "0"])
    assert status == 1
    assert "non-finite" in capsys.readouterr().err


def test_existing_json_is_replaced_whole(tmp_path, capsys):
    out = tmp_path / "out.json"
    out.write_text("old")
    assert cli.main(["compare", "--f", "square", "-n", "1000", "--seed", "0", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["n"] == 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


USER_MODULE = """
import numba

@numba.njit
def cube(x):
    return x**3

@numba.njit
def dcube(x):
    return 3 * x**2

plain = lambda x: x
"""


def test_user_functions_by_module_and_by_file(tmp_path, capsys, monkeypatch):
    (tmp_path / "cli_user_funcs.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "o.json"
    args = ["compare", "--loc", "0.5", "--scale", "2", "-n", "100000", "--seed", "3", "--wrt", "loc"]
    status = cli.main([*args, "--f", "cli_user_funcs:cube", "--df", "cli_user_funcs:dcube", "--json", str(out)])
    assert status == 0, capsys.readouterr().err
    data = json.loads(out.read_text())
    assert data["function"] == {"name": "cube", "builtin": False, "has_derivative": True}
    assert data["estimators"]["score"]["analytic_mean"] is None
    # d/dloc E[x**3] = 3 loc**2 + 3 scale**2 = 12.75
    pathwise = data["estimators"]["pathwise"]
    assert abs(pathwise["mean"]["loc"] - 12.75) < 5 * pathwise["stderr"]["loc"]
    capsys.readouterr()
    status = cli.main(["estimate", "--f", "cli_user_funcs.py:cube", "-n", "1000", "--estimator", "score"])
    assert status == 0 and "user function cube" in capsys.readouterr().out


@pytest.mark.parametrize(
    "f, df, message",
    [
        ("cli_user_funcs:cube", None, "argument --df: the pathwise estimator needs the derivative of cube"),
        ("cli_user_funcs:nope", None, "argument --f: 'cli_user_funcs' has no 'nope'"),
        ("no_such_module_x:cube", None, "argument --f: cannot import 'no_such_module_x': ModuleNotFoundError"),
        ("missing.py:cube", None, "argument --f: no such file 'missing.py'"),
        ("cli_user_funcs:plain", None, "f must be a Numba @njit function"),
        ("square", "cli_user_funcs:dcube", "argument --df: only with your own function"),
    ],
)
def test_bad_user_functions(tmp_path, capsys, monkeypatch, f, df, message):
    (tmp_path / "cli_user_funcs.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    args = ["compare", "-n", "100", "--f", f] + (["--df", df] if df else [])
    assert message in error_of(capsys, *args)


def test_diagnormal_from_the_command_line_matches_the_api(tmp_path, capsys):
    out = tmp_path / "d.json"
    status = cli.main(["compare", "--dist", "diagnormal", "--loc", "2,1,0", "--scale", "1,1,2", "--f", "sum_of_squares",
                       "-n", "20000", "--seed", "4", "--json", str(out)])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    data = json.loads(out.read_text())
    api = fg.compare(fg.DiagNormal([2, 1, 0], [1, 1, 2]), fg.functions.sum_of_squares(), n=20000, seed=4).to_dict()
    assert data["estimators"] == api["estimators"] and data["total_variance_ratio"] == api["total_variance_ratio"]
    capsys.readouterr()
    status = cli.main(["estimate", "--dist", "diagnormal", "--loc", "0", "--dim", "4", "--f", "quadratic",
                       "--weights", "1,2,3,4", "-n", "1000", "--estimator", "pathwise", "--seed", "1"])  # fmt: skip
    printed = capsys.readouterr().out
    assert status == 0 and "D = 4 components" in printed


def test_optimize_prints_writes_json_and_plot_as_the_api(tmp_path, capsys):
    """``fastgrad optimize``: the JSON is the API's result (the seed problem; --optimum's keys are the --wrt)."""
    pytest.importorskip("matplotlib")
    out, png = tmp_path / "opt.json", tmp_path / "opt.png"
    args = ("optimize", "--loc", "2", "--f", "square", "--estimators", "score,pathwise", "--steps", "60", "--lr",
            "0.01", "--lr-decay", "50,0.5", "--replicates", "40", "--seed", "1", "--optimum", "loc=0", "--tolerance",
            "0.5", "--json", str(out), "--plot", str(png), "--threads", "1")  # fmt: skip
    assert cli.main(list(args)) == 0
    printed = capsys.readouterr().out
    assert (
        "function evaluations (median) to come within 0.5 of loc = 0 (first)" in printed and f"wrote {png}" in printed
    )
    data = json.loads(out.read_text())
    api = fg.optimize(fg.Normal(2.0, 1.0), "square", "loc", estimators=["score", "pathwise"], steps=60,
                      learning_rate=fg.schedules.inverse_power(0.01, 50.0, 0.5), replicates=40, seed=1,
                      optimum={"loc": 0.0}, tolerance=0.5, threads=1).to_dict()  # fmt: skip
    run = data.pop("run")
    assert data == json.loads(json.dumps(api)) and run["command"][:2] == ["fastgrad", "optimize"]
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.xdist_group("categorical-optimize")  # (tests/test_categorical.py's kernels, in the same worker)
def test_optimize_takes_a_vector_familys_optimum_one_value_per_component(tmp_path):
    """A Categorical from the command line: ``--optimum probs=1,0,0`` is one value per category, as the API's."""
    out = tmp_path / "opt.json"
    args = ("optimize", "--dist", "categorical", "--probs", "0.2,0.3,0.5", "--f", "square", "--estimators",
            "score+optimal-baseline", "--steps", "30", "--lr", "0.1", "--replicates", "20", "--seed", "1",
            "--optimum", "probs=1,0,0", "--tolerance", "0.3", "--json", str(out), "--threads", "1")  # fmt: skip
    assert cli.main(list(args)) == 0
    data = json.loads(out.read_text())
    api = fg.optimize(fg.Categorical([0.2, 0.3, 0.5]), "square", estimators=["score+optimal-baseline"], steps=30,
                      learning_rate=0.1, replicates=20, seed=1, optimum={"probs": [1.0, 0.0, 0.0]}, tolerance=0.3,
                      threads=1).to_dict()  # fmt: skip
    data.pop("run")
    assert data == json.loads(json.dumps(api))
