"""Printed tables and JSON output."""

import json
import math

import pytest

import fastgrad as fg


@pytest.fixture(scope="module")
def comparison():
    return fg.compare(fg.Normal(2.0, 1.0), "square", n=200_000, seed=0)


def test_table_shows_estimates_uncertainty_and_truth(comparison):
    text = str(comparison)
    for piece in (
        "Normal(loc=2.0, scale=1.0)",
        "f(x) = x**2",
        "n = 200,000 draws",
        "seed 0",
        "score",
        "pathwise",
        "±",
        "analytic gradient 4",
        "87",
        "variance ratio score/pathwise",
        "95% CI",
        "(analytic 21.75)",
        "M/s",
    ):
        assert piece in text, piece


def test_to_dict_is_strict_json(comparison):
    data = json.loads(json.dumps(comparison.to_dict(), allow_nan=False))
    assert data["analytic_variance_ratio"] == {"loc": 21.75, "scale": pytest.approx(346 / 24)}
    assert data["estimators"]["score"]["analytic_variance"]["loc"] == 87.0
    assert data["schema"] == fg.results.SCHEMA and data["kind"] == "comparison"
    low, high = data["variance_ratio_ci95"]["loc"]
    assert low < data["variance_ratio"]["loc"] < high
    assert data["distribution"] == {"family": "Normal", "loc": 2.0, "scale": 1.0}
    assert data["function"]["name"] == "square"


def test_zero_pathwise_variance_gives_infinite_ratio_and_null_json():
    r = fg.compare(fg.Normal(1.0, 2.0), "linear", n=10_000, seed=1)
    assert r.pathwise.variance["loc"] == 0.0
    assert r.variance_ratio["loc"] == math.inf
    assert r.analytic_variance_ratio["loc"] == math.inf
    data = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert data["variance_ratio"]["loc"] is None
    assert "inf" in str(r)


def test_estimate_result_prints_and_serialises():
    r = fg.estimate(fg.Normal(0.5, 2.0), "cos", n=100_000, seed=2, estimator="score", wrt="scale")
    assert "fastgrad.estimate (score)" in str(r) and "cos(omega*x) with omega=1" in str(r)
    assert set(r.z_scores()) == {"scale"}
    json.dumps(r.to_dict(), allow_nan=False)


def test_seed_defaults_to_a_fresh_recorded_seed():
    a = fg.compare(fg.Normal(), "square", n=1000)
    b = fg.compare(fg.Normal(), "square", n=1000)
    assert a.seed != b.seed
    assert fg.compare(fg.Normal(), "square", n=1000, seed=a.seed).score.mean == a.score.mean
