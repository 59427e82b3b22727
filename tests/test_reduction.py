"""Moment records: two-pass blocks, pairwise merges, and the chunk-index tree."""

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from fastgrad import _reduction as red

# Two rows of one pair, as a plan's record view gives MomentTree (n_rows, pair_x, pair_y).
PAIR = SimpleNamespace(n_rows=2, pair_x=np.array([0], np.int64), pair_y=np.array([1], np.int64))

ROWS = np.array([0, 1])
PAIR_X = np.array([0])
PAIR_Y = np.array([1])
WIDTH = red.record_width(2, 1)


def exact_reference_record(x, y):
    """The same moments in exact rational arithmetic, rounded once at the end."""
    from fractions import Fraction

    xs = [Fraction(float(v)) for v in x]
    ys = [Fraction(float(v)) for v in y]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    dx = [v - mx for v in xs]
    dy = [v - my for v in ys]

    def total(px, py):
        return float(sum(a**px * b**py for a, b in zip(dx, dy, strict=True)))

    return np.array(
        [
            n,
            0,
            float(mx),
            total(2, 0),
            total(3, 0),
            total(4, 0),
            float(my),
            total(0, 2),
            total(0, 3),
            total(0, 4),
            total(1, 1),
            total(2, 1),
            total(1, 2),
            total(2, 2),
        ]
    )


def reference_record(x, y):
    dx, dy = x - x.mean(), y - y.mean()
    return np.array(
        [
            x.size,
            0,
            x.mean(),
            (dx**2).sum(),
            (dx**3).sum(),
            (dx**4).sum(),
            y.mean(),
            (dy**2).sum(),
            (dy**3).sum(),
            (dy**4).sum(),
            (dx * dy).sum(),
            (dx**2 * dy).sum(),
            (dx * dy**2).sum(),
            (dx**2 * dy**2).sum(),
        ]
    )


def natural_scale(x, y):
    sx, sy, n = x.std(), y.std(), x.size
    return np.array(
        [
            n,
            1,
            sx,
            n * sx**2,
            n * sx**3,
            n * sx**4,
            sy,
            n * sy**2,
            n * sy**3,
            n * sy**4,
            n * sx * sy,
            n * sx**2 * sy,
            n * sx * sy**2,
            n * sx**2 * sy**2,
        ]
    )


def records_of(values, cuts):
    out = []
    means = np.empty(2)
    for a, b in itertools.pairwise(cuts):
        block = values[:, a:b].copy()
        record = np.empty(WIDTH)
        red.block_record(block, ROWS, PAIR_X, PAIR_Y, b - a, record, means)
        out.append(record)
    return out


@pytest.mark.parametrize("shift", [0.0, 1e4, 1e8])
def test_blocks_merged_pairwise_match_two_pass_reference(shift):
    rng = np.random.default_rng(0)
    x = shift + 3 * rng.standard_normal(2000)
    y = (x - shift) ** 2 + rng.standard_normal(2000)  # correlated with x, skewed
    values = np.vstack([x, y])
    acc = np.zeros(WIDTH)
    for record in records_of(values, [0, 256, 257, 300, 1023, 1024, 1999, 2000]):
        red.merge_into(acc, record, 2, PAIR_X, PAIR_Y)
    error = np.abs(acc - exact_reference_record(x, y)) / natural_scale(x, y)
    # The float64 mean itself can only be within half an ulp of the exact one, which shifts
    # central moments by ~ulp(mean)/sd; everything beyond that limit must be ~1e-12.
    limit = 1e-12 + 10 * np.spacing(shift) / x.std()
    assert error.max() < limit


def test_large_mean_costs_no_precision():
    # A raw sum of squares would lose ~16 digits here; two-pass blocks lose none.
    x = 1e8 + np.tile([-1.0, 1.0], 50_000)
    acc = np.zeros(WIDTH)
    for record in records_of(np.vstack([x, x]), [*range(0, 100_001, 256), 100_000]):
        red.merge_into(acc, record, 2, PAIR_X, PAIR_Y)
    assert acc[3] / acc[0] == 1.0  # variance exactly 1


def test_merge_handles_empty_sides_and_counts_omitted():
    record = records_of(np.vstack([np.arange(10.0), np.arange(10.0) ** 2]), [0, 10])[0]
    empty = np.zeros(WIDTH)
    empty[1] = 3  # three draws omitted, none used
    acc = np.zeros(WIDTH)
    red.merge_into(acc, empty, 2, PAIR_X, PAIR_Y)
    red.merge_into(acc, record, 2, PAIR_X, PAIR_Y)
    red.merge_into(acc, empty, 2, PAIR_X, PAIR_Y)
    assert acc[1] == 6
    assert np.array_equal(acc[2:], record[2:]) and acc[0] == 10


def test_non_finite_draws_are_left_out_of_every_row():
    x = np.array([1.0, np.nan, 3.0, 4.0, 5.0, 6.0])
    y = np.array([1.0, 2.0, np.inf, 4.0, 5.0, 7.0])
    record = records_of(np.vstack([x, y]), [0, 6])[0]
    keep = np.isfinite(x) & np.isfinite(y)
    assert record[0] == 4 and record[1] == 2
    assert np.allclose(record[2:], reference_record(x[keep], y[keep])[2:])


def tree_result(chunk_records, groups):
    tree = red.MomentTree(PAIR)
    first = 0
    for size in groups:
        tree.push(first, chunk_records[first : first + size])
        first += size
    return tree.fold()


def test_tree_result_does_not_depend_on_how_chunks_are_grouped():
    rng = np.random.default_rng(1)
    values = rng.standard_normal((2, 100 * 64)) * [[1.0], [50.0]] + [[3.0], [-7.0]]
    chunks = np.array(records_of(values, list(range(0, 6401, 64))))
    whole = tree_result(chunks, [100])
    for groups in ([1] * 100, [3, 7, 1, 20, 19, 50], [64, 36], [99, 1]):
        assert np.array_equal(tree_result(chunks, groups), whole)
    assert np.allclose(whole, reference_record(*values), rtol=1e-9, atol=1e-6)


def test_partial_trees_combine_to_the_single_tree_bit_for_bit():
    rng = np.random.default_rng(2)
    chunks = np.array(records_of(rng.standard_normal((2, 50 * 32)), list(range(0, 1601, 32))))
    whole = tree_result(chunks, [50])
    lay = PAIR
    for split in (1, 13, 16, 31, 49):
        left, right = red.MomentTree(lay), red.MomentTree(lay)
        left.push(0, chunks[:split])
        right.next_chunk = split
        right.push(split, chunks[split:])
        for k in range(right.depth):  # hand the right part's nodes to the left tree
            left.depth = red.tree_push_node(
                left.levels,
                left.indices,
                left.records,
                left.depth,
                right.levels[k],
                right.indices[k],
                right.records[k],
                2,
                lay.pair_x,
                lay.pair_y,
            )
        assert np.array_equal(left.fold(), whole)


def test_tree_refuses_out_of_order_chunks():
    tree = red.MomentTree(PAIR)
    tree.push(0, np.zeros((2, WIDTH)))
    with pytest.raises(ValueError, match="in order"):
        tree.push(5, np.zeros((1, WIDTH)))


def test_simd_reductions_match_the_plain_python_reference_bit_for_bit():
    import reference_moments as reference

    rng = np.random.default_rng(3)
    for m in [*range(0, 20), 31, 32, 33, 63, 64, 65, 255, 256, 257, 300, 512]:
        x = rng.standard_normal(m) * 1e3 + 7.0
        y = rng.standard_cauchy(m)  # heavy tails: any change of order shows in the last bits
        mx, my = 6.5, 0.25
        assert red.block_sum(x, m) == reference.block_sum(x.tolist(), m)
        assert red.block_central(y, m, my) == reference.block_central(y.tolist(), m, my)
        assert red.block_pair(x, y, mx, my, m) == reference.block_pair(x.tolist(), y.tolist(), mx, my, m)
    special = np.array([1.0, np.inf, -2.0, np.nan, 3.0])
    assert np.isnan(red.block_sum(special, 5))


def test_unpaired_rows_give_the_same_moments_as_paired_ones():
    rng = np.random.default_rng(4)
    values = np.vstack([rng.standard_normal(300), rng.exponential(size=300)])
    paired, alone, means = np.empty(WIDTH), np.empty(red.record_width(2, 0)), np.empty(2)
    red.block_record(values.copy(), ROWS, PAIR_X, PAIR_Y, 300, paired, means)
    red.block_record(values.copy(), ROWS, np.empty(0, np.int64), np.empty(0, np.int64), 300, alone, means)
    assert np.array_equal(paired[:10], alone[:10])
