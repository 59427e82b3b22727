"""The fused chunk kernel: stream -> noise -> draw -> per-draw gradients -> chunk moments.

One kernel body serves every distribution family, function and estimator
set. What varies is resolved at compile time through a *kernel key*, a small
Numba type that names the family and the built-in function (or "user"):
overloads read the key while typing and return the matching scalar cores,
so the compiled loop contains exactly one family's and one function's code,
inlined.

* Built-in functions are passed by name in the key, so the kernel's
  signature holds only stable types and Numba's on-disk cache finds it again
  in the next process (the key also carries the package's source digest, so
  editing any module can never load a stale kernel).
* User functions are passed as Numba dispatchers; such signatures cannot be
  cached on disk across processes, so they go to an uncached twin of the
  same kernel. Numba still keeps one compiled kernel per user function for
  the life of the process.

Estimator and parameter selection (which value rows are kept) are run-time
arguments: they change which rows are reduced, not the compiled code, so the
number of compiled kernels is one per (family, function).

What is specialised is kept small. Noise sampling (per family) and the
block reduction are compiled once, cached, and called once per block of 512
draws; only the per-draw loop is compiled per function. Measured here
against a fully inlined kernel: bit-identical records, the same 2-thread
throughput, and half the compile time of each new kernel, which is what a
user's own function costs on its first call in a process (about 2.6 s).

Kernels are serial functions over a range of chunks; threads run them on
disjoint ranges (:mod:`fastgrad._parallel`).
"""

import math
import time

import numba
import numpy as np
from numba import types
from numba.extending import NativeValue, models, overload, register_jitable, register_model, typeof_impl, unbox

from fastgrad._jit import SERIAL, SOURCE_DIGEST, UNCACHED, core, serial
from fastgrad._parallel import for_ranges
from fastgrad._reduction import MomentTree, block_sum, reduce_block
from fastgrad._simd import load4, store4
from fastgrad.distributions import FAMILIES, NORMAL
from fastgrad.functions import BUILTINS
from fastgrad.rng import CHUNK_SIZE, stream_state

_normal_noise = NORMAL.sample_noise

#: Draws per block: noise, values and block moments live in arrays of this length.
#: 512 keeps a block's arrays in L1 and measured 4 % faster than 256 here (1024: no better).
BLOCK = 512

#: Chunks per kernel call. One call covers 2**26 draws; between calls the driver
#: merges the chunk records, so memory stays flat whatever ``n`` is.
BATCH_CHUNKS = 1024

USER = "<user>"

#: Most repeat pieces one variance-curve batch may hold (8 bytes per piece and
#: row): with tiny sample sizes a batch takes fewer chunks instead.
MAX_BATCH_PIECES = 2**20


class KernelKey:
    """Compile-time identity of a kernel: family, function, package digest."""

    def __init__(self, family, function):
        self.family = family
        self.function = function


class KernelKeyType(types.Type):
    def __init__(self, family, function, digest):
        self.family = family
        self.function = function
        self.digest = digest
        super().__init__(name=f"fastgrad.KernelKey({family}, {function}, {digest})")


@typeof_impl.register(KernelKey)
def _typeof_key(value, context):
    return KernelKeyType(value.family, value.function, SOURCE_DIGEST)


register_model(KernelKeyType)(models.OpaqueModel)


@unbox(KernelKeyType)
def _unbox_key(typ, obj, context):
    return NativeValue(context.context.get_dummy_value())


# --- compile-time dispatch on the key --------------------------------------
# These names exist only for Numba: inside a kernel, each is replaced while
# typing by the core its key names (the overloads below). Called from plain
# Python, there is no key to dispatch on, so they refuse with a clear error.


def _kernel_only(name):
    raise TypeError(f"fastgrad._kernels.{name} is resolved when a kernel is compiled; call it from @njit code only")


def _n_params(key):
    _kernel_only("_n_params")


def _sample_noise(key, state, words, noise, scratch, m):
    _kernel_only("_sample_noise")


def _transform(key, eps, theta):
    _kernel_only("_transform")


def _score_factor(key, j, eps, x, theta):
    _kernel_only("_score_factor")


def _path_factor(key, j, eps, x, theta):
    _kernel_only("_path_factor")


def _value(key, f, x, fparams):
    _kernel_only("_value")


def _derivative(key, df, x, fparams):
    _kernel_only("_derivative")


@overload(_n_params, inline="always")
def _ol_n_params(key):
    count = len(FAMILIES[key.family].parameters)
    return lambda key: count


@overload(_sample_noise, inline="always")
def _ol_sample_noise(key, state, words, noise, scratch, m):
    impl = FAMILIES[key.family].sample_noise
    return lambda key, state, words, noise, scratch, m: impl(state, words, noise, scratch, m)


@overload(_transform, inline="always")
def _ol_transform(key, eps, theta):
    impl = FAMILIES[key.family].transform
    return lambda key, eps, theta: impl(eps, theta)


@overload(_score_factor, inline="always")
def _ol_score_factor(key, j, eps, x, theta):
    impl = FAMILIES[key.family].score_factor
    return lambda key, j, eps, x, theta: impl(j, eps, x, theta)


@overload(_path_factor, inline="always")
def _ol_path_factor(key, j, eps, x, theta):
    impl = FAMILIES[key.family].path_factor
    return lambda key, j, eps, x, theta: impl(j, eps, x, theta)


@overload(_value, inline="always")
def _ol_value(key, f, x, fparams):
    if key.function == USER:
        return lambda key, f, x, fparams: np.float64(f(x))
    impl = BUILTINS[key.function].value
    return lambda key, f, x, fparams: impl(x, fparams)


@overload(_derivative, inline="always")
def _ol_derivative(key, df, x, fparams):
    if key.function == USER:
        if isinstance(df, types.NoneType):
            return lambda key, df, x, fparams: np.nan  # never called: no pathwise rows
        return lambda key, df, x, fparams: np.float64(df(x))
    impl = BUILTINS[key.function].derivative
    return lambda key, df, x, fparams: impl(x, fparams)


@core
def _chunk_start(seed, chunk, n_draws):
    """Draw range, stream and block scratch of a chunk: ``(start, stop, state, words, noise, scratch)``."""
    start = chunk * CHUNK_SIZE
    stop = min(n_draws, start + CHUNK_SIZE)
    words = np.empty(BLOCK, np.uint64)
    noise = np.empty(BLOCK)
    scratch = np.empty(BLOCK, np.int64)
    return start, stop, stream_state(seed, chunk), words, noise, scratch


def _block_values(key, f, df, state, words, noise, scratch, m, theta, fparams, need_f, need_df, keep, values):
    """Draw the next ``m`` noise values of a stream and fill columns ``[0, m)`` of the value rows.

    Row ``j`` gets the score values for parameter ``j``, row ``P + j`` the
    pathwise ones. Compiled into each kernel that calls it (and cached with
    it), so LLVM sees one loop per (family, function). Two versions, chosen
    when the kernel is compiled:

    * family and function written with ``+ - * /`` only (``simd`` set on
      both, e.g. the Normal with ``square``): four draws at a time on
      :mod:`fastgrad._simd` vectors, the same operations lane by lane, so the
      same bits as one draw at a time; only rows with ``keep[row]`` are
      filled. LLVM does not vectorise the scalar loop by itself (it cannot
      rule out that the value rows overlap the noise).
    * anything else (a user's function, ``cos``, Bernoulli): one draw at a
      time, every score row if ``need_f``, every pathwise row if ``need_df``.
    """
    _kernel_only("_block_values")


def _simd_cores(key):
    return key.function != USER and FAMILIES[key.family].simd and BUILTINS[key.function].simd


@register_jitable
def _values_scalar(key, f, df, theta, fparams, need_f, need_df, noise, values, lo, hi):
    n_params = _n_params(key)
    for i in range(lo, hi):
        eps = noise[i]
        x = _transform(key, eps, theta)
        if need_f:
            fx = _value(key, f, x, fparams)
            for j in range(n_params):
                values[j, i] = fx * _score_factor(key, j, eps, x, theta)
        if need_df:
            dfx = _derivative(key, df, x, fparams)
            for j in range(n_params):
                values[n_params + j, i] = dfx * _path_factor(key, j, eps, x, theta)


@register_jitable
def _values_simd(key, f, df, theta, fparams, need_f, need_df, keep, noise, values, m):
    n_params = _n_params(key)
    m4 = m - m % 4
    for i in range(0, m4, 4):
        eps = load4(noise, i)
        x = _transform(key, eps, theta)
        if need_f:
            fx = _value(key, f, x, fparams)
            for j in range(n_params):
                if keep[j]:
                    store4(values, j, i, fx * _score_factor(key, j, eps, x, theta))
        if need_df:
            dfx = _derivative(key, df, x, fparams)
            for j in range(n_params):
                if keep[n_params + j]:
                    store4(values, n_params + j, i, dfx * _path_factor(key, j, eps, x, theta))
    _values_scalar(key, f, df, theta, fparams, need_f, need_df, noise, values, m4, m)


@overload(_block_values, inline="always")
def _ol_block_values(key, f, df, state, words, noise, scratch, m, theta, fparams, need_f, need_df, keep, values):
    if _simd_cores(key):

        def vector_impl(key, f, df, state, words, noise, scratch, m, theta, fparams, need_f, need_df, keep, values):
            _sample_noise(key, state, words, noise, scratch, m)
            _values_simd(key, f, df, theta, fparams, need_f, need_df, keep, noise, values, m)

        return vector_impl

    def scalar_impl(key, f, df, state, words, noise, scratch, m, theta, fparams, need_f, need_df, keep, values):
        _sample_noise(key, state, words, noise, scratch, m)
        _values_scalar(key, f, df, theta, fparams, need_f, need_df, noise, values, 0, m)

    return scalar_impl


@register_jitable
def _kept_rows(n_value_rows, rows):
    """``keep[row]``: whether value row ``row`` is one of ``rows`` (reduced or summed)."""
    keep = np.zeros(n_value_rows, np.bool_)
    for r in range(rows.size):
        keep[rows[r]] = True
    return keep


def _chunk_records(
    key, f, df, seed, first_chunk, n_draws, theta, fparams, rows, pair_x, pair_y, need_f, need_df, records, lo, hi
):
    """Fill ``records[b]`` with the moment record of chunk ``first_chunk + b``, for ``b`` in ``[lo, hi)``.

    Chunk ``c`` covers draws ``[c * CHUNK_SIZE, min(n_draws, (c+1) * CHUNK_SIZE))``
    and reads stream ``(seed, c)``; nothing depends on which thread runs it.
    """
    n_rows = rows.size
    values = np.empty((2 * _n_params(key), BLOCK))
    keep = _kept_rows(2 * _n_params(key), rows)
    block = np.empty(records.shape[1])
    means = np.empty(n_rows)
    acc = np.empty(records.shape[1])  # this thread's own: records' rows share cache lines with other threads'
    for b in range(lo, hi):
        start, stop, state, words, noise, scratch = _chunk_start(seed, first_chunk + b, n_draws)
        acc[:] = 0.0
        for block_start in range(start, stop, BLOCK):
            m = min(BLOCK, stop - block_start)
            _block_values(key, f, df, state, words, noise, scratch, m, theta, fparams, need_f, need_df, keep, values)
            reduce_block(values, rows, pair_x, pair_y, m, block, means, acc)
        records[b] = acc


# One compiled function per (family, function): built-ins cached on disk,
# user functions in an uncached twin (see the module docstring). Threads run
# them on disjoint chunk ranges (fastgrad._parallel).
_cached_kernel = numba.njit(**SERIAL)(_chunk_records)
_uncached_kernel = numba.njit(**UNCACHED)(_chunk_records)


def run(distribution, function, layout, n, seed, job=None):
    """Run the fused kernel over ``n`` draws; return (tree, run seconds, compile seconds).

    ``job`` (a :class:`fastgrad._jobs.Job`) says which chunks to run and how
    (progress, checkpoints, stopping early); by default all of them, quietly.
    Thread count is whatever Numba is set to; the caller manages it.
    """
    builtin = function.builtin is not None
    key = KernelKey(distribution.family.name, function.name if builtin else USER)
    kernel = _cached_kernel if builtin else _uncached_kernel
    f = None if builtin else function.f
    df = None if builtin else function.df
    tree = MomentTree(layout)
    args = (
        key,
        f,
        df,
        np.uint64(seed),
        0,
        np.int64(n),
        distribution.theta,
        function.param_vector,
        layout.rows,
        layout.pair_x,
        layout.pair_y,
        layout.need_f,
        layout.need_df,
    )
    started = time.perf_counter()
    warm_up_records(kernel, args, layout)
    compile_seconds = time.perf_counter() - started
    if job is None:
        record, seconds = run_records(kernel, args, tree, math.ceil(n / CHUNK_SIZE), BATCH_CHUNKS)
        return record, seconds, compile_seconds
    tree, seconds = job.run(kernel, args, layout)
    return tree, seconds, compile_seconds


def warm_up_records(kernel, args, layout):
    """Compile (or load) a record kernel and the tree functions, so that a clock started next sees only the run."""
    width = MomentTree(layout).width
    kernel(*args, np.empty((0, width)), 0, 0)
    warm = MomentTree(layout)
    warm.push(0, np.zeros((1, width)))
    warm.fold()


def run_records(kernel, args, tree, n_chunks, per_batch, on_batch=None):
    """Run a record kernel over chunks ``[0, n_chunks)`` in batches, merging into ``tree``; return (record, seconds).

    ``args`` are the kernel's arguments before ``records, lo, hi``, with the
    first chunk at position 4 (replaced per batch). ``on_batch(records)``, if
    given, sees each batch's chunk records before they are merged.
    """
    started = time.perf_counter()
    for first in range(0, n_chunks, per_batch):
        records = np.empty((min(per_batch, n_chunks - first), tree.width))
        for_ranges(kernel, (*args[:4], np.int64(first), *args[5:], records), len(records))
        if on_batch is not None:
            on_batch(records)
        tree.push(first, records)
    return tree.fold(), time.perf_counter() - started


# --- variance curves: many short estimates over the same streams ----------------
#
# A curve runs ``repeats`` independent estimates of ``n_k`` draws for each
# sample size ``n_k``. They are laid end to end on the draws of one run:
# size ``k`` covers draws ``[offsets[k], offsets[k+1])`` with
# ``offsets[k+1] = offsets[k] + repeats * n_k``, and its repeat ``r`` the
# ``n_k`` draws from ``offsets[k] + r * n_k``. Chunks, streams and blocks are
# those of ``compare``, so the curve is reproducible on any number of
# threads. A repeat may straddle chunks: each chunk sums the part of every
# repeat it holds (a *piece*) into its own slots, and the pieces are added
# in order afterwards.


@register_jitable
def _repeat_at(offsets, sizes, repeats, position):
    """(global repeat index, first draw after that repeat) of the repeat holding draw ``position``."""
    k = np.searchsorted(offsets, position, side="right") - 1
    r = (position - offsets[k]) // sizes[k]
    return k * repeats + r, offsets[k] + (r + 1) * sizes[k]


@register_jitable
def _sum_pieces(values, rows, m, block_start, stop, piece, end, sums, owners, offsets, sizes, repeats):
    """Add columns ``[0, m)`` of the kept value rows (positions ``block_start...``) into their repeat pieces.

    ``piece`` is the current piece's slot and ``end`` the position after its
    repeat; returns both, advanced past the repeats this block completes.
    """
    n_rows = rows.size
    lo_ = 0
    while lo_ < m:
        hi_ = min(m, end - block_start)
        if hi_ - lo_ < 16:  # block_sum of under 16 values is this sequential sum, with less overhead
            for r in range(n_rows):
                row = rows[r]
                total = 0.0
                for i in range(lo_, hi_):
                    total += values[row, i]
                sums[piece, r] += total
        else:
            for r in range(n_rows):
                sums[piece, r] += block_sum(values[rows[r], lo_:], hi_ - lo_)
        lo_ = hi_
        if block_start + hi_ == end and end < stop:  # the repeat is complete; the next one starts here
            piece += 1
            owner, end = _repeat_at(offsets, sizes, repeats, end)
            owners[piece] = owner
            sums[piece, :] = 0.0
    return piece, end


@serial
def curve_pieces(offsets, sizes, repeats, n_draws, first_chunk, n_chunks, first_piece, chunk_size):
    """Fill ``first_piece[b]`` with the slot of chunk ``first_chunk + b``'s first piece; return the total.

    Chunks hold ``chunk_size`` positions (draws, or units of a variant run).
    """
    total = 0
    for b in range(n_chunks):
        start = (first_chunk + b) * chunk_size
        stop = min(n_draws, start + chunk_size)
        first_piece[b] = total
        position = start
        while True:
            total += 1
            _, end = _repeat_at(offsets, sizes, repeats, position)
            if end >= stop:
                break
            position = end
    return total


@serial
def curve_fold(sums, owners, count, totals):
    """Add piece sums into their repeats' totals, in piece order: ``totals[:, owners[p]] += sums[p]``."""
    for p in range(count):
        for r in range(sums.shape[1]):
            totals[r, owners[p]] += sums[p, r]


def _curve_chunks(
    key, f, df, seed, first_chunk, n_draws, theta, fparams, rows, need_f, need_df, offsets, sizes, repeats,
    first_piece, sums, owners, lo, hi,
):  # fmt: skip
    """Sum the value rows of each repeat piece of chunks ``first_chunk + b``, ``b`` in ``[lo, hi)``.

    Chunk ``first_chunk + b`` writes its pieces from slot ``first_piece[b]``
    of ``sums`` on. A piece sums its draws block segment by block segment,
    each segment with :func:`~fastgrad._reduction.block_sum` (a fixed order),
    adding the segment sums left to right.
    """
    values = np.empty((2 * _n_params(key), BLOCK))
    keep = _kept_rows(2 * _n_params(key), rows)
    for b in range(lo, hi):
        piece = first_piece[b]
        start, stop, state, words, noise, scratch = _chunk_start(seed, first_chunk + b, n_draws)
        owner, end = _repeat_at(offsets, sizes, repeats, start)
        owners[piece] = owner
        sums[piece, :] = 0.0
        for block_start in range(start, stop, BLOCK):
            m = min(BLOCK, stop - block_start)
            _block_values(key, f, df, state, words, noise, scratch, m, theta, fparams, need_f, need_df, keep, values)
            piece, end = _sum_pieces(values, rows, m, block_start, stop, piece, end, sums, owners, offsets, sizes,
                                     repeats)  # fmt: skip


_cached_curve_kernel = numba.njit(**SERIAL)(_curve_chunks)
_uncached_curve_kernel = numba.njit(**UNCACHED)(_curve_chunks)


def curve_run(distribution, function, layout, sizes, repeats, seed, job=None):
    """Run the estimates of a variance curve; return (sums, run seconds, chunks done).

    ``sums[r, k * repeats + i]`` is the sum of value row ``layout.rows[r]``
    over the draws of repeat ``i`` of size ``sizes[k]``. Memory: the sums
    (8 bytes per row and repeat) and one batch of pieces; never the draws.
    """
    builtin = function.builtin is not None
    key = KernelKey(distribution.family.name, function.name if builtin else USER)
    kernel = _cached_curve_kernel if builtin else _uncached_curve_kernel
    sizes = np.asarray(sizes, dtype=np.int64)
    offsets = np.zeros(sizes.size + 1, np.int64)
    offsets[1:] = np.cumsum(sizes * repeats)
    n = int(offsets[-1])
    args = (
        key,
        None if builtin else function.f,
        None if builtin else function.df,
        np.uint64(seed),
        np.int64(0),
        np.int64(n),
        distribution.theta,
        function.param_vector,
        layout.rows,
        layout.need_f,
        layout.need_df,
        offsets,
        sizes,
        np.int64(repeats),
    )
    return curve_batches(kernel, args, offsets, sizes, repeats, CHUNK_SIZE, layout.n_rows, job)


def curve_batches(kernel, args, offsets, sizes, repeats, per_chunk, n_rows, job=None):
    """Run a curve kernel over every chunk in batches; return (per-repeat sums, seconds, chunks done).

    With a ``job``, return the job's :class:`~fastgrad._jobs.Part` instead (sums in ``extra``).

    Positions (draws, or units of a variant run) go ``per_chunk`` to a chunk;
    ``args`` are the kernel's arguments before ``first_piece, sums, owners, lo, hi``,
    with the first chunk at position 4. A ``job`` (:class:`fastgrad._jobs.Job`)
    adds progress, stopping early and checkpoints.
    """
    n = int(offsets[-1])
    # Compile (or load) everything before the clock starts.
    kernel(*args, np.empty(0, np.int64), np.empty((0, n_rows)), np.empty(0, np.int64), 0, 0)
    curve_pieces(offsets, sizes, repeats, n, 0, 0, np.empty(0, np.int64), per_chunk)
    curve_fold(np.empty((0, n_rows)), np.empty(0, np.int64), 0, np.empty((n_rows, 0)))
    totals = np.zeros((n_rows, sizes.size * repeats))
    n_chunks = math.ceil(n / per_chunk)
    per_batch = max(1, min(BATCH_CHUNKS, MAX_BATCH_PIECES // (per_chunk // int(sizes.min()) + 2)))

    lead_owner = -1  # the repeat a shard or rank starts inside, if any: its pieces are kept apart
    if job is not None and 0 < job.first * per_chunk < n:
        position = job.first * per_chunk
        owner, _ = _repeat_at(offsets, sizes, repeats, position)
        k = int(np.searchsorted(offsets, position, side="right")) - 1
        if offsets[k] + (position - offsets[k]) // sizes[k] * sizes[k] < position:
            lead_owner = int(owner)

    def step(first, stop, totals, lead=None):
        count = stop - first
        first_piece = np.empty(count, np.int64)
        pieces = curve_pieces(offsets, sizes, repeats, n, first, count, first_piece, per_chunk)
        sums = np.empty((pieces, n_rows))
        owners = np.empty(pieces, np.int64)
        for_ranges(kernel, (*args[:4], np.int64(first), *args[5:], first_piece, sums, owners), count)
        if lead_owner >= 0:
            kept = owners != lead_owner
            if not kept.all():
                lead.extend(sums[~kept])  # in piece order
                sums, owners, pieces = np.ascontiguousarray(sums[kept]), owners[kept], int(kept.sum())
        curve_fold(sums, owners, pieces, totals)

    if job is not None:
        return job.run_curve(step, totals.shape, per_batch, lead_owner)
    started = time.perf_counter()
    for first in range(0, n_chunks, per_batch):
        step(first, min(n_chunks, first + per_batch), totals)
    return totals, time.perf_counter() - started, n_chunks


# --- the normals-only bound --------------------------------------------------------


@serial
def _normal_sums(seed, first_chunk, n_draws, out, lo, hi):
    """``out[b]``: sum of the standard normals of chunk ``first_chunk + b``, for ``b`` in ``[lo, hi)``.

    The fused kernel without the estimators: same chunks, streams and blocks.
    """
    for b in range(lo, hi):
        start, stop, state, words, noise, scratch = _chunk_start(seed, first_chunk + b, n_draws)
        total = 0.0
        for block_start in range(start, stop, BLOCK):
            m = min(BLOCK, stop - block_start)
            _normal_noise(state, words, noise, scratch, m)
            total += block_sum(noise, m)
        out[b] = total


def normal_sum(n, seed):
    """Sum of the ``n`` standard normals a run with ``seed`` draws; return (sum, seconds).

    Same chunks, streams and blocks as the fused kernel, with the estimators
    and moments left out: the throughput bound the benchmarks compare
    ``compare`` with. Chunk sums are added in chunk order.
    """
    _normal_sums(np.uint64(seed), np.int64(0), np.int64(n), np.empty(0), 0, 0)
    n_chunks = math.ceil(n / CHUNK_SIZE)
    total = 0.0
    started = time.perf_counter()
    for first in range(0, n_chunks, BATCH_CHUNKS):
        sums = np.empty(min(BATCH_CHUNKS, n_chunks - first))
        for_ranges(_normal_sums, (np.uint64(seed), np.int64(first), np.int64(n), sums), len(sums))
        for value in sums:
            total += value
    return total, time.perf_counter() - started
