"""Faults found by probing the API and the CLI as a demanding user would, each tested as its class."""

import json

import pytest

import fastgrad as fg
from fastgrad import cli

# --- exact values that do not fit a float64: the run's figures stay, the exact ones are None ---------------

#: (distribution, function, estimators): runs whose exact values overflow float64 arithmetic.
OVERFLOWING = {
    "normal-1e50-quartic": (fg.Normal(1e50, 1.0), "quartic", None),
    "exponential-1e-150-linear": (fg.Exponential(1e-150), "linear", None),
    "exponential-1e300-square": (fg.Exponential(1e300), "square", None),
    "normal-1e50-quartic-variants": (fg.Normal(1e50, 1.0), "quartic", ["score+baseline(1)", "pathwise+antithetic"]),
    "diagnormal-1e100-sum_of_squares": (fg.DiagNormal([1e100, 1.0], [1.0, 1.0]), fg.functions.sum_of_squares(), None),
}


@pytest.mark.parametrize("name", list(OVERFLOWING))
@pytest.mark.parametrize("kind", ["compare", "estimate", "curve"])
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
