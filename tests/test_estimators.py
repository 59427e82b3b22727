"""Estimates against the analytic truth, within the standard errors the code reports."""

import math

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _kernels, rng
from fastgrad.functions import resolve

import user_functions as uf

BUILTINS = {
    "linear": fg.functions.linear(),
    "square": fg.functions.square(),
    "shifted_square": fg.functions.shifted_square(k=1.5),
    "cos": fg.functions.cos(omega=1.7),
    "quartic": fg.functions.quartic(),
    "exp_quadratic": fg.functions.exp_quadratic(k=0.6),
    "logistic": fg.functions.logistic(a=1.8, b=-0.4),
}
DISTRIBUTION = fg.Normal(0.7, 1.3)


def test_every_builtin_is_in_the_table():
    assert set(BUILTINS) == set(fg.functions.BUILTINS)


def assert_within(value, truth, stderr, sigmas=5.0):
    """|value - truth| < sigmas * stderr; a zero stderr demands (near) equality."""
    if stderr == 0:
        assert value == pytest.approx(truth, rel=1e-12, abs=1e-12)
    else:
        assert abs(value - truth) < sigmas * stderr, f"{value} vs {truth}: {(value - truth) / stderr:.1f} stderr"


@pytest.fixture(scope="module", params=list(BUILTINS))
def builtin_comparison(request):
    return fg.compare(DISTRIBUTION, BUILTINS[request.param], n=2_000_000, seed=17)


@pytest.mark.xdist_group("estimators-builtins")  # (one worker: each built-in's run, and its kernel, made once)
@pytest.mark.parametrize("estimator", ["score", "pathwise"])
@pytest.mark.parametrize("parameter", ["loc", "scale"])
def test_unbiased_for_every_builtin(builtin_comparison, estimator, parameter):
    result = getattr(builtin_comparison, estimator)
    assert_within(result.mean[parameter], result.analytic_mean[parameter], result.stderr[parameter])


@pytest.mark.parametrize("estimator", ["score", "pathwise"])
@pytest.mark.parametrize("parameter", ["loc", "scale"])
def test_per_draw_variance_matches_analytic(builtin_comparison, estimator, parameter):
    result = getattr(builtin_comparison, estimator)
    assert_within(result.variance[parameter], result.analytic_variance[parameter], result.variance_stderr[parameter])


def test_analytic_gradient_is_attached(builtin_comparison):
    r = builtin_comparison
    assert r.analytic_gradient == r.score.analytic_mean
    if r.function.builtin.name in ("exp_quadratic", "logistic"):  # two quadratures of one gradient: ~1e-15 apart
        for p in r.wrt:
            assert r.pathwise.analytic_mean[p] == pytest.approx(r.score.analytic_mean[p], rel=1e-12)
    else:  # closed forms: the same number
        assert r.score.analytic_mean == r.pathwise.analytic_mean
    for p in r.wrt:
        score, pathwise = r.score.analytic_variance[p], r.pathwise.analytic_variance[p]
        assert r.analytic_variance_ratio[p] == pytest.approx(score / pathwise if pathwise else math.inf)


@pytest.fixture(scope="module")
def seed_comparison():
    return fg.compare(fg.Normal(2.0, 1.0), "square", n=10_000_000, seed=0, wrt="loc")


def test_seed_numbers(seed_comparison):
    r = seed_comparison
    assert r.score.analytic_variance == {"loc": 87.0}
    assert r.pathwise.analytic_variance == {"loc": 4.0}
    assert r.analytic_variance_ratio == {"loc": 21.75}
    assert r.analytic_gradient == {"loc": 4.0}
    assert_within(r.score.variance["loc"], 87.0, r.score.variance_stderr["loc"])
    assert_within(r.pathwise.variance["loc"], 4.0, r.pathwise.variance_stderr["loc"])
    low, high = r.variance_ratio_ci["loc"]
    assert low < 21.75 < high
    assert low < r.variance_ratio["loc"] < high
    assert r.variance_ratio["loc"] == pytest.approx(r.score.variance["loc"] / r.pathwise.variance["loc"], rel=1e-12)


def test_variance_ratio_interval_covers_the_truth_about_95_percent_of_the_time():
    covered = 0
    for seed in range(40):
        r = fg.compare(fg.Normal(2.0, 1.0), "square", n=20_000, seed=seed, wrt="loc")
        low, high = r.variance_ratio_ci["loc"]
        covered += low < 21.75 < high
    # Binomial(40, 0.95): P(covered <= 33) ~ 0.3 %. Fixed seeds make this deterministic.
    assert covered >= 34


def test_large_loc_is_numerically_stable():
    # The criterion: variance 4 within 0.1 %. n = 1e7 keeps sampling noise (0.045 %) below it.
    r = fg.estimate(fg.Normal(1e4, 1.0), "square", n=10_000_000, estimator="pathwise", wrt="loc", seed=1)
    assert abs(r.variance["loc"] - 4.0) / 4.0 < 1e-3
    assert_within(r.variance["loc"], 4.0, r.variance_stderr["loc"])
    assert_within(r.mean["loc"], 2e4, r.stderr["loc"])
    # Free of sampling noise: the same seed draws the same eps, and the variance of 2 (loc + eps)
    # does not depend on loc. A raw sum of squares would differ by ~1e-4 here.
    centred = fg.estimate(fg.Normal(0.0, 1.0), "square", n=10_000_000, estimator="pathwise", wrt="loc", seed=1)
    assert r.variance["loc"] == pytest.approx(centred.variance["loc"], rel=1e-9)


def test_draws_follow_the_documented_stream_layout():
    n = rng.CHUNK_SIZE + 777  # two chunks, the second partial
    distribution = fg.Normal(0.3, 1.7)
    r = fg.compare(distribution, "square", n=n, seed=5)
    eps = np.concatenate([rng.standard_normals(5, 0, rng.CHUNK_SIZE), rng.standard_normals(5, 1, 777)])
    x = distribution.loc + distribution.scale * eps
    expected = {
        ("score", "loc"): x * x * eps / distribution.scale,
        ("score", "scale"): x * x * (eps * eps - 1) / distribution.scale,
        ("pathwise", "loc"): 2 * x,
        ("pathwise", "scale"): 2 * x * eps,
    }
    for (estimator, parameter), values in expected.items():
        result = getattr(r, estimator)
        assert result.mean[parameter] == pytest.approx(values.mean(), rel=1e-12)
        assert result.variance[parameter] == pytest.approx(values.var(ddof=1), rel=1e-10)
        assert result.third_moment[parameter] == pytest.approx(((values - values.mean()) ** 3).mean(), rel=1e-8)


def fields(result, parameter):
    return [
        result.mean[parameter],
        result.variance[parameter],
        result.third_moment[parameter],
        result.fourth_moment[parameter],
    ]


def test_single_estimators_equal_the_fused_comparison_bit_for_bit():
    r = fg.compare(DISTRIBUTION, "cos", n=300_000, seed=8)
    for estimator in ("score", "pathwise"):
        alone = fg.estimate(DISTRIBUTION, "cos", n=300_000, seed=8, estimator=estimator)
        for p in ("loc", "scale"):
            assert fields(alone, p) == fields(getattr(r, estimator), p)


#: (distribution, function, wrt): every family with a measure-valued estimator, lane-generic (Normal, Exponential)
#: and one draw at a time; ``square``, whose kernels tests/test_matrix.py compiles anyway (the suite's time).
WEAK_CASES = [
    (fg.Normal(0.7, 1.3), "square", None),
    (fg.Exponential(1.7), "square", None),
    (fg.Laplace(0.2, 0.8), "square", None),
    (fg.Gamma(2.5, 1.5), "square", ["rate"]),
    (fg.Poisson(3.0), "square", None),
    (fg.Bernoulli(0.3), "square", None),
]


@pytest.mark.parametrize("distribution, function, wrt", WEAK_CASES, ids=lambda v: getattr(v, "name", None))
def test_the_plain_weak_filler_gives_the_general_fillers_bits(distribution, function, wrt):
    """Measure-valued rows alone (plain-weak filler) equal the same rows beside a general-filler variant."""
    specs = ["measure-valued+coupled", "measure-valued+decoupled"]
    common = dict(n=20_003, seed=4, wrt=wrt, threads=2)
    alone = fg.compare(distribution, function, estimators=specs, **common)
    mixed = fg.compare(distribution, function, estimators=[*specs, "score+baseline(0.5)"], **common)
    plan = fg.estimators.Plan.build(distribution, resolve(function), specs, wrt)
    assert plan.filler == "plain-weak"
    for spec in specs:
        for p in wrt or distribution.parameters:
            assert fields(alone[spec], p) == fields(mixed[spec], p)


def test_wrt_subset_equals_that_part_of_the_full_gradient():
    full = fg.compare(DISTRIBUTION, "quartic", n=300_000, seed=9)
    for p in ("loc", "scale"):
        part = fg.compare(DISTRIBUTION, "quartic", n=300_000, seed=9, wrt=p)
        assert part.wrt == (p,)
        assert fields(part.score, p) == fields(full.score, p)
        assert fields(part.pathwise, p) == fields(full.pathwise, p)
        assert part.variance_ratio[p] == full.variance_ratio[p]
    reordered = fg.compare(DISTRIBUTION, "quartic", n=300_000, seed=9, wrt=("scale", "loc"))
    assert reordered.variance_ratio == full.variance_ratio


@pytest.mark.xdist_group("user-functions")  # (tests/test_hardening.py's ONE_WORKER: its kernel is compiled once)
def test_user_function_matches_the_builtin_bit_for_bit():
    user = fg.compare(DISTRIBUTION, fg.Function(uf.square, uf.square_derivative), n=300_000, seed=4)
    builtin = fg.compare(DISTRIBUTION, "square", n=300_000, seed=4)
    for estimator in ("score", "pathwise"):
        for p in ("loc", "scale"):
            assert fields(getattr(user, estimator), p) == fields(getattr(builtin, estimator), p)
    assert user.score.analytic_mean is None and user.analytic_variance_ratio is None


@pytest.mark.xdist_group("user-functions")  # (tests/test_hardening.py's ONE_WORKER: its kernel is compiled once)
def test_user_function_kernel_is_compiled_once():
    function = fg.Function(uf.square, uf.square_derivative)
    fg.compare(DISTRIBUTION, function, n=10_000, seed=1)
    before = len(_kernels._uncached_kernel.overloads)
    fg.compare(DISTRIBUTION, fg.Function(uf.square, uf.square_derivative), n=20_000, seed=2, wrt="loc")
    assert len(_kernels._uncached_kernel.overloads) == before


def test_score_only_user_function():
    r = fg.estimate(fg.Normal(1.0, 0.5), fg.Function(uf.log_abs), n=200_000, estimator="score", seed=3)
    assert r.analytic_mean is None
    assert math.isfinite(r.mean["loc"]) and r.n == 200_000
    # a bare njit function works the same as Function(f)
    bare = fg.estimate(fg.Normal(1.0, 0.5), uf.log_abs, n=200_000, estimator="score", seed=3)
    assert fields(bare, "loc") == fields(r, "loc")


def test_non_finite_values_raise_with_their_count():
    function = fg.Function(uf.nan_above_one, uf.nan_above_one_derivative)
    eps = rng.standard_normals(6, 0, 50_000)
    expected = int(np.count_nonzero(0.5 + eps > 1.0))
    with pytest.raises(fg.NonFiniteValuesError, match=f"{expected:,} of 50,000 draws") as error:
        fg.compare(fg.Normal(0.5, 1.0), function, n=50_000, seed=6)
    assert error.value.count == expected


def test_omit_leaves_non_finite_draws_out_and_reports_them():
    function = fg.Function(uf.nan_above_one, uf.nan_above_one_derivative)
    r = fg.compare(fg.Normal(0.5, 1.0), function, n=50_000, seed=6, nan_policy="omit")
    eps = rng.standard_normals(6, 0, 50_000)
    x = 0.5 + eps
    keep = x <= 1.0
    assert r.n_omitted == np.count_nonzero(~keep) and r.n == np.count_nonzero(keep)
    assert r.score.mean["loc"] == pytest.approx((x * eps)[keep].mean(), rel=1e-12)
    assert r.pathwise.variance["scale"] == pytest.approx(eps[keep].var(ddof=1), rel=1e-10)
    assert "omitted" in str(r)


def test_threads_argument_restores_numba_setting():
    import numba

    before = numba.get_num_threads()
    r = fg.compare(DISTRIBUTION, "square", n=10_000, seed=0, threads=1)
    assert r.threads == 1
    assert numba.get_num_threads() == before


@pytest.mark.parametrize("n", [2, 3, 5, 511, 512, 513, rng.CHUNK_SIZE, rng.CHUNK_SIZE + 1])
def test_small_and_boundary_sizes_match_numpy_on_the_same_draws(n):
    r = fg.compare(fg.Normal(0.5, 1.5), "square", n=n, seed=21, wrt="loc")
    chunks = [
        rng.standard_normals(21, c, min(rng.CHUNK_SIZE, n - c * rng.CHUNK_SIZE)) for c in range(-(-n // rng.CHUNK_SIZE))
    ]
    eps = np.concatenate(chunks)
    x = 0.5 + 1.5 * eps
    score, pathwise = x * x * eps / 1.5, 2 * x
    assert r.n == n
    assert r.score.mean["loc"] == pytest.approx(score.mean(), rel=1e-12, abs=1e-14)
    assert r.score.variance["loc"] == pytest.approx(score.var(ddof=1), rel=1e-10)
    assert r.pathwise.variance["loc"] == pytest.approx(pathwise.var(ddof=1), rel=1e-10)
    assert r.variance_ratio["loc"] == pytest.approx(score.var() / pathwise.var(), rel=1e-10)


def test_block_size_changes_only_rounding():
    """Blocks are a reduction detail: other block sizes see the same draws and agree to rounding."""
    from fastgrad import _reduction
    from fastgrad.estimators import ESTIMATORS, Plan

    distribution = fg.Normal(0.3, 1.2)
    lay = Plan.build(distribution, resolve("cos"), ESTIMATORS, None, classic=True)
    width = _reduction.record_width(lay.n_rows, len(lay.pair_x))
    n = rng.CHUNK_SIZE - 77  # one partial chunk: the last block is partial for every block size
    kernel = lay.kernel("moments", seed=12, n_units=n)
    records = {}
    for block in (_kernels.BLOCK, 256, 100):
        kernel.run = kernel.run._replace(per_block=np.int64(block))
        records[block] = np.empty((1, width))
        kernel(0, _kernels.moment_sink(lay), records[block], 1)
    reference = records[_kernels.BLOCK][0]
    for record in (r[0] for r in records.values()):
        assert record[0] == n
        np.testing.assert_allclose(record, reference, rtol=1e-11, atol=1e-11 * np.abs(reference).max())
    eps = rng.standard_normals(12, 0, n)
    x = 0.3 + 1.2 * eps
    assert reference[2] == pytest.approx(np.mean(np.cos(x) * eps / 1.2), rel=1e-12)
