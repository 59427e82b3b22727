"""The estimator-variant kernel: baselines, control variates, leave-one-out, antithetic and measure-valued.

One fused kernel computes any list of estimator specifications
(:class:`fastgrad.estimators.EstimatorSpec`) on the same draws, without
storing them. The per-draw quantities every variant is built from are
computed once per draw: ``f(x)``, the score factors ``s_j``, ``f'(x)`` and
the path factors ``p_j``; at the mirrored draw ``-eps`` when a variant is
antithetic; and the weak-derivative sides when one is measure-valued. Each
specification then turns them into one value per parameter:

=====================  =====================================================
kind                   value of one draw, parameter ``j``
=====================  =====================================================
score (+ coefficients) ``f s_j - sum_k B_jk s_k``  (``B`` = 0, ``diag(b)`` or the
                       control-variate matrix; antithetic: the mean of this at
                       ``eps`` and at ``-eps``)
pathwise               ``f' p_j`` (antithetic: mean at ``eps`` and ``-eps``)
loo (groups of K)      ``(K sum f s_j - sum f sum s_j) / (K (K - 1))`` per group:
                       the within-group sample covariance of ``f`` and ``s_j``
measure-valued         ``c_j (f(x+) - f(x-))``, the two sides of the weak derivative
control (pilot only)   ``s_j``
=====================  =====================================================

**Units.** Moments are taken over *units* of ``group`` consecutive draws
(``group`` = K of a ``loo(K)`` in the list, else 1): a unit's value is the mean
of its draws' values (a loo group's value is its covariance). Chunk ``c``
holds ``CHUNK_SIZE // group`` units and reads stream ``(seed, base + c)``; at
``group = 1`` (and whenever K divides 65 536) its draws are exactly those of
:func:`fastgrad.compare`, and a plain ``score`` or ``pathwise`` row is
bit-identical to compare's.

**Streams.** The measure-valued sides need randomness beyond ``eps``: three
uniforms and one normal per draw, from the auxiliary stream
``(seed, base + AUX_STREAMS + c)``. A pilot (for ``optimal-baseline`` and
``cv``) reads streams ``(seed, PILOT_STREAMS + c)``. Run chunks use stream
numbers below 2**37, so the three families of streams never meet
(``docs/random-streams.md``).
"""

import math
from dataclasses import dataclass

import numba
import numpy as np
from numba.extending import overload, register_jitable

from fastgrad._jit import SERIAL, UNCACHED
from fastgrad._kernels import (
    BATCH_CHUNKS,
    BLOCK,
    USER,
    KernelKey,
    _derivative,
    _n_params,
    _path_factor,
    _repeat_at,
    _sample_noise,
    _score_factor,
    _sum_pieces,
    _transform,
    _value,
    curve_batches,
    run_records,
    warm_up_records,
)
from fastgrad._reduction import MomentTree, reduce_block
from fastgrad.distributions import FAMILIES
from fastgrad.rng import CHUNK_SIZE, stream_state, take_words, unit_open_closed

#: Stream numbers of the auxiliary (measure-valued) streams start here, above the run's chunks.
AUX_STREAMS = 1 << 62
#: Stream numbers of pilot runs start here.
PILOT_STREAMS = 1 << 63

# Kinds of value rows.
SCORE, PATHWISE, LOO, MEASURE_VALUED, CONTROL = 0, 1, 2, 3, 4

#: Stream numbers of the auxiliary normals (decoupled measure-valued scale side) start here.
AUX_NORMAL_STREAMS = AUX_STREAMS + (1 << 61)

# Flags: which per-draw quantities a run needs.
F_F, F_SCORE, F_DF, F_MIRROR, F_WEAK, F_LOO, F_WEAK_COUPLED, F_WEAK_DECOUPLED = range(8)


def _weak_points(key, j, eps, x, u1, u2, u3, eps2, theta):
    raise TypeError("fastgrad._variants._weak_points is resolved when a kernel is compiled")


@overload(_weak_points, inline="always")
def _ol_weak_points(key, j, eps, x, u1, u2, u3, eps2, theta):
    impl = FAMILIES[key.family].weak_derivative
    if impl is None:
        return lambda key, j, eps, x, u1, u2, u3, eps2, theta: (np.nan, np.nan, np.nan, np.nan)
    return lambda key, j, eps, x, u1, u2, u3, eps2, theta: impl(j, eps, x, u1, u2, u3, eps2, theta)


@register_jitable
def _variant_block(
    key, f, df, state, aux, aux_normal, words, noise, scratch, aux_words, aux_noise, m_units, group, theta, fparams,
    kinds, mirror, coupled, coef, has_coef, flags, active, values, q, tmp,
):  # fmt: skip
    """Fill columns ``[0, m_units)`` of the value rows (row ``s * P + j``: specification ``s``, parameter ``j``).

    Two passes over the block, so that each inner loop does one thing and
    LLVM can vectorise it: first the per-draw quantities into the rows of
    ``q`` (see :func:`_q_rows`), then each specification's values from them.
    Only the parameters in ``active`` (the run's ``wrt``) get values; every
    score factor is computed, since a control variate uses all of them.
    """
    n_params = _n_params(key)
    m = m_units * group
    _sample_noise(key, state, words, noise, scratch, m)
    if flags[F_WEAK]:
        take_words(aux, aux_words, 3 * m)
        if flags[F_WEAK_DECOUPLED]:
            _sample_noise(key, aux_normal, words, aux_noise, scratch, m)
    s0, sb0, p0, pb0, w0, wd0 = _q_rows(n_params)
    # pass 1: per-draw quantities, one simple loop per quantity
    for i in range(m):
        q[Q_X, i] = _transform(key, noise[i], theta)
    if flags[F_F]:
        for i in range(m):
            q[Q_F, i] = _value(key, f, q[Q_X, i], fparams)
    if flags[F_SCORE]:
        for j in range(n_params):
            for i in range(m):
                q[s0 + j, i] = _score_factor(key, j, noise[i], q[Q_X, i], theta)
    if flags[F_DF]:
        for i in range(m):
            q[Q_DF, i] = _derivative(key, df, q[Q_X, i], fparams)
        for j in active:
            for i in range(m):
                q[p0 + j, i] = _path_factor(key, j, noise[i], q[Q_X, i], theta)
    if flags[F_MIRROR]:
        for i in range(m):
            q[Q_XB, i] = _transform(key, -noise[i], theta)
        if flags[F_F]:
            for i in range(m):
                q[Q_FB, i] = _value(key, f, q[Q_XB, i], fparams)
            for j in range(n_params):
                for i in range(m):
                    q[sb0 + j, i] = _score_factor(key, j, -noise[i], q[Q_XB, i], theta)
        if flags[F_DF]:
            for i in range(m):
                q[Q_DFB, i] = _derivative(key, df, q[Q_XB, i], fparams)
            for j in active:
                for i in range(m):
                    q[pb0 + j, i] = _path_factor(key, j, -noise[i], q[Q_XB, i], theta)
    if flags[F_WEAK]:
        for j in active:
            for i in range(m):
                u1 = unit_open_closed(aux_words[3 * i])
                u2 = unit_open_closed(aux_words[3 * i + 1])
                u3 = unit_open_closed(aux_words[3 * i + 2])
                eps2 = aux_noise[i] if flags[F_WEAK_DECOUPLED] else 0.0
                c, x_plus, x_coupled, x_decoupled = _weak_points(key, j, noise[i], q[Q_X, i], u1, u2, u3, eps2, theta)
                f_plus = _value(key, f, x_plus, fparams)
                if flags[F_WEAK_COUPLED]:
                    q[w0 + j, i] = c * (f_plus - _value(key, f, x_coupled, fparams))
                if flags[F_WEAK_DECOUPLED]:
                    q[wd0 + j, i] = c * (f_plus - _value(key, f, x_decoupled, fparams))
    # pass 2: each specification's values, one row at a time
    scale = 1.0 / group
    pairs = 1.0 / (group * (group - 1.0)) if group > 1 else 0.0
    for s in range(kinds.size):
        kind = kinds[s]
        for j in active:
            r = s * n_params + j
            if kind == LOO:
                for u in range(m_units):
                    sum_f = 0.0
                    sum_s = 0.0
                    sum_fs = 0.0
                    for i in range(u * group, (u + 1) * group):
                        sum_f += q[Q_F, i]
                        sum_s += q[s0 + j, i]
                        sum_fs += q[Q_F, i] * q[s0 + j, i]
                    values[r, u] = (group * sum_fs - sum_f * sum_s) * pairs
                continue
            if kind == SCORE:
                for i in range(m):
                    tmp[i] = q[Q_F, i] * q[s0 + j, i]
                if has_coef[s]:
                    for k in range(n_params):
                        c = coef[s, j, k]
                        for i in range(m):
                            tmp[i] -= c * q[s0 + k, i]
                if mirror[s]:
                    for i in range(m):
                        w = q[Q_FB, i] * q[sb0 + j, i]
                        if has_coef[s]:
                            for k in range(n_params):
                                w -= coef[s, j, k] * q[sb0 + k, i]
                        tmp[i] = 0.5 * (tmp[i] + w)
            elif kind == PATHWISE:
                for i in range(m):
                    tmp[i] = q[Q_DF, i] * q[p0 + j, i]
                if mirror[s]:
                    for i in range(m):
                        tmp[i] = 0.5 * (tmp[i] + q[Q_DFB, i] * q[pb0 + j, i])
            elif kind == MEASURE_VALUED:
                row = w0 + j if coupled[s] else wd0 + j
                for i in range(m):
                    tmp[i] = q[row, i]
            else:  # CONTROL
                for i in range(m):
                    tmp[i] = q[s0 + j, i]
            if group == 1:
                for i in range(m):
                    values[r, i] = tmp[i]
            else:
                for u in range(m_units):
                    total = 0.0
                    for i in range(u * group, (u + 1) * group):
                        total += tmp[i]
                    values[r, u] = total * scale


# Rows of the per-draw quantities ``q``: f, f at the mirror, f', f' at the mirror, x, the mirror of x,
# then per parameter
# (P rows each) the score factors, mirrored score factors, path factors, mirrored path factors, and the
# coupled and decoupled measure-valued values.
Q_F, Q_FB, Q_DF, Q_DFB, Q_X, Q_XB = 0, 1, 2, 3, 4, 5


@register_jitable
def _q_rows(n_params):
    """First row of each per-parameter group of ``q``; the total is ``6 + 6 P``."""
    return 6, 6 + n_params, 6 + 2 * n_params, 6 + 3 * n_params, 6 + 4 * n_params, 6 + 5 * n_params


@register_jitable
def _chunk_setup(seed, stream_base, chunk, n_units, group):
    """Return the unit range, the two streams and the block sizes of a chunk."""
    per_chunk = CHUNK_SIZE // group
    start = chunk * per_chunk
    stop = min(n_units, start + per_chunk)
    state = stream_state(seed, stream_base + np.uint64(chunk))
    aux = stream_state(seed, stream_base + np.uint64(AUX_STREAMS) + np.uint64(chunk))
    aux_normal = stream_state(seed, stream_base + np.uint64(AUX_NORMAL_STREAMS) + np.uint64(chunk))
    return start, stop, max(1, BLOCK // group), state, aux, aux_normal


@register_jitable
def _block_buffers(group, n_values):
    """Scratch of one block of ``max(1, BLOCK // group)`` units: words, noise, auxiliary draws, value rows."""
    units_per_block = max(1, BLOCK // group)
    draws = units_per_block * group
    return (
        np.empty(draws, np.uint64),
        np.empty(draws),
        np.empty(draws),
        np.empty(draws, np.int64),
        np.empty(3 * draws, np.uint64),
        np.empty((n_values, units_per_block)),
    )


def _variant_records(
    key, f, df, seed, first_chunk, stream_base, n_units, group, theta, fparams, kinds, mirror, coupled, coef,
    has_coef, flags, active, rows, pair_x, pair_y, records, lo, hi,
):  # fmt: skip
    """Fill ``records[b]`` with the moment record (over units) of chunk ``first_chunk + b``, ``b`` in ``[lo, hi)``."""
    n_params = _n_params(key)
    n_rows = rows.size
    block = np.empty(records.shape[1])
    means = np.empty(n_rows)
    q = np.zeros((6 + 6 * n_params, max(BLOCK, group)))
    tmp = np.empty(max(BLOCK, group))
    words, noise, aux_noise, scratch, aux_words, values = _block_buffers(group, kinds.size * n_params)
    for b in range(lo, hi):
        start, stop, per_block, state, aux, aux_normal = _chunk_setup(
            seed, stream_base, first_chunk + b, n_units, group
        )
        acc = records[b]
        acc[:] = 0.0
        for block_start in range(start, stop, per_block):
            m = min(per_block, stop - block_start)
            _variant_block(key, f, df, state, aux, aux_normal, words, noise, scratch, aux_words, aux_noise, m,
                           group, theta, fparams, kinds, mirror, coupled, coef, has_coef, flags, active, values, q,
                           tmp)  # fmt: skip
            reduce_block(values, rows, pair_x, pair_y, m, block, means, acc)


def _variant_curve(
    key, f, df, seed, first_chunk, stream_base, n_units, group, theta, fparams, kinds, mirror, coupled, coef,
    has_coef, flags, active, rows, offsets, sizes, repeats, first_piece, sums, owners, lo, hi,
):  # fmt: skip
    """Per-repeat piece sums of the value rows, over units (see ``fastgrad._kernels._curve_chunks``)."""
    n_params = _n_params(key)
    q = np.zeros((6 + 6 * n_params, max(BLOCK, group)))
    tmp = np.empty(max(BLOCK, group))
    words, noise, aux_noise, scratch, aux_words, values = _block_buffers(group, kinds.size * n_params)
    for b in range(lo, hi):
        piece = first_piece[b]
        start, stop, per_block, state, aux, aux_normal = _chunk_setup(
            seed, stream_base, first_chunk + b, n_units, group
        )
        owner, end = _repeat_at(offsets, sizes, repeats, start)
        owners[piece] = owner
        sums[piece, :] = 0.0
        for block_start in range(start, stop, per_block):
            m = min(per_block, stop - block_start)
            _variant_block(key, f, df, state, aux, aux_normal, words, noise, scratch, aux_words, aux_noise, m,
                           group, theta, fparams, kinds, mirror, coupled, coef, has_coef, flags, active, values, q,
                           tmp)  # fmt: skip
            piece, end = _sum_pieces(values, rows, m, block_start, stop, piece, end, sums, owners, offsets, sizes,
                                     repeats)  # fmt: skip


_cached_records = numba.njit(**SERIAL)(_variant_records)
_uncached_records = numba.njit(**UNCACHED)(_variant_records)
_cached_curve = numba.njit(**SERIAL)(_variant_curve)
_uncached_curve = numba.njit(**UNCACHED)(_variant_curve)


# --- the Python side ----------------------------------------------------------------


@dataclass(frozen=True)
class VariantLayout:
    """Rows and pairs of a variant run (internal; duck-types :class:`fastgrad.estimators.Layout`).

    Row ``s * P + j`` of the kernel is specification ``s``, parameter ``j``;
    ``rows`` keeps those of the parameters in ``wrt``, specification-major.
    Pair ``q`` pairs a kept row with the reference specification's row of the
    same parameter (for the ratio's confidence interval).
    """

    specs: tuple
    parameters: tuple
    wrt: tuple
    reference: int
    rows: np.ndarray
    pair_x: np.ndarray
    pair_y: np.ndarray
    group: int

    @property
    def n_rows(self):
        return len(self.rows)

    def row(self, s, parameter):
        """Position in :attr:`rows` of specification ``s``, ``parameter``."""
        return s * len(self.wrt) + self.wrt.index(parameter)

    def pair(self, s, parameter):
        """Pair index of specification ``s`` against the reference (None for the reference itself)."""
        if s == self.reference:
            return None
        index = s if s < self.reference else s - 1
        return index * len(self.wrt) + self.wrt.index(parameter)

    @classmethod
    def build(cls, specs, parameters, wrt, reference):
        n_params = len(parameters)
        rows = [s * n_params + parameters.index(p) for s in range(len(specs)) for p in wrt]
        pair_x, pair_y = [], []
        for s in range(len(specs)):
            if s == reference:
                continue
            for j in range(len(wrt)):
                pair_x.append(s * len(wrt) + j)
                pair_y.append(reference * len(wrt) + j)
        groups = [spec.group for spec in specs if spec.baseline == "loo"]
        return cls(
            specs=tuple(specs),
            parameters=tuple(parameters),
            wrt=tuple(wrt),
            reference=reference,
            rows=np.array(rows, np.int64),
            pair_x=np.array(pair_x, np.int64),
            pair_y=np.array(pair_y, np.int64),
            group=groups[0] if groups else 1,
        )


def kernel_arguments(specs, n_params, coefficients):
    """Run-time arrays describing the specifications: kinds, mirror, coupled, coef, has_coef, flags.

    ``coefficients[s]`` is the ``(P, P)`` matrix ``B`` of a score specification
    (None for none).
    """
    n_specs = len(specs)
    kinds = np.empty(n_specs, np.int64)
    mirror = np.zeros(n_specs, np.int64)
    coupled = np.zeros(n_specs, np.int64)
    coef = np.zeros((n_specs, n_params, n_params))
    has_coef = np.zeros(n_specs, np.int64)
    flags = np.zeros(8, np.int64)
    for s, spec in enumerate(specs):
        if spec == "control":
            kinds[s] = CONTROL
            flags[F_SCORE] = 1
            continue
        mirror[s] = spec.antithetic
        if spec.base == "score":
            kinds[s] = LOO if spec.baseline == "loo" else SCORE
            flags[F_F] = flags[F_SCORE] = 1
            flags[F_LOO] |= spec.baseline == "loo"
            if coefficients[s] is not None:
                coef[s] = coefficients[s]
                has_coef[s] = 1
        elif spec.base == "pathwise":
            kinds[s] = PATHWISE
            flags[F_DF] = 1
        else:
            kinds[s] = MEASURE_VALUED
            coupled[s] = spec.coupled
            flags[F_WEAK] = 1
            flags[F_WEAK_COUPLED if spec.coupled else F_WEAK_DECOUPLED] = 1
        flags[F_MIRROR] |= spec.antithetic
    if flags[F_MIRROR] and not flags[F_DF] and not flags[F_F]:
        flags[F_MIRROR] = 0
    return kinds, mirror, coupled, coef, has_coef, flags


def _active(layout):
    return np.array([layout.parameters.index(p) for p in layout.wrt], np.int64)


def _kernel_and_key(distribution, function, cached, uncached):
    builtin = function.builtin is not None
    key = KernelKey(distribution.family.name, function.name if builtin else USER)
    if builtin:
        return key, cached, None, None
    return key, uncached, function.f, function.df


def variant_run(distribution, function, layout, specs, coefficients, n_units, seed, stream_base=0, job=None):
    """Run the variant kernel over ``n_units`` units; return (record over units, seconds).

    With a ``job`` (:class:`fastgrad._jobs.Job`): return (tree, seconds) of the job's chunks.
    """
    key, kernel, f, df = _kernel_and_key(distribution, function, _cached_records, _uncached_records)
    arrays = kernel_arguments(specs, len(layout.parameters), coefficients)
    args = (
        key, f, df, np.uint64(seed), np.int64(0), np.uint64(stream_base), np.int64(n_units), np.int64(layout.group),
        distribution.theta, function.param_vector, *arrays, _active(layout), layout.rows, layout.pair_x,
        layout.pair_y,
    )  # fmt: skip
    warm_up_records(kernel, args, layout)
    if job is not None:
        return job.run(kernel, args, layout)
    n_chunks = math.ceil(n_units / (CHUNK_SIZE // layout.group))
    return run_records(kernel, args, MomentTree(layout), n_chunks, BATCH_CHUNKS)


def variant_curve_run(distribution, function, layout, specs, coefficients, unit_sizes, repeats, seed, job=None):
    """Per-repeat sums of the kept rows over units; return (sums, seconds). Sizes are in units."""
    key, kernel, f, df = _kernel_and_key(distribution, function, _cached_curve, _uncached_curve)
    arrays = kernel_arguments(specs, len(layout.parameters), coefficients)
    sizes = np.asarray(unit_sizes, dtype=np.int64)
    offsets = np.zeros(sizes.size + 1, np.int64)
    offsets[1:] = np.cumsum(sizes * repeats)
    n_units = int(offsets[-1])
    per_chunk = CHUNK_SIZE // layout.group
    args = (
        key, f, df, np.uint64(seed), np.int64(0), np.uint64(0), np.int64(n_units), np.int64(layout.group),
        distribution.theta, function.param_vector, *arrays, _active(layout), layout.rows, offsets, sizes,
        np.int64(repeats),
    )  # fmt: skip
    return curve_batches(kernel, args, offsets, sizes, repeats, per_chunk, layout.n_rows, job)
