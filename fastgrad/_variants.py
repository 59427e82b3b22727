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
import time
from dataclasses import dataclass

import numba
import numpy as np
from numba.extending import overload, register_jitable

from fastgrad._jit import SERIAL, UNCACHED
from fastgrad._kernels import (
    BATCH_CHUNKS,
    BLOCK,
    MAX_BATCH_PIECES,
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
    curve_fold,
    curve_pieces,
    run_records,
    warm_up_records,
)
from fastgrad._parallel import for_ranges
from fastgrad._reduction import MomentTree, reduce_block
from fastgrad.distributions import FAMILIES
from fastgrad.rng import CHUNK_SIZE, stream_state, take_words, unit_open_closed

#: Stream numbers of the auxiliary (measure-valued) streams start here, above the run's chunks.
AUX_STREAMS = 1 << 62
#: Stream numbers of pilot runs start here.
PILOT_STREAMS = 1 << 63

# Kinds of value rows.
SCORE, PATHWISE, LOO, MEASURE_VALUED, CONTROL = 0, 1, 2, 3, 4

# Flags: which per-draw quantities a run needs.
F_F, F_SCORE, F_DF, F_MIRROR, F_WEAK, F_LOO = range(6)


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
    key, f, df, state, aux, words, noise, scratch, aux_words, aux_noise, m_units, group, theta, fparams,
    kinds, mirror, coupled, coef, has_coef, flags, values, work,
):  # fmt: skip
    """Fill columns ``[0, m_units)`` of the value rows (row ``s * P + j``: specification ``s``, parameter ``j``)."""
    n_params = _n_params(key)
    n_specs = kinds.size
    m = m_units * group
    _sample_noise(key, state, words, noise, scratch, m)
    if flags[F_WEAK]:
        take_words(aux, aux_words, 3 * m)
        _sample_noise(key, aux, words, aux_noise, scratch, m)
    # work rows: 0 score factors, 1 mirrored score factors, 2 path factors, 3 mirrored path
    # factors, 4 coupled weak-derivative values, 5 decoupled ones, 6 loo sums of s, 7 loo sums of f s
    for u in range(m_units):
        for r in range(n_specs * n_params):
            values[r, u] = 0.0
        loo_f = 0.0
        if flags[F_LOO]:
            for j in range(n_params):
                work[6, j] = 0.0
                work[7, j] = 0.0
        for t in range(group):
            i = u * group + t
            eps = noise[i]
            x = _transform(key, eps, theta)
            fx = 0.0
            dfx = 0.0
            fxb = 0.0
            dfxb = 0.0
            if flags[F_F]:
                fx = _value(key, f, x, fparams)
            if flags[F_SCORE]:
                for j in range(n_params):
                    work[0, j] = _score_factor(key, j, eps, x, theta)
            if flags[F_DF]:
                dfx = _derivative(key, df, x, fparams)
                for j in range(n_params):
                    work[2, j] = _path_factor(key, j, eps, x, theta)
            if flags[F_MIRROR]:
                epsb = -eps
                xb = _transform(key, epsb, theta)
                if flags[F_F]:
                    fxb = _value(key, f, xb, fparams)
                    for j in range(n_params):
                        work[1, j] = _score_factor(key, j, epsb, xb, theta)
                if flags[F_DF]:
                    dfxb = _derivative(key, df, xb, fparams)
                    for j in range(n_params):
                        work[3, j] = _path_factor(key, j, epsb, xb, theta)
            if flags[F_WEAK]:
                u1 = unit_open_closed(aux_words[3 * i])
                u2 = unit_open_closed(aux_words[3 * i + 1])
                u3 = unit_open_closed(aux_words[3 * i + 2])
                for j in range(n_params):
                    c, x_plus, x_coupled, x_decoupled = _weak_points(key, j, eps, x, u1, u2, u3, aux_noise[i], theta)
                    f_plus = _value(key, f, x_plus, fparams)
                    work[4, j] = c * (f_plus - _value(key, f, x_coupled, fparams))
                    work[5, j] = c * (f_plus - _value(key, f, x_decoupled, fparams))
            if flags[F_LOO]:
                loo_f += fx
                for j in range(n_params):
                    work[6, j] += work[0, j]
                    work[7, j] += fx * work[0, j]
            for s in range(n_specs):
                kind = kinds[s]
                for j in range(n_params):
                    if kind == SCORE:
                        v = fx * work[0, j]
                        if has_coef[s]:
                            for k in range(n_params):
                                v -= coef[s, j, k] * work[0, k]
                        if mirror[s]:
                            w = fxb * work[1, j]
                            if has_coef[s]:
                                for k in range(n_params):
                                    w -= coef[s, j, k] * work[1, k]
                            v = 0.5 * (v + w)
                    elif kind == PATHWISE:
                        v = dfx * work[2, j]
                        if mirror[s]:
                            v = 0.5 * (v + dfxb * work[3, j])
                    elif kind == MEASURE_VALUED:
                        v = work[4, j] if coupled[s] else work[5, j]
                    elif kind == CONTROL:
                        v = work[0, j]
                    else:
                        continue
                    values[s * n_params + j, u] += v
        if group > 1:
            scale = 1.0 / group
            pairs = 1.0 / (group * (group - 1.0))
            for s in range(n_specs):
                for j in range(n_params):
                    r = s * n_params + j
                    if kinds[s] == LOO:
                        values[r, u] = (group * work[7, j] - loo_f * work[6, j]) * pairs
                    else:
                        values[r, u] *= scale


@register_jitable
def _chunk_setup(seed, stream_base, chunk, n_units, group):
    """Return the unit range, the two streams and the block sizes of a chunk."""
    per_chunk = CHUNK_SIZE // group
    start = chunk * per_chunk
    stop = min(n_units, start + per_chunk)
    units_per_block = max(1, BLOCK // group)
    draws = units_per_block * group
    state = stream_state(seed, stream_base + np.uint64(chunk))
    aux = stream_state(seed, stream_base + np.uint64(AUX_STREAMS) + np.uint64(chunk))
    return start, stop, units_per_block, draws, state, aux


def _variant_records(
    key, f, df, seed, first_chunk, stream_base, n_units, group, theta, fparams, kinds, mirror, coupled, coef,
    has_coef, flags, rows, pair_x, pair_y, records, lo, hi,
):  # fmt: skip
    """Fill ``records[b]`` with the moment record (over units) of chunk ``first_chunk + b``, ``b`` in ``[lo, hi)``."""
    n_params = _n_params(key)
    n_rows = rows.size
    block = np.empty(records.shape[1])
    means = np.empty(n_rows)
    work = np.zeros((8, n_params))
    for b in range(lo, hi):
        start, stop, per_block, draws, state, aux = _chunk_setup(seed, stream_base, first_chunk + b, n_units, group)
        words = np.empty(draws, np.uint64)
        noise = np.empty(draws)
        aux_noise = np.empty(draws)
        scratch = np.empty(draws, np.int64)
        aux_words = np.empty(3 * draws, np.uint64)
        values = np.empty((kinds.size * n_params, per_block))
        acc = records[b]
        acc[:] = 0.0
        for block_start in range(start, stop, per_block):
            m = min(per_block, stop - block_start)
            _variant_block(key, f, df, state, aux, words, noise, scratch, aux_words, aux_noise, m, group, theta,
                           fparams, kinds, mirror, coupled, coef, has_coef, flags, values, work)  # fmt: skip
            reduce_block(values, rows, pair_x, pair_y, m, block, means, acc)


def _variant_curve(
    key, f, df, seed, first_chunk, stream_base, n_units, group, theta, fparams, kinds, mirror, coupled, coef,
    has_coef, flags, rows, offsets, sizes, repeats, first_piece, sums, owners, lo, hi,
):  # fmt: skip
    """Per-repeat piece sums of the value rows, over units (see ``fastgrad._kernels._curve_chunks``)."""
    n_params = _n_params(key)
    work = np.zeros((8, n_params))
    for b in range(lo, hi):
        piece = first_piece[b]
        start, stop, per_block, draws, state, aux = _chunk_setup(seed, stream_base, first_chunk + b, n_units, group)
        words = np.empty(draws, np.uint64)
        noise = np.empty(draws)
        aux_noise = np.empty(draws)
        scratch = np.empty(draws, np.int64)
        aux_words = np.empty(3 * draws, np.uint64)
        values = np.empty((kinds.size * n_params, per_block))
        owner, end = _repeat_at(offsets, sizes, repeats, start)
        owners[piece] = owner
        sums[piece, :] = 0.0
        for block_start in range(start, stop, per_block):
            m = min(per_block, stop - block_start)
            _variant_block(key, f, df, state, aux, words, noise, scratch, aux_words, aux_noise, m, group, theta,
                           fparams, kinds, mirror, coupled, coef, has_coef, flags, values, work)  # fmt: skip
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
    flags = np.zeros(6, np.int64)
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
        flags[F_MIRROR] |= spec.antithetic
    if flags[F_MIRROR] and not flags[F_DF] and not flags[F_F]:
        flags[F_MIRROR] = 0
    return kinds, mirror, coupled, coef, has_coef, flags


def _kernel_and_key(distribution, function, cached, uncached):
    builtin = function.builtin is not None
    key = KernelKey(distribution.family.name, function.name if builtin else USER)
    if builtin:
        return key, cached, None, None
    return key, uncached, function.f, function.df


def variant_run(distribution, function, layout, specs, coefficients, n_units, seed, stream_base=0):
    """Run the variant kernel over ``n_units`` units; return (record over units, seconds)."""
    key, kernel, f, df = _kernel_and_key(distribution, function, _cached_records, _uncached_records)
    arrays = kernel_arguments(specs, len(layout.parameters), coefficients)
    args = (
        key, f, df, np.uint64(seed), np.int64(0), np.uint64(stream_base), np.int64(n_units), np.int64(layout.group),
        distribution.theta, function.param_vector, *arrays, layout.rows, layout.pair_x, layout.pair_y,
    )  # fmt: skip
    warm_up_records(kernel, args, layout)
    n_chunks = math.ceil(n_units / (CHUNK_SIZE // layout.group))
    return run_records(kernel, args, MomentTree(layout), n_chunks, BATCH_CHUNKS)


def variant_curve_run(distribution, function, layout, specs, coefficients, unit_sizes, repeats, seed):
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
        distribution.theta, function.param_vector, *arrays, layout.rows, offsets, sizes, np.int64(repeats),
    )  # fmt: skip
    n_rows = layout.n_rows
    kernel(*args, np.empty(0, np.int64), np.empty((0, n_rows)), np.empty(0, np.int64), 0, 0)
    curve_pieces(offsets, sizes, repeats, n_units, 0, 0, np.empty(0, np.int64), per_chunk)
    curve_fold(np.empty((0, n_rows)), np.empty(0, np.int64), 0, np.empty((n_rows, 0)))
    totals = np.zeros((n_rows, sizes.size * repeats))
    n_chunks = math.ceil(n_units / per_chunk)
    per_batch = max(1, min(BATCH_CHUNKS, MAX_BATCH_PIECES // (per_chunk // int(sizes.min()) + 2)))
    started = time.perf_counter()
    for first in range(0, n_chunks, per_batch):
        count = min(per_batch, n_chunks - first)
        first_piece = np.empty(count, np.int64)
        pieces = curve_pieces(offsets, sizes, repeats, n_units, first, count, first_piece, per_chunk)
        sums = np.empty((pieces, n_rows))
        owners = np.empty(pieces, np.int64)
        for_ranges(kernel, (*args[:4], np.int64(first), *args[5:], first_piece, sums, owners), count)
        curve_fold(sums, owners, pieces, totals)
    return totals, time.perf_counter() - started
