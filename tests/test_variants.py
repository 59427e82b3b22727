"""Estimator variants: baselines, control variates, leave-one-out, antithetic pairs, measure-valued gradients.

Every variant is checked against exact values: unbiasedness (|mean - gradient|
< 5 stderr), its per-draw variance (|variance - exact| < 5 stderr of the
variance), and, for the seed case, the exact variances derived by hand in
docs/variance-reduction.md.
"""

import json
import math

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _kernels, cli, rng
from fastgrad._analytic import variant_moments
from fastgrad.estimators import parse_estimator, parse_estimators
from fastgrad.functions import resolve

SCORE_VARIANTS = [
    "score",
    "score+baseline(4)",
    "score+optimal-baseline",
    "score+cv",
    "score+loo(8)",
]
NORMAL_VARIANTS = [
    *SCORE_VARIANTS,
    "score+antithetic",
    "score+optimal-baseline+antithetic",
    "score+cv+antithetic",
    "pathwise",
    "pathwise+antithetic",
    "measure-valued",
    "measure-valued+decoupled",
]

CASES = {
    "seed": (fg.Normal(2.0, 1.0), "square", NORMAL_VARIANTS),
    "cos": (fg.Normal(0.5, 2.0), fg.functions.cos(omega=1.5), NORMAL_VARIANTS),
    # (a Bernoulli draw is 0 or 1: any function is two numbers, and square's kernel is the matrix test's)
    "bernoulli": (fg.Bernoulli(0.3), "square", [*SCORE_VARIANTS[:4], "score+loo(3)"]),
    # the quadrature-exact built-ins: every Normal variant, and every Exponential one
    "exp_quadratic": (fg.Normal(0.4, 1.2), fg.functions.exp_quadratic(k=0.5), NORMAL_VARIANTS),
    "logistic": (
        fg.Exponential(1.5),
        fg.functions.logistic(a=2.0, b=-1.0),
        [*SCORE_VARIANTS[:4], "score+loo(10)", "pathwise", "measure-valued", "measure-valued+decoupled"],
    ),
}
N = 120 * 2**13  # a multiple of every loo group above (8, 10, 3)

# One worker runs the module, so that the session's tables (a kernel compile per case) are made once.
pytestmark = pytest.mark.xdist_group("variants")


@pytest.fixture(scope="session")
def tables():
    out = {}
    for name, (distribution, function, estimators) in CASES.items():
        out[name] = fg.compare(distribution, function, N, seed=11, estimators=estimators, pilot=50_000)
    return out


def _cells():
    for case, (distribution, _, estimators) in CASES.items():
        for estimator in estimators:
            for parameter in distribution.parameters:
                yield case, parse_estimator(estimator).name, parameter


@pytest.mark.parametrize(("case", "estimator", "parameter"), list(_cells()))
def test_every_variant_is_unbiased_and_has_its_exact_variance(tables, case, estimator, parameter):
    result = tables[case][estimator]
    mean, stderr = result.mean[parameter], result.stderr[parameter]
    truth = result.analytic_mean[parameter]
    variance, variance_stderr = result.variance[parameter], result.variance_stderr[parameter]
    exact = result.analytic_variance[parameter]
    if stderr == 0:  # an estimator exact for this function: every draw gives the gradient
        assert exact == pytest.approx(0.0, abs=1e-12) and mean == pytest.approx(truth, rel=1e-12)
        return
    assert abs(mean - truth) < 5 * stderr
    # the exact variance is E[v**2] - E[v]**2 in float64 where the function is not a polynomial: allow its rounding
    rounding = 1e-12 * (exact + truth * truth)
    assert abs(variance - exact) < 5 * variance_stderr + rounding
    assert result.variance_per_evaluation[parameter] == variance * result.evaluations_per_draw


SEED_CASE_EXACT = {
    # docs/variance-reduction.md derives each of these for f(x) = x**2, x ~ N(2, 1)
    ("score", "loc"): 87.0,
    ("score", "scale"): 346.0,
    ("score+baseline(4)", "loc"): 47.0,
    ("score+optimal-baseline", "loc"): 38.0,  # at b* = 7
    ("score+optimal-baseline", "scale"): 184.0,  # at b* = 9
    ("score+cv", "loc"): 6.0,  # at C = (7, 4)
    ("score+loo(8)", "loc"): 58.0 - 78.0 / 7.0,
    ("score+antithetic", "loc"): 32.0,
    ("score+antithetic", "scale"): 186.0,
    ("pathwise", "loc"): 4.0,
    ("pathwise", "scale"): 24.0,
    ("pathwise+antithetic", "loc"): 0.0,
    ("pathwise+antithetic", "scale"): 8.0,
    ("measure-valued+coupled", "loc"): 16.0 * (4.0 - math.pi) / math.pi,
    ("measure-valued+decoupled", "loc"): 36.0 / math.pi - 8.0,
    ("measure-valued+coupled", "scale"): 20.0,
    ("measure-valued+decoupled", "scale"): 72.0,
}


def test_seed_case_exact_variances_match_the_hand_derivations():
    distribution = fg.Normal(2.0, 1.0)
    specs = parse_estimators(list(dict.fromkeys(name for name, _ in SEED_CASE_EXACT)))
    optimum = {"score+optimal-baseline": np.diag([7.0, 9.0]), "score+cv": np.array([[7.0, 4.0], [0.0, 0.0]])}
    coefficients = []
    for spec in specs:
        if spec.baseline is None or spec.baseline == "loo":
            coefficients.append(None)
        elif isinstance(spec.baseline, float):
            coefficients.append(np.eye(2) * spec.baseline)
        else:
            coefficients.append(optimum[spec.name])
    moments = variant_moments(distribution, resolve("square"), specs, coefficients, ("loc", "scale"))
    for spec, by_parameter in zip(specs, moments, strict=True):
        for (name, parameter), exact in SEED_CASE_EXACT.items():
            if name == spec.name:
                assert by_parameter[parameter][0] == pytest.approx(4.0 if parameter == "loc" else 2.0, rel=1e-12)
                assert by_parameter[parameter][1] == pytest.approx(exact, rel=1e-11, abs=1e-12)


def test_the_seed_table_prints_every_estimator_with_its_ratio(tables):
    text = str(tables["seed"])
    for estimator in NORMAL_VARIANTS:
        assert parse_estimator(estimator).name in text
    assert "ratio to pathwise [95% CI]" in text and "baselines from an independent pilot of 50,000 draws" in text
    seed = tables["seed"]
    assert seed.reference == "pathwise" and seed.group == 8 and seed.n == N
    ratio = seed["score"].ratio["loc"]
    low, high = seed["score"].ratio_ci["loc"]
    assert low < ratio < high
    # A 95 % interval misses on 1 seed in 20, so one seed is held to the usual 5 standard errors
    # (half-width / 1.96); coverage itself is tested over 40 seeds in test_estimators.py.
    assert abs(ratio - 21.75) < 5 * (high - low) / (2 * 1.96)
    # antithetic and measure-valued estimators cost two evaluations a draw: their ratio is per evaluation
    anti = seed["score+antithetic"]
    reference = seed["pathwise"].variance["loc"]
    assert anti.ratio["loc"] == pytest.approx(2 * anti.variance["loc"] / reference, rel=1e-12)


def test_bernoulli_ratios_are_to_the_score_function(tables):
    table = tables["bernoulli"]
    assert table.reference == "score" and table.estimators[-1] == "score+loo(3)"
    assert table["score"].ratio["p"] == 1.0


def test_reference_is_appended_when_not_asked_for(tables):
    asked = tables["logistic"].estimators  # pathwise asked for: not appended again
    assert asked.count("pathwise") == 1 and asked[-1] == "measure-valued+decoupled"
    table = fg.compare(fg.Normal(), "square", 10**4, seed=1, estimators=["score+antithetic"])
    assert table.estimators == ("score+antithetic", "pathwise")


# --- the pilot: independent of the run's draws -------------------------------------------------


def test_optimal_baseline_is_estimated_on_the_pilot_streams_only():
    distribution = fg.Normal(2.0, 1.0)
    pilot = 70_000  # two chunks
    first = fg.compare(distribution, "square", 2**16, seed=5, estimators=["score+optimal-baseline"], pilot=pilot)
    longer = fg.compare(distribution, "square", 2**18, seed=5, estimators=["score+optimal-baseline"], pilot=pilot)
    b = first["score+optimal-baseline"].coefficients["loc"]
    # the run's length does not move the baseline: it never sees the run's draws
    assert longer["score+optimal-baseline"].coefficients == first["score+optimal-baseline"].coefficients
    # restated: b = sum(f s**2) / sum(s**2) over pilot draws, stream (seed, 2**63 + c)
    eps = np.concatenate(
        [
            rng.standard_normals(5, _kernels.PILOT_STREAMS, 65536),
            rng.standard_normals(5, _kernels.PILOT_STREAMS + 1, pilot - 65536),
        ]
    )
    f = (2.0 + eps) ** 2
    assert b == pytest.approx(np.sum(f * eps**2) / np.sum(eps**2), rel=1e-10)
    other = fg.compare(distribution, "square", 2**16, seed=5, estimators=["score+optimal-baseline"], pilot=2**16)
    assert other["score+optimal-baseline"].coefficients["loc"] != b


def test_a_baseline_estimated_on_the_same_draws_would_be_biased():
    """Why fastgrad uses a pilot stream: the same-draw "optimal" baseline is biased at small n.

    With n = 4 draws per estimate and b = sum(f s**2) / sum(s**2) from those
    same draws, the estimate of d/dloc E[x**2] = 4 averages about 2. The
    pilot version, on the same small n, is unbiased.
    """
    generator = np.random.default_rng(0)
    repeats, n = 20_000, 4
    eps = generator.standard_normal((repeats, n))
    f = (2.0 + eps) ** 2
    b = (f * eps**2).sum(axis=1) / (eps**2).sum(axis=1)
    same_draws = ((f - b[:, None]) * eps).mean(axis=1)
    stderr = same_draws.std(ddof=1) / math.sqrt(repeats)
    assert abs(same_draws.mean() - 4.0) > 20 * stderr
    curve = fg.variance_curve(
        fg.Normal(2.0, 1.0), "square", [n], repeats, seed=3, wrt="loc", estimators=["score+optimal-baseline"]
    )
    mean = curve.mean["score+optimal-baseline"]["loc"][0]
    assert abs(mean - 4.0) < 5 * curve.mean_stderr["score+optimal-baseline"]["loc"][0]


# --- reproducibility ---------------------------------------------------------------------------------


def _without_timing(document):
    for key in ("seconds", "draws_per_second", "threads"):
        document.pop(key)
    return document


def test_variants_are_identical_on_one_and_two_threads():
    kwargs = {"seed": 9, "estimators": ["score+cv", "score+loo(5)", "measure-valued+decoupled", "pathwise"]}
    one = fg.compare(fg.Normal(1.0, 0.5), "cos", 5 * 70_001, threads=1, **kwargs).to_dict()
    two = fg.compare(fg.Normal(1.0, 0.5), "cos", 5 * 70_001, threads=2, **kwargs).to_dict()
    assert _without_timing(one) == _without_timing(two)


def test_plain_rows_are_bit_identical_to_compare_and_to_the_curve():
    distribution = fg.Normal(2.0, 1.0)
    classic = fg.compare(distribution, "square", 200_000, seed=4)
    table = fg.compare(distribution, "square", 200_000, seed=4, estimators=["score", "pathwise", "measure-valued"])
    for estimator in ("score", "pathwise"):
        for parameter in ("loc", "scale"):
            assert table[estimator].mean[parameter] == getattr(classic, estimator).mean[parameter]
            assert table[estimator].variance[parameter] == getattr(classic, estimator).variance[parameter]
    assert table["score"].ratio == classic.variance_ratio
    curve = fg.variance_curve(distribution, "square", [10, 1000], 300, seed=4)
    variants = fg.variance_curve(distribution, "square", [10, 1000], 300, seed=4, estimators=["score", "pathwise"])
    assert variants.variance == curve.variance and variants.mean == curve.mean


# --- curves ----------------------------------------------------------------------------------------------


def test_variant_curve_variances_are_per_draw_variance_over_n():
    estimators = ["score", "score+optimal-baseline", "score+loo(4)", "pathwise+antithetic", "measure-valued"]
    curve = fg.variance_curve(fg.Normal(2.0, 1.0), "square", [8, 400], 2000, seed=21, estimators=estimators)
    assert curve.reference == "pathwise" and curve.estimators[-1] == "pathwise"
    json.dumps(curve.to_dict(), allow_nan=False)
    for estimator in curve.estimators:
        for parameter in ("loc", "scale"):
            for i, n in enumerate(curve.sample_sizes):
                variance = curve.variance[estimator][parameter][i]
                truth = curve.analytic_variance[estimator][parameter][i]
                mean = curve.mean[estimator][parameter][i]
                gradient = curve.analytic_gradient[parameter]
                if truth == 0:
                    assert variance < 1e-20
                    continue
                assert abs(mean - gradient) < 5 * curve.mean_stderr[estimator][parameter][i]
                high = curve.variance_ci[estimator][parameter][i][1]
                half_width = math.log(high / variance)  # 1.96 standard errors of log(variance)
                assert abs(math.log(variance / truth)) < 5 / 1.959963984540054 * half_width, (estimator, n)


# --- bad input: clear errors before any work ---------------------------------------------------------


@pytest.mark.parametrize(
    ("distribution", "estimators", "kwargs", "error", "message"),
    [
        (fg.Bernoulli(0.3), ["score+antithetic"], {}, ValueError, "needs noise symmetric about 0; Bernoulli"),
        (fg.Exponential(1.0), ["pathwise+antithetic"], {}, ValueError, "Exponential's is not"),
        (fg.Bernoulli(0.3), ["pathwise"], {}, ValueError, "Bernoulli has none"),
        (fg.Normal(), ["score+loo(8)"], {"n": 1001}, ValueError, "multiple of the leave-one-out group size 8"),
        (fg.Normal(), ["score+loo(8)", "score+loo(4)"], {}, ValueError, "must use the same K"),
        (fg.Normal(), ["score", "score"], {}, ValueError, "listed twice"),
        (fg.Normal(), ["score+optimal-baseline"], {"pilot": 1}, ValueError, "pilot must be"),
        (fg.Normal(), ["score+cv"], {"pilot": 1e5}, TypeError, "pilot must be"),
        (fg.Normal(), [], {}, ValueError, "at least one estimator"),
        (fg.Normal(), ["reinforce"], {}, ValueError, "must start with one of"),
        (fg.DiagNormal([0.0] * 65, [1.0] * 65), ["score+cv"], {}, ValueError, "offered up to 128"),
        (fg.Normal(), None, {"pilot": 1000}, ValueError, "pilot is used with estimators"),
    ],
)
def test_bad_combinations_are_refused_before_any_work(distribution, estimators, kwargs, error, message):
    n = kwargs.pop("n", 1000)
    function = fg.functions.sum_of_squares() if isinstance(distribution, fg.DiagNormal) else "square"
    with pytest.raises(error, match=message):
        fg.compare(distribution, function, n, seed=0, estimators=estimators, **kwargs)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pathwise+cv", "applies to the score function only"),
        ("score+baseline", "needs a constant"),
        ("score+baseline(inf)", "finite number"),
        ("score+loo(1)", "2 <= K <= 65536"),
        ("score+loo(4)+antithetic", "cannot be combined"),
        ("measure-valued+antithetic", "applies to score and pathwise"),
        ("score+cv+optimal-baseline", "at most one of"),
        ("measure-valued+coupled+decoupled", "at most one of coupled, decoupled"),
        ("score+antithetic+antithetic", "given twice"),
        ("score+fast", "unknown modifier"),
    ],
)
def test_bad_specifications(text, message):
    with pytest.raises(ValueError, match=message):
        parse_estimator(text)


def test_specifications_round_trip_through_their_names():
    for text in [*NORMAL_VARIANTS, "score+baseline(-0.25)", "score+loo", "measure-valued+coupled"]:
        spec = parse_estimator(text)
        assert parse_estimator(spec.name) == spec
    assert parse_estimator("score+loo").group == 8
    assert parse_estimator(" Score + Optimal-Baseline ").name == "score+optimal-baseline"


def test_curve_sizes_must_be_multiples_of_the_loo_group():
    with pytest.raises(ValueError, match="multiples of the leave-one-out group size 4"):
        fg.variance_curve(fg.Normal(), "square", [10, 100], 10, seed=0, estimators=["score+loo(4)"])


# --- command line -------------------------------------------------------------------------------------------


def test_cli_compare_with_estimators_matches_the_api(tmp_path, capsys):
    out = tmp_path / "table.json"
    args = ["compare", "--loc", "2", "--f", "square", "-n", "80000", "--seed", "3", "--wrt", "loc",
            "--estimators", "score,score+optimal-baseline,pathwise+antithetic,measure-valued", "--pilot", "20000",
            "--json", str(out)]  # fmt: skip
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "score+optimal-baseline" in printed and "ratio to pathwise" in printed
    data = json.loads(out.read_text())
    api = fg.compare(
        fg.Normal(2.0, 1.0), "square", 80_000, seed=3, wrt="loc", pilot=20_000,
        estimators=["score", "score+optimal-baseline", "pathwise+antithetic", "measure-valued"],
    ).to_dict()  # fmt: skip
    data.pop("run")
    assert _without_timing(data) == _without_timing(api)


def test_cli_curve_with_estimators(tmp_path, capsys):
    plot = tmp_path / "variants.png"
    args = ["curve", "--loc", "2", "--f", "square", "--sizes", "8,80", "--repeats", "200", "--seed", "0",
            "--estimators", "score+loo(4),pathwise", "--plot", str(plot)]  # fmt: skip
    assert cli.main(args) == 0
    assert "ratio to pathwise per eval" in capsys.readouterr().out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--estimators", "pathwise+cv"], "argument --estimators: estimators[0]: estimator 'pathwise+cv'"),
        (["--dist", "bernoulli", "--p", "0.3", "--estimators", "score+antithetic"], "argument --estimators:"),
        (["--estimators", "score+loo(3)"], "argument -n: n must be a multiple"),
        (["--estimators", "score+cv", "--pilot", "1"], "argument --pilot: pilot must be"),
    ],
)
def test_cli_bad_estimators_exit_2(capsys, args, message):
    assert cli.main(["compare", "--f", "square", "-n", "1000", *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("spec", ["score+optimal-baseline", "score+loo(4)", "pathwise+antithetic", "measure-valued"])
def test_estimate_takes_any_specification_and_gives_the_comparison_row(spec):
    distribution, n = fg.Normal(1.0, 1.5), 3 * 65536
    one = fg.estimate(distribution, "square", n, estimator=spec, seed=4, pilot=20_000)
    table = fg.compare(distribution, "square", n, estimators=[spec], seed=4, pilot=20_000)
    row = table[spec]
    assert one.estimator == row.estimator and one.ratio is None and row.ratio is not None
    for field in ("mean", "variance", "stderr", "variance_stderr", "analytic_mean", "analytic_variance"):
        assert getattr(one, field) == getattr(row, field), field
    for p in distribution.parameters:
        assert abs(one.mean[p] - one.analytic_mean[p]) < 5 * one.stderr[p]


def test_cli_estimate_takes_a_variant(tmp_path):
    out = tmp_path / "e.json"
    status = cli.main(["estimate", "--loc", "2", "--f", "square", "-n", "131072", "--seed", "1", "--pilot", "5000",
                       "--estimator", "score+cv", "--json", str(out)])  # fmt: skip
    assert status == 0
    data = json.loads(out.read_text())
    assert data["kind"] == "estimate" and list(data["estimators"]) == ["score+cv"] and data["pilot"] == 5000
