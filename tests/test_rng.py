"""Random streams: reference values, layout, consistency, independence, exact normals."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from fastgrad import _ziggurat_tables as tables
from fastgrad import math as fm
from fastgrad import rng

import reference_streams as ref

ROOT = Path(__file__).resolve().parent.parent


# --- the generator and the layout --------------------------------------------


def test_xoshiro256pp_matches_published_reference_output():
    # Vigna's xoshiro256plusplus.c from state (0, 0, 0, 1), as tabulated in
    # github.com/DSCF-1224/xoshiro-fortran test/README.md.
    expected = [
        0x0000000000800000,
        0x0000000000800011,
        0x0002200000800011,
        0x0002200044000020,
        0x00022000448008A1,
        0x01102100802208A0,
        0x0114002284200880,
        0x0402896644A64095,
        0x8A14A0A244ACC891,
        0x8C88BA4680B20495,
    ]
    state = (0, 0, 0, 1)
    got = []
    for _ in expected:
        word, state = rng._xoshiro_next(tuple(np.uint64(v) for v in state))  # keep uint64 typing
        got.append(int(word))
    assert got == expected
    reference_state = [0, 0, 0, 1]
    assert [ref.xoshiro_next(reference_state) for _ in expected] == expected


@pytest.mark.parametrize(("seed", "stream"), [(0, 0), (1, 0), (0, 1), (2**64 - 1, 2**63 + 5), (12345, 999)])
def test_words_match_reference_layout(seed, stream):
    assert rng.random_words(seed, stream, 100).tolist() == ref.words(seed, stream, 100)


def test_normals_match_reference_including_slow_path_and_tail():
    # 40 000 normals hit the wedge test ~600 times; scan streams until the tail is exercised too.
    for stream in range(50):
        words = rng.random_words(3, stream, 40_000)
        idx = (words & np.uint64(tables.N - 1)).astype(np.int64)
        u = (words.view(np.int64) >> 10) | 1
        if np.any((idx == 0) & (np.abs(u) >= tables.K[0])):
            break
    else:  # pragma: no cover
        pytest.fail("no tail candidate found")
    got = rng.standard_normals(3, stream, 40_000)
    assert got.tolist() == ref.normals(3, stream, 40_000)
    assert np.abs(got).max() > tables.R  # the tail branch produced a value


def test_state_layout_constants():
    assert rng.STATE_SIZE == 4 * rng.LANES + 4 + rng.LANES + 1
    state = rng.stream_state(np.uint64(0), np.uint64(0))
    assert state.dtype == np.uint64 and state.shape == (rng.STATE_SIZE,)


def test_keying_gives_distinct_states():
    keys = {tuple(ref.lane_key(seed, stream, lane)) for seed in range(8) for stream in range(8) for lane in range(17)}
    assert len(keys) == 8 * 8 * 17
    assert all(any(k) for k in keys)


# --- any mix of calls reads the same sequence ---------------------------------


@pytest.mark.parametrize("kind", ["words", "normals", "uniforms"])
def test_pieces_of_any_size_read_the_same_sequence(kind):
    fill = {"words": rng.fill_words, "normals": rng.fill_normals, "uniforms": rng.fill_uniforms}[kind]
    whole = {"words": rng.random_words, "normals": rng.standard_normals, "uniforms": rng.uniforms}[kind](9, 4, 5000)
    state = rng.stream_state(np.uint64(9), np.uint64(4))
    sizes = np.random.default_rng(0).integers(0, 300, size=200)
    pieces, total = [], 0
    for size in sizes:
        size = int(min(size, 5000 - total))
        out = np.empty(size, whole.dtype)
        fill(state, out)
        pieces.append(out)
        total += size
    assert np.array_equal(np.concatenate(pieces), whole[:total])


def test_words_into_a_strided_array_are_the_words_into_a_contiguous_one():
    """``take_words`` keeps the lanes' state in registers for contiguous arrays (``_simd.xoshiro_steps``) and steps
    the lanes one step at a time for others: the same words either way, and the same state after."""
    state, strided_state = rng.stream_state(5, 2), rng.stream_state(5, 2)
    contiguous, strided = np.empty(1000, np.uint64), np.zeros(2000, np.uint64)[::2]
    for size in (3, 517, 480):  # a partial step, many steps and a tail, and the rest
        rng.fill_words(state, contiguous[:size])
        rng.fill_words(strided_state, strided[:size])
        assert np.array_equal(contiguous[:size], strided[:size])
    assert np.array_equal(state, strided_state)
    assert np.array_equal(contiguous[:480], rng.random_words(5, 2, 1000)[520:])


@pytest.mark.parametrize("m", [1003, 7, 8])
def test_normals_from_words_are_the_same_eight_at_a_time_or_one_at_a_time(m):
    """Contiguous arrays take the eight-word vector pass (and a scalar tail), strided ones the scalar pass."""
    words = rng.random_words(3, 7, m)
    expected = rng.standard_normals(3, 7, m)
    rejected = np.empty(m, np.int64)
    for stride in (1, 2):
        spread = np.zeros(stride * m, np.uint64)
        spread[::stride] = words
        out = np.full(stride * m, np.nan)
        rng.normals_from_words(rng.stream_state(3, 7), spread[::stride], out[::stride], rejected, m)
        assert np.array_equal(out[::stride], expected)


def test_the_eight_word_pass_is_the_scalar_pass_on_any_cpu():
    """``_simd.ziggurat_pass8`` against the one-word pass, called directly: the kernels take it only where
    ``gathers_pay()`` (Intel's AVX-512), so on other CPUs this is what runs it (its gathers become loads)."""
    import numba

    from fastgrad import _simd

    @numba.njit
    def eight_at_a_time(words, out):
        bits = np.zeros(words.size // 8, np.uint64)
        for b in range(words.size // 8):
            bits[b] = _simd.ziggurat_pass8(words, rng._WK, out, 8 * b, rng._N)
        return bits

    words = rng.random_words(3, 7, 8 * 1000)
    out = np.full(words.size, np.nan)
    bits = eight_at_a_time(words, out)
    scalar = np.full(words.size, np.nan)
    rejected = np.empty(words.size, np.int64)
    count = rng._fast_pass_scalar(words, scalar, rejected, words.size)
    assert np.array_equal(out, scalar)
    listed = [8 * b + j for b, mask in enumerate(bits) for j in range(8) if int(mask) >> j & 1]
    assert listed == rejected[:count].tolist() and count > 0


def test_scalar_and_array_interfaces_agree():
    state = rng.stream_state(np.uint64(5), np.uint64(2))
    scalars = np.array([rng.standard_normal(state) for _ in range(3000)])
    assert np.array_equal(scalars, rng.standard_normals(5, 2, 3000))
    state = rng.stream_state(np.uint64(5), np.uint64(2))
    words = np.array([rng.next_word(state) for _ in range(100)], dtype=np.uint64)
    assert np.array_equal(words, rng.random_words(5, 2, 100))
    state = rng.stream_state(np.uint64(5), np.uint64(2))
    uniforms = np.array([rng.next_uniform(state) for _ in range(100)])
    assert np.array_equal(uniforms, rng.uniforms(5, 2, 100))


def test_usable_from_user_njit_code():
    import numba

    @numba.njit
    def mean_of_normals(seed, stream, n):
        state = rng.stream_state(seed, stream)
        total = 0.0
        for _ in range(n):
            total += rng.standard_normal(state)
        return total / n

    assert mean_of_normals(np.uint64(1), np.uint64(7), 1000) == pytest.approx(rng.standard_normals(1, 7, 1000).mean())


# --- independence ----------------------------------------------------------


def test_bits_are_balanced():
    words = rng.random_words(11, 0, 200_000)
    bits = ((words[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)).astype(np.float64)
    ones = bits.sum(axis=0)
    z = (ones - words.size / 2) / np.sqrt(words.size / 4)
    assert np.abs(z).max() < 5.5  # 64 tests: Bonferroni-safe bound


def test_neighbouring_chunk_streams_are_uncorrelated():
    n = 200_000
    bound = 5 / np.sqrt(n)
    for c in (0, 1000):
        a = rng.standard_normals(0, c, n)
        b = rng.standard_normals(0, c + 1, n)
        for lag in range(4):
            assert abs(np.corrcoef(a[lag:], b[: n - lag])[0, 1]) < bound
        # squares too: dependence in scale would not show in plain correlation
        assert abs(np.corrcoef(a * a, b * b)[0, 1]) < bound


def test_neighbouring_seeds_and_lanes_are_uncorrelated():
    n = 200_000
    bound = 5 / np.sqrt(n)
    a = rng.standard_normals(0, 0, n)
    assert abs(np.corrcoef(a, rng.standard_normals(1, 0, n))[0, 1]) < bound
    # consecutive normals come from different lanes: lags 1..32 cover every lane pair
    for lag in range(1, 33):
        assert abs(np.corrcoef(a[lag:], a[:-lag])[0, 1]) < 5 / np.sqrt(n - lag)


# --- the normal sampler is exact --------------------------------------------------


@pytest.fixture(scope="module")
def many_normals():
    return np.concatenate([rng.standard_normals(2024, s, 1_000_000) for s in range(4)])


def test_normals_pass_kolmogorov_smirnov(many_normals):
    assert stats.kstest(many_normals, "norm").pvalue > 1e-4


@pytest.mark.parametrize("power", [1, 2, 3, 4, 5, 6])
def test_normal_moments_up_to_the_sixth(many_normals, power):
    values = many_normals**power
    truth = stats.norm.moment(power)
    stderr = values.std() / np.sqrt(values.size)
    assert abs(values.mean() - truth) < 5 * stderr


def test_normal_tail_beyond_base_strip_is_exact(many_normals):
    tail = np.abs(many_normals[np.abs(many_normals) > tables.R])
    p = 2 * stats.norm.sf(tables.R)
    n = many_normals.size
    assert abs(tail.size - n * p) < 5 * np.sqrt(n * p * (1 - p))
    truncated = stats.truncnorm(tables.R, np.inf)
    assert stats.kstest(tail, truncated.cdf).pvalue > 1e-4


def test_normals_are_symmetric_and_never_zero(many_normals):
    assert not np.any(many_normals == 0.0)
    positive = np.count_nonzero(many_normals > 0)
    assert abs(positive - many_normals.size / 2) < 5 * np.sqrt(many_normals.size / 4)


# --- the ziggurat tables --------------------------------------------------


def test_ziggurat_tables_are_what_the_generator_prints():
    generated = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "make_ziggurat_tables.py")], capture_output=True, text=True, check=True
    ).stdout
    assert generated == (ROOT / "fastgrad" / "_ziggurat_tables.py").read_text()


def test_a_state_restarted_in_place_is_the_fresh_stream():
    """start_stream over a used state (its buffer half read) gives the words and normals of stream_state's."""
    state = rng.stream_state(7, 0)
    rng.fill_normals(state, np.empty(1001))
    rng.start_stream(state, 7, 1)
    fresh = rng.stream_state(7, 1)  # (the buffer's words may differ: marked empty, they are never read)
    assert np.array_equal(state[: rng._BUF], fresh[: rng._BUF]) and state[rng._POS] == fresh[rng._POS]
    out = np.empty(2000)
    rng.fill_normals(state, out)
    assert np.array_equal(out, rng.standard_normals(7, 1, 2000))


def test_interleaved_table_is_the_widths_and_exact_bounds():
    """The decode table: W[i], then K[i] as a double, exact (all bounds below 2**53): |float(u)| < K is |u| < K."""
    from fastgrad._ziggurat_tables import K, W

    assert np.array_equal(rng._WK[0::2], W) and K.max() < 2**53
    assert np.array_equal(rng._WK[1::2].astype(np.int64), K)


def test_ziggurat_layers_have_equal_area():
    f = lambda x: np.exp(-0.5 * x * x)  # noqa: E731
    x = tables.W * 2.0**53
    inner = np.concatenate([[0.0], x[1:-1]])  # layer i spans [f(x_i), f(x_{i-1})], x_0 = 0
    areas = x[1:] * (f(inner) - f(x[1:]))
    assert np.allclose(areas, tables.V, rtol=1e-12)
    base = tables.R * f(tables.R) + np.sqrt(2 * np.pi) * stats.norm.sf(tables.R)  # rectangle + tail
    assert base == pytest.approx(tables.V, rel=1e-12)
    # the fast-accept bound never admits a point outside the covered part
    for i in range(2, tables.N):
        assert int(tables.K[i]) * x[i] <= x[i - 1] * 2.0**53 * (1 + 1e-15)


def _wedges():
    """(layer, lower |x|, upper |x|) of every wedge a slow-path candidate can fall in."""
    x = tables.W * 2.0**53
    return [(i, float(tables.K[i]) * tables.W[i], x[i]) for i in range(1, tables.N)]


def test_squeeze_bounds_hold_on_every_wedge():
    # F[i-1] * (1 - d + d^2/2 - d^3/6) <= exp(-x^2/2) <= F[i-1] * (1 - d + d^2/2), d = x^2/2 - Z[i] >= 0,
    # checked in binary64 on a dense grid of each wedge and a little beyond its ends (rounding of x).
    for i, lo, hi in _wedges():
        t = np.concatenate([np.linspace(lo, hi, 2001), [lo * (1 - 4e-16), hi * (1 + 4e-16)]])
        d = 0.5 * t * t - tables.Z[i]
        upper = tables.F[i - 1] * (1.0 - d + 0.5 * d * d)
        lower = tables.F[i - 1] * (1.0 - d + 0.5 * d * d - d**3 / 6.0)
        f = np.exp(-0.5 * t * t)
        margin = rng._SQUEEZE_MARGIN
        assert np.all(lower - margin < f), i
        assert np.all(f < upper + margin), i


def test_squeeze_decides_exactly_as_exp_would():
    # Candidates spread over every wedge, plus y placed within a few ulps of exp(-x^2/2)
    # and of each squeeze bound, where a sloppy bound would flip the answer.
    generator = np.random.default_rng(7)
    checked = 0
    undecided = 0  # random candidates the squeeze leaves to exp (weighted by how often the layer rejects)
    per_wedge = 100  # x 1023 wedges x 6 placements: ~600 000 decisions
    for i, lo, hi in _wedges():
        t = generator.uniform(lo, hi, per_wedge)
        x = np.where(generator.random(per_wedge) < 0.5, -t, t)
        y = tables.F[i] + generator.random(per_wedge) * (tables.F[i - 1] - tables.F[i])
        f = np.array([fm.exp(-0.5 * v * v) for v in x])  # (the sampler's exp: fastgrad.math's, layout 3)
        d = 0.5 * x * x - tables.Z[i]
        upper = tables.F[i - 1] * (1.0 - d + 0.5 * d * d)
        lower = upper - tables.F[i - 1] * d * d * d * (1.0 / 6.0)
        band = (y < upper + rng._SQUEEZE_MARGIN) & (y >= lower - rng._SQUEEZE_MARGIN)
        undecided += band.mean() * (1 - tables.K[i] / 2.0**53)
        near = [f, np.nextafter(f, 0), np.nextafter(f, 2), upper + rng._SQUEEZE_MARGIN, lower - rng._SQUEEZE_MARGIN]
        for xs, ys in [(x, y)] + [(x, v) for v in near]:
            for xv, yv in zip(xs, ys, strict=True):
                assert rng._wedge_accepts(i, xv, yv) == (yv < fm.exp(-0.5 * xv * xv)), (i, xv, yv)
                checked += 1
    assert checked == (tables.N - 1) * per_wedge * 6
    weights = sum(1 - tables.K[i] / 2.0**53 for i in range(1, tables.N))
    assert undecided / weights < 0.005  # about 0.04 %: exp is called for almost no wedge candidate


# --- bad input -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"seed": -1}, ValueError, "seed must be an integer in"),
        ({"seed": 2**64}, ValueError, "seed must be an integer in"),
        ({"seed": 1.5}, TypeError, "seed must be an integer"),
        ({"stream": -3}, ValueError, "stream must be an integer in"),
        ({"stream": "0"}, TypeError, "stream must be an integer"),
        ({"n": -1}, ValueError, "n must be a non-negative integer"),
        ({"n": 2.0}, TypeError, "n must be a non-negative integer"),
    ],
)
def test_public_generators_reject_bad_arguments(kwargs, error, match):
    args = {"seed": 0, "stream": 0, "n": 10} | kwargs
    with pytest.raises(error, match=match):
        rng.standard_normals(**args)


def test_normals_only_kernel_sums_the_run_draws():
    from fastgrad import _kernels

    n = 2 * rng.CHUNK_SIZE + 999
    total, _ = _kernels.normal_sum(n, seed=4)
    eps = np.concatenate(
        [
            rng.standard_normals(4, 0, rng.CHUNK_SIZE),
            rng.standard_normals(4, 1, rng.CHUNK_SIZE),
            rng.standard_normals(4, 2, 999),
        ]
    )
    assert total == pytest.approx(eps.sum(), rel=1e-9, abs=1e-9)
