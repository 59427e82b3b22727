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

1. within a block of at most 512 draws: exact two-pass moments (the block
   mean first, then central power sums; a score/pathwise pair in one pass),
   with SIMD accumulators combined in an order fixed by the source
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
from fastgrad._simd import add4, fma1, fma4, lane, load4, mul4, splat4, sub4, zero4

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


# Block loops. The order of every floating-point operation is fixed by the
# source: explicit 4-lane vectors (fastgrad/_simd.py), no fast-math flags,
# and one-rounding FMAs (llvm.fma, exactly specified). tests/reference_moments.py
# restates the order in plain Python and must agree bit for bit.


@inline_core
def block_sum(v, m):
    """Sum of ``v[:m]`` in a fixed order.

    Sixteen lanes in four vectors ``A0..A3``: lane ``k`` of ``Aq`` sums
    ``v[i]`` for ``i = 4q + k (mod 16)`` over the first ``m - m % 16``
    elements. Four independent chains keep the adder busy; one chain would
    wait on its own latency. Then ``T = (A0 + A1) + (A2 + A3)`` lane by lane,
    the last ``m % 16`` elements are added in order to ``T[0]``, and the
    result is ``(T[0] + T[1]) + (T[2] + T[3])``.
    """
    a0 = zero4()
    a1 = zero4()
    a2 = zero4()
    a3 = zero4()
    m16 = m - m % 16
    for i in range(0, m16, 16):
        a0 = add4(a0, load4(v, i))
        a1 = add4(a1, load4(v, i + 4))
        a2 = add4(a2, load4(v, i + 8))
        a3 = add4(a3, load4(v, i + 12))
    t = add4(add4(a0, a1), add4(a2, a3))
    s0 = lane(t, 0)
    for i in range(m16, m):
        s0 += v[i]
    return (s0 + lane(t, 1)) + (lane(t, 2) + lane(t, 3))


@inline_core
def _combine(vector, first):
    """``(first + v[1]) + (v[2] + v[3])``: lane 0 replaced by ``first`` (lane 0 plus the tail)."""
    return (first + lane(vector, 1)) + (lane(vector, 2) + lane(vector, 3))


@inline_core
def block_central(v, m, mean):
    """Central power sums (M2, M3, M4) of ``v[:m]`` about ``mean``.

    Four lanes, lane ``k`` over ``i = k (mod 4)``; per element ``d = v - mean``,
    ``q = d * d``, ``M2 += q``, ``M3 = fma(q, d, M3)``, ``M4 = fma(q, q, M4)``;
    the last ``m % 4`` elements go to lane 0 in order; lanes combine as
    ``(l0 + l1) + (l2 + l3)``.
    """
    centre = splat4(mean)
    a = zero4()
    b = zero4()
    c = zero4()
    m4 = m - m % 4
    for i in range(0, m4, 4):
        d = sub4(load4(v, i), centre)
        q = mul4(d, d)
        a = add4(a, q)
        b = fma4(q, d, b)
        c = fma4(q, q, c)
    a0 = lane(a, 0)
    b0 = lane(b, 0)
    c0 = lane(c, 0)
    for i in range(m4, m):
        d0 = v[i] - mean
        q0 = d0 * d0
        a0 += q0
        b0 = fma1(q0, d0, b0)
        c0 = fma1(q0, q0, c0)
    return _combine(a, a0), _combine(b, b0), _combine(c, c0)


@inline_core
def block_pair(x, y, mean_x, mean_y, m):
    """Central sums of two rows and their mixed sums, in one pass over both.

    Returns ``(M2x, M3x, M4x, M2y, M3y, M4y, C11, C21, C12, C22)``. Lanes and
    tail as in :func:`block_central`; per element, with ``dx``, ``dy`` the
    deviations, ``qx = dx*dx``, ``qy = dy*dy``, ``p = dx*dy``: each row as in
    :func:`block_central`, ``C11 += p``, ``C21 = fma(qx, dy, C21)``,
    ``C12 = fma(p, dy, C12)``, ``C22 = fma(qx, qy, C22)``. Reading each value
    once instead of three times halves the cost of a score/pathwise pair.
    """
    centre_x = splat4(mean_x)
    centre_y = splat4(mean_y)
    ax = zero4()
    bx = zero4()
    ex = zero4()
    ay = zero4()
    by = zero4()
    ey = zero4()
    c11 = zero4()
    c21 = zero4()
    c12 = zero4()
    c22 = zero4()
    m4 = m - m % 4
    for i in range(0, m4, 4):
        dx = sub4(load4(x, i), centre_x)
        dy = sub4(load4(y, i), centre_y)
        qx = mul4(dx, dx)
        qy = mul4(dy, dy)
        p = mul4(dx, dy)
        ax = add4(ax, qx)
        bx = fma4(qx, dx, bx)
        ex = fma4(qx, qx, ex)
        ay = add4(ay, qy)
        by = fma4(qy, dy, by)
        ey = fma4(qy, qy, ey)
        c11 = add4(c11, p)
        c21 = fma4(qx, dy, c21)
        c12 = fma4(p, dy, c12)
        c22 = fma4(qx, qy, c22)
    ax0 = lane(ax, 0)
    bx0 = lane(bx, 0)
    ex0 = lane(ex, 0)
    ay0 = lane(ay, 0)
    by0 = lane(by, 0)
    ey0 = lane(ey, 0)
    c110 = lane(c11, 0)
    c210 = lane(c21, 0)
    c120 = lane(c12, 0)
    c220 = lane(c22, 0)
    for i in range(m4, m):
        dx0 = x[i] - mean_x
        dy0 = y[i] - mean_y
        qx0 = dx0 * dx0
        qy0 = dy0 * dy0
        p0 = dx0 * dy0
        ax0 += qx0
        bx0 = fma1(qx0, dx0, bx0)
        ex0 = fma1(qx0, qx0, ex0)
        ay0 += qy0
        by0 = fma1(qy0, dy0, by0)
        ey0 = fma1(qy0, qy0, ey0)
        c110 += p0
        c210 = fma1(qx0, dy0, c210)
        c120 = fma1(p0, dy0, c120)
        c220 = fma1(qx0, qy0, c220)
    return (
        _combine(ax, ax0),
        _combine(bx, bx0),
        _combine(ex, ex0),
        _combine(ay, ay0),
        _combine(by, by0),
        _combine(ey, ey0),
        _combine(c11, c110),
        _combine(c21, c210),
        _combine(c12, c120),
        _combine(c22, c220),
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
    active ones, and ``pair_x[p]``, ``pair_y[p]`` index into ``rows`` (a row
    belongs to at most one pair). Draws with any non-finite active value are
    left out and counted. ``means`` is
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
        out[_row(r)] = means[r]
    for p in range(pair_x.size):
        x = pair_x[p]
        y = pair_y[p]
        m2x, m3x, m4x, m2y, m3y, m4y, c11, c21, c12, c22 = block_pair(
            values[rows[x]], values[rows[y]], means[x], means[y], m
        )
        kx = _row(x)
        ky = _row(y)
        out[kx + 1] = m2x
        out[kx + 2] = m3x
        out[kx + 3] = m4x
        out[ky + 1] = m2y
        out[ky + 2] = m3y
        out[ky + 3] = m4y
        k = _pair(n_rows, p)
        out[k] = c11
        out[k + 1] = c21
        out[k + 2] = c12
        out[k + 3] = c22
    if 2 * pair_x.size < n_rows:  # some rows are in no pair (a row is in at most one)
        paired = np.zeros(n_rows, np.bool_)
        for p in range(pair_x.size):
            paired[pair_x[p]] = True
            paired[pair_y[p]] = True
        for r in range(n_rows):
            if not paired[r]:
                k = _row(r)
                out[k + 1], out[k + 2], out[k + 3] = block_central(values[rows[r]], m, means[r])


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
        for k in range(2, acc.size):  # (a slice assignment would compile a shape check's error text: 1.4 s)
            acc[k] = other[k]
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

    Compiled once and shared by every kernel (called once per block of 512
    draws): specialising it per function would only repeat identical code and
    cost each new kernel several seconds of compilation.
    """
    block_record(values, rows, pair_x, pair_y, m, block, means)
    merge_into(acc, block, rows.size, pair_x, pair_y)


@serial
def columns_record(values, pair_x, pair_y, acc):
    """Record of the columns of ``values`` (rows x m) taken as draws, in ``acc``.

    Blocks of 512 columns in order, each summarised and merged like a
    chunk's blocks. Used on the per-repeat estimates of a variance curve.
    """
    n_rows, m_total = values.shape
    rows = np.arange(n_rows)
    block = np.empty(acc.size)
    means = np.empty(n_rows)
    buffer = np.empty((n_rows, 512))
    acc[:] = 0.0
    for start in range(0, m_total, 512):
        m = min(512, m_total - start)
        for r in range(n_rows):
            for i in range(m):
                buffer[r, i] = values[r, start + i]
        reduce_block(buffer, rows, pair_x, pair_y, m, block, means, acc)


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
    for k in range(record.size):  # (not a slice assignment: see merge_into)
        records[depth, k] = record[k]
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
