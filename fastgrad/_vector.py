"""The fused kernel for a diagonal multivariate Normal: one draw is a vector of ``D`` normals.

Layout (a generalisation of the scalar kernel that reduces to it at ``D = 1``):

* chunk ``c`` holds ``V = max(1, CHUNK_SIZE // D)`` draws (vectors) and reads
  stream ``(seed, c)``; draw ``v`` of the chunk takes the ``D`` normals from
  ``v * D`` on, component ``i`` the ``i``-th of them;
* value rows, estimator-major, then parameter, then component: row
  ``e * 2D + p * D + i`` (score = 0, pathwise = 1; loc = 0, scale = 1);
* blocks of ``B = clamp(2**17 // (4 D), 8, 512)`` draws, reduced with the
  same block reduction and merges as the scalar kernel.

At ``D = 1`` all three are the scalar kernel's (``V = 65 536``, ``B = 512``,
rows score-loc, score-scale, path-loc, path-scale), and a built-in
function's value is computed with the same operations, so
``DiagNormal([m], [s])`` gives bit for bit the numbers of ``Normal(m, s)``.
"""

import math
from dataclasses import dataclass

import numba
import numpy as np
from numba import types
from numba.extending import overload, register_jitable

from fastgrad._jit import SERIAL, UNCACHED
from fastgrad._kernels import (
    BATCH_CHUNKS,
    USER,
    KernelKey,
    _derivative,
    _sample_noise,
    _value,
    run_records,
    warm_up_records,
)
from fastgrad._reduction import MomentTree, reduce_block
from fastgrad.estimators import Layout
from fastgrad.rng import CHUNK_SIZE, stream_state

#: Values held per block (4 D rows x B draws), at most: 1 MiB. Larger blocks merge less often;
#: measured at D = 1000: 79 M components/s with 2**17, 58 M with 2**15.
BLOCK_VALUES = 2**17


def draws_per_chunk(dim):
    """Vectors per chunk: ``max(1, CHUNK_SIZE // dim)``."""
    return max(1, CHUNK_SIZE // dim)


def block_size(dim):
    """Draws per block: ``clamp(2**17 // (4 dim), 8, 512)``."""
    return min(512, max(8, BLOCK_VALUES // (4 * dim)))


def _vector_value(key, f, xs, weights, fparams):
    raise TypeError("resolved when a kernel is compiled; call it from @njit code only")


def _vector_gradient(key, df, xs, weights, fparams, out):
    raise TypeError("resolved when a kernel is compiled; call it from @njit code only")


@overload(_vector_value, inline="always")
def _ol_vector_value(key, f, xs, weights, fparams):
    if key.function == USER:
        return lambda key, f, xs, weights, fparams: np.float64(f(xs))

    def impl(key, f, xs, weights, fparams):
        # sum_i w_i h(x_i), left to right, starting from the first term (exact at D = 1 with w = 1)
        total = weights[0] * _value(key, f, xs[0], fparams)
        for i in range(1, xs.size):
            total += weights[i] * _value(key, f, xs[i], fparams)
        return total

    return impl


@overload(_vector_gradient, inline="always")
def _ol_vector_gradient(key, df, xs, weights, fparams, out):
    if key.function == USER:
        if isinstance(df, types.NoneType):

            def missing(key, df, xs, weights, fparams, out):
                out[:] = np.nan  # never called: no pathwise rows without a gradient

            return missing

        def user(key, df, xs, weights, fparams, out):
            df(xs, out)

        return user

    def impl(key, df, xs, weights, fparams, out):
        for i in range(xs.size):
            out[i] = weights[i] * _derivative(key, df, xs[i], fparams)

    return impl


@register_jitable
def _vector_block(key, f, df, noise, m, dim, loc, scale, inverse, weights, fparams, need_f, need_df, xs, grads, values):
    """Fill columns ``[0, m)`` of the value rows from ``m * dim`` normals."""
    for v in range(m):
        base = v * dim
        for i in range(dim):
            xs[i] = loc[i] + scale[i] * noise[base + i]
        if need_f:
            fx = _vector_value(key, f, xs, weights, fparams)
            for i in range(dim):
                eps = noise[base + i]
                values[i, v] = fx * (eps * inverse[i])
                values[dim + i, v] = fx * ((eps * eps - 1.0) * inverse[i])
        if need_df:
            _vector_gradient(key, df, xs, weights, fparams, grads)
            for i in range(dim):
                values[2 * dim + i, v] = grads[i] * 1.0
                values[3 * dim + i, v] = grads[i] * noise[base + i]


def _vector_records(
    key, f, df, seed, first_chunk, n_draws, per_chunk, block, theta, weights, fparams, rows, pair_x, pair_y,
    need_f, need_df, records, lo, hi,
):  # fmt: skip
    """Fill ``records[b]`` with the moment record of chunk ``first_chunk + b``, for ``b`` in ``[lo, hi)``."""
    dim = theta.shape[1]
    loc, scale, inverse = theta[0], theta[1], theta[2]
    values = np.empty((4 * dim, block))
    xs = np.empty(dim)
    grads = np.empty(dim)
    words = np.empty(block * dim, np.uint64)
    noise = np.empty(block * dim)
    scratch = np.empty(block * dim, np.int64)
    summary = np.empty(records.shape[1])
    means = np.empty(rows.size)
    for b in range(lo, hi):
        chunk = first_chunk + b
        start = chunk * per_chunk
        stop = min(n_draws, start + per_chunk)
        state = stream_state(seed, chunk)
        acc = records[b]
        acc[:] = 0.0
        for block_start in range(start, stop, block):
            m = min(block, stop - block_start)
            _sample_noise(key, state, words, noise, scratch, m * dim)
            _vector_block(
                key, f, df, noise, m, dim, loc, scale, inverse, weights, fparams, need_f, need_df, xs, grads, values
            )
            reduce_block(values, rows, pair_x, pair_y, m, summary, means, acc)


_cached_vector_kernel = numba.njit(**SERIAL)(_vector_records)
_uncached_vector_kernel = numba.njit(**UNCACHED)(_vector_records)

#: Largest batch of chunk records, in float64s (32 MiB).
MAX_BATCH_VALUES = 2**22


def vector_layout_rows(dim, estimators, wrt):
    """Rows (estimator, parameter, component) kept, and the score/pathwise pairs (positions in rows)."""
    from fastgrad.estimators import ESTIMATORS

    params = ("loc", "scale")
    rows = [
        ESTIMATORS.index(e) * 2 * dim + params.index(p) * dim + i for e in estimators for p in wrt for i in range(dim)
    ]
    pair_x, pair_y = [], []
    if "score" in estimators and "pathwise" in estimators:
        per_estimator = len(wrt) * dim
        for k in range(per_estimator):
            pair_x.append(estimators.index("score") * per_estimator + k)
            pair_y.append(estimators.index("pathwise") * per_estimator + k)
    return np.array(rows, np.int64), np.array(pair_x, np.int64), np.array(pair_y, np.int64)


def vector_run(distribution, function, layout, n, seed, job=None):
    """Run the vector kernel over ``n`` draws; return (record, run seconds, per-chunk trace sums).

    With a ``job`` (:class:`fastgrad._jobs.Job`): return (tree, seconds, None);
    the job keeps the trace sums, flattened per chunk (``job.extra_values()``).

    The trace sums (see :func:`chunk_trace_sums`) give the total-variance
    ratio its interval by batch means over chunks.
    """
    builtin = function.builtin is not None
    key = KernelKey("diagnormal", function.builtin.name if builtin else USER)
    kernel = _cached_vector_kernel if builtin else _uncached_vector_kernel
    dim = distribution.dim
    per_chunk = draws_per_chunk(dim)
    tree = MomentTree(layout)
    args = (
        key,
        None if builtin else function.f,
        None if builtin else function.df,
        np.uint64(seed),
        np.int64(0),
        np.int64(n),
        np.int64(per_chunk),
        np.int64(block_size(dim)),
        distribution.theta,
        function.weights_for(dim),
        function.param_vector,
        layout.rows,
        layout.pair_x,
        layout.pair_y,
        layout.need_f,
        layout.need_df,
    )
    warm_up_records(kernel, args, layout)
    per_batch = max(1, min(BATCH_CHUNKS, MAX_BATCH_VALUES // tree.width))
    if job is not None:
        tree, seconds = job.run(
            kernel, args, layout, extra=lambda r: chunk_trace_sums(r, layout).reshape(len(r), -1), max_chunks=per_batch
        )
        return tree, seconds, None
    totals = []
    record, seconds = run_records(
        kernel, args, tree, math.ceil(n / per_chunk), per_batch, lambda r: totals.append(chunk_trace_sums(r, layout))
    )
    return record, seconds, np.concatenate(totals)


def chunk_trace_sums(records, layout):
    """Per chunk, estimator and parameter: the sum over components of M2, ``(chunks, estimators, parameters)``."""
    out = np.zeros((len(records), len(layout.estimators), len(layout.wrt)))
    for a, e in enumerate(layout.estimators):
        for b, p in enumerate(layout.wrt):
            columns = 2 + 4 * np.array([layout.component_row(e, p, i) for i in range(layout.dim)]) + 1
            out[:, a, b] = records[:, columns].sum(axis=1)
    return out


@dataclass(frozen=True)
class VectorLayout(Layout):
    """Rows and pairs of a DiagNormal run (internal): a :class:`~fastgrad.estimators.Layout` per component."""

    dim: int = 1

    @classmethod
    def build(cls, dim, estimators, wrt):
        rows, pair_x, pair_y = vector_layout_rows(dim, tuple(estimators), tuple(wrt))
        return cls(tuple(estimators), tuple(wrt), rows, pair_x, pair_y, dim)

    def component_row(self, estimator, parameter, component):
        """Position in :attr:`rows` of ``(estimator, parameter, component)``."""
        return self.row(estimator, parameter) * self.dim + component
