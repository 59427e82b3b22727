"""The one chunk kernel: stream -> noise -> draws -> per-draw values -> a sink.

Every run fastgrad makes (``compare``, ``estimate``, ``variance_curve``, any
family, any dimension, any estimator list, the pilot, the normals-only bound)
runs one chunk loop, written once per sink below (:func:`_moment_chunks`,
:func:`_curve_chunks`, :func:`_sum_chunks`). What varies is chosen at
compile time through a *kernel key*, a small Numba type naming

* the **family** and the **function** (a built-in's name, or "user"):
  overloads read them while typing and splice in that family's and that
  function's scalar cores, so the compiled loop holds exactly one family's
  and one function's code, inlined;
* the **filler**, which turns a block of noise into value rows:

  ``plain``    score and pathwise rows only, one component (4 or 8 draws at
               a time on :mod:`fastgrad._simd` vectors when the family's and
               the function's cores are lane-generic: ``+ - * /`` and
               :mod:`fastgrad.math`; one at a time else);
  ``general``  any list of estimator specifications (baselines, control
               variates, leave-one-out, antithetic, measure-valued), one
               component: per-draw quantities once per block, then each
               specification's rows;
  ``vector``   score and pathwise rows of a family with ``D > 1``
               independent components, the family's cores applied per
               component;
  ``noise``    the noise itself (the normals-only throughput bound);

* the **sink**, which consumes a block's rows: ``moments`` (block moments
  merged into one record per chunk), ``curve`` (per-repeat sums of a
  variance curve) or ``sum`` (a plain sum per chunk): each its own loop.

Built-in functions are passed by name in the key, so the kernel's signature
holds only stable types and Numba's on-disk cache finds it again in the next
process (the key also carries the package's source digest, so editing any
module can never load a stale kernel). User functions are Numba
dispatchers; such signatures cannot be cached across processes, so they go
to an uncached twin of the same loop.

Which specifications, parameters and rows a run keeps are run-time
arguments (:class:`Run`), so one compiled kernel per (family, function,
filler, sink) serves them all. Noise sampling (per family) and the block
reduction are compiled once, cached, and called once per block; only the
per-draw loop is compiled per function, which keeps a new kernel's compile
time near 2.6 s.

Kernels are serial functions over a range of chunks; threads run them on
disjoint ranges (:mod:`fastgrad._parallel`).

**Units.** Chunks and blocks count *units*: ``group`` consecutive draws (a
leave-one-out group; 1 otherwise), each of ``dim`` components. Chunk ``c``
holds :func:`units_per_chunk` units and reads stream ``(seed, base + c)``;
a block holds :func:`units_per_block` units. At ``group = dim = 1`` both
are those of every earlier fastgrad (65 536 and 512 draws), so plain
``score``/``pathwise`` rows are bit-identical whichever filler made them.

**Streams.** The measure-valued sides need randomness beyond ``eps``: three
uniforms and one normal per draw, from the auxiliary streams
``(seed, base + AUX_STREAMS + c)`` and ``(seed, base + AUX_NORMAL_STREAMS + c)``.
A pilot reads ``base = PILOT_STREAMS``. Run chunks use stream numbers below
2**37, so the three families of streams never meet (``docs/random-streams.md``).
"""

import math
import time
from typing import NamedTuple

import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import (
    NativeValue,
    intrinsic,
    models,
    overload,
    register_jitable,
    register_model,
    typeof_impl,
    unbox,
)

from fastgrad import _simd
from fastgrad import math as fm
from fastgrad._jit import SOURCE_DIGEST, UNCACHED, block_filler, core, inline_core, report_uncached, serial
from fastgrad._parallel import for_ranges
from fastgrad._reduction import MomentTree, block_sum, reduce_block
from fastgrad._simd import column4, column8, fabs, like, load4, load8, sqrt, store4, store8, where
from fastgrad.distributions import FAMILIES
from fastgrad.functions import BUILTINS
from fastgrad.rng import CHUNK_SIZE, STATE_SIZE, start_stream, stream_state, take_words, unit_open_closed

#: Draws per block at one component: noise, values and block moments live in arrays of this length.
#: 512 keeps a block's arrays in L1 and measured 4 % faster than 256 here (1024: no better).
BLOCK = 512

#: Values held per block of a ``D``-component family (4 D rows x B draws), at most: 1 MiB. Larger
#: blocks merge less often; measured at D = 1000: 79 M components/s with 2**17, 58 M with 2**15.
BLOCK_VALUES = 2**17

#: Chunks per kernel call. One call covers 2**26 draws; between calls the driver
#: merges the chunk records, so memory stays flat whatever ``n`` is.
BATCH_CHUNKS = 1024

#: Largest batch of chunk records, in float64s (32 MiB).
MAX_BATCH_VALUES = 2**22

#: Most repeat pieces one variance-curve batch may hold (8 bytes per piece and
#: row): with tiny sample sizes a batch takes fewer chunks instead.
MAX_BATCH_PIECES = 2**20

USER = "<user>"
#: A user's function that runs on fastgrad's vectors too (:func:`runs_on_lanes`): the same kernel
#: shape as USER, with the plain and general fillers taking a vector of draws at a time.
USER_LANES = "<user, lanes>"

#: Stream numbers of the auxiliary (measure-valued) streams start here, above the run's chunks.
AUX_STREAMS = 1 << 62
#: Stream numbers of the auxiliary normals (decoupled measure-valued scale side) start here.
AUX_NORMAL_STREAMS = AUX_STREAMS + (1 << 61)
#: The per-draw buffers' lengths are multiples of this: the widest vector (see :func:`_weak_rows`).
PAD = 8
#: Vectors of replicates the seed case's loop keeps in registers (see :func:`_registers_source`).
REGISTER_VECTORS = 4
#: Replicates an optimisation advances in lockstep, one step of each in turn (see :func:`_optimize_chunks`):
#: :data:`REGISTER_VECTORS` vectors of the kernels' width.
OPTIMIZE_LANES = REGISTER_VECTORS * _simd.LANES
#: Stream numbers of pilot runs start here.
PILOT_STREAMS = 1 << 63

# Kinds of value rows.
SCORE, PATHWISE, LOO, MEASURE_VALUED, CONTROL = 0, 1, 2, 3, 4

# Flags: which per-draw quantities a run needs.
F_F, F_SCORE, F_DF, F_MIRROR, F_WEAK, F_LOO, F_WEAK_COUPLED, F_WEAK_DECOUPLED = range(8)

FILLERS = ("plain", "plain-weak", "general", "vector", "vector-general", "noise")
SINKS = ("moments", "curve", "sum", "optimize", "optimize-plain")


def units_per_chunk(dim, group):
    """Units (of ``group`` draws of ``dim`` components) per chunk: ``max(1, (CHUNK_SIZE // dim) // group)``."""
    return max(1, (CHUNK_SIZE // dim) // group)


def units_per_block(dim, group):
    """Units per block: ``max(1, clamp(2**17 // (4 dim), 8, 512) // group)``."""
    return max(1, min(BLOCK, max(8, BLOCK_VALUES // (4 * dim))) // group)


# --- the kernel key ----------------------------------------------------------------


class KernelKey:
    """Compile-time identity of a kernel: family, function, filler, sink (and the package digest, the lanes)."""

    def __init__(self, family, function, filler="plain", sink="moments"):
        if filler not in FILLERS or sink not in SINKS:
            raise ValueError(f"unknown filler {filler!r} or sink {sink!r}")
        self.family = family
        self.function = function
        self.filler = filler
        self.sink = sink


class KernelKeyType(types.Type):
    """A kernel key's type; ``lanes``: the vector width of its value loops (:data:`fastgrad._simd.LANES`)."""

    def __init__(self, family, function, digest, filler="plain", sink="moments", lanes=4):
        self.family = family
        self.function = function
        self.digest = digest
        self.filler = filler
        self.sink = sink
        self.lanes = lanes
        super().__init__(name=f"fastgrad.KernelKey({family}, {function}, {filler}, {sink}, {digest}, x{lanes})")


@typeof_impl.register(KernelKey)
def _typeof_key(value, context):
    # (the width is read at each call: a process that changes _simd.LANES gets, and caches, other kernels)
    return KernelKeyType(value.family, value.function, SOURCE_DIGEST, value.filler, value.sink, _simd.LANES)


register_model(KernelKeyType)(models.OpaqueModel)


@unbox(KernelKeyType)
def _unbox_key(typ, obj, context):
    return NativeValue(context.context.get_dummy_value())


# --- kernel arguments: named, not positional ---------------------------------------


class Run(NamedTuple):
    """What every chunk of a run reads (the kernel's run-time arguments).

    ``theta`` is the family's kernel parameter vector, a tuple of floats
    (passed by value it stays in registers; array elements had to be
    reloaded in loops that store to other arrays, 20 % slower), or for
    ``D > 1`` components a tuple of arrays, one per kernel parameter.
    Row ``(s * P + j) * D + i`` of the value rows is specification ``s``,
    parameter ``j``, component ``i``; ``rows`` lists the kept ones.
    """

    seed: np.uint64
    first_chunk: np.int64
    stream_base: np.uint64
    n_units: np.int64
    per_chunk: np.int64
    per_block: np.int64
    group: np.int64
    dim: np.int64
    theta: tuple
    fparams: tuple
    weights: np.ndarray
    kinds: np.ndarray
    mirror: np.ndarray
    coupled: np.ndarray
    coef: np.ndarray
    has_coef: np.ndarray
    flags: np.ndarray
    active: np.ndarray
    rows: np.ndarray


class MomentSink(NamedTuple):
    """Pairs of kept rows whose co-moments a record holds (positions in ``rows``)."""

    pair_x: np.ndarray
    pair_y: np.ndarray


class CurveSink(NamedTuple):
    """Where each chunk's repeat pieces go (see the variance-curve section below)."""

    offsets: np.ndarray
    sizes: np.ndarray
    repeats: np.int64
    first_piece: np.ndarray
    owners: np.ndarray


class OptimizeSink(NamedTuple):
    """A segment of an optimisation (:func:`_optimize_chunks`): every replicate from ``first_step`` to ``last_step``.

    ``params`` (replicates x P, the family's parameters as ``theta_of`` takes
    them), ``state`` (replicates x 2 x Q: Adam's two moments of each optimised
    parameter's gradient) and ``reached`` (replicates x 2: the first step
    count within ``tolerance`` of ``optimum``, -1 none yet; the last one
    outside, 0 the start, -1 none) are read and written,
    row ``b`` for replicate ``run.first_chunk + b``.
    Optimised parameter ``q`` takes its gradient from value row ``rows[q]``,
    moves ``params[:, targets[q]]`` and is updated as ``updates[q]``: 0 on
    itself, 1 through its logarithm (a positive parameter: ``log_scale``,
    ``log_rate``), 2 through its logit (a probability: ``logits``), 3
    through its logarithm, then those so moved divided by their sum (a
    Categorical's probabilities through their logits: the softmax of the
    moved logits).
    ``schedule`` is ``(a, t0, power)``: the learning rate of step ``t`` is
    ``a / (1 + t / t0)**power`` (``power = 0``: constant). After step
    ``log_steps[i] - 1`` (the step count ``log_steps[i]``, increasing, in
    ``(first_step, last_step]``) each replicate's parameters are copied to
    ``snapshots[i, b]``: one call logs many steps, so a replicate's current
    block of draws is not redrawn at every logged step.
    """

    params: np.ndarray
    state: np.ndarray
    reached: np.ndarray
    rows: np.ndarray
    targets: np.ndarray
    updates: np.ndarray
    optimum: np.ndarray
    first_step: np.int64
    last_step: np.int64
    batch: np.int64
    adam: np.int64
    schedule: np.ndarray
    moments: np.ndarray
    tolerance: np.float64
    log_steps: np.ndarray
    snapshots: np.ndarray


# --- compile-time dispatch on the key --------------------------------------
# These names exist only for Numba: inside a kernel, each is replaced while
# typing by the core its key names (the overloads below). Called from plain
# Python, there is no key to dispatch on, so they refuse with a clear error.


def _kernel_only(name):
    raise TypeError(f"fastgrad._kernels.{name} is resolved when a kernel is compiled; call it from @njit code only")


def _n_params(key):
    _kernel_only("_n_params")


def _sample_noise(key, state, words, noise, scratch, m, theta):
    _kernel_only("_sample_noise")


def _transform(key, eps, theta):
    _kernel_only("_transform")


def _score_factor(key, j, eps, x, theta):
    _kernel_only("_score_factor")


def _path_factor(key, j, eps, x, theta):
    _kernel_only("_path_factor")


def _weak_points(key, j, eps, x, u1, u2, u3, eps2, theta):
    _kernel_only("_weak_points")


def _theta_of(key, params):
    _kernel_only("_theta_of")


def _weak_input(key, word):
    _kernel_only("_weak_input")


def _value(key, f, x, fparams):
    _kernel_only("_value")


def _derivative(key, df, x, fparams):
    _kernel_only("_derivative")


def _evaluate(key, f, df, x, fparams, need_f, need_df):
    _kernel_only("_evaluate")


def _component(theta, i):
    _kernel_only("_component")


@overload(_n_params, inline="always")
def _ol_n_params(key):
    count = len(FAMILIES[key.family].parameters)
    return lambda key: count


def _lanes(key):
    """Draws a vector of the key's value loops holds: 4, or 8 on AVX-512 (:data:`fastgrad._simd.LANES`)."""
    _kernel_only("_lanes")


def _load(key, array, i):
    """``array[i : i + lanes]`` as a vector of the key's width."""
    _kernel_only("_load")


def _store(key, array, row, i, value):
    """``array[row, i : i + lanes] = value`` (a vector of the key's width, or a number)."""
    _kernel_only("_store")


@overload(_lanes, inline="always")
def _ol_lanes(key):
    lanes = key.lanes
    return lambda key: lanes


@overload(_load, inline="always")
def _ol_load(key, array, i):
    load = load8 if key.lanes == 8 else load4
    return lambda key, array, i: load(array, i)


@overload(_store, inline="always")
def _ol_store(key, array, row, i, value):
    store = store8 if key.lanes == 8 else store4
    return lambda key, array, row, i, value: store(array, row, i, value)


@overload(_sample_noise, inline="always")
def _ol_sample_noise(key, state, words, noise, scratch, m, theta):
    family = FAMILIES[key.family]
    impl = family.sample_noise
    if family.noise_takes_theta:  # noise whose law depends on the parameters (the Gamma's shape)
        return lambda key, state, words, noise, scratch, m, theta: impl(state, words, noise, scratch, m, theta)
    return lambda key, state, words, noise, scratch, m, theta: impl(state, words, noise, scratch, m)


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


@overload(_theta_of, inline="always")
def _ol_theta_of(key, params):
    impl = FAMILIES[key.family].theta_of
    return lambda key, params: impl(params)


@overload(_weak_points, inline="always")
def _ol_weak_points(key, j, eps, x, u1, u2, u3, eps2, theta):
    impl = FAMILIES[key.family].weak_derivative
    if impl is None:
        return lambda key, j, eps, x, u1, u2, u3, eps2, theta: (np.nan, np.nan, np.nan, np.nan)
    return lambda key, j, eps, x, u1, u2, u3, eps2, theta: impl(j, eps, x, u1, u2, u3, eps2, theta)


@overload(_weak_input, inline="always")
def _ol_weak_input(key, word):
    """Return what the weak derivative gets of an auxiliary word: its uniform on (0, 1] or ``weak_uniform`` of it."""
    impl = FAMILIES[key.family].weak_uniform
    if impl is None:
        return lambda key, word: unit_open_closed(word)
    return lambda key, word: impl(unit_open_closed(word))


@overload(_value, inline="always")
def _ol_value(key, f, x, fparams):
    if key.function == USER:
        return lambda key, f, x, fparams: np.float64(f(x))
    if key.function == USER_LANES:  # (x a float or a vector; like() makes a float of an integer result)
        inlined = _inline_twin(f.dispatcher)
        return lambda key, f, x, fparams: like(inlined(x), x)
    impl = BUILTINS[key.function].value
    return lambda key, f, x, fparams: impl(x, fparams)


@overload(_derivative, inline="always")
def _ol_derivative(key, df, x, fparams):
    if key.function in (USER, USER_LANES):
        if isinstance(df, types.NoneType):
            return lambda key, df, x, fparams: like(np.nan, x)  # never called: no pathwise rows
        if key.function == USER_LANES:
            inlined = _inline_twin(df.dispatcher)
            return lambda key, df, x, fparams: like(inlined(x), x)
        return lambda key, df, x, fparams: np.float64(df(x))
    impl = BUILTINS[key.function].derivative
    return lambda key, df, x, fparams: impl(x, fparams)


@overload(_evaluate, inline="always")
def _ol_evaluate(key, f, df, x, fparams, need_f, need_df):
    """``(f(x), f'(x))``, each only where needed (``x`` in its place otherwise), with their usual bits.

    A built-in with a ``value_and_derivative`` core computes both from one
    pass where both are needed (``cos``: one argument reduction for ``cos``
    and ``sin``).
    """
    both = None if key.function in (USER, USER_LANES) else BUILTINS[key.function].value_and_derivative
    if key.function == USER_LANES and not isinstance(df, types.NoneType):
        # one block for both: LLVM computes what f and df share once (their IR-inlined twins)
        f_twin, df_twin = _inline_twin(f.dispatcher), _inline_twin(df.dispatcher)

        def user(key, f, df, x, fparams, need_f, need_df):
            if need_f and need_df:
                return like(f_twin(x), x), like(df_twin(x), x)
            fx = like(_value(key, f, x, fparams), x) if need_f else x
            return fx, like(_derivative(key, df, x, fparams), x) if need_df else x

        return user
    if both is not None:
        both = _inline_twin(both)

        def shared(key, f, df, x, fparams, need_f, need_df):
            if need_f and need_df:
                return both(x, fparams)
            fx = like(_value(key, f, x, fparams), x) if need_f else x
            return fx, like(_derivative(key, df, x, fparams), x) if need_df else x

        return shared

    def separate(key, f, df, x, fparams, need_f, need_df):
        # (like: a core may return a constant, linear's derivative 1.0, where x is a vector)
        fx = like(_value(key, f, x, fparams), x) if need_f else x
        return fx, like(_derivative(key, df, x, fparams), x) if need_df else x

    return separate


@overload(_component, inline="always")
def _ol_component(theta, i):
    """Component ``i``'s kernel parameters as a tuple of floats, from one array per parameter."""
    if isinstance(theta, types.BaseTuple) and len(theta) and all(isinstance(t, types.Array) for t in theta):
        source = f"def impl(theta, i):\n    return ({''.join(f'theta[{t}][i], ' for t in range(len(theta)))})\n"
        namespace = {}
        exec(source, namespace)
        return namespace["impl"]
    return lambda theta, i: theta


def _simd_cores(key):
    """Whether the plain filler can run a vector of draws at once: family and function cores are lane-generic."""
    if key.function in (USER, USER_LANES):
        return key.function == USER_LANES and FAMILIES[key.family].simd
    return FAMILIES[key.family].simd and BUILTINS[key.function].simd


_INLINE_TWINS = {}


def _inline_twin(dispatcher):
    """Compile a user's function again with its own options, inlined where it is called (Numba IR).

    Where a run needs both, its value and its derivative then sit in one
    block (:func:`_evaluate`), where LLVM computes their common part once
    (``exp(-x*x/2)`` in ``f`` and in ``df``).
    """
    twin = _INLINE_TWINS.get(dispatcher)
    if twin is None:
        options = {k: v for k, v in dispatcher.targetoptions.items() if k not in ("cache", "inline", "nopython")}
        twin = _INLINE_TWINS[dispatcher] = numba.njit(inline="always", **options)(dispatcher.py_func)
    return twin


def runs_on_lanes(function):
    """Whether a user's ``f`` (and ``df``, if any) also compile for the kernels' vectors, returning one.

    They do when they use only ``+ - * /`` and :mod:`fastgrad.math` (no
    branches on the draw, no ``**``, no libm): then every lane does the
    operations one draw would, and the kernels evaluate a vector of draws
    (4, or 8 on AVX-512: :data:`fastgrad._simd.LANES`) at once, with the
    same bits. Anything else fails to type on vectors and the
    function runs one draw at a time, as before. One difference remains: a
    division by zero gives inf (then NaN handling, ``nan_policy``) on
    vectors where Numba's default error model raises ``ZeroDivisionError``
    for one draw. The answer is kept on the function, for each width.
    """
    vector = _simd.vector_type(_simd.LANES)
    known = getattr(function, "_runs_on_lanes", {})
    if vector.lanes in known:
        return known[vector.lanes]
    import warnings

    capable = True
    for compiled in (function.f, function.df):
        if compiled is None:
            continue
        if compiled.targetoptions.get("fastmath"):  # (fast-math may contract lanes differently from one draw)
            capable = False
            break
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compiled.compile((vector,))
        except Exception:  # typing fails on vectors: one draw at a time
            capable = False
            break
        returned = [s.return_type for s in compiled.nopython_signatures if s.args == (vector,)]
        if returned != [vector]:
            capable = False
            break
    function._runs_on_lanes = {**known, vector.lanes: capable}
    return capable


# --- the one chunk body ---------------------------------------------------------------


def _moment_chunks(key, f, df, run, sink, out, lo, hi):
    """Fill the moment records of chunks ``run.first_chunk + b``, ``b`` in ``[lo, hi)``: ``out[b]``.

    Chunk ``c`` covers units ``[c * per_chunk, min(n_units, (c + 1) * per_chunk))``
    and reads stream ``(seed, stream_base + c)`` (and its auxiliary streams);
    nothing depends on which thread runs it. The filler is the one the key
    names; each sink (moments here, :func:`_curve_chunks`, :func:`_sum_chunks`)
    has a chunk loop of its own, which walks the chunk's blocks of
    ``run.per_block`` units, asking the filler for each block's values.

    Block code never sees ``run`` or ``sink``: ``_buffers`` and
    ``_sink_scratch`` gather, once per call, what a block reads. Numba
    increfs every array of a tuple each time the tuple is passed into
    inlined code, and ``run`` holds eleven: passed at every block, that was
    10 % of the seed case (302 against 272 ms per 10^8 draws on one thread,
    median of 4 alternating processes). For the same reason the sink's
    scratch is unpacked once per call and the reduction called with plain
    local arrays.

    The sinks' loops were one function called per chunk (``_sink_chunk``,
    dispatched on the key): a kernel made of a chain of separately compiled
    functions has each level's LLVM module, with every level below linked
    in, optimised again, and written out here there is one level fewer. A
    new general kernel (Normal, 4 specifications, a new built-in each time,
    the rest of the cache warm) compiled in 6.3-8.9 s, median 7.7, against
    8.4-13.0 s, median 9.4, before (6 functions, alternating trees); the
    draws/s and bits are the same (bench/ab.py, 5 rounds: classic 1.025,
    pair 0.996 new/old, within the machine's noise of 0.75-1.9).
    """
    buffers = _buffers(key, run)
    block, means, acc, rows, pair_x, pair_y = _sink_scratch(key, run, sink, out)
    per_block = run.per_block
    for b in range(lo, hi):
        chunk = run.first_chunk + b
        start = chunk * run.per_chunk
        stop = min(run.n_units, start + run.per_chunk)
        streams = _streams(key, run, chunk)
        acc[:] = 0.0
        for block_start in range(start, stop, per_block):
            m = min(per_block, stop - block_start)
            values = _fill(key, f, df, streams, m, buffers)
            reduce_block(values, rows, pair_x, pair_y, m, block, means, acc)
        for k in range(acc.size):  # (an array assignment would compile a shape check's error text: 3.7 s)
            out[b, k] = acc[k]


def _curve_chunks(key, f, df, run, sink, out, lo, hi):
    """:func:`_moment_chunks` for the curve sink: each chunk's repeat pieces into ``out``'s rows."""
    buffers = _buffers(key, run)
    rows, owners, offsets, sizes, repeats = _sink_scratch(key, run, sink, out)
    per_block = run.per_block
    for b in range(lo, hi):
        chunk = run.first_chunk + b
        start = chunk * run.per_chunk
        stop = min(run.n_units, start + run.per_chunk)
        streams = _streams(key, run, chunk)
        piece = sink.first_piece[b]
        owner, end = _repeat_at(offsets, sizes, repeats, start)
        owners[piece] = owner
        out[piece, :] = 0.0
        for block_start in range(start, stop, per_block):
            m = min(per_block, stop - block_start)
            values = _fill(key, f, df, streams, m, buffers)
            piece, end = _sum_pieces(values, rows, m, block_start, stop, piece, end, out, owners, offsets, sizes,
                                     repeats)  # fmt: skip


@core
def _learning_rate(a, t0, power, step):
    """Return ``a / (1 + step / t0)**power`` (fastgrad.math: the same bits on every machine)."""
    if power == 0.0:
        return a
    return a * fm.exp(-power * fm.log1p(step / t0))


@core
def _integer_power(base, n):
    """``base**n`` by squaring (the same multiplications on every machine)."""
    out = 1.0
    while n > 0:
        if n & 1:
            out *= base
        base *= base
        n >>= 1
    return out


@block_filler
def _draw_optimize_block(key, seed, base, spare, words, noise, scratch, aux_words, aux_noise, m, theta, flags):
    """Draw ``m`` draws' noise from stream ``(seed, base)`` (and the auxiliary streams the run needs).

    The streams live only here, once a block: a stream started in the step
    loop itself, an array carried from step to step, cost reference counts
    at every step. ``spare`` stands in for an auxiliary stream the run does
    not read (starting one costs about 300 ns).
    """
    state = stream_state(seed, base)
    aux = stream_state(seed, base + np.uint64(AUX_STREAMS)) if flags[F_WEAK] else spare
    aux_normal = stream_state(seed, base + np.uint64(AUX_NORMAL_STREAMS)) if flags[F_WEAK_DECOUPLED] else spare
    _general_noise(key, state, aux, aux_normal, words, noise, scratch, aux_words, aux_noise, m, theta, flags)


@block_filler
def _general_step(key, f, df, seed, first, spare, per_step, per_block, t, units, block, theta, grad, rows, noise,
                  buffers):  # fmt: skip
    """Sum step ``t``'s values into ``grad`` (row ``rows[o]`` for optimised parameter ``o``) through the general filler.

    The step's units may lie in several blocks (drawn into ``noise`` as
    needed: the block there is ``block``; returns the one it leaves there), or, where
    the noise follows the parameters, in stream ``first + t`` of their own.
    """
    (values, words, _, scratch, aux_noise, aux_words, q, tmp, uniforms,
     group, _, fparams, kinds, mirror, coupled, coef, has_coef, flags, active) = buffers  # fmt: skip
    for o in range(rows.size):
        grad[o] = 0.0
    state, aux, aux_normal = spare, spare, spare
    if per_step:
        state = stream_state(seed, first + np.uint64(t))
        if flags[F_WEAK]:
            aux = stream_state(seed, first + np.uint64(t) + np.uint64(AUX_STREAMS))
        if flags[F_WEAK_DECOUPLED]:
            aux_normal = stream_state(seed, first + np.uint64(t) + np.uint64(AUX_NORMAL_STREAMS))
    unit = t * units
    done = 0
    while done < units:
        if per_step:
            offset = 0
            m = min(units - done, per_block)
            _general_noise(key, state, aux, aux_normal, words, noise, scratch, aux_words, aux_noise, m * group, theta,
                           flags)  # fmt: skip
        else:
            k, offset = unit // per_block, unit % per_block
            m = min(units - done, per_block - offset)
            if k != block:
                _draw_optimize_block(key, seed, first + np.uint64(k), spare, words, noise, scratch, aux_words,
                                     aux_noise, per_block * group, theta, flags)  # fmt: skip
                block = k
        d = offset * group
        _general_block(key, f, df, False, spare, spare, spare, words, noise[d:], scratch, aux_words[3 * d :],
                       aux_noise[d:], m, group, theta, fparams, kinds, mirror, coupled, coef, has_coef, flags, active,
                       values, q, tmp, uniforms)  # fmt: skip
        for o in range(rows.size):
            for u in range(m):
                grad[o] += values[rows[o], u]
        done += m
        unit += m
    return block


@core
def _corrections(beta1, beta2, t):
    """Adam's bias corrections after step ``t``: ``1 - beta1**(t + 1)``, ``1 - beta2**(t + 1)``."""
    return 1.0 - _integer_power(beta1, t + 1), 1.0 - _integer_power(beta2, t + 1)


@inline_core
def _updated(value, g, first, second, rate, corrections, update, adam, beta1, beta2, epsilon):
    """Return one optimised coordinate after a step with gradient ``g``, and Adam's two moments.

    ``update``: 0 moves ``value`` itself, 1 its logarithm, 2 its logit, 3
    its logarithm before the caller normalises the probabilities so moved (a
    softmax, :class:`OptimizeSink`); ``corrections``: the step's
    :func:`_corrections`.
    Numbers only: an array passed here at every step would be
    reference-counted at every step. Inlined at Numba-IR level: called, the
    seed case's steps ran at 68 M/s on one thread against 81 (two runs
    each).
    """
    if adam:
        first = beta1 * first + (1.0 - beta1) * g
        second = beta2 * second + (1.0 - beta2) * (g * g)
        g = (first / corrections[0]) / (sqrt(second / corrections[1]) + epsilon)
    if update == 0:  # (no -= or *=: the vector type has the plain operators)
        value = value - rate * g
    elif update == 1 or update == 3:
        value = value * fm.exp(-rate * g)
    else:
        logit = fm.log(value) - fm.log1p(-value) - rate * g
        value = 1.0 / (1.0 + fm.exp(-logit))
    return value, first, second


@inline_core
def _tracked(first, last, within, t):
    """Return a replicate's first step count within tolerance and its last one outside, after step ``t``."""
    if not within:
        return first, t + 1
    return (t + 1 if first < 0 else first), last


def plain_optimisation(family, run, batch):
    """Whether an optimisation runs on the plain kernel (:func:`_optimize_plain_chunks`), or the general one.

    Plain: one score, pathwise or measure-valued specification, draws one at
    a time (no leave-one-out group; an antithetic pair and a score's
    constant baseline or control variates, such as the optimal baseline, are
    plain), noise whose law does not follow the parameters, and a batch of
    at most a block (a power of two: the scalar families' 512).
    """
    kinds, per_block = run.kinds, int(run.per_block)
    return (len(kinds) == 1 and int(kinds[0]) in (SCORE, PATHWISE, MEASURE_VALUED) and int(run.has_coef[0]) in (0, 1)
            and int(run.group) == 1 and not FAMILIES[family].noise_takes_theta and batch <= per_block
            and per_block & (per_block - 1) == 0)  # fmt: skip


def _optimize_chunks(key, f, df, run, sink, out, lo, hi):
    """Advance replicates ``run.first_chunk + b``, ``b`` in ``[lo, hi)``, from ``sink.first_step`` to ``last_step``.

    Replicate ``r``'s draws are a sequence of units (``sink.batch`` a step),
    in blocks of ``run.per_block``: block ``k`` reads stream ``(seed,
    stream_base + r * 2**32 + k)`` (and its auxiliary streams), drawn whole
    when the first of its units is needed, so a stream is started once per
    block, not per step, and a segment starting at any step redraws the
    block it starts in and skips to its unit. Where the noise's law depends
    on the parameters (the Poisson's draws), each step draws its own at the
    step's parameters instead, from stream ``r * 2**32 + t``. Either way a
    replicate's trajectory depends on nothing but its number: any replicate
    reruns alone, on any thread count, from any step. A step: the kernel
    parameters from the replicate's parameters (the family's ``theta_of``),
    the values of the step's units from their noise, their mean per
    optimised parameter (the gradient estimate), then the update (SGD or
    Adam, :class:`OptimizeSink`). ``out[b]`` is unused.

    This kernel runs a replicate at a time, each step through the general
    filler (:func:`_general_step`); a plain specification
    (:func:`plain_optimisation`) has a kernel of its own,
    :func:`_optimize_plain_chunks`, with the same bits. (One kernel for
    both compiled 7 s longer than the plain one alone, which is what most
    runs need.)
    """
    # the scratch and the run's arrays borrowed (``scratch_owner`` keeps them to the end): the general filler's
    # step is called once a step with all of them, which increfed and decrefed each, atomically, at every call
    # (1 thread: score+optimal-baseline 1.76 M steps/s owned, 3.90 borrowed; DiagNormal pathwise 1.41 -> 3.63)
    scratch_owner = _buffers(key, run)
    _optimize_general(key, f, df, run, sink, _borrowed(scratch_owner), lo, hi)
    scratch_owner[0][:] = 0.0  # (the borrowed scratch's owner, alive until here)


def _optimize_plain_chunks(key, f, df, run, sink, out, lo, hi):
    """:func:`_optimize_chunks` for a plain specification: :data:`OPTIMIZE_LANES` replicates at a time.

    See :func:`_optimize_lanes`.
    """
    scratch_owner = _buffers(key, run)
    _optimize_lanes(key, f, df, run, sink, _borrowed(scratch_owner), lo, hi)
    scratch_owner[0][:] = 0.0  # (the borrowed scratch's owner, alive until here)


@inline_core
def _update_replicate(b, t, grad, units, all_params, state, reached, targets, updates, optimum, tolerance, schedule,
                      moments, adam, log_steps, snapshots, logged):  # fmt: skip
    """Replicate ``b``'s update after step ``t`` from its gradient sums ``grad`` (a replicate-at-a-time kernel's).

    Every optimised parameter through :func:`_updated`, then the steps to
    tolerance (``tolerance > 0``: an optimum was given), then its parameters
    into ``snapshots[logged]`` if step ``t + 1`` is logged; returns the
    logged steps so far. Inlined at Numba-IR level: the arrays are the
    kernel's borrowed views, so no call and no reference count a step.
    """
    rate = _learning_rate(schedule[0], schedule[1], schedule[2], t)
    corrections = _corrections(moments[0], moments[1], t) if adam else (1.0, 1.0)
    total = 0.0
    for o in range(targets.size):
        j = targets[o]
        value, state[b, 0, o], state[b, 1, o] = _updated(
            all_params[b, j], grad[o] / units, state[b, 0, o], state[b, 1, o], rate, corrections, updates[o], adam,
            moments[0], moments[1], moments[2],
        )  # fmt: skip
        all_params[b, j] = value
        if updates[o] == 3:
            total += value
    if total != 0.0:  # probabilities moved through their logits (a softmax): their new logits' softmax
        for o in range(targets.size):
            if updates[o] == 3:
                all_params[b, targets[o]] = all_params[b, targets[o]] / total
    within = True
    for o in range(targets.size):
        within = within and abs(all_params[b, targets[o]] - optimum[o]) < tolerance
    if tolerance > 0.0:
        reached[b, 0], reached[b, 1] = _tracked(reached[b, 0], reached[b, 1], within, t)
    if logged < log_steps.size and log_steps[logged] == t + 1:
        for j in range(all_params.shape[1]):
            snapshots[logged, b, j] = all_params[b, j]
        logged += 1
    return logged


@register_jitable
def _optimize_general(key, f, df, run, sink, buffers, lo, hi):
    """:func:`_optimize_chunks` a replicate at a time, each step through the general filler."""
    noise = buffers[2]
    per_block = run.per_block
    per_step = _noise_follows_theta(key)
    units = sink.batch
    n_opt = sink.rows.size
    # The sink's arrays (which the sink owns for the whole call) and the scratch as borrowed views: passed to
    # the step functions at every step, owned arrays were increfed and decrefed there, atomically, 18 times a
    # step (gdb on NRT_incref); the seed case's pathwise steps ran at 13.9 M/s on 2 threads against 107 M/s
    # with the update removed.
    owned = (np.empty(n_opt), np.empty(noise.size))
    (all_params, state, rows, targets, updates, optimum, schedule, moments, reached, grad,
     own_noise) = _borrowed((sink.params, sink.state, sink.rows, sink.targets, sink.updates, sink.optimum,
                             sink.schedule, sink.moments, sink.reached, *owned))  # fmt: skip
    first_step, last_step, adam, tolerance = sink.first_step, sink.last_step, sink.adam, sink.tolerance
    spare = stream_state(run.seed, run.stream_base)  # (stands in for the streams a block draw does not start)
    replicate_step = np.uint64(1 << 32)
    log_steps, snapshots = _borrowed((sink.log_steps, sink.snapshots))
    for b in range(lo, hi):
        # (the replicate's number r = run.first_chunk + b: its streams; its rows in the sink are b)
        first = run.stream_base + np.uint64(run.first_chunk + b) * replicate_step
        block = -1
        logged = 0
        for t in range(first_step, last_step):
            theta = _theta_of(key, all_params[b])
            block = _general_step(key, f, df, run.seed, first, spare, per_step, per_block, t, units, block, theta,
                                  grad, rows, own_noise, buffers)  # fmt: skip
            logged = _update_replicate(b, t, grad, units, all_params, state, reached, targets, updates, optimum,
                                       tolerance, schedule, moments, adam, log_steps, snapshots, logged)  # fmt: skip
    owned[0][:] = 0.0  # (the borrowed arrays' owners, alive until here)


def _simd_cores_of(key):
    """:func:`_simd_cores` inside a kernel (a compile-time constant)."""
    _kernel_only("_simd_cores_of")


@overload(_simd_cores_of, inline="always")
def _ol_simd_cores_of(key):
    simd = _simd_cores(key)
    return lambda key: simd


def _lane_params(key, params, lane):
    """Return the family's parameters of lane ``lane`` (``params[j]``: a row each) as ``theta_of`` takes them."""
    _kernel_only("_lane_params")


@overload(_lane_params, inline="always")
def _ol_lane_params(key, params, lane):
    loads = "".join(f"params[{j}, lane], " for j in range(len(FAMILIES[key.family].parameters)))
    namespace = {}
    exec(f"def impl(key, params, lane):\n    return ({loads})\n", namespace)
    return namespace["impl"]


def _lane_vectors(key, params, lane):
    """:func:`_lane_params` of a vector of lanes from ``lane`` (the key's width), each parameter a vector."""
    _kernel_only("_lane_vectors")


@overload(_lane_vectors, inline="always")
def _ol_lane_vectors(key, params, lane):
    loads = "".join(f"_load(key, params[{j}], lane), " for j in range(len(FAMILIES[key.family].parameters)))
    namespace = {"_load": _load}  # (the key's width)
    exec(f"def impl(key, params, lane):\n    return ({loads})\n", namespace)
    return namespace["impl"]


def _with_param(key, params, j, value):
    """``params`` (a tuple) with element ``j`` (a run-time index) replaced by ``value``."""
    _kernel_only("_with_param")


@overload(_with_param, inline="always")
def _ol_with_param(key, params, j, value):
    count = len(FAMILIES[key.family].parameters)
    parts = "".join(f"value if j == {i} else params[{i}], " for i in range(count))
    namespace = {}
    exec(f"def impl(key, params, j, value):\n    return ({parts})\n", namespace)
    return namespace["impl"]


@register_jitable
def _draw_lane_blocks(key, seed, stream_base, first_chunk, b0, n_lanes, k, stream, words, drawn, scratch, all_params,
                      weak, decoupled, aux):  # fmt: skip
    """Draw block ``k`` of the replicates in sink rows ``b0 ..`` (``n_lanes`` of them) into their rows of ``drawn``.

    A plain run's draw of :func:`_draw_optimize_block` (the same streams, so
    the same numbers), with the streams started in ``stream`` (no
    allocation) and every array borrowed; the block goes to half ``k % 2``
    of each row (replicate ``first_chunk + b``'s streams). With ``weak``
    (measure-valued values) also the auxiliary words, as the uniforms the
    general filler makes of them (three a draw, interleaved) into the rows
    of ``aux[1]``, and with ``decoupled`` the auxiliary normals into those
    of ``aux[2]``; ``aux[0]`` takes the words.
    """
    per_block = (drawn.shape[1] - 8) // 2  # (a row: two blocks and a cache line of padding)
    half = (k & 1) * per_block
    aux_words, uniforms, aux_normals = aux
    for lane in range(n_lanes):
        first = stream_base + np.uint64(first_chunk + b0 + lane) * np.uint64(1 << 32)
        start_stream(stream, seed, first + np.uint64(k))
        theta = _theta_of(key, all_params[b0 + lane])
        _sample_noise(key, stream, words, drawn[lane, half : half + per_block], scratch, per_block, theta)
        if weak:
            start_stream(stream, seed, first + np.uint64(k) + np.uint64(AUX_STREAMS))
            take_words(stream, aux_words, 3 * per_block)
            for i in range(3 * per_block):
                uniforms[lane, 3 * half + i] = _weak_input(key, aux_words[i])
            if decoupled:
                start_stream(stream, seed, first + np.uint64(k) + np.uint64(AUX_NORMAL_STREAMS))
                _sample_noise(key, stream, words, aux_normals[lane, half : half + per_block], scratch, per_block,
                              theta)  # fmt: skip


@inline_core
def _lane_step(key, f, df, fparams, score, row, j, fixed, value, first, second, reached, outside, eps, rate,
               corrections, adam, beta1, beta2, epsilon, tracking, optimum, tolerance, after, with_coef,
               coef):  # fmt: skip
    """One step of four replicates with one optimised parameter and one draw a step, held in registers.

    The operations of :func:`_optimize_lanes`' step, in its order: the
    gradient summed from 0 (a score's value less its coefficients ``coef[k]``
    times every score factor ``k`` where ``with_coef``), the update, the
    steps to tolerance.
    """
    theta = _theta_of(key, _with_param(key, fixed, j, value))
    x = _transform(key, eps, theta)
    if score:
        v = _value(key, f, x, fparams) * _score_factor(key, row, eps, x, theta)
        if with_coef:
            for k in range(_n_params(key)):
                v = v - coef[k] * _score_factor(key, k, eps, x, theta)
        g = like(0.0, eps) + v
    else:
        g = like(0.0, eps) + _derivative(key, df, x, fparams) * _path_factor(key, row, eps, x, theta)
    # (the batch's mean: times 1.0, an identity for every double, left out; the update is _updated's on the
    # parameter itself, the only kind this loop runs: the others' exp and log in each vector's copy compiled 2 s
    # longer)
    if adam:
        first = beta1 * first + (1.0 - beta1) * g
        second = beta2 * second + (1.0 - beta2) * (g * g)
        g = (first / corrections[0]) / (sqrt(second / corrections[1]) + epsilon)
    value = value - rate * g
    if tracking:
        within = fabs(value - optimum) < tolerance
        reached = where(within & (reached < 0.0), after, reached)
        outside = where(within, outside, after)
    return value, first, second, reached, outside


def _in_registers(key, f, df, fparams, score, run, b0, n_lanes, params, first_moment, second_moment, steps_of,
                  drawn, all_params, targets, rows, optimum, schedule, log_steps, snapshots, first_step,
                  last_step, shift, stream, words, scratch, adam, moments, tracking, tolerance, with_coef,
                  coef_row):  # fmt: skip
    """Run the steps of :func:`_optimize_lanes`' group ``b0`` with its state in registers (lane-generic cores)."""
    _kernel_only("_in_registers")


@overload(_in_registers)
def _ol_in_registers(key, f, df, fparams, score, run, b0, n_lanes, params, first_moment, second_moment, steps_of,
                     drawn, all_params, targets, rows, optimum, schedule, log_steps, snapshots,
                     first_step, last_step, shift, stream, words, scratch, adam, moments, tracking,
                     tolerance, with_coef, coef_row):  # fmt: skip
    if not _simd_cores(key):  # (never called: _optimize_lanes runs these groups on its arrays)

        def nothing(key, f, df, fparams, score, run, b0, n_lanes, params, first_moment, second_moment, steps_of,
                    drawn, all_params, targets, rows, optimum, schedule, log_steps, snapshots,
                    first_step, last_step, shift, stream, words, scratch, adam, moments, tracking,
                    tolerance, with_coef, coef_row):  # fmt: skip
            return None

        return nothing

    return _IN_REGISTERS[key.lanes]


def _registers_source(vectors, width):
    """Source of :func:`_in_registers`' loop for ``vectors`` vectors of ``width`` replicates.

    SGD on a distribution's first parameter (``j == row == 0``: the location), the seed case, has a loop of
    its own for the score function and one for the pathwise estimator, each written out per vector so that
    the vectors stay in registers for a block's steps, with ``score``, ``j``, ``row`` and ``adam`` compile-time
    constants: LLVM drops the selection of the optimised parameter among the fixed ones and hoists what
    depends only on those (the score's ``1 / scale``) out of the loop. Any other run (Adam, another
    parameter) takes one loop over the vectors, each loaded from and stored to the lane-major arrays at every
    step, with those four read at run time. The steps alone (the seed case with the draws left out, one
    thread): 0.85 ns a replicate-step with one loop of two vectors for everything, 0.59 with the constants,
    0.33 with four vectors (four chains of updates in flight, not two). The four vectors written out for Adam
    too compiled 2.7 s longer than its loop over them (17.1 against 14.4 s for the first call of a plain
    optimisation; 10.2 s with the one loop of two vectors before).
    Four vectors of the kernels' width (eight lanes on AVX-512, 32 replicates a group) rather than of four
    lanes: 16.2 -> 15.6 ms a call in the kernel for the seed case's pathwise runs, one thread (2026-12-07).
    """
    names = [chr(ord("a") + v) for v in range(vectors)]

    def each(template):
        return "".join(template.format(v=v, o=width * i) for i, v in enumerate(names))

    setup = each(
        "        fixed_{v} = _lane_vectors(key, params, {o})\n"
        "        value_{v}, first_{v} = load(params[j], {o}), load(first_moment[0], {o})\n"
        "        second_{v}, reached_{v} = load(second_moment[0], {o}), load(steps_of[0], {o})\n"
        "        outside_{v} = load(steps_of[1], {o})\n"
    )
    final = each(
        "        store(params, j, {o}, value_{v})\n"
        "        store(first_moment, 0, {o}, first_{v})\n"
        "        store(second_moment, 0, {o}, second_{v})\n"
        "        store(steps_of, 0, {o}, reached_{v})\n"
        "        store(steps_of, 1, {o}, outside_{v})\n"
    )

    def in_registers(score):
        steps = each(
            "                value_{v}, first_{v}, second_{v}, reached_{v}, outside_{v} = _lane_step(\n"
            f"                    key, f, df, fparams, {score}, 0, 0, fixed_{{v}}, value_{{v}}, first_{{v}},\n"
            "                    second_{v}, reached_{v}, outside_{v}, lanes_of(drawn, {o}, column), rate,\n"
            "                    corrections, False, beta1, beta2, epsilon, tracking, target, tolerance, after,\n"
            "                    with_coef, coef_row)\n"
        )
        return setup + loop(steps, each("                store(params, j, {o}, value_{v})\n")) + final

    in_arrays = f"""                for o in range(0, {width * vectors}, {width}):
                    value, first, second, reached, outside = _lane_step(
                        key, f, df, fparams, score, row, j, _lane_vectors(key, params, o), load(params[j], o),
                        load(first_moment[0], o), load(second_moment[0], o), load(steps_of[0], o),
                        load(steps_of[1], o), lanes_of(drawn, o, column), rate, corrections, adam, beta1, beta2,
                        epsilon, tracking, target, tolerance, after, with_coef, coef_row)
                    store(params, j, o, value)
                    store(first_moment, 0, o, first)
                    store(second_moment, 0, o, second)
                    store(steps_of, 0, o, reached)
                    store(steps_of, 1, o, outside)
"""

    def loop(steps, logged_values):
        return f"""        t = first_step
        while t < last_step:
            k = t >> shift
            if k != (held0 if k & 1 == 0 else held1):
                _draw_lane_blocks(key, run.seed, run.stream_base, run.first_chunk, b0, n_lanes, k, stream, words,
                                  drawn, scratch, all_params, False, False, (words, drawn, drawn))
                if k & 1 == 0:
                    held0 = k
                else:
                    held1 = k
            stop = min(last_step, (k + 1) << shift)
            if logged < log_steps.size:
                stop = min(stop, log_steps[logged])
            for step in range(t, stop):
                rate = schedule[0] if constant_rate else _learning_rate(schedule[0], schedule[1], schedule[2], step)
                corrections = _corrections(beta1, beta2, step) if adam else (1.0, 1.0)
                after = step + 1.0
                column = step & (ring - 1)
{steps}
            t = stop
            if logged < log_steps.size and log_steps[logged] == t:
{logged_values}
                for lane in range(n_lanes):
                    for i in range(n_params):
                        snapshots[logged, b0 + lane, i] = params[i, lane]
                logged += 1
"""

    return f"""
def in_registers(key, f, df, fparams, score, run, b0, n_lanes, params, first_moment, second_moment, steps_of,
                 drawn, all_params, targets, rows, optimum, schedule, log_steps, snapshots, first_step,
                 last_step, shift, stream, words, scratch, adam, moments, tracking, tolerance, with_coef, coef_row):
    per_block = 1 << shift
    ring = 2 * per_block
    n_params = params.shape[0]
    beta1, beta2, epsilon = moments[0], moments[1], moments[2]
    constant_rate = schedule[2] == 0.0  # (as _learning_rate: its power 0 gives its a)
    held0, held1 = -1, -1  # the blocks in the rows' two halves
    logged = 0
    j, row, target = targets[0], rows[0], optimum[0]
    if adam or j != 0 or row != 0:
{loop(in_arrays, "")}
    elif score:
{in_registers("True")}
    else:
{in_registers("False")}
"""


def _registers_function(width):
    """Compile-ready :func:`_in_registers` loop for :data:`OPTIMIZE_LANES` replicates in vectors of ``width``."""
    namespace = {**globals(), "load": load8 if width == 8 else load4, "store": store8 if width == 8 else store4,
                 "lanes_of": column8 if width == 8 else column4}  # fmt: skip
    exec(_registers_source(OPTIMIZE_LANES // width, width), namespace)
    return namespace["in_registers"]


@register_jitable
def _optimize_lanes(key, f, df, run, sink, buffers, lo, hi):
    """:func:`_optimize_chunks` for a plain score or pathwise specification: replicates in vector lanes.

    :data:`OPTIMIZE_LANES` replicates advance together, one step of all of
    them at a time (a replicate's steps form a chain of latencies; the
    lanes do not), four in each vector where the family's and function's
    cores are lane-generic (:mod:`fastgrad._simd`: the same IEEE operations
    in each lane as in scalar code). While a group runs, its parameters,
    Adam's moments and steps to tolerance live in lane-major arrays, and
    each replicate's blocks of noise, drawn as the general filler draws
    them, go to its row of ``drawn``, a ring of two blocks (a step's units
    may straddle two), which a step reads a column at a time. So the values
    are the general filler's operations on the same numbers, and the bits
    are those of :func:`_optimize_general`.
    """
    words, scratch, aux_words = buffers[1], buffers[3], buffers[5]
    fparams = buffers[11]
    kind = buffers[12][0]
    score, weak = kind == SCORE, kind == MEASURE_VALUED
    coupled, decoupled = buffers[14][0] != 0, buffers[17][F_WEAK_DECOUPLED] != 0
    coef, with_coef = buffers[15], buffers[16][0] != 0  # (a score's constant coefficients: coef[0, j, k] times
    # score factor k subtracted from its values, as the general filler does)
    mirror = buffers[13][0] != 0  # (antithetic: the mean of the values at eps and -eps)
    n_family = _n_params(key)
    per_block = run.per_block
    units = sink.batch
    n_opt = sink.rows.size
    lanes = OPTIMIZE_LANES
    n_params = sink.params.shape[1]
    ring = 2 * per_block
    # (a block a power of two: shifts and masks, not a division or two a step, each tens of cycles)
    shift = np.int64(0)
    while (1 << shift) < per_block:
        shift += 1
    # (steps to tolerance as floats in the lanes, exact below 2**53: where() selects among floats; the rows of
    # drawn noise padded by a cache line, so that a step's reads of the lanes do not fall in one set of the L1 cache)
    # (measure-valued values: each replicate's uniforms, three a draw, and with decoupled sides its second normals)
    owned = (np.zeros((n_params, lanes)), np.zeros((n_opt, lanes)), np.zeros((n_opt, lanes)),
             np.zeros((n_opt, lanes)), np.zeros((lanes, ring + 8)), np.zeros((2, lanes)),
             np.zeros(STATE_SIZE, np.uint64), np.zeros((lanes, 3 * ring + 8) if weak else (1, 1)),
             np.zeros((lanes, ring + 8) if decoupled else (1, 1)))  # fmt: skip
    (params, first_moment, second_moment, grad, drawn, steps_of, stream, uniforms, aux_normals, all_params, state,
     rows, targets, updates, optimum, schedule, moments, reached, log_steps, snapshots) = _borrowed(
        (*owned, sink.params, sink.state, sink.rows, sink.targets, sink.updates, sink.optimum, sink.schedule,
         sink.moments, sink.reached, sink.log_steps, sink.snapshots))  # fmt: skip
    aux = (aux_words, uniforms, aux_normals)
    first_step, last_step, adam, tolerance = sink.first_step, sink.last_step, sink.adam, sink.tolerance
    beta1, beta2, epsilon = moments[0], moments[1], moments[2]
    tracking = tolerance > 0.0  # (0: no optimum given, no steps to tolerance)
    # the gradient's mean: a division by the batch, or the multiplication by its reciprocal where that is exact
    # (a power of two: the same correctly rounded quotient)
    inverse = 1.0 / units
    exact_inverse = (units & (units - 1)) == 0
    in_registers = (_simd_cores_of(key) and n_opt == 1 and units == 1 and updates[0] == 0 and not mirror
                    and not weak)  # fmt: skip
    for b0 in range(lo, hi, lanes):
        n_lanes = min(lanes, hi - b0)
        for lane in range(lanes):  # (lanes past n_lanes copy the group's first replicate: computed, never kept)
            b = b0 + (lane if lane < n_lanes else 0)
            for j in range(n_params):
                params[j, lane] = all_params[b, j]
            for o in range(n_opt):
                first_moment[o, lane] = state[b, 0, o]
                second_moment[o, lane] = state[b, 1, o]
            steps_of[0, lane] = reached[b, 0]
            steps_of[1, lane] = reached[b, 1]
        held0, held1 = -1, -1  # the blocks in the ring's two halves
        logged = 0
        if in_registers:
            _in_registers(key, f, df, fparams, score, run, b0, n_lanes, params, first_moment, second_moment, steps_of,
                          drawn, all_params, targets, rows, optimum, schedule, log_steps, snapshots,
                          first_step, last_step, shift, stream, words, scratch, adam, moments, tracking,
                          tolerance, with_coef, coef[0, rows[0]])  # fmt: skip
        for t in range(first_step if not in_registers else last_step, last_step):
            unit = t * units
            for k in range(unit >> shift, ((unit + units - 1) >> shift) + 1):
                if k != (held0 if k & 1 == 0 else held1):
                    _draw_lane_blocks(key, run.seed, run.stream_base, run.first_chunk, b0, n_lanes, k, stream, words,
                                      drawn, scratch, all_params, weak, decoupled, aux)  # fmt: skip
                    if k & 1 == 0:
                        held0 = k
                    else:
                        held1 = k
            # every optimised parameter's gradient first (at the step's parameters), then the updates; a lane at
            # a time (lane-generic vectors here compiled 7 s longer, for cases off the seed case's path)
            for o in range(n_opt):
                row = rows[o]
                for lane in range(lanes):
                    theta = _theta_of(key, _lane_params(key, params, lane))
                    acc = 0.0
                    for u in range(unit, unit + units):
                        eps = drawn[lane, u & (ring - 1)]
                        x = _transform(key, eps, theta)
                        if score:
                            v = _value(key, f, x, fparams) * _score_factor(key, row, eps, x, theta)
                            if with_coef:
                                for k in range(n_family):
                                    v -= coef[0, row, k] * _score_factor(key, k, eps, x, theta)
                            if mirror:
                                xb = _transform(key, -eps, theta)
                                w = _value(key, f, xb, fparams) * _score_factor(key, row, -eps, xb, theta)
                                if with_coef:
                                    for k in range(n_family):
                                        w -= coef[0, row, k] * _score_factor(key, k, -eps, xb, theta)
                                v = 0.5 * (v + w)
                        elif weak:
                            column = u & (ring - 1)
                            eps2 = aux_normals[lane, column] if decoupled else 0.0
                            c, d = _weak_values(key, f, row, theta, fparams, eps, x, uniforms[lane, 3 * column],
                                                uniforms[lane, 3 * column + 1], uniforms[lane, 3 * column + 2],
                                                eps2)  # fmt: skip
                            v = c if coupled else d
                        else:
                            v = _derivative(key, df, x, fparams) * _path_factor(key, row, eps, x, theta)
                            if mirror:
                                xb = _transform(key, -eps, theta)
                                v = 0.5 * (
                                    v + _derivative(key, df, xb, fparams) * _path_factor(key, row, -eps, xb, theta)
                                )
                        acc += v
                    grad[o, lane] = acc
            rate = _learning_rate(schedule[0], schedule[1], schedule[2], t)
            corrections = _corrections(beta1, beta2, t) if adam else (1.0, 1.0)
            for lane in range(lanes):
                within = True
                for o in range(n_opt):
                    j = targets[o]
                    g = grad[o, lane] * inverse if exact_inverse else grad[o, lane] / units
                    value, first_moment[o, lane], second_moment[o, lane] = _updated(
                        params[j, lane], g, first_moment[o, lane], second_moment[o, lane], rate, corrections,
                        updates[o], adam, beta1, beta2, epsilon,
                    )  # fmt: skip
                    params[j, lane] = value
                    within = within and abs(value - optimum[o]) < tolerance
                if tracking:
                    steps_of[0, lane], steps_of[1, lane] = _tracked(steps_of[0, lane], steps_of[1, lane], within, t)
            if logged < log_steps.size and log_steps[logged] == t + 1:
                for lane in range(n_lanes):
                    for j in range(n_params):
                        snapshots[logged, b0 + lane, j] = params[j, lane]
                logged += 1
        for lane in range(n_lanes):
            b = b0 + lane
            for j in range(n_params):
                all_params[b, j] = params[j, lane]
            for o in range(n_opt):
                state[b, 0, o] = first_moment[o, lane]
                state[b, 1, o] = second_moment[o, lane]
            reached[b, 0] = np.int64(steps_of[0, lane])
            reached[b, 1] = np.int64(steps_of[1, lane])
    owned[0][:] = 0.0  # (the borrowed arrays' owners, alive until here)


@block_filler
def _draw_vector_block(key, seed, base, spare, words, noise, scratch, aux_words, aux_noise, draws, dim, theta, flags):
    """:func:`_draw_optimize_block` for the vector-general filler: ``draws`` draws of ``dim`` components."""
    aux = stream_state(seed, base + np.uint64(AUX_STREAMS)) if flags[F_WEAK] else spare
    aux_normal = stream_state(seed, base + np.uint64(AUX_NORMAL_STREAMS)) if flags[F_WEAK_DECOUPLED] else spare
    _draw_vector_noise(key, stream_state(seed, base), aux, aux_normal, words, noise, scratch, aux_words, aux_noise,
                       draws, dim, theta, flags)  # fmt: skip


@block_filler
def _draw_vector_noise(key, state, aux, aux_normal, words, noise, scratch, aux_words, aux_noise, draws, dim, theta,
                       flags):  # fmt: skip
    """Draw the next ``draws`` draws' noise from stream ``state`` (and the auxiliary streams the run reads)."""
    width = _width(key, dim)
    _draw_noise(key, state, words, noise, scratch, draws, dim, theta)
    if flags[F_WEAK]:
        take_words(aux, aux_words, 3 * draws * width)
        if flags[F_WEAK_DECOUPLED]:
            _weak_noise(key, aux_normal, words, aux_noise, scratch, draws * width, theta)


def _fresh_theta(theta):
    """Return a new array per array of ``theta`` (a tuple of arrays), of the same shapes."""
    _kernel_only("_fresh_theta")


@overload(_fresh_theta)
def _ol_fresh_theta(theta):
    source = f"def impl(theta):\n    return ({''.join(f'theta[{k}].copy(), ' for k in range(len(theta)))})\n"
    namespace = {}
    exec(source, namespace)
    return namespace["impl"]


def _optimize_vector_chunks(key, f, df, run, sink, out, lo, hi):
    """:func:`_optimize_chunks` for a family of ``run.dim`` independent components (the vector-general filler).

    A replicate's parameters are ``P * dim`` numbers, parameter ``j`` of
    component ``i`` at ``j * dim + i`` (the filler's pair order); the kernel
    parameters (one array per kernel parameter) are rebuilt from them each
    step, component by component, with the family's ``theta_of`` (a joint
    family's ``theta_into``: the whole row). Blocks of draws as there
    (``run.per_block`` units of ``group`` draws of ``dim`` components), or,
    where the noise's law follows the parameters (a Categorical's
    categories, a Dirichlet's Gamma draws), each step's draws from a stream
    of its own, ``r * 2**32 + t``, at the step's parameters; one replicate
    at a time.
    """
    scratch_owner = _buffers(key, run)
    buffers = _borrowed(scratch_owner)  # (as in _optimize_chunks: the filler's block is called once a step)
    (values, words, noise, scratch, aux_noise, aux_words, xs, xb, tmpx, grads, gradb, q, group, dim, theta0,
     weights, fparams, kinds, mirror, coupled, coef, has_coef, flags, active) = buffers  # fmt: skip
    per_block, units, n_params = run.per_block, sink.batch, _n_params(key)
    width = _width(key, dim)
    theta = _fresh_theta(theta0)
    gradient, component = np.empty(sink.rows.size), np.empty(n_params)
    (all_params, state, rows, targets, updates, optimum, schedule, moments, reached, grad, log_steps,
     snapshots) = _borrowed((sink.params, sink.state, sink.rows, sink.targets, sink.updates, sink.optimum,
                             sink.schedule, sink.moments, sink.reached, gradient, sink.log_steps,
                             sink.snapshots))  # fmt: skip
    first_step, last_step, adam, tolerance = sink.first_step, sink.last_step, sink.adam, sink.tolerance
    n_opt = rows.size
    spare = stream_state(run.seed, run.stream_base)
    per_step = _vector_noise_follows_theta(key)
    for b in range(lo, hi):
        first = run.stream_base + np.uint64(run.first_chunk + b) * np.uint64(1 << 32)
        block = -1
        logged = 0
        for t in range(first_step, last_step):
            _rebuild_theta(key, all_params[b], component, dim, theta)
            for o in range(n_opt):
                grad[o] = 0.0
            unit = t * units
            done = 0
            stream, aux, aux_normal = spare, spare, spare
            if per_step:
                stream = stream_state(run.seed, first + np.uint64(t))
                if flags[F_WEAK]:
                    aux = stream_state(run.seed, first + np.uint64(t) + np.uint64(AUX_STREAMS))
                if flags[F_WEAK_DECOUPLED]:
                    aux_normal = stream_state(run.seed, first + np.uint64(t) + np.uint64(AUX_NORMAL_STREAMS))
            while done < units:
                if per_step:
                    offset = 0
                    m = min(units - done, per_block)
                    _draw_vector_noise(key, stream, aux, aux_normal, words, noise, scratch, aux_words, aux_noise,
                                       m * group, dim, theta, flags)  # fmt: skip
                else:
                    k, offset = unit // per_block, unit % per_block
                    m = min(units - done, per_block - offset)
                    if k != block:
                        _draw_vector_block(key, run.seed, first + np.uint64(k), spare, words, noise, scratch,
                                           aux_words, aux_noise, per_block * group, dim, theta, flags)  # fmt: skip
                        block = k
                d = offset * group * width
                _vector_general_block(key, f, df, False, spare, spare, spare, words, noise[d:], scratch,
                                      aux_words[3 * d :], aux_noise[d:], m, group, dim, theta, weights, fparams, kinds,
                                      mirror, coupled, coef, has_coef, flags, active, values, xs, xb, tmpx, grads,
                                      gradb, q)  # fmt: skip
                for o in range(n_opt):
                    for u in range(m):
                        grad[o] += values[rows[o], u]
                done += m
                unit += m
            logged = _update_replicate(b, t, grad, units, all_params, state, reached, targets, updates, optimum,
                                       tolerance, schedule, moments, adam, log_steps, snapshots, logged)  # fmt: skip
    gradient[:] = 0.0  # (the borrowed arrays' owners, alive until here)
    scratch_owner[0][:] = 0.0


def _rebuild_theta(key, params, component, dim, theta):
    """Write the kernel parameters of one replicate's parameters ``params`` into ``theta`` (its arrays, in place).

    Per component through the family's ``theta_of`` (``component``: scratch
    of ``P`` numbers), or a joint family's ``theta_into`` on the whole row.
    """
    _kernel_only("_rebuild_theta")


@overload(_rebuild_theta, inline="always")
def _ol_rebuild_theta(key, params, component, dim, theta):
    joint = _joint(key)
    if joint is not None:
        into = joint.theta_into
        return lambda key, params, component, dim, theta: into(params, theta)

    def components(key, params, component, dim, theta):
        for i in range(dim):
            for j in range(component.size):
                component[j] = params[j * dim + i]
            kernel_parameters = _theta_of(key, component)
            for k in range(len(kernel_parameters)):
                theta[k][i] = kernel_parameters[k]

    return components


def _vector_noise_follows_theta(key):
    """Whether a vector family's noise law depends on its parameters (``Joint.noise_follows_theta``)."""
    _kernel_only("_vector_noise_follows_theta")


@overload(_vector_noise_follows_theta, inline="always")
def _ol_vector_noise_follows_theta(key):
    family = FAMILIES[key.family]
    follows = family.joint.noise_follows_theta if family.joint is not None else family.noise_takes_theta
    return lambda key: follows


def _noise_follows_theta(key):
    """Whether the family's noise law depends on its parameters (a compile-time constant)."""
    _kernel_only("_noise_follows_theta")


@overload(_noise_follows_theta, inline="always")
def _ol_noise_follows_theta(key):
    follows = FAMILIES[key.family].noise_takes_theta
    return lambda key: follows


def _sum_chunks(key, f, df, run, sink, out, lo, hi):
    """:func:`_moment_chunks` for the sum sink (the normals-only kernel): ``out[b]``, the sum of row 0."""
    buffers = _buffers(key, run)
    per_block = run.per_block
    for b in range(lo, hi):
        chunk = run.first_chunk + b
        start = chunk * run.per_chunk
        stop = min(run.n_units, start + run.per_chunk)
        streams = _streams(key, run, chunk)
        acc = 0.0
        for block_start in range(start, stop, per_block):
            m = min(per_block, stop - block_start)
            acc += block_sum(_fill(key, f, df, streams, m, buffers)[0], m)
        out[b] = acc


def _buffers(key, run):
    _kernel_only("_buffers")


def _streams(key, run, chunk):
    _kernel_only("_streams")


def _fill(key, f, df, streams, m, buffers):
    _kernel_only("_fill")


@overload(_streams)
def _ol_streams(key, run, chunk):
    if key.filler in ("general", "plain-weak", "vector-general"):

        def with_aux(key, run, chunk):
            base = run.stream_base + np.uint64(chunk)
            return (
                stream_state(run.seed, base),
                stream_state(run.seed, base + np.uint64(AUX_STREAMS)),
                stream_state(run.seed, base + np.uint64(AUX_NORMAL_STREAMS)),
            )

        return with_aux

    def run_only(key, run, chunk):
        state = stream_state(run.seed, run.stream_base + np.uint64(chunk))
        return state, state, state

    return run_only


@intrinsic
def _borrowed(typingctx, values):
    """``values`` (a tuple) with each array in it as a borrowed view: the same data, no reference count.

    Block code reads the run's parameter vector at every draw; an array in
    it (the Gamma's per-run fit) would otherwise be increfed and decrefed
    there, atomically, once a draw (measured on the Gamma's pathwise values
    for its shape, one thread: 73 ns a draw against 42 with the views). The
    run's tuple owns the arrays for the whole call.
    """

    def codegen(context, builder, signature, args):
        (whole,) = args
        parts = []
        for i, typ in enumerate(signature.args[0]):
            value = builder.extract_value(whole, i)
            if isinstance(typ, types.Array):
                view = context.make_array(typ)(context, builder, value=value)
                view.meminfo = cgutils.get_null_value(view.meminfo.type)
                view.parent = cgutils.get_null_value(view.parent.type)
                value = view._getvalue()
            parts.append(value)
        return context.make_tuple(builder, signature.return_type, parts)

    return values(values), codegen


@overload(_buffers)
def _ol_buffers(key, run):
    """Gather what a block of the key's filler reads: its scratch (allocated once per call), then run fields."""
    if key.filler == "general":

        def general(key, run):
            n_params = _n_params(key)
            # (a multiple of PAD, see _weak_rows, and PAD more: an optimisation's blocks start anywhere in these)
            draws = (run.per_block * run.group + PAD - 1) // PAD * PAD + PAD
            return (
                np.empty((run.kinds.size * n_params, run.per_block)),
                np.empty(draws, np.uint64),
                np.empty(draws),
                np.empty(draws, np.int64),
                np.empty(draws),
                np.empty(3 * draws, np.uint64),
                np.zeros((6 + 6 * n_params, draws)),
                np.empty(draws),
                np.empty((3, draws)),
                run.group, _borrowed(run.theta), run.fparams, run.kinds, run.mirror, run.coupled, run.coef,
                run.has_coef, run.flags, run.active,
            )  # fmt: skip

        return general
    if key.filler == "vector-general":

        def vector_general(key, run):
            draws = run.per_block * run.group * _width(key, run.dim)
            n_pairs = _n_pairs(key, run.dim)
            size = _draw_size(key, run.dim)
            return (
                np.empty((run.kinds.size * n_pairs, run.per_block)),
                np.empty(draws, np.uint64),
                np.empty(draws),
                np.empty(draws, np.int64),
                np.empty(draws),
                np.empty(3 * draws, np.uint64),
                np.empty(size),
                np.empty(size),
                np.empty(size),
                np.empty(size),
                np.empty(size),
                np.zeros((Q_PREPARED + 1, n_pairs)),
                run.group, run.dim, _borrowed(run.theta), run.weights, run.fparams, run.kinds, run.mirror, run.coupled,
                run.coef,
                run.has_coef, run.flags, run.active,
            )  # fmt: skip

        return vector_general
    if key.filler == "vector":

        def vector(key, run):
            values = run.per_block * run.dim
            n_rows = 2 * _n_params(key) * run.dim
            return (
                np.empty((n_rows, run.per_block)),
                np.empty(values, np.uint64),
                np.empty(values),
                np.empty(values, np.int64),
                np.empty(run.dim),
                np.empty(run.dim),
                np.empty((run.dim, run.per_block)),
                np.empty((run.dim, run.per_block)),
                np.empty((2, run.per_block)),
                _kept_rows(n_rows, run.rows),
                run.dim, run.theta, run.weights, run.fparams, run.flags[F_F] != 0, run.flags[F_DF] != 0,
            )  # fmt: skip

        return vector
    if key.filler == "noise":

        def noise(key, run):
            values = np.empty((1, run.per_block))
            return values, np.empty(run.per_block, np.uint64), values[0], np.empty(run.per_block, np.int64)

        return noise

    if key.filler == "plain-weak":

        def plain_weak(key, run):
            n_params = _n_params(key)
            draws = (run.per_block + PAD - 1) // PAD * PAD  # (a multiple of PAD, see _weak_rows)
            return (
                np.empty((4 * n_params, draws)),
                np.empty(draws, np.uint64),
                np.empty(draws),
                np.empty(draws, np.int64),
                _kept_rows(4 * n_params, run.rows),
                _borrowed(run.theta),
                run.fparams,
                run.flags[F_F] != 0,
                run.flags[F_DF] != 0,
                run.flags[F_WEAK_DECOUPLED] != 0,
                np.empty(3 * draws, np.uint64),
                np.empty((3, draws)),
                np.empty(draws),
                np.empty(draws),
            )

        return plain_weak

    def plain(key, run):
        return (
            np.empty((2 * _n_params(key), run.per_block)),
            np.empty(run.per_block, np.uint64),
            np.empty(run.per_block),
            np.empty(run.per_block, np.int64),
            _kept_rows(2 * _n_params(key), run.rows),
            _borrowed(run.theta),
            run.fparams,
            run.flags[F_F] != 0,
            run.flags[F_DF] != 0,
        )

    return plain


@overload(_fill, inline="always")
def _ol_fill(key, f, df, streams, m, buffers):
    """Draw the next block's noise and fill columns ``[0, m)`` of the value rows; return the rows."""
    if key.filler == "general":

        def general(key, f, df, streams, m, buffers):
            (values, words, noise, scratch, aux_noise, aux_words, q, tmp, uniforms,
             group, theta, fparams, kinds, mirror, coupled, coef, has_coef, flags, active) = buffers  # fmt: skip
            _general_block(key, f, df, True, streams[0], streams[1], streams[2], words, noise, scratch, aux_words,
                           aux_noise, m, group, theta, fparams, kinds, mirror, coupled, coef, has_coef, flags, active,
                           values, q, tmp, uniforms)  # fmt: skip
            return values

        return general
    if key.filler == "vector-general":

        def vector_general(key, f, df, streams, m, buffers):
            (values, words, noise, scratch, aux_noise, aux_words, xs, xb, tmpx, grads, gradb, q, group, dim, theta,
             weights, fparams, kinds, mirror, coupled, coef, has_coef, flags, active) = buffers  # fmt: skip
            _vector_general_block(key, f, df, True, streams[0], streams[1], streams[2], words, noise, scratch,
                                  aux_words, aux_noise, m, group, dim, theta, weights, fparams, kinds, mirror, coupled,
                                  coef, has_coef, flags, active, values, xs, xb, tmpx, grads, gradb, q)  # fmt: skip
            return values

        return vector_general
    if key.filler == "vector":
        by_draw = key.function == USER  # a user's f takes a whole draw; built-ins go component by component

        def vector(key, f, df, streams, m, buffers):
            (values, words, noise, scratch, xs, grads, noise_t, x_t, rows, keep,
             dim, theta, weights, fparams, need_f, need_df) = buffers  # fmt: skip
            _sample_noise(key, streams[0], words, noise, scratch, m * dim, theta)
            if by_draw:
                _vector_block(key, f, df, noise, m, dim, theta, weights, fparams, need_f, need_df, xs, grads, values)
            else:
                _vector_columns(key, f, df, noise, m, dim, theta, weights, fparams, need_f, need_df, keep, noise_t,
                                x_t, rows, values)  # fmt: skip
            return values

        return vector
    if key.filler == "noise":

        def noise(key, f, df, streams, m, buffers):
            values, words, normals, scratch = buffers
            _sample_noise(key, streams[0], words, normals, scratch, m, ())
            return values

        return noise
    simd = _simd_cores(key)
    if key.filler == "plain-weak":

        def plain_weak(key, f, df, streams, m, buffers):
            (values, words, noise, scratch, keep, theta, fparams, need_f, need_df, decoupled, aux_words, uniforms,
             aux_noise, x) = buffers  # fmt: skip
            _sample_noise(key, streams[0], words, noise, scratch, m, theta)
            if simd:
                _values_simd(key, f, df, theta, fparams, need_f, need_df, keep, noise, values, m)
            else:
                _values_scalar(key, f, df, theta, fparams, need_f, need_df, keep, noise, values, 0, m)
            _weak_block(key, f, streams[1], streams[2], words, noise, scratch, aux_words, uniforms, aux_noise, x, m,
                        theta, fparams, decoupled, keep, values)  # fmt: skip
            return values

        return plain_weak

    def plain(key, f, df, streams, m, buffers):
        values, words, noise, scratch, keep, theta, fparams, need_f, need_df = buffers
        _sample_noise(key, streams[0], words, noise, scratch, m, theta)
        if simd:
            _values_simd(key, f, df, theta, fparams, need_f, need_df, keep, noise, values, m)
        else:
            _values_scalar(key, f, df, theta, fparams, need_f, need_df, keep, noise, values, 0, m)
        return values

    return plain


# --- sinks -------------------------------------------------------------------------


def _sink_scratch(key, run, sink, out):
    _kernel_only("_sink_scratch")


@overload(_sink_scratch)
def _ol_sink_scratch(key, run, sink, out):
    if key.sink == "moments":

        def moments(key, run, sink, out):
            # acc is this thread's own: the records' rows share cache lines with other threads'
            return (np.empty(out.shape[1]), np.empty(run.rows.size), np.empty(out.shape[1]), run.rows, sink.pair_x,
                    sink.pair_y)  # fmt: skip

        return moments
    if key.sink == "curve":
        return lambda key, run, sink, out: (run.rows, sink.owners, sink.offsets, sink.sizes, sink.repeats)
    return lambda key, run, sink, out: (0.0,)


# --- the plain filler: score and pathwise rows, one component ------------------------


@register_jitable
def _kept_rows(n_value_rows, rows):
    """``keep[row]``: whether value row ``row`` is one of ``rows`` (reduced or summed)."""
    keep = np.zeros(n_value_rows, np.bool_)
    for r in range(rows.size):
        keep[rows[r]] = True
    return keep


@register_jitable
def _values_scalar(key, f, df, theta, fparams, need_f, need_df, keep, noise, values, lo, hi):
    """Fill columns ``[lo, hi)`` a draw at a time: row ``j`` the score of parameter ``j``, ``P + j`` the pathwise.

    Only kept rows are filled (a Gamma's path factor for its shape costs far
    more than the rest of a draw).
    """
    n_params = _n_params(key)
    for i in range(lo, hi):
        eps = noise[i]
        x = _transform(key, eps, theta)
        fx, dfx = _evaluate(key, f, df, x, fparams, need_f, need_df)
        if need_f:
            for j in range(n_params):
                if keep[j]:
                    values[j, i] = fx * _score_factor(key, j, eps, x, theta)
        if need_df:
            for j in range(n_params):
                if keep[n_params + j]:
                    values[n_params + j, i] = dfx * _path_factor(key, j, eps, x, theta)


@register_jitable
def _values_simd(key, f, df, theta, fparams, need_f, need_df, keep, noise, values, m):
    """Fill the same values a vector of draws at a time (the same operations lane by lane, so the same bits).

    Only kept rows are filled. LLVM does not vectorise the scalar loop by
    itself: it cannot rule out that the value rows overlap the noise.
    Vectors of 8 on AVX-512 (:data:`fastgrad._simd.LANES`): on Zen 4 the
    4-lane function code was bound by the out-of-order window, and 8 lanes
    do twice the work an instruction (the logistic's value and derivative
    on an array: 3.52 against 2.32 ns a value).
    """
    n_params = _n_params(key)
    lanes = _lanes(key)
    whole = m - m % lanes
    for i in range(0, whole, lanes):
        eps = _load(key, noise, i)
        x = _transform(key, eps, theta)
        fx, dfx = _evaluate(key, f, df, x, fparams, need_f, need_df)
        if need_f:
            for j in range(n_params):
                if keep[j]:
                    _store(key, values, j, i, fx * _score_factor(key, j, eps, x, theta))
        if need_df:
            for j in range(n_params):
                if keep[n_params + j]:
                    _store(key, values, n_params + j, i, dfx * _path_factor(key, j, eps, x, theta))
    _values_scalar(key, f, df, theta, fparams, need_f, need_df, keep, noise, values, whole, m)


# --- the vector filler: D independent components ------------------------------------


def _vector_value(key, f, xs, weights, fparams):
    _kernel_only("_vector_value")


def _vector_gradient(key, df, xs, weights, fparams, out):
    _kernel_only("_vector_gradient")


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


@block_filler
def _vector_block(key, f, df, noise, m, dim, theta, weights, fparams, need_f, need_df, xs, grads, values):
    """Fill columns ``[0, m)`` of the value rows from ``m * dim`` noise values, one draw (``v * dim`` on) at a time.

    Row ``j * dim + i`` is the score value of parameter ``j``, component ``i``;
    row ``(P + j) * dim + i`` the pathwise one. Each component's factors are
    the family's scalar cores at its parameters.
    """
    n_params = _n_params(key)
    for v in range(m):
        base = v * dim
        for i in range(dim):
            xs[i] = _transform(key, noise[base + i], _component(theta, i))
        if need_f:
            fx = _vector_value(key, f, xs, weights, fparams)
            for i in range(dim):
                eps = noise[base + i]
                component = _component(theta, i)
                for j in range(n_params):
                    values[j * dim + i, v] = fx * _score_factor(key, j, eps, xs[i], component)
        if need_df:
            _vector_gradient(key, df, xs, weights, fparams, grads)
            for i in range(dim):
                eps = noise[base + i]
                component = _component(theta, i)
                for j in range(n_params):
                    values[(n_params + j) * dim + i, v] = grads[i] * _path_factor(key, j, eps, xs[i], component)


@block_filler
def _vector_columns(key, f, df, noise, m, dim, theta, weights, fparams, need_f, need_df, keep, noise_t, x_t, rows,
                    values):  # fmt: skip
    """Fill the values of :func:`_vector_block` for a built-in ``f(x) = sum_i w_i h(x_i)``, component by component.

    The block's noise is transposed first (``noise_t[i, v]``), so every pass
    reads and writes contiguous rows: the draws of component ``i``, four at
    a time on :mod:`fastgrad._simd` vectors when the family's and ``h``'s
    cores allow it. Each draw's ``f`` is still summed over its components
    left to right, so the bits are those of the draw-by-draw loop.
    """
    n_params = _n_params(key)
    for v in range(m):
        for i in range(dim):
            noise_t[i, v] = noise[v * dim + i]
    for i in range(dim):
        component = _component(theta, i)
        for v in range(m):
            x_t[i, v] = _transform(key, noise_t[i, v], component)
    if need_f:  # rows[0]: f of each draw, summed over components left to right
        for i in range(dim):
            _column_values(key, f, fparams, x_t, i, weights[i], rows, 0, i > 0, m)
        for i in range(dim):
            for j in range(n_params):
                if keep[j * dim + i]:
                    _column_scores(key, j, noise_t, x_t, i, _component(theta, i), rows, 0, values, j * dim + i, m)
    if need_df:  # rows[1]: w_i h'(x_i) of component i
        for i in range(dim):
            _column_derivatives(key, df, fparams, x_t, i, weights[i], rows, 1, False, m)
            for j in range(n_params):
                r = (n_params + j) * dim + i
                if keep[r]:
                    _column_paths(key, j, noise_t, x_t, i, _component(theta, i), rows, 1, values, r, m)


def _column_values(key, f, fparams, x_t, i, w, rows, row, add, m):
    """``rows[row, v] (+)= w * h(x_t[i, v])``, a vector of draws at a time where the cores allow it."""
    _kernel_only("_column_values")


def _column_derivatives(key, df, fparams, x_t, i, w, rows, row, add, m):
    """``rows[row, v] (+)= w * h'(x_t[i, v])``."""
    _kernel_only("_column_derivatives")


def _column_scores(key, j, noise_t, x_t, i, component, rows, row, values, r, m):
    """``values[r, v] = rows[row, v] * score_factor_j(noise_t[i, v], x_t[i, v])``."""
    _kernel_only("_column_scores")


def _column_paths(key, j, noise_t, x_t, i, component, rows, row, values, r, m):
    """``values[r, v] = rows[row, v] * path_factor_j(noise_t[i, v], x_t[i, v])``."""
    _kernel_only("_column_paths")


def _terms_overload(core):
    """One loop of :func:`_vector_columns` over a component's draws: ``w * core(x)``, summed or stored."""

    def overload_terms(key, f, fparams, x_t, i, w, rows, row, add, m):
        simd = _simd_cores(key)

        def impl(key, f, fparams, x_t, i, w, rows, row, add, m):
            lo = 0
            if simd:
                lanes = _lanes(key)
                lo = m - m % lanes
                for v in range(0, lo, lanes):
                    term = w * core(key, f, _load(key, x_t[i], v), fparams)
                    if add:
                        _store(key, rows, row, v, _load(key, rows[row], v) + term)
                    else:
                        _store(key, rows, row, v, term)  # (a constant h', e.g. of x, is a number here)
            for v in range(lo, m):
                term = w * core(key, f, x_t[i, v], fparams)
                rows[row, v] = rows[row, v] + term if add else term

        return impl

    return overload_terms


def _products_overload(factor):
    """One loop of :func:`_vector_columns`: a row of values, ``rows[row] * factor_j``."""

    def overload_products(key, j, noise_t, x_t, i, component, rows, row, values, r, m):
        simd = _simd_cores(key)

        def impl(key, j, noise_t, x_t, i, component, rows, row, values, r, m):
            lo = 0
            if simd:
                lanes = _lanes(key)
                lo = m - m % lanes
                for v in range(0, lo, lanes):
                    eps, x = _load(key, noise_t[i], v), _load(key, x_t[i], v)
                    _store(key, values, r, v, _load(key, rows[row], v) * factor(key, j, eps, x, component))
            for v in range(lo, m):
                values[r, v] = rows[row, v] * factor(key, j, noise_t[i, v], x_t[i, v], component)

        return impl

    return overload_products


overload(_column_values)(_terms_overload(_value))
overload(_column_derivatives)(_terms_overload(_derivative))
overload(_column_scores)(_products_overload(_score_factor))
overload(_column_paths)(_products_overload(_path_factor))


# --- the general filler: any list of estimator specifications ------------------------
#
# The per-draw quantities every specification is built from are computed once
# per draw: f(x), the score factors s_j, f'(x) and the path factors p_j; at the
# mirrored draw -eps when one is antithetic; and the weak-derivative sides when
# one is measure-valued. Each specification then turns them into one value per
# parameter:
#
#   score (+ coefficients)  f s_j - sum_k B_jk s_k  (B = 0, diag(b) or the control-variate
#                           matrix; antithetic: the mean of this at eps and at -eps)
#   pathwise                f' p_j (antithetic: mean at eps and -eps)
#   loo (groups of K)       (K sum f s_j - sum f sum s_j) / (K (K - 1)) per group:
#                           the within-group sample covariance of f and s_j
#   measure-valued          c_j (f(x+) - f(x-)), the two sides of the weak derivative
#   control (pilot only)    s_j
#
# Moments are taken over units of ``group`` draws: a unit's value is the mean of
# its draws' values (a loo group's value is its covariance).

# Rows of the per-draw quantities ``q``: f, f at the mirror, f', f' at the mirror, x, the mirror of x,
# then per parameter (P rows each) the score factors, mirrored score factors, path factors, mirrored path
# factors, and the coupled and decoupled measure-valued values.
Q_F, Q_FB, Q_DF, Q_DFB, Q_X, Q_XB = 0, 1, 2, 3, 4, 5


@register_jitable
def _q_rows(n_params):
    """First row of each per-parameter group of ``q``; the total is ``6 + 6 P``."""
    return 6, 6 + n_params, 6 + 2 * n_params, 6 + 3 * n_params, 6 + 4 * n_params, 6 + 5 * n_params


@register_jitable
def _weak_values(key, f, j, theta, fparams, eps, x, u1, u2, u3, eps2):
    """One draw's (or a vector of draws') measure-valued values of parameter ``j``: (coupled, decoupled)."""
    c, x_plus, x_coupled, x_decoupled = _weak_points(key, j, eps, x, u1, u2, u3, eps2, theta)
    f_plus = _value(key, f, x_plus, fparams)
    return c * (f_plus - _value(key, f, x_coupled, fparams)), c * (f_plus - _value(key, f, x_decoupled, fparams))


@register_jitable
def _weak_lanes(key, f, j, theta, fparams, noise, x, uniforms, aux_noise, i):
    """:func:`_weak_values` of draws ``i .. i + lanes - 1``, on vectors."""
    return _weak_values(key, f, j, theta, fparams, _load(key, noise, i), _load(key, x, i), _load(key, uniforms[0], i),
                        _load(key, uniforms[1], i), _load(key, uniforms[2], i), _load(key, aux_noise, i))  # fmt: skip


@register_jitable
def _weak_one(key, f, j, theta, fparams, noise, x, uniforms, aux_noise, i):
    """:func:`_weak_values` of draw ``i``."""
    return _weak_values(key, f, j, theta, fparams, noise[i], x[i], uniforms[0, i], uniforms[1, i], uniforms[2, i],
                        aux_noise[i])  # fmt: skip


def _weak_rows(key, f, j, theta, fparams, noise, x, uniforms, aux_noise, coupled, decoupled, q, row, row_decoupled, m):
    """Fill rows ``row`` (coupled) and ``row_decoupled`` of ``q`` with parameter ``j``'s measure-valued values.

    A vector of draws at a time (:func:`_lanes`) when the family's
    weak derivative and the function are lane-generic (the Normal's
    Rayleigh and Maxwell sides: ``fastgrad.math.log`` and a square root per
    draw), with the same operations, and so the same bits, as one at a time.
    Both sides are computed whichever are kept: one loop per side pair (three
    loops, each computing only its sides) measured the same draws/s for
    ``measure-valued`` alone (115-119 against 112-119 M/s, 3 interleaved
    runs) and took 1 s longer to compile (9.1-9.9 against 8.1-8.9 s).
    """
    _kernel_only("_weak_rows")


@overload(_weak_rows)
def _ol_weak_rows(key, f, j, theta, fparams, noise, x, uniforms, aux_noise, coupled, decoupled, q, row, row_decoupled,
                  m):  # fmt: skip
    if not _simd_cores(key) or FAMILIES[key.family].weak_derivative is None:

        def one_at_a_time(key, f, j, theta, fparams, noise, x, uniforms, aux_noise, coupled, decoupled, q, row,
                          row_decoupled, m):  # fmt: skip
            for i in range(m):
                c, d = _weak_one(key, f, j, theta, fparams, noise, x, uniforms, aux_noise, i)
                if coupled:
                    q[row, i] = c
                if decoupled:
                    q[row_decoupled, i] = d

        return one_at_a_time

    def vectors(key, f, j, theta, fparams, noise, x, uniforms, aux_noise, coupled, decoupled, q, row, row_decoupled,
                m):  # fmt: skip
        # (no scalar tail: the buffers are padded to a multiple of PAD, and lanes past m, computed from
        # whatever the buffers hold there, are written past m, where nothing reads them)
        lanes = _lanes(key)
        for i in range(0, m, lanes):
            c, d = _weak_lanes(key, f, j, theta, fparams, noise, x, uniforms, aux_noise, i)
            if coupled:
                _store(key, q, row, i, c)
            if decoupled:
                _store(key, q, row_decoupled, i, d)

    return vectors


@register_jitable
def _weak_uniforms(key, aux_words, uniforms, aux_noise, m, decoupled):
    """Turn the block's auxiliary words into the weak derivative's three uniforms a draw (rows of ``uniforms``).

    One loop, the three words of a draw side by side: LLVM loads them as
    vectors and shuffles them apart. Three strided loops (gathers on
    AVX-512) cost the Normal's measure-valued run 1.7 ns a draw more (11.2
    against 12.9 ns, one thread, Zen 4), and so did a loop that skipped the
    second word (gathers again: 3.33 against 2.30 ns a draw for the loop
    alone). The second uniform and the normals serve only decoupled sides
    (every family's): without them the second word is read but its row
    holds ``u = 1`` (``one + 0.0 * u`` is ``one``, which keeps the read),
    no logarithm is taken of it, and the normals are 0.
    """
    if decoupled:
        for i in range(m):
            uniforms[0, i] = _weak_input(key, aux_words[3 * i])
            uniforms[1, i] = _weak_input(key, aux_words[3 * i + 1])
            uniforms[2, i] = _weak_input(key, aux_words[3 * i + 2])
        return
    one = _weak_input(key, np.uint64(0xFFFFFFFFFFFFFFFF))  # u = 1
    for i in range(m):
        uniforms[0, i] = _weak_input(key, aux_words[3 * i])
        uniforms[1, i] = one + 0.0 * unit_open_closed(aux_words[3 * i + 1])
        uniforms[2, i] = _weak_input(key, aux_words[3 * i + 2])
    for i in range(m):
        aux_noise[i] = 0.0


@register_jitable
def _weak_block(key, f, aux, aux_normal, words, noise, scratch, aux_words, uniforms, aux_noise, x, m, theta, fparams,
                decoupled, keep, values):  # fmt: skip
    """Fill the plain-weak filler's measure-valued rows: ``2 P + j`` coupled, ``3 P + j`` decoupled (kept ones).

    The general filler's draws (the same auxiliary words and normals of the
    same streams) and operations (:func:`_weak_rows`), written straight to
    the value rows.
    """
    n_params = _n_params(key)
    take_words(aux, aux_words, 3 * m)
    if decoupled:
        _sample_noise(key, aux_normal, words, aux_noise, scratch, m, theta)
    _weak_uniforms(key, aux_words, uniforms, aux_noise, m, decoupled)
    for i in range(m):
        x[i] = _transform(key, noise[i], theta)
    for j in range(n_params):
        coupled, independent = keep[2 * n_params + j], keep[3 * n_params + j]
        if coupled or independent:
            _weak_rows(key, f, j, theta, fparams, noise, x, uniforms, aux_noise, coupled, independent, values,
                       2 * n_params + j, 3 * n_params + j, m)  # fmt: skip


def _general_noise(key, state, aux, aux_normal, words, noise, scratch, aux_words, aux_noise, m, theta, flags):
    """Draw the noise of ``m`` draws of the general filler (and the weak derivative's words and normals)."""
    _kernel_only("_general_noise")


@overload(_general_noise, inline="always")
def _ol_general_noise(key, state, aux, aux_normal, words, noise, scratch, aux_words, aux_noise, m, theta, flags):
    def draw(key, state, aux, aux_normal, words, noise, scratch, aux_words, aux_noise, m, theta, flags):
        _sample_noise(key, state, words, noise, scratch, m, theta)
        if flags[F_WEAK]:
            take_words(aux, aux_words, 3 * m)
            if flags[F_WEAK_DECOUPLED]:
                _sample_noise(key, aux_normal, words, aux_noise, scratch, m, theta)

    return draw


@block_filler
def _general_block(
    key, f, df, draw, state, aux, aux_normal, words, noise, scratch, aux_words, aux_noise, m_units, group, theta,
    fparams, kinds, mirror, coupled, coef, has_coef, flags, active, values, q, tmp, uniforms,
):  # fmt: skip
    """Fill columns ``[0, m_units)`` of the value rows (row ``s * P + j``: specification ``s``, parameter ``j``).

    With ``draw``, from new noise (and the weak derivative's words and
    normals); without, from what ``noise``, ``aux_words`` and ``aux_noise``
    hold (an optimisation's blocks, drawn ahead). Two passes over the block,
    so that each inner loop does one thing and LLVM can vectorise it: first
    the per-draw quantities into the rows of ``q`` (see :func:`_q_rows`),
    then each specification's values from them. Only the parameters in
    ``active`` (the run's ``wrt``) get values; every score factor is
    computed, since a control variate uses all of them.
    """
    n_params = _n_params(key)
    m = m_units * group
    if draw:  # (_general_noise written out: called here, a new general kernel compiled in 8.1 s, not 7.5)
        _sample_noise(key, state, words, noise, scratch, m, theta)
        if flags[F_WEAK]:
            take_words(aux, aux_words, 3 * m)
            if flags[F_WEAK_DECOUPLED]:
                _sample_noise(key, aux_normal, words, aux_noise, scratch, m, theta)
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
        _weak_uniforms(key, aux_words, uniforms, aux_noise, m, flags[F_WEAK_DECOUPLED] != 0)
        for j in active:
            _weak_rows(key, f, j, theta, fparams, noise, q[Q_X], uniforms, aux_noise, flags[F_WEAK_COUPLED] != 0,
                       flags[F_WEAK_DECOUPLED] != 0, q, w0 + j, wd0 + j, m)  # fmt: skip
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


# --- the vector-general filler: any list of specifications, D components ---------------
#
# The general filler's specifications for a family of ``D > 1`` independent
# components (or a weighted or user function of a vector), one draw at a
# time: the draw's components, f of the whole draw and its gradient, every
# component's score and path factors, the mirrored draw -eps (all components
# at once) and, per component, the two sides of the weak derivative with the
# other components held fixed. Row ``(s * P + j) * D + i`` is specification
# ``s``, parameter ``j``, component ``i``; a score row's coefficients act on
# the score vector of all ``P * D`` (parameter, component) pairs in the same
# order ``r = j * D + i``: ``has_coef[s]`` is 1 for one coefficient per row
# (a baseline, ``coef[s, r, 0]``) and 2 for the control variate's matrix
# (``coef[s, r, :]``). At ``D = 1`` every value is the general filler's,
# operation for operation.


#: Row of a draw's quantities ``q`` that holds what a vector draw's weak-derivative sides share
#: (``Joint.weak_prepare``: the MultivariateNormal's ``w = L^-T eps``); rows 0-7 are described at
#: :func:`_vector_general_block`.
Q_PREPARED = 8


def _replaced_difference(key, f, xs, i, y, z, weights, fparams, tmp):
    """``f(xs with x_i = y) - f(xs with x_i = z)``."""
    _kernel_only("_replaced_difference")


@overload(_replaced_difference, inline="always")
def _ol_replaced_difference(key, f, xs, i, y, z, weights, fparams, tmp):
    if key.function == USER:

        def user(key, f, xs, i, y, z, weights, fparams, tmp):
            tmp[:] = xs
            tmp[i] = y
            high = np.float64(f(tmp))
            tmp[i] = z
            return high - np.float64(f(tmp))

        return user

    def separable(key, f, xs, i, y, z, weights, fparams, tmp):  # the other components' terms cancel exactly
        return weights[i] * (_value(key, f, y, fparams) - _value(key, f, z, fparams))

    return separable


# --- one draw of a multivariate family: D independent components, or a joint law --------------
#
# The vector-general filler reads one draw at a time through these. For a family of D
# independent components (DiagNormal) they run the scalar cores per component; for a family
# with a joint law (``Family.joint``: Beta, Dirichlet) they call its whole-draw cores, which
# see all W noise numbers of the draw at once.


def _width(key, dim):
    """Noise numbers per draw: ``dim``, or the joint family's ``a * dim + b``."""
    _kernel_only("_width")


def _draw_size(key, dim):
    """Components of a draw (the argument of ``f``): ``dim``, or the joint family's."""
    _kernel_only("_draw_size")


def _draw_noise(key, state, words, noise, scratch, draws, dim, theta):
    """Fill the noise of ``draws`` draws."""
    _kernel_only("_draw_noise")


def _draw(key, noise, base, theta, dim, xs):
    """Write the draw whose noise starts at ``noise[base]`` into ``xs``."""
    _kernel_only("_draw")


def _draw_value(key, f, xs, weights, fparams):
    """``f`` of the draw."""
    _kernel_only("_draw_value")


def _draw_gradient(key, df, xs, weights, fparams, out):
    """Write the gradient of ``f`` at the draw into ``out``."""
    _kernel_only("_draw_gradient")


def _draw_scores(key, noise, base, xs, theta, dim, q):
    """``q[0, j * dim + i]``: the score of parameter ``j``, component ``i``."""
    _kernel_only("_draw_scores")


def _draw_paths(key, noise, base, xs, grads, theta, dim, active, q):
    """``q[2, r]``: per (parameter, component) ``r``, what :func:`_path_value` makes the pathwise value of."""
    _kernel_only("_draw_paths")


def _path_value(key, grads, i, q, r):
    """Return the pathwise value of ``r = j * dim + i``: ``grads[i] * q[2, r]``, or the joint family's ``q[2, r]``."""
    _kernel_only("_path_value")


def _mirrored_path_value(key, gradb, i, q, r):
    """Return the antithetic draw's pathwise value of ``r``: ``gradb[i] * q[3, r]``, or a joint family's ``q[3, r]``."""
    _kernel_only("_mirrored_path_value")


def _n_pairs(key, dim):
    """(Parameter, component) pairs ``R``: ``P * dim``, or the sum of the joint family's parameter sizes."""
    _kernel_only("_n_pairs")


def _offset(key, j, dim):
    """Position of parameter ``j``'s first component among the ``R`` pairs: ``j * dim``, or the joint family's."""
    _kernel_only("_offset")


def _size(key, j, dim):
    """Components of parameter ``j``: ``dim``, or the joint family's."""
    _kernel_only("_size")


def _weak_noise(key, state, words, noise, scratch, m, theta):
    """Draw the decoupled negative sides' noise: the family's own, from the second auxiliary stream (none: joint)."""
    _kernel_only("_weak_noise")


def _draw_weak(key, f, noise, base, xs, aux_words, aux_noise, theta, dim, active, flags, weights, fparams, tmpx, q):
    """``q[4, r]`` and ``q[5, r]``: the coupled and decoupled measure-valued values of every active ``r``."""
    _kernel_only("_draw_weak")


def _draw_mirrored(key, f, df, noise, base, theta, dim, active, flags, weights, fparams, xb, gradb, q):
    """Return ``f`` of the antithetic draw (noise ``-eps``); its factors go into ``q[1]`` and ``q[3]``."""
    _kernel_only("_draw_mirrored")


def _joint(key):
    return FAMILIES[key.family].joint


@overload(_draw_mirrored, inline="always")
def _ol_draw_mirrored(key, f, df, noise, base, theta, dim, active, flags, weights, fparams, xb, gradb, q):
    if not FAMILIES[key.family].symmetric:  # (never called: antithetic pairs are refused; nothing to compile)
        return lambda key, f, df, noise, base, theta, dim, active, flags, weights, fparams, xb, gradb, q: 0.0
    joint = _joint(key)
    if joint is not None:
        mirror_draw, mirror_factors = joint.mirrored

        def whole(key, f, df, noise, base, theta, dim, active, flags, weights, fparams, xb, gradb, q):
            fb = 0.0
            mirror_draw(noise, base, theta, xb)
            if flags[F_F]:
                fb = _draw_value(key, f, xb, weights, fparams)
            if flags[F_DF]:
                _draw_gradient(key, df, xb, weights, fparams, gradb)
            mirror_factors(noise, base, xb, gradb, theta, active, dim, flags[F_F] != 0, flags[F_DF] != 0, q)
            return fb

        return whole

    def components(key, f, df, noise, base, theta, dim, active, flags, weights, fparams, xb, gradb, q):
        fb = 0.0
        for i in range(dim):
            xb[i] = _transform(key, -noise[base + i], _component(theta, i))
        if flags[F_F]:
            fb = _vector_value(key, f, xb, weights, fparams)
            for i in range(dim):
                component = _component(theta, i)
                for j in range(_n_params(key)):
                    q[1, j * dim + i] = _score_factor(key, j, -noise[base + i], xb[i], component)
        if flags[F_DF]:
            _vector_gradient(key, df, xb, weights, fparams, gradb)
            for i in range(dim):
                component = _component(theta, i)
                for j in active:
                    q[3, j * dim + i] = _path_factor(key, j, -noise[base + i], xb[i], component)
        return fb

    return components


@overload(_weak_noise, inline="always")
def _ol_weak_noise(key, state, words, noise, scratch, m, theta):
    if _joint(key) is None:
        return lambda key, state, words, noise, scratch, m, theta: _sample_noise(key, state, words, noise, scratch, m,
                                                                                 theta)  # fmt: skip
    return lambda key, state, words, noise, scratch, m, theta: None  # (a joint family's sides come from uniforms)


@overload(_draw_weak, inline="always")
def _ol_draw_weak(key, f, noise, base, xs, aux_words, aux_noise, theta, dim, active, flags, weights, fparams, tmpx, q):
    joint = _joint(key)
    if joint is None:

        def components(key, f, noise, base, xs, aux_words, aux_noise, theta, dim, active, flags, weights, fparams,
                       tmpx, q):  # fmt: skip
            for i in range(dim):
                component = _component(theta, i)
                a = 3 * (base + i)
                u1 = _weak_input(key, aux_words[a])
                u2 = _weak_input(key, aux_words[a + 1])
                u3 = _weak_input(key, aux_words[a + 2])
                eps2 = aux_noise[base + i] if flags[F_WEAK_DECOUPLED] else 0.0
                for j in active:
                    c, x_plus, x_coupled, x_decoupled = _weak_points(key, j, noise[base + i], xs[i], u1, u2, u3, eps2,
                                                                     component)  # fmt: skip
                    if flags[F_WEAK_COUPLED]:
                        q[4, j * dim + i] = c * _replaced_difference(key, f, xs, i, x_plus, x_coupled, weights,
                                                                     fparams, tmpx)  # fmt: skip
                    if flags[F_WEAK_DECOUPLED]:
                        q[5, j * dim + i] = c * _replaced_difference(key, f, xs, i, x_plus, x_decoupled, weights,
                                                                     fparams, tmpx)  # fmt: skip

        return components
    points = joint.weak
    if points is None:  # (never called: measure-valued specifications are refused without a weak derivative)

        def none(key, f, noise, base, xs, aux_words, aux_noise, theta, dim, active, flags, weights, fparams, tmpx, q):
            pass

        return none
    prepare = joint.weak_prepare
    if prepare is not None:

        def replaced(key, f, noise, base, xs, aux_words, aux_noise, theta, dim, active, flags, weights, fparams,
                     tmpx, q):  # fmt: skip
            # a vector draw (MultivariateNormal): the sides are the draw with component i replaced; three
            # uniforms per component, as for D independent components
            prepared = q[Q_PREPARED]
            prepare(noise, base, xs, theta, prepared)
            for j in active:
                first = _offset(key, j, dim)
                for i in range(_size(key, j, dim)):
                    a = 3 * (base + i)
                    u1 = _weak_input(key, aux_words[a])
                    u2 = _weak_input(key, aux_words[a + 1])
                    u3 = _weak_input(key, aux_words[a + 2])
                    c, y_plus, y_coupled, y_decoupled = points(j, i, noise, base, xs, u1, u2, u3, theta, prepared)
                    if flags[F_WEAK_COUPLED]:
                        q[4, first + i] = c * _replaced_difference(key, f, xs, i, y_plus, y_coupled, weights,
                                                                   fparams, tmpx)  # fmt: skip
                    if flags[F_WEAK_DECOUPLED]:
                        q[5, first + i] = c * _replaced_difference(key, f, xs, i, y_plus, y_decoupled, weights,
                                                                   fparams, tmpx)  # fmt: skip

        return replaced

    def whole(key, f, noise, base, xs, aux_words, aux_noise, theta, dim, active, flags, weights, fparams, tmpx, q):
        # a scalar draw (Categorical): the sides are numbers; three uniforms per draw
        a = 3 * base
        u1 = _weak_input(key, aux_words[a])
        u2 = _weak_input(key, aux_words[a + 1])
        u3 = _weak_input(key, aux_words[a + 2])
        for j in active:
            for i in range(dim):
                c, x_plus, x_coupled, x_decoupled = points(j, i, noise, base, xs, u1, u2, u3, theta)
                high = _value(key, f, x_plus, fparams)
                if flags[F_WEAK_COUPLED]:
                    q[4, j * dim + i] = c * (high - _value(key, f, x_coupled, fparams))
                if flags[F_WEAK_DECOUPLED]:
                    q[5, j * dim + i] = c * (high - _value(key, f, x_decoupled, fparams))

    return whole


def _affine(pair):
    a, b = pair
    return lambda key, dim: a * dim + b


@overload(_width, inline="always")
def _ol_width(key, dim):
    joint = _joint(key)
    return (lambda key, dim: dim) if joint is None else _affine(joint.width)


@overload(_draw_size, inline="always")
def _ol_draw_size(key, dim):
    joint = _joint(key)
    return (lambda key, dim: dim) if joint is None else _affine(joint.draw_size)


@overload(_draw_noise, inline="always")
def _ol_draw_noise(key, state, words, noise, scratch, draws, dim, theta):
    joint = _joint(key)
    if joint is None:
        return lambda key, state, words, noise, scratch, draws, dim, theta: _sample_noise(
            key, state, words, noise, scratch, draws * dim, theta)  # fmt: skip
    sample = joint.sample
    return lambda key, state, words, noise, scratch, draws, dim, theta: sample(state, noise, draws, theta)


@overload(_draw, inline="always")
def _ol_draw(key, noise, base, theta, dim, xs):
    joint = _joint(key)
    if joint is None:

        def components(key, noise, base, theta, dim, xs):
            for i in range(dim):
                xs[i] = _transform(key, noise[base + i], _component(theta, i))

        return components
    impl = joint.draw
    return lambda key, noise, base, theta, dim, xs: impl(noise, base, theta, xs)


@overload(_draw_value, inline="always")
def _ol_draw_value(key, f, xs, weights, fparams):
    joint = _joint(key)
    if joint is not None and joint.draw_size == (0, 1):  # a scalar draw: f of a number
        return lambda key, f, xs, weights, fparams: _value(key, f, xs[0], fparams)
    return lambda key, f, xs, weights, fparams: _vector_value(key, f, xs, weights, fparams)


@overload(_draw_gradient, inline="always")
def _ol_draw_gradient(key, df, xs, weights, fparams, out):
    joint = _joint(key)
    if joint is not None and joint.draw_size == (0, 1):

        def scalar(key, df, xs, weights, fparams, out):
            out[0] = _derivative(key, df, xs[0], fparams)

        return scalar
    return lambda key, df, xs, weights, fparams, out: _vector_gradient(key, df, xs, weights, fparams, out)


@overload(_draw_scores, inline="always")
def _ol_draw_scores(key, noise, base, xs, theta, dim, q):
    joint = _joint(key)
    if joint is None:

        def components(key, noise, base, xs, theta, dim, q):
            for i in range(dim):
                component = _component(theta, i)
                for j in range(_n_params(key)):
                    q[0, j * dim + i] = _score_factor(key, j, noise[base + i], xs[i], component)

        return components
    impl = joint.scores
    return lambda key, noise, base, xs, theta, dim, q: impl(noise, base, xs, theta, q, 0)


@overload(_draw_paths, inline="always")
def _ol_draw_paths(key, noise, base, xs, grads, theta, dim, active, q):
    joint = _joint(key)
    if joint is None:

        def components(key, noise, base, xs, grads, theta, dim, active, q):
            for i in range(dim):
                component = _component(theta, i)
                for j in active:
                    q[2, j * dim + i] = _path_factor(key, j, noise[base + i], xs[i], component)

        return components
    impl = joint.paths
    return lambda key, noise, base, xs, grads, theta, dim, active, q: impl(noise, base, xs, grads, theta, active, dim,
                                                                            q, 2)  # fmt: skip


@overload(_path_value, inline="always")
def _ol_path_value(key, grads, i, q, r):
    if _joint(key) is None:
        return lambda key, grads, i, q, r: grads[i] * q[2, r]
    return lambda key, grads, i, q, r: q[2, r]


@overload(_mirrored_path_value, inline="always")
def _ol_mirrored_path_value(key, gradb, i, q, r):
    if _joint(key) is None:
        return lambda key, gradb, i, q, r: gradb[i] * q[3, r]
    return lambda key, gradb, i, q, r: q[3, r]


def _sizes_of(key):
    """Return the joint family's ``sizes(j, dim)`` core, or None where every parameter has ``dim`` components."""
    joint = _joint(key)
    return None if joint is None else joint.sizes


@overload(_n_pairs, inline="always")
def _ol_n_pairs(key, dim):
    return lambda key, dim: _offset(key, _n_params(key), dim)  # (the offset after the last parameter)


@overload(_offset, inline="always")
def _ol_offset(key, j, dim):
    sizes = _sizes_of(key)
    if sizes is None:
        return lambda key, j, dim: j * dim

    def summed(key, j, dim):
        total = 0
        for k in range(j):
            total += sizes(k, dim)
        return total

    return summed


@overload(_size, inline="always")
def _ol_size(key, j, dim):
    sizes = _sizes_of(key)
    if sizes is None:
        return lambda key, j, dim: dim
    return lambda key, j, dim: sizes(j, dim)


@block_filler
def _vector_general_block(
    key, f, df, draw, state, aux, aux_normal, words, noise, scratch, aux_words, aux_noise, m_units, group, dim, theta,
    weights, fparams, kinds, mirror, coupled, coef, has_coef, flags, active, values, xs, xb, tmpx, grads, gradb, q,
):  # fmt: skip
    """Fill columns ``[0, m_units)`` of the value rows, one draw of ``dim`` components at a time.

    With ``draw``, from new noise; without, from what ``noise``,
    ``aux_words`` and ``aux_noise`` hold (an optimisation's blocks, drawn
    ahead by :func:`_draw_vector_block`).

    ``q`` holds one draw's per-(parameter, component) quantities, a row each:
    score factors, mirrored score factors, path factors, mirrored path
    factors, coupled and decoupled weak-derivative values, and the
    leave-one-out group sums of ``s`` and ``f s``; row ``Q_PREPARED``, a
    joint family's weak-derivative preparation.
    """
    n_pairs = _n_pairs(key, dim)
    draws = m_units * group
    width = _width(key, dim)
    if draw:
        _draw_noise(key, state, words, noise, scratch, draws, dim, theta)
        if flags[F_WEAK]:
            take_words(aux, aux_words, 3 * draws * width)
            if flags[F_WEAK_DECOUPLED]:
                _weak_noise(key, aux_normal, words, aux_noise, scratch, draws * width, theta)
    scale = 1.0 / group
    pairs = 1.0 / (group * (group - 1.0)) if group > 1 else 0.0
    n_specs = kinds.size
    for u in range(m_units):
        for s in range(n_specs):
            for r in range(n_pairs):
                values[s * n_pairs + r, u] = 0.0
        sum_f = 0.0
        if flags[F_LOO]:
            for r in range(n_pairs):
                q[6, r] = 0.0
                q[7, r] = 0.0
        for g in range(group):
            base = (u * group + g) * width
            _draw(key, noise, base, theta, dim, xs)
            fx = fb = 0.0
            if flags[F_F]:
                fx = _draw_value(key, f, xs, weights, fparams)
            if flags[F_SCORE]:
                _draw_scores(key, noise, base, xs, theta, dim, q)
            if flags[F_DF]:
                _draw_gradient(key, df, xs, weights, fparams, grads)
                _draw_paths(key, noise, base, xs, grads, theta, dim, active, q)
            if flags[F_MIRROR]:
                fb = _draw_mirrored(key, f, df, noise, base, theta, dim, active, flags, weights, fparams, xb, gradb, q)
            if flags[F_WEAK]:
                _draw_weak(key, f, noise, base, xs, aux_words, aux_noise, theta, dim, active, flags, weights, fparams,
                           tmpx, q)  # fmt: skip
            if flags[F_LOO]:
                sum_f += fx
                for r in range(n_pairs):
                    q[6, r] += q[0, r]
                    q[7, r] += fx * q[0, r]
            for s in range(n_specs):
                kind = kinds[s]
                if kind == LOO:
                    continue
                for j in active:
                    first = _offset(key, j, dim)
                    for i in range(_size(key, j, dim)):
                        r = first + i
                        if kind == SCORE:
                            v = fx * q[0, r]
                            if has_coef[s] == 1:
                                v -= coef[s, r, 0] * q[0, r]
                            elif has_coef[s] == 2:
                                for k in range(n_pairs):
                                    v -= coef[s, r, k] * q[0, k]
                            if mirror[s]:
                                w = fb * q[1, r]
                                if has_coef[s] == 1:
                                    w -= coef[s, r, 0] * q[1, r]
                                elif has_coef[s] == 2:
                                    for k in range(n_pairs):
                                        w -= coef[s, r, k] * q[1, k]
                                v = 0.5 * (v + w)
                        elif kind == PATHWISE:
                            v = _path_value(key, grads, i, q, r)
                            if mirror[s]:
                                v = 0.5 * (v + _mirrored_path_value(key, gradb, i, q, r))
                        elif kind == MEASURE_VALUED:
                            v = q[4, r] if coupled[s] else q[5, r]
                        else:  # CONTROL
                            v = q[0, r]
                        values[s * n_pairs + r, u] += v
        for s in range(n_specs):
            for j in active:
                first = _offset(key, j, dim)
                for i in range(_size(key, j, dim)):
                    r = first + i
                    if kinds[s] == LOO:
                        values[s * n_pairs + r, u] = (group * q[7, r] - sum_f * q[6, r]) * pairs
                    elif group > 1:
                        values[s * n_pairs + r, u] *= scale


# --- variance curves: many short estimates over the same streams ----------------
#
# A curve runs ``repeats`` independent estimates of ``n_k`` units for each
# sample size ``n_k``. They are laid end to end on the units of one run:
# size ``k`` covers units ``[offsets[k], offsets[k+1])`` with
# ``offsets[k+1] = offsets[k] + repeats * n_k``, and its repeat ``r`` the
# ``n_k`` units from ``offsets[k] + r * n_k``. Chunks, streams and blocks are
# those of ``compare``, so the curve is reproducible on any number of
# threads. A repeat may straddle chunks: each chunk sums the part of every
# repeat it holds (a *piece*) into its own slots, and the pieces are added
# in order afterwards.


@register_jitable
def _repeat_at(offsets, sizes, repeats, position):
    """(global repeat index, first unit after that repeat) of the repeat holding unit ``position``."""
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
def curve_pieces(offsets, sizes, repeats, n_units, first_chunk, n_chunks, first_piece, chunk_size):
    """Fill ``first_piece[b]`` with the slot of chunk ``first_chunk + b``'s first piece; return the total."""
    total = 0
    for b in range(n_chunks):
        start = (first_chunk + b) * chunk_size
        stop = min(n_units, start + chunk_size)
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


# One compiled function per key: built-ins cached on disk, user functions in an
# uncached twin (see the module docstring).
_cached_kernel = serial(_moment_chunks)
_uncached_kernel = numba.njit(**UNCACHED)(_moment_chunks)
_cached_curve = serial(_curve_chunks)
_uncached_curve = numba.njit(**UNCACHED)(_curve_chunks)
_cached_other = serial(_sum_chunks)  # (the sum sink: the normals-only kernel)
_uncached_other = numba.njit(**UNCACHED)(_sum_chunks)
_cached_optimize = serial(_optimize_chunks)
_uncached_optimize = numba.njit(**UNCACHED)(_optimize_chunks)
_cached_optimize_plain = serial(_optimize_plain_chunks)
_uncached_optimize_plain = numba.njit(**UNCACHED)(_optimize_plain_chunks)
_cached_optimize_vector = serial(_optimize_vector_chunks)
_uncached_optimize_vector = numba.njit(**UNCACHED)(_optimize_vector_chunks)


# --- the Python side: one kernel, any run ----------------------------------------------


class Kernel:
    """A compiled kernel with its key and run-time arguments, ready to run chunk ranges."""

    def __init__(self, family, function, filler, sink, run):
        builtin = function.builtin is not None
        if builtin:
            name = function.builtin.name
        elif filler in ("plain", "plain-weak", "general") and FAMILIES[family].simd and runs_on_lanes(function):
            name = USER_LANES
        else:
            name = USER
        self.key = KernelKey(family, name, filler, sink)
        if sink == "moments":
            self.dispatcher = _cached_kernel if builtin else _uncached_kernel
        elif sink == "curve":
            self.dispatcher = _cached_curve if builtin else _uncached_curve
        elif sink == "optimize" and filler == "vector-general":
            self.dispatcher = _cached_optimize_vector if builtin else _uncached_optimize_vector
        elif sink == "optimize":
            self.dispatcher = _cached_optimize if builtin else _uncached_optimize
        elif sink == "optimize-plain":
            self.dispatcher = _cached_optimize_plain if builtin else _uncached_optimize_plain
        else:
            self.dispatcher = _cached_other if builtin else _uncached_other
        self.f = None if builtin else function.f
        self.df = None if builtin else function.df
        self.run = run
        self.user = None if builtin else function.name
        report_uncached()

    def n_chunks(self):
        return math.ceil(int(self.run.n_units) / int(self.run.per_chunk))

    def __call__(self, first_chunk, sink, out, count):
        """Run chunks ``[first_chunk, first_chunk + count)`` on the threads, writing ``out``."""
        run = self.run._replace(first_chunk=np.int64(first_chunk))
        try:
            grain = OPTIMIZE_LANES if self.key.sink == "optimize-plain" else 1
            for_ranges(self.dispatcher, (self.key, self.f, self.df, run, sink, out), count, grain)
        except Exception as error:  # only a user's code raises inside a kernel
            if self.user is None:
                raise
            from fastgrad._jobs import UserFunctionError

            raise UserFunctionError(self.user, error) from error

    def warm_up(self, sink, out):
        """Compile (or load) the kernel, so that a clock started next sees only the run."""
        import warnings

        with warnings.catch_warnings():
            # Numba's own pedantic check on inlined loops ("variable ... is not in scope"): not the user's concern
            warnings.simplefilter("ignore", numba.core.errors.NumbaIRAssumptionWarning)
            self.dispatcher(self.key, self.f, self.df, self.run, sink, out, 0, 0)


def kernel_arguments(specs, n_params, coefficients, dim=1, vector=False, n_pairs=None):
    """Run-time arrays describing the specifications: kinds, mirror, coupled, coef, has_coef, flags.

    ``specs`` are :class:`~fastgrad.estimators.EstimatorSpec` (or ``"control"``,
    the pilot's score-factor rows); ``coefficients[s]`` is the ``(P, P)``
    matrix ``B`` of a score specification (None for none). For the
    ``vector-general`` filler (``vector``), it is a vector of ``R`` baselines
    (``has_coef`` 1) or the ``(R, R)`` control-variate matrix (``has_coef``
    2), ``R = n_pairs`` (``P * dim`` unless the family's parameters have
    sizes of their own).
    """
    n_pairs = n_params * dim if n_pairs is None else n_pairs
    n_specs = len(specs)
    kinds = np.empty(n_specs, np.int64)
    mirror = np.zeros(n_specs, np.int64)
    coupled = np.zeros(n_specs, np.int64)
    if vector:
        full = any(c is not None and np.ndim(c) == 2 for c in (coefficients or ()))
        coef = np.zeros((n_specs, n_pairs, n_pairs if full else 1))
    else:
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
            if coefficients is not None and coefficients[s] is not None:
                if not vector:
                    coef[s] = coefficients[s]
                    has_coef[s] = 1
                elif np.ndim(coefficients[s]) == 1:
                    coef[s, :, 0] = coefficients[s]
                    has_coef[s] = 1
                else:
                    coef[s] = coefficients[s]
                    has_coef[s] = 2
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


def make_run(theta, fparams, specs, n_params, coefficients, active, rows, *, seed, n_units, group=1, dim=1,
             weights=None, stream_base=0, vector=False, n_pairs=None):  # fmt: skip
    """Return the :class:`Run` of a run: its streams, units, parameters, specifications and kept rows.

    ``n_pairs`` is the family's (parameter, component) count where its
    parameters' sizes differ (else ``n_params * dim``): a block then holds as
    many units as ``n_pairs / n_params`` components each would.
    """
    kinds, mirror, coupled, coef, has_coef, flags = kernel_arguments(specs, n_params, coefficients, dim, vector,
                                                                     n_pairs)  # fmt: skip
    block_dim = dim if n_pairs is None else max(dim, -(-n_pairs // n_params))
    return Run(
        seed=np.uint64(seed),
        first_chunk=np.int64(0),
        stream_base=np.uint64(stream_base),
        n_units=np.int64(n_units),
        per_chunk=np.int64(units_per_chunk(dim, group)),
        per_block=np.int64(units_per_block(block_dim, group)),
        group=np.int64(group),
        dim=np.int64(dim),
        theta=theta,
        fparams=tuple(fparams),
        weights=np.ones(dim) if weights is None else np.ascontiguousarray(weights, dtype=np.float64),
        kinds=kinds,
        mirror=mirror,
        coupled=coupled,
        coef=coef,
        has_coef=has_coef,
        flags=flags,
        active=np.asarray(active, dtype=np.int64),
        rows=np.asarray(rows, dtype=np.int64),
    )


def moment_sink(layout):
    """Return the :class:`MomentSink` of a layout's pairs."""
    return MomentSink(np.asarray(layout.pair_x, np.int64), np.asarray(layout.pair_y, np.int64))


def record_batches(kernel, layout):
    """``batch(lo, hi)``: the moment records of chunks ``[lo, hi)``, one row each (compiled now)."""
    sink = moment_sink(layout)
    width = MomentTree(layout).width
    kernel.warm_up(sink, np.empty((0, width)))
    warm = MomentTree(layout)
    warm.push(0, np.zeros((1, width)))
    warm.fold()

    def batch(lo, hi):
        records = np.empty((hi - lo, width))
        kernel(lo, sink, records, hi - lo)
        return records

    return batch


def run_records(kernel, layout, job=None, max_chunks=None, extra=None):
    """Run a moment kernel over every chunk; return (record, seconds, extra values), or with a ``job`` its tree.

    Batches of at most ``max_chunks`` chunks (default :data:`BATCH_CHUNKS`;
    a job sizes its own, up to that) are merged into the chunk tree as they
    finish, so memory stays flat. ``extra(records)`` maps a batch's records
    to per-chunk values kept beside the tree (a job checkpoints and merges
    them): returned concatenated in chunk order, or by ``job.extra_values()``.
    """
    batch = record_batches(kernel, layout)
    if job is not None:
        tree, seconds = job.run(batch, layout, extra=extra, max_chunks=max_chunks)
        return tree, seconds, None
    per_batch = max_chunks or BATCH_CHUNKS
    tree = MomentTree(layout)
    n_chunks = kernel.n_chunks()
    extras = []
    started = time.perf_counter()
    for first in range(0, n_chunks, per_batch):
        records = batch(first, min(n_chunks, first + per_batch))
        if extra is not None:
            extras.append(extra(records))
        tree.push(first, records)
    return tree.fold(), time.perf_counter() - started, (np.concatenate(extras) if extras else None)


def curve_batches(kernel, sizes, repeats, n_rows, job=None):
    """Run a curve kernel over every chunk in batches; return (per-repeat sums, seconds, chunks done).

    ``sizes`` are in units. With a ``job`` (:class:`fastgrad._jobs.Job`: progress,
    stopping early, checkpoints), return the job's :class:`~fastgrad._jobs.Part`
    instead (sums in ``extra``).
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    offsets = np.zeros(sizes.size + 1, np.int64)
    offsets[1:] = np.cumsum(sizes * repeats)
    n = int(offsets[-1])
    per_chunk = int(kernel.run.per_chunk)
    # Compile (or load) everything before the clock starts.
    empty = np.empty(0, np.int64)
    kernel.warm_up(CurveSink(offsets, sizes, np.int64(repeats), empty, empty), np.empty((0, n_rows)))
    curve_pieces(offsets, sizes, repeats, n, 0, 0, np.empty(0, np.int64), per_chunk)
    curve_fold(np.empty((0, n_rows)), np.empty(0, np.int64), 0, np.empty((n_rows, 0)))
    totals = np.zeros((n_rows, sizes.size * repeats))
    n_chunks = math.ceil(n / per_chunk)
    pieces = per_chunk // int(sizes.min()) + 2  # most pieces one chunk holds
    per_batch = max(1, min(BATCH_CHUNKS, MAX_BATCH_PIECES // pieces, MAX_BATCH_VALUES // (pieces * n_rows)))

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
        kernel(first, CurveSink(offsets, sizes, np.int64(repeats), first_piece, owners), sums, count)
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


def normal_sum(n, seed):
    """Sum of the ``n`` standard normals a run with ``seed`` draws; return (sum, seconds).

    Same chunks, streams and blocks as the fused kernel, with the estimators
    and moments left out: the throughput bound the benchmarks compare
    ``compare`` with. Chunk sums are added in chunk order.
    """
    from fastgrad.functions import resolve

    run = make_run((0.0, 1.0, 1.0), (0.0,), (), 2, None, (), (), seed=seed, n_units=n)
    kernel = Kernel("normal", resolve("linear"), "noise", "sum", run)
    sink = MomentSink(np.empty(0, np.int64), np.empty(0, np.int64))
    kernel.warm_up(sink, np.empty(0))
    n_chunks = kernel.n_chunks()
    total = 0.0
    started = time.perf_counter()
    for first in range(0, n_chunks, BATCH_CHUNKS):
        sums = np.empty(min(BATCH_CHUNKS, n_chunks - first))
        kernel(first, sink, sums, len(sums))
        for value in sums:
            total += value
    return total, time.perf_counter() - started


#: The register loop of :func:`_in_registers` for :data:`OPTIMIZE_LANES` replicates, per vector width (a key's).
_IN_REGISTERS = {width: _registers_function(width) for width in (4, 8)}
