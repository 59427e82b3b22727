"""Numerically stable, mergeable moments of per-draw values.

A *record* is a flat float64 vector that summarises a set of draws of ``R``
value rows (one row per estimator and parameter) and ``P`` pairs of rows::

    [0]                  n          draws used
    [1]                  n_omitted  draws left out because a value was not finite
    [2 + 4r : 6 + 4r]    mean, M2, M3, M4 of row r   (Mk = sum of (v - mean)**k)
    [2 + 4R + 4p : ...]  C11, C21, C12, C22 of pair p (Cij = sum of dx**i * dy**j)

The pair co-moments are what a confidence interval for a ratio of variances
estimated *on the same draws* needs (the two variance estimates are
correlated; see :func:`fastgrad.results`).

How a record is built:

1. within a block of at most 256 draws: exact two-pass moments (the block
   mean first, then central power sums), with four interleaved accumulators
   combined in a fixed order, written with explicit SIMD vectors
   (:mod:`fastgrad._simd`), so the result does not depend on the compiler
   or the vector width;
2. blocks merge into their chunk with the pairwise update of Chan, Golub &
   LeVeque (1979) generalised to higher and mixed moments by Pébay (2008,
   Sandia report SAND2008-6212), written in "shift" form below;
3. chunks merge along a fixed binary tree over chunk indices
   (:func:`tree_push`), so that the result does not depend on how the chunks
   were grouped into batches, threads, shards or processes.

No raw sum of squares is ever formed, so a large mean costs no precision.
"""

import numpy as np

from fastgrad._jit import inline_core, serial
from fastgrad._simd import add4, lane, load4, mul4, splat4, sub4, zero4

#: Deepest merge tree: 2**63 chunks.
MAX_TREE_DEPTH = 64


def record_width(n_rows, n_pairs):
    """Length of a record with ``n_rows`` rows and ``n_pairs`` pairs."""
    return 2 + 4 * n_rows + 4 * n_pairs


@inline_core
def _row(r):
    return 2 + 4 * r


@inline_core
def _pair(n_rows, p):
    return 2 + 4 * n_rows + 4 * p


@inline_core
def block_sum(v, m):
    """Sum of ``v[:m]`` in a fixed order.

    Lane ``j`` of a 4-lane accumulator sums ``v[i]`` for ``i = j (mod 4)``;
    the last ``m % 4`` elements go to lane 0; lanes combine as
    ``(l0 + l1) + (l2 + l3)``.
    """
    acc = zero4()
    m4 = m - m % 4
    for i in range(0, m4, 4):
        acc = add4(acc, load4(v, i))
    s0 = lane(acc, 0)
    for i in range(m4, m):
        s0 += v[i]
    return (s0 + lane(acc, 1)) + (lane(acc, 2) + lane(acc, 3))


@inline_core
def block_central(v, m, mean):
    """Central power sums (M2, M3, M4) of ``v[:m]`` about ``mean`` (lane order as :func:`block_sum`)."""
    centre = splat4(mean)
    a = zero4()
    b = zero4()
    c = zero4()
    m4 = m - m % 4
    for i in range(0, m4, 4):
        d = sub4(load4(v, i), centre)
        q = mul4(d, d)
        a = add4(a, q)
        b = add4(b, mul4(q, d))
        c = add4(c, mul4(q, q))
    a0 = lane(a, 0)
    b0 = lane(b, 0)
    c0 = lane(c, 0)
    for i in range(m4, m):
        d0 = v[i] - mean
        q0 = d0 * d0
        a0 += q0
        b0 += q0 * d0
        c0 += q0 * q0
    return (
        (a0 + lane(a, 1)) + (lane(a, 2) + lane(a, 3)),
        (b0 + lane(b, 1)) + (lane(b, 2) + lane(b, 3)),
        (c0 + lane(c, 1)) + (lane(c, 2) + lane(c, 3)),
    )


@inline_core
def block_comoments(x, y, mean_x, mean_y, m):
    """Mixed central power sums (C11, C21, C12, C22) of ``x[:m]``, ``y[:m]`` (lane order as :func:`block_sum`)."""
    centre_x = splat4(mean_x)
    centre_y = splat4(mean_y)
    a = zero4()
    b = zero4()
    c = zero4()
    e = zero4()
    m4 = m - m % 4
    for i in range(0, m4, 4):
        dx = sub4(load4(x, i), centre_x)
        dy = sub4(load4(y, i), centre_y)
        p = mul4(dx, dy)
        a = add4(a, p)
        b = add4(b, mul4(p, dx))
        c = add4(c, mul4(p, dy))
        e = add4(e, mul4(p, p))
    a0 = lane(a, 0)
    b0 = lane(b, 0)
    c0 = lane(c, 0)
    e0 = lane(e, 0)
    for i in range(m4, m):
        dx0 = x[i] - mean_x
        dy0 = y[i] - mean_y
        p0 = dx0 * dy0
        a0 += p0
        b0 += p0 * dx0
        c0 += p0 * dy0
        e0 += p0 * p0
    return (
        (a0 + lane(a, 1)) + (lane(a, 2) + lane(a, 3)),
        (b0 + lane(b, 1)) + (lane(b, 2) + lane(b, 3)),
        (c0 + lane(c, 1)) + (lane(c, 2) + lane(c, 3)),
        (e0 + lane(e, 1)) + (lane(e, 2) + lane(e, 3)),
    )


@inline_core
def _compact_finite(values, rows, m):
    """Move draws whose active values are all finite to the front, in order.

    Returns how many there are.
    """
    kept = 0
    for i in range(m):
        ok = True
        for r in range(rows.size):
            if not np.isfinite(values[rows[r], i]):
                ok = False
        if ok:
            if kept != i:
                for r in range(rows.size):
                    values[rows[r], kept] = values[rows[r], i]
            kept += 1
    return kept


@inline_core
def block_record(values, rows, pair_x, pair_y, m, out, means):
    """Summarise draws ``0..m-1`` of ``values[rows]`` into record ``out``.

    ``values`` holds one row per computed quantity; ``rows`` selects the
    active ones, and ``pair_x[p]``, ``pair_y[p]`` index into ``rows``. Draws
    with any non-finite active value are left out and counted. ``means`` is
    scratch of length ``rows.size``.
    """
    n_rows = rows.size
    finite = True
    for r in range(n_rows):
        means[r] = block_sum(values[rows[r]], m) / m
        if not np.isfinite(means[r]):
            finite = False
    n_omitted = 0
    if not finite:
        kept = _compact_finite(values, rows, m)
        n_omitted = m - kept
        m = kept
        for r in range(n_rows):
            means[r] = block_sum(values[rows[r]], m) / m if m > 0 else 0.0
    out[:] = 0.0
    out[0] = m
    out[1] = n_omitted
    if m == 0:
        return
    for r in range(n_rows):
        k = _row(r)
        m2, m3, m4 = block_central(values[rows[r]], m, means[r])
        out[k] = means[r]
        out[k + 1] = m2
        out[k + 2] = m3
        out[k + 3] = m4
    for p in range(pair_x.size):
        x = pair_x[p]
        y = pair_y[p]
        c11, c21, c12, c22 = block_comoments(values[rows[x]], values[rows[y]], means[x], means[y], m)
        k = _pair(n_rows, p)
        out[k] = c11
        out[k + 1] = c21
        out[k + 2] = c12
        out[k + 3] = c22


@inline_core
def merge_into(acc, other, n_rows, pair_x, pair_y):
    """Merge record ``other`` into record ``acc`` (in place): acc <- acc + other.

    Shift form of the pairwise update: about the merged mean, a draw of side
    A deviates by ``d + alpha`` with ``alpha = -delta * n_B / n`` and a draw
    of side B by ``d + beta`` with ``beta = delta * n_A / n``, where
    ``delta = mean_B - mean_A``. Expanding the powers and using
    ``sum(d) = 0`` on each side gives the updates below. Pairs are updated
    before rows because they read the rows' old M2.
    """
    n_a = acc[0]
    n_b = other[0]
    acc[1] += other[1]
    if n_b == 0.0:
        return
    if n_a == 0.0:
        acc[0] = n_b
        acc[2:] = other[2:]
        return
    n = n_a + n_b
    wa = n_b / n  # alpha = -delta * wa
    wb = n_a / n  # beta = delta * wb
    for p in range(pair_x.size):
        kx = _row(pair_x[p])
        ky = _row(pair_y[p])
        dx = other[kx] - acc[kx]
        dy = other[ky] - acc[ky]
        k = _pair(n_rows, p)
        a11, a21, a12, a22 = _merge_pair(
            acc[k],
            acc[k + 1],
            acc[k + 2],
            acc[k + 3],
            acc[kx + 1],
            acc[ky + 1],
            n_a,
            -dx * wa,
            -dy * wa,
        )
        b11, b21, b12, b22 = _merge_pair(
            other[k],
            other[k + 1],
            other[k + 2],
            other[k + 3],
            other[kx + 1],
            other[ky + 1],
            n_b,
            dx * wb,
            dy * wb,
        )
        acc[k] = a11 + b11
        acc[k + 1] = a21 + b21
        acc[k + 2] = a12 + b12
        acc[k + 3] = a22 + b22
    for r in range(n_rows):
        k = _row(r)
        delta = other[k] - acc[k]
        a2, a3, a4 = _shift_row(acc[k + 1], acc[k + 2], acc[k + 3], n_a, -delta * wa)
        b2, b3, b4 = _shift_row(other[k + 1], other[k + 2], other[k + 3], n_b, delta * wb)
        acc[k] = acc[k] + delta * wa
        acc[k + 1] = a2 + b2
        acc[k + 2] = a3 + b3
        acc[k + 3] = a4 + b4
    acc[0] = n


@inline_core
def _shift_row(m2, m3, m4, n, s):
    """Central sums of one side about a mean shifted by ``s``: sum((d + s)**k)."""
    s2 = s * s
    return (
        m2 + s2 * n,
        m3 + 3.0 * s * m2 + s2 * s * n,
        m4 + 4.0 * s * m3 + 6.0 * s2 * m2 + s2 * s2 * n,
    )


@inline_core
def _merge_pair(c11, c21, c12, c22, m2x, m2y, n, sx, sy):
    """Mixed sums of one side about means shifted by (sx, sy)."""
    return (
        c11 + sx * sy * n,
        c21 + sy * m2x + 2.0 * sx * c11 + sx * sx * sy * n,
        c12 + sx * m2y + 2.0 * sy * c11 + sx * sy * sy * n,
        c22
        + 2.0 * sy * c21
        + sy * sy * m2x
        + 2.0 * sx * c12
        + 4.0 * sx * sy * c11
        + sx * sx * m2y
        + sx * sx * sy * sy * n,
    )


@serial
def reduce_block(values, rows, pair_x, pair_y, m, block, means, acc):
    """Summarise a block of values and merge it into the chunk record ``acc``.

    Compiled once and shared by every kernel (called once per block of 256
    draws): specialising it per function would only repeat identical code and
    cost each new kernel several seconds of compilation.
    """
    block_record(values, rows, pair_x, pair_y, m, block, means)
    merge_into(acc, block, rows.size, pair_x, pair_y)


# --- merging chunks along a fixed tree --------------------------------------
#
# Node (level L, index k) summarises chunks [k * 2**L, (k + 1) * 2**L). A node
# is only ever formed as merge(node(L-1, 2k), node(L-1, 2k+1)), so its value
# depends only on the chunks it covers, never on how the chunks were grouped
# when they were computed. A stack holds the nodes of a contiguous range of
# chunks in increasing order; pushing a right child onto its left sibling
# merges them. :func:`tree_fold` then merges what is left, left to right.


@serial
def tree_push(levels, indices, records, depth, first_chunk, chunk_records, n_rows, pair_x, pair_y):
    """Push chunk records (chunks ``first_chunk, first_chunk+1, ...``) onto a tree stack.

    ``levels``, ``indices`` and ``records`` are the stack (capacity
    :data:`MAX_TREE_DEPTH`); ``depth`` is its current height. Returns the new
    height. The chunks must follow the stack's last chunk without a gap.
    """
    for b in range(chunk_records.shape[0]):
        depth = _push_node(
            levels,
            indices,
            records,
            depth,
            0,
            first_chunk + b,
            chunk_records[b],
            n_rows,
            pair_x,
            pair_y,
        )
    return depth


@serial
def tree_push_node(levels, indices, records, depth, level, index, record, n_rows, pair_x, pair_y):
    """Push one node (level, index, record); used to combine partial stacks."""
    return _push_node(levels, indices, records, depth, level, index, record, n_rows, pair_x, pair_y)


@inline_core
def _push_node(levels, indices, records, depth, level, index, record, n_rows, pair_x, pair_y):
    records[depth, :] = record
    levels[depth] = level
    indices[depth] = index
    depth += 1
    while (
        depth >= 2
        and levels[depth - 1] == levels[depth - 2]
        and indices[depth - 1] % 2 == 1
        and indices[depth - 2] == indices[depth - 1] - 1
    ):
        merge_into(records[depth - 2], records[depth - 1], n_rows, pair_x, pair_y)
        levels[depth - 2] += 1
        indices[depth - 2] //= 2
        depth -= 1
    return depth


@serial
def tree_fold(records, depth, n_rows, pair_x, pair_y):
    """Merge the nodes left on a stack, left to right, into one record."""
    out = np.zeros(records.shape[1])
    for d in range(depth):
        merge_into(out, records[d], n_rows, pair_x, pair_y)
    return out


class MomentTree:
    """Chunk records merged along the fixed tree, in a contiguous run of chunks.

    ``layout`` is an :class:`fastgrad.estimators.Layout` (rows and pairs).
    """

    def __init__(self, layout):
        self.layout = layout
        self.width = record_width(layout.n_rows, len(layout.pair_x))
        self.levels = np.zeros(MAX_TREE_DEPTH, np.int64)
        self.indices = np.zeros(MAX_TREE_DEPTH, np.int64)
        self.records = np.zeros((MAX_TREE_DEPTH, self.width))
        self.depth = 0
        self.next_chunk = 0

    def push(self, first_chunk, chunk_records):
        if first_chunk != self.next_chunk:
            raise ValueError(f"chunks must arrive in order: expected {self.next_chunk}, got {first_chunk}")
        lay = self.layout
        self.depth = tree_push(
            self.levels,
            self.indices,
            self.records,
            self.depth,
            first_chunk,
            chunk_records,
            lay.n_rows,
            lay.pair_x,
            lay.pair_y,
        )
        self.next_chunk = first_chunk + len(chunk_records)

    def fold(self):
        lay = self.layout
        return tree_fold(self.records, self.depth, lay.n_rows, lay.pair_x, lay.pair_y)
