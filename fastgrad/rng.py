"""Random streams: counter-free, keyed xoshiro256++ lanes and an exact normal sampler.

Every random number fastgrad uses comes from a *stream* named by two 64-bit
integers, ``(seed, stream)``. A run of ``n`` draws is split into chunks of
:data:`CHUNK_SIZE` draws and chunk ``c`` reads stream ``(seed, c)``, whatever
thread runs it: that is what makes results identical on any number of threads.

Layout of one stream (version :data:`STREAM_LAYOUT_VERSION`):

* :data:`LANES` = 16 xoshiro256++ generators ("lanes") advance in lock step;
  the stream's word sequence interleaves them: word ``16 t + j`` is output
  ``t`` of lane ``j``. Sixteen independent lanes let the compiler generate
  words with SIMD instructions.
* one more xoshiro256++ generator, the *slow lane*, feeds only the rare slow
  path of the normal sampler (about 0.4 % of draws).
* each lane's 256-bit starting state is an invertible mixing of
  ``(seed, stream, lane, layout tag)``, so distinct inputs give distinct
  states and every state word depends on every input bit.
* normal ``i`` of a stream is the ziggurat applied to word ``i``: one word
  per normal, the fast path needs nothing else; a rejected candidate is
  finished with words from the slow lane, in order of ``i``.

``docs/random-streams.md`` argues independence with numbers (period, chunk
length, overlap odds) and gives the exact bit layout.

A stream's state is a ``uint64`` array of :data:`STATE_SIZE` words, made by
:func:`stream_state`. The ``fill_*`` and ``next_*`` functions advance it in
place, from Python or from your own ``@njit`` code; any mix of calls and
sizes reads the same sequence::

    import numpy as np
    from fastgrad import rng

    state = rng.stream_state(seed=7, stream=0)
    z = np.empty(1000)
    rng.fill_normals(state, z)           # normals 0..999 of stream (7, 0)
    rng.standard_normals(7, 0, 1000)     # the same numbers, in one call
"""

import math

import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import overload

from fastgrad import math as fm
from fastgrad._jit import core, inline_core, serial
from fastgrad._simd import ZIGGURAT_LANES, gathers_pay, xoshiro_steps, ziggurat_pass8
from fastgrad._ziggurat_tables import F as _F
from fastgrad._ziggurat_tables import K as _K
from fastgrad._ziggurat_tables import N as _N
from fastgrad._ziggurat_tables import R as _R
from fastgrad._ziggurat_tables import W as _W
from fastgrad._ziggurat_tables import Z as _Z

__all__ = [
    "CHUNK_SIZE",
    "LANES",
    "STATE_SIZE",
    "STREAM_LAYOUT_VERSION",
    "fill_gammas",
    "fill_normals",
    "fill_poissons",
    "fill_uniforms",
    "fill_words",
    "next_uniform",
    "next_word",
    "normals_from_words",
    "poisson",
    "poisson_log_pmf",
    "poissons",
    "random_words",
    "standard_gamma",
    "standard_gammas",
    "standard_normal",
    "standard_normals",
    "start_stream",
    "stream_state",
    "take_words",
    "uniforms",
    "unit_closed_open",
    "unit_open_closed",
]

#: Version of the stream layout. Changes whenever a seed would give different numbers.
#: 1: 256-layer ziggurat; 2: 1024-layer ziggurat (fewer slow-path draws), lanes keyed anew;
#: 3: no libm call in any draw: the ziggurat's tail and wedge, the Exponential and Laplace
#: samplers, the measure-valued draws and the built-in ``cos`` use :mod:`fastgrad.math`. The
#: words are those of version 2 (its lane keys, :data:`_KEY_VERSION`); only values computed
#: from them with ``log``, ``exp``, ``cos`` or ``sin`` changed, each by about an ulp;
#: 4: the Gamma's pathwise values for its shape come from a per-run fit of the implicit gradient
#: (within 1e-13 of mpmath, as the series is, but not the series' bits); every other value is
#: layout 3's, bit for bit.
STREAM_LAYOUT_VERSION = 4

#: The layout version in the lanes' keys: 2, the last version whose words changed.
_KEY_VERSION = 2

#: Draws per chunk of a run: chunk ``c`` of a run with seed ``s`` reads stream ``(s, c)``.
CHUNK_SIZE = 1 << 16

#: Number of interleaved xoshiro256++ lanes per stream.
LANES = 16

# State array layout: lane words are stored word-major (s0 of all lanes, then
# s1, ...) so that one generator step is a unit-stride loop over lanes.
_SLOW = 4 * LANES  # 4 words: the slow lane
_BUF = _SLOW + 4  # LANES words: last generated step, for partial reads
_POS = _BUF + LANES  # words of _BUF already consumed (LANES = empty)
#: Length of a stream state array, in uint64 words.
STATE_SIZE = _POS + 1

_SLOW_LANE = LANES  # lane index used to key the slow lane
_BLOCK = 256  # words converted to normals per pass in fill_normals

_U = np.uint64
_I = np.int64
# ASCII "fastgrad" plus the key version: keys of layouts with different words never coincide.
_LAYOUT_TAG = _U(0x6661737467726164 + _KEY_VERSION)
_GOLDEN = _U(0x9E3779B97F4A7C15)
_TO_UNIT = 1.0 / 9007199254740992.0  # 2**-53


@core
def _rotl(x, k):
    return (x << _U(k)) | (x >> _U(64 - k))


@core
def _mix64(z):
    """SplitMix64's finaliser (Stafford's Mix13): a bijection of 64-bit words."""
    z = (z ^ (z >> _U(30))) * _U(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U(27))) * _U(0x94D049BB133111EB)
    return z ^ (z >> _U(31))


@inline_core
def _lane_key(seed, stream, lane):
    """256-bit starting state of one lane.

    Two rounds of four steps; each step replaces one word by a bijection of it
    given the others, so the whole map is a bijection of 256-bit tuples and
    distinct ``(seed, stream, lane)`` give distinct states. After two rounds
    every output word depends on every input word. Inlined at Numba-IR level
    and without a branch, so that :func:`start_stream` runs its lanes in
    vectors.
    """
    x0 = _U(seed)
    x1 = _U(stream)
    x2 = _U(lane) * _GOLDEN
    x3 = _LAYOUT_TAG
    for _ in range(2):
        x0 = _mix64(x0 ^ x3)
        x1 = _mix64(x1 + x0)
        x2 = _mix64(x2 ^ x1)
        x3 = _mix64(x3 + x2)
    zero = (x0 | x1 | x2 | x3) == _U(0)  # the one input that maps to the fixed point
    return (_GOLDEN if zero else x0), x1, x2, x3


@core
def _xoshiro_next(s):
    """One xoshiro256++ step (Blackman & Vigna): returns (word, new state)."""
    s0, s1, s2, s3 = s
    word = _rotl(s0 + s3, 23) + s0
    t = s1 << _U(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = _rotl(s3, 45)
    return word, (s0, s1, s2, s3)


@inline_core
def _advance_lanes(state, out, offset):
    """Advance all lanes one step, writing their words to ``out[offset:offset+LANES]``.

    Unit-stride over lanes with no dependence between iterations, so LLVM
    vectorises it.
    """
    for j in range(LANES):
        s0 = state[j]
        s1 = state[LANES + j]
        s2 = state[2 * LANES + j]
        s3 = state[3 * LANES + j]
        out[offset + j] = _rotl(s0 + s3, 23) + s0
        t = s1 << _U(17)
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = _rotl(s3, 45)
        state[j] = s0
        state[LANES + j] = s1
        state[2 * LANES + j] = s2
        state[3 * LANES + j] = s3


def _advance_steps(state, out, offset, steps):
    """Run ``steps`` calls of :func:`_advance_lanes` from ``out[offset]`` on (compiled code only)."""
    raise NotImplementedError("_advance_steps runs in compiled code only")


@overload(_advance_steps, inline="always")
def _ol_advance_steps(state, out, offset, steps):
    if state.layout == "C" and out.layout == "C" and out.ndim == 1:
        # the lanes' state in registers for all the steps (_simd.xoshiro_steps): the same words, 0.41 -> 0.20 ns
        # a word in blocks of 512 (one thread, Zen 4), where each step reloaded and stored the state
        return lambda state, out, offset, steps: xoshiro_steps(state, out, offset, steps, LANES)

    def one_step_at_a_time(state, out, offset, steps):
        for t in range(steps):
            _advance_lanes(state, out, offset + t * LANES)

    return one_step_at_a_time


@serial
def stream_state(seed, stream):
    """Start stream ``(seed, stream)``.

    Parameters
    ----------
    seed, stream : int
        Any integers in ``[0, 2**64)``; chunk ``c`` of a fastgrad run with seed
        ``s`` is stream ``(s, c)``. (From ``@njit`` code, other integer values
        are taken modulo ``2**64`` without a check.)

    Returns
    -------
    numpy.ndarray
        ``uint64`` array of :data:`STATE_SIZE` words, advanced in place by the
        ``fill_*`` and ``next_*`` functions.

    Examples
    --------
    >>> from fastgrad import rng
    >>> state = rng.stream_state(0, 0)
    >>> state.shape, state.dtype
    ((85,), dtype('uint64'))
    """
    state = np.zeros(STATE_SIZE, np.uint64)
    start_stream(state, seed, stream)
    return state


@core
def start_stream(state, seed, stream):
    """Set ``state`` (a ``uint64`` array of :data:`STATE_SIZE` words) to the start of stream ``(seed, stream)``.

    What :func:`stream_state` returns, written into an array of the
    caller's (kernel-level core): a kernel that starts a stream a block
    allocates nothing.
    """
    for lane in range(LANES):  # (one loop of straight-line integer code: LLVM runs the lanes in vectors)
        s0, s1, s2, s3 = _lane_key(seed, stream, lane)
        state[lane] = s0
        state[LANES + lane] = s1
        state[2 * LANES + lane] = s2
        state[3 * LANES + lane] = s3
    s0, s1, s2, s3 = _lane_key(seed, stream, _SLOW_LANE)
    state[_SLOW] = s0
    state[_SLOW + 1] = s1
    state[_SLOW + 2] = s2
    state[_SLOW + 3] = s3
    state[_POS] = LANES  # buffer empty


@core
def take_words(state, out, m):
    """Write the stream's next ``m`` words to ``out[:m]`` (kernel-level core)."""
    pos = _I(state[_POS])
    i = 0
    while pos < LANES and i < m:
        out[i] = state[_BUF + pos]
        pos += 1
        i += 1
    steps = (m - i) // LANES
    _advance_steps(state, out, i, steps)
    i += steps * LANES
    if i < m:
        _advance_lanes(state, state, _BUF)
        pos = 0
        while i < m:
            out[i] = state[_BUF + pos]
            pos += 1
            i += 1
    state[_POS] = _U(pos)


@serial
def fill_words(state, out):
    """Fill ``out`` (a uint64 array) with the stream's next raw 64-bit words.

    Examples
    --------
    >>> import numpy as np
    >>> from fastgrad import rng
    >>> state = rng.stream_state(0, 0)
    >>> words = np.empty(4, np.uint64)
    >>> rng.fill_words(state, words)
    >>> bool((words == rng.random_words(0, 0, 4)).all())
    True
    """
    take_words(state, out, out.size)


@core
def next_word(state):
    """Next raw 64-bit word of the stream (``@njit``-callable)."""
    pos = _I(state[_POS])
    if pos == LANES:
        _advance_lanes(state, state, _BUF)
        pos = 0
    state[_POS] = _U(pos + 1)
    return state[_BUF + pos]


@core
def unit_closed_open(word):
    """Uniform on [0, 1) with 53 random bits: ``(word >> 11) * 2**-53`` (kernel-level core)."""
    return _I(word >> _U(11)) * _TO_UNIT


@core
def unit_open_closed(word):
    """Uniform on (0, 1] with 53 random bits, ``((word >> 11) + 1) * 2**-53``: safe for log (kernel-level core)."""
    return (_I(word >> _U(11)) + 1) * _TO_UNIT


@core
def next_uniform(state):
    """Next uniform double in [0, 1): the top 53 bits of the next word."""
    return unit_closed_open(next_word(state))


@serial
def fill_uniforms(state, out):
    """Fill ``out`` (float64) with uniforms in [0, 1), one word each."""
    for i in range(out.size):
        out[i] = unit_closed_open(next_word(state))


# --- the normal sampler --------------------------------------------------
#
# A word is decoded into a layer index (bits 0-7) and a signed odd integer
# u = 2 * (bits 11-63 as signed) + 1, uniform over the odd integers in
# (-2**53, 2**53): symmetric, never zero. The candidate is x = u * W[idx]. It
# is accepted at once when |u| < K[idx] (inside the part of the layer that
# lies under the curve); otherwise the slow path finishes it exactly.


@core
def _decode(word):
    idx = _I(word & _U(_N - 1))
    u = (_I(word) >> _I(10)) | _I(1)
    return idx, u, np.float64(u) * _W[idx]


#: The layers' widths and fast-accept bounds interleaved, ``W[i], float(K[i])`` (:func:`normals_from_words`).
_WK = np.column_stack([_W, _K.astype(np.float64)]).ravel()

#: Margin of the squeeze tests: far above the binary64 error of either side (~1e-15), far below a layer's height.
_SQUEEZE_MARGIN = 1e-12


@core
def _wedge_accepts(idx, x, y):
    """``y < exp(-x*x/2)`` for a candidate in layer ``idx >= 1``'s wedge, mostly without ``exp``.

    With ``d = x*x/2 - Z[idx] >= 0`` (the wedge starts at ``|x| = x[idx-1]``),
    ``f(x) = F[idx-1] * exp(-d)`` and, since ``exp(-d)``'s Taylor series
    alternates, ``F[idx-1] * (1 - d + d*d/2 - d**3/6) <= f(x) <= F[idx-1] * (1 - d + d*d/2)``.
    Outside that band, widened by :data:`_SQUEEZE_MARGIN`, the answer is known
    without calling ``exp``; inside it (0.07 % of wedge candidates) ``exp``
    decides. Either way the answer is exactly that of ``y < exp(-x*x/2)``, so
    the normals are the same numbers as without the squeeze.
    """
    z = 0.5 * x * x
    d = z - _Z[idx]
    e0 = _F[idx - 1]
    upper = 1.0 - d + 0.5 * d * d
    if y >= e0 * upper + _SQUEEZE_MARGIN:
        return False
    if y < e0 * (upper - d * d * d * (1.0 / 6.0)) - _SQUEEZE_MARGIN:
        return True
    return y < fm.exp(-z)


@serial
def _normal_slow(idx, u, x, slow):
    """Finish a rejected candidate with words from the slow lane.

    Standard ziggurat slow path: the wedge test for layers >= 1, Marsaglia's
    exact tail method beyond R for the base strip, and a fresh candidate when
    the wedge test fails. Returns (normal, new slow-lane state).
    """
    while True:
        if idx == 0:
            while True:
                w1, slow = _xoshiro_next(slow)
                w2, slow = _xoshiro_next(slow)
                xx = -fm.log(unit_open_closed(w1)) / _R
                yy = -fm.log(unit_open_closed(w2))
                if yy + yy > xx * xx:
                    break
            z = _R + xx
            return (z if u > 0 else -z), slow
        w, slow = _xoshiro_next(slow)
        y = _F[idx] + unit_closed_open(w) * (_F[idx - 1] - _F[idx])
        if _wedge_accepts(idx, x, y):
            return x, slow
        w, slow = _xoshiro_next(slow)
        idx, u, x = _decode(w)
        if abs(u) < _K[idx]:
            return x, slow


@core
def _load_slow(state):
    return state[_SLOW], state[_SLOW + 1], state[_SLOW + 2], state[_SLOW + 3]


@core
def _store_slow(state, slow):
    state[_SLOW] = slow[0]
    state[_SLOW + 1] = slow[1]
    state[_SLOW + 2] = slow[2]
    state[_SLOW + 3] = slow[3]


def _fast_pass(words, out, rejected, m):
    """Run the ziggurat's fast pass over ``words[:m]`` (compiled code only): see :func:`normals_from_words`."""
    raise NotImplementedError("_fast_pass runs in compiled code only")


@inline_core
def _scalar_pass(words, out, rejected, m, start, n_rejected):
    """Run the fast pass one word at a time from ``words[start]``; return the rejected count so far."""
    for i in range(start, m):
        # _decode, with each layer's width and bound side by side (one cache line, not two) and the bound as a
        # double: |u| < K is |float(u)| < float(K), both exact below 2**53, so the same test
        word = words[i]
        idx = _I(word & _U(_N - 1))
        u = np.float64((_I(word) >> _I(10)) | _I(1))
        out[i] = u * _WK[2 * idx]
        if abs(u) >= _WK[2 * idx + 1]:
            rejected[n_rejected] = i
            n_rejected += 1
    return n_rejected


@core
def _fast_pass_scalar(words, out, rejected, m):
    """Run the fast pass one word at a time, whatever the CPU (tests compare the eight-word pass with it)."""
    return _scalar_pass(words, out, rejected, m, 0, 0)


@overload(_fast_pass, inline="always")
def _ol_fast_pass(words, out, rejected, m):
    if not (words.layout == "C" and out.layout == "C" and gathers_pay()):
        return lambda words, out, rejected, m: _scalar_pass(words, out, rejected, m, 0, 0)

    def eight_at_a_time(words, out, rejected, m):
        # eight words a vector, the tables gathered: 1.64-1.71 -> 1.21-1.25 ns a normal with the stream's start
        # and words (one thread, blocks of 512, 3 runs); the rejected words listed in increasing order
        n_rejected = 0
        start = 0
        while start + ZIGGURAT_LANES <= m:
            bits = ziggurat_pass8(words, _WK, out, start, _N)
            while bits:
                rejected[n_rejected] = start + trailing_zeros(bits)
                n_rejected += 1
                bits &= bits - _U(1)
            start += ZIGGURAT_LANES
        return _scalar_pass(words, out, rejected, m, start, n_rejected)

    return eight_at_a_time


@core
def normals_from_words(state, words, out, rejected, m):
    """Turn ``words[:m]`` into normals in ``out[:m]`` (kernel-level core).

    The fast pass decodes eight words at a time (contiguous arrays, on a CPU
    with AVX-512: :func:`fastgrad._simd.gathers_pay`; one at a time
    otherwise, with the same arithmetic) and lists the rejected
    positions (about 0.4 % of words) in ``rejected``; they are finished in
    increasing order with the slow lane of ``state``.
    """
    n_rejected = _fast_pass(words, out, rejected, m)
    if n_rejected:
        slow = _load_slow(state)
        for r in range(n_rejected):
            i = rejected[r]
            idx, u, x = _decode(words[i])
            out[i], slow = _normal_slow(idx, u, x, slow)
        _store_slow(state, slow)


@core
def standard_normal(state):
    """Next standard normal of the stream (``@njit``-callable).

    Gives exactly the numbers :func:`fill_normals` would.
    """
    idx, u, x = _decode(next_word(state))
    if abs(u) < _K[idx]:
        return x
    z, slow = _normal_slow(idx, u, x, _load_slow(state))
    _store_slow(state, slow)
    return z


@serial
def fill_normals(state, out):
    """Fill ``out`` (float64) with the stream's next standard normals.

    Examples
    --------
    >>> import numpy as np
    >>> from fastgrad import rng
    >>> state = rng.stream_state(3, 1)
    >>> z = np.empty(5)
    >>> rng.fill_normals(state, z)
    >>> bool((z == rng.standard_normals(3, 1, 5)).all())
    True
    """
    words = np.empty(_BLOCK, np.uint64)
    rejected = np.empty(_BLOCK, np.int64)
    n = out.size
    for start in range(0, n, _BLOCK):
        m = min(_BLOCK, n - start)
        take_words(state, words, m)
        normals_from_words(state, words, out[start:], rejected, m)


# --- the Gamma sampler ----------------------------------------------------
#
# Marsaglia & Tsang (2000), exact: for a >= 1, with d = a - 1/3 and c = 1 / (3 sqrt(d)), a normal z with
# t = c z > -1 and v = (1 + t)**3 is accepted, as x = d v, when a uniform u has
# log u < z**2 / 2 + d (1 - v + log v) (most of the time already u < 1 - 0.0331 z**4, which implies it);
# otherwise both are drawn again. For a < 1 a draw of Gamma(a + 1) is multiplied by u**(1/a) for one more
# uniform (Stuart's theorem). log v is 3 log1p(t), which keeps 1 - v + log v accurate for small t.


@core
def _gamma_rows(state, alphas, out, m):
    """Fill ``out[:m * W]`` with ``m`` rows of ``W = alphas.size`` independent Gamma(``alphas[k]``) draws.

    In the stream's order, row by row: ``out[v * W + k]`` is row ``v``'s
    draw of shape ``alphas[k]`` (see :func:`standard_gamma`). One loop with
    the normal sampler written into it: a call per draw to a function taking
    ``state`` costs Numba a reference-count increment and decrement of the
    array (atomic, about 16 ns) that it cannot prove useless when the
    function has a rarely taken call in a branch (measured: 19 ns a normal
    through ``standard_normal``, 2 ns here). At shape 2.5: 8.2-9.1 ns a draw,
    against 8.1 for the one-shape loop it replaced (two interleaved runs);
    the attempt loop inlined at Numba-IR level measured 17-20 ns, a ``k = i %
    W`` per draw 10 ns.
    """
    width = alphas.size
    ds = np.empty(width)
    cs = np.empty(width)
    for k in range(width):
        ds[k] = (alphas[k] if alphas[k] >= 1.0 else alphas[k] + 1.0) - 1.0 / 3.0
        cs[k] = 1.0 / (3.0 * math.sqrt(ds[k]))
    for r in range(m):
        for k in range(width):
            i = r * width + k
            d = ds[k]
            c = cs[k]
            while True:
                idx, s, z = _decode(next_word(state))
                if abs(s) >= _K[idx]:  # the normal's slow path (about 0.4 %)
                    z, slow = _normal_slow(idx, s, z, _load_slow(state))
                    _store_slow(state, slow)
                t = c * z
                if t <= -1.0:
                    continue
                v = (1.0 + t) * (1.0 + t) * (1.0 + t)
                u = unit_open_closed(next_word(state))
                square = z * z
                if u < 1.0 - 0.0331 * square * square:
                    break
                if fm.log(u) < 0.5 * square + d * (1.0 - v + 3.0 * fm.log1p(t)):
                    break
            x = d * v
            if alphas[k] < 1.0:
                x *= fm.exp(fm.log(unit_open_closed(next_word(state))) / alphas[k])
            out[i] = x


@core
def _gamma_block(state, alpha, out, m):
    """Fill ``out[:m]`` with the stream's next unit-rate Gamma(``alpha``) draws (see :func:`standard_gamma`)."""
    _gamma_rows(state, np.full(1, alpha), out, m)


@core
def standard_gamma(state, alpha):
    """Next unit-rate Gamma(``alpha``) draw of the stream (``@njit``-callable; ``alpha > 0`` finite, not checked).

    Marsaglia and Tsang's method on the stream's normals and uniforms, in
    the stream's order: per attempt one normal (one word; its rare slow path
    uses the slow lane) and, unless ``1 + c z <= 0``, one uniform on (0, 1];
    for ``alpha < 1`` one more uniform at the end. Each attempt is accepted
    with probability 0.95 or more (``docs/random-streams.md``). ``log``,
    ``log1p`` and ``exp`` are :mod:`fastgrad.math`'s, so the draws are the
    same bits on every machine. Draws below the smallest subnormal (for
    small ``alpha``: about half of them at ``alpha = 10**-3``) are 0. For
    many draws, :func:`fill_gammas` is faster (one loop, no call per draw).
    """
    out = np.empty(1)
    _gamma_block(state, alpha, out, 1)
    return out[0]


@serial
def fill_gammas(state, alpha, out):
    """Fill ``out`` (float64) with the stream's next unit-rate Gamma(``alpha``) draws (``alpha`` not checked)."""
    _gamma_block(state, alpha, out, out.size)


# --- Poisson draws ---------------------------------------------------------

#: ``lgamma(k + 1) - (k + 1/2) log k + k - log(2 pi) / 2`` for k = 0 .. 14 (mpmath, 50 digits; k = 0 unused):
#: the error of Stirling's formula, tabulated where its series converges too slowly.
_STIRLING_ERRORS = (
    0.0, 0.08106146679532726, 0.0413406959554093, 0.02767792568499834, 0.020790672103765093,
    0.016644691189821193, 0.013876128823070748, 0.01189670994589177, 0.010411265261972096,
    0.009255462182712733, 0.00833056343336287, 0.007573675487951841, 0.00694284010720953,
    0.006408994188004207, 0.0059513701127588475,
)  # fmt: skip
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)

#: Below this rate draws are made by inversion, at or above by transformed rejection.
POISSON_INVERSION_BELOW = 10.0


@core
def _stirling_error(k):
    """``lgamma(k + 1) - (k + 1/2) log k + k - log(2 pi) / 2`` for an integer-valued ``k >= 1``.

    The table below 15; above, the asymptotic series to ``k**-9``, whose
    first omitted term is below 2.2e-16 there.
    """
    if k < 15.0:
        return _STIRLING_ERRORS[int(k)]
    r = 1.0 / k
    r2 = r * r
    return r * (1.0 / 12.0 - r2 * (1.0 / 360.0 - r2 * (1.0 / 1260.0 - r2 * (1.0 / 1680.0 - r2 / 1188.0))))


@core
def poisson_log_pmf(k, rate):
    """``log P(X = k)`` for ``X ~ Poisson(rate)``, ``k >= 0`` integer-valued, without cancellation.

    ``k log(rate) - rate - lgamma(k + 1)`` subtracts numbers of the size of
    ``rate``; instead, Loader's saddle-point form
    ``-d(k, rate) - log(2 pi k) / 2 - stirling_error(k)`` with
    ``d = k log(k / rate) + rate - k >= 0``, whose terms are of the size of
    the result. Near ``k = rate`` (``|v| < 0.1``, ``v = (k - rate) / (k + rate)``)
    ``d`` is the series ``(k - rate) v + 2 k (v**3 / 3 + v**5 / 5 + ...)``,
    every term positive and accurate; elsewhere ``rate ((1 + t) log1p(t) - t)``
    with ``t = (k - rate) / rate`` loses nothing. Within 2e-14 of mpmath
    relative (and 1e-15 absolute) for rates up to 1e12 (``tests/test_poisson.py``).
    """
    if k == 0.0:
        return -rate
    delta = k - rate
    v = delta / (k + rate)
    if abs(v) < 0.1:
        d = delta * v
        term = 2.0 * k * v
        v2 = v * v
        j = 1.0
        while True:
            term *= v2
            updated = d + term / (2.0 * j + 1.0)
            if updated == d:
                break
            d = updated
            j += 1.0
    else:
        t = delta / rate
        d = rate * ((1.0 + t) * fm.log1p(t) - t)
    return -d - 0.5 * fm.log(k) - _HALF_LOG_2PI - _stirling_error(k)


@core
def _poisson_block(state, rate, out, m):
    """Fill ``out[:m]`` with the stream's next Poisson(``rate``) draws (see :func:`poisson`)."""
    if rate < POISSON_INVERSION_BELOW:
        p0 = fm.exp(-rate)
        for i in range(m):
            u = unit_closed_open(next_word(state))
            k = 0.0
            p = p0
            cdf = p0
            while u >= cdf:
                k += 1.0
                p *= rate / k
                if cdf + p == cdf:  # the rest of the tail is below cdf's rounding: u is in it (P < 1e-16)
                    break
                cdf += p
            out[i] = k
        return
    # Hoermann's transformed rejection with squeeze (PTRS, 1993): the hat's constants for this rate
    b = 0.931 + 2.53 * math.sqrt(rate)
    a = -0.059 + 0.02483 * b
    log_alpha = fm.log(1.1239 + 1.1328 / (b - 3.4))
    squeeze = 0.9277 - 3.6224 / (b - 2.0)
    for i in range(m):
        while True:
            u = unit_closed_open(next_word(state)) - 0.5
            v = unit_open_closed(next_word(state))
            us = 0.5 - abs(u)
            k = math.floor((2.0 * a / us + b) * u + rate + 0.43)  # us = 0 gives -inf: refused below
            if us >= 0.07 and v <= squeeze:
                break
            if k < 0.0 or (us < 0.013 and v > us):
                continue
            if fm.log(v) + log_alpha - fm.log(a / (us * us) + b) <= poisson_log_pmf(k, rate):
                break
        out[i] = k


@core
def poisson(state, rate):
    """Next Poisson(``rate``) draw of the stream, as a float (``@njit``-callable; ``rate > 0`` finite, not checked).

    Below a rate of 10, inversion: one uniform on [0, 1) per draw, compared
    with the cumulative probabilities ``exp(-rate) rate**k / k!`` summed in
    order. From 10 on, Hoermann's transformed rejection (PTRS): two words
    (a uniform on [0, 1) and one on (0, 1]) per attempt, each accepted with
    probability 0.75 at rate 10 to 0.89 at 10**6 (measured), against the log-probability computed without
    cancellation (:func:`poisson_log_pmf`), so large rates stay exact.
    ``log`` and ``exp`` are :mod:`fastgrad.math`'s: the same bits on every
    machine. For many draws :func:`fill_poissons` is faster.
    """
    out = np.empty(1)
    _poisson_block(state, rate, out, 1)
    return out[0]


@serial
def fill_poissons(state, rate, out):
    """Fill ``out`` (float64) with the stream's next Poisson(``rate``) draws (``rate`` not checked)."""
    _poisson_block(state, rate, out, out.size)


# --- Python conveniences ---------------------------------------------------


def _check_key(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer in [0, 2**64); got {value!r}")
    if not 0 <= int(value) < 2**64:
        raise ValueError(f"{name} must be an integer in [0, 2**64); got {value!r}")
    return np.uint64(int(value))


def _check_count(n):
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be a non-negative integer; got {n!r}")
    if n < 0:
        raise ValueError(f"n must be a non-negative integer; got {n!r}")
    return int(n)


def _new_state(seed, stream):
    return stream_state(_check_key("seed", seed), _check_key("stream", stream))


def random_words(seed, stream, n):
    """Return the first ``n`` raw 64-bit words of stream ``(seed, stream)``.

    Examples
    --------
    >>> from fastgrad import rng
    >>> rng.random_words(0, 0, 2).dtype
    dtype('uint64')
    """
    state = _new_state(seed, stream)
    out = np.empty(_check_count(n), np.uint64)
    fill_words(state, out)
    return out


def uniforms(seed, stream, n):
    """Return the first ``n`` uniforms in [0, 1) of stream ``(seed, stream)`` (53 bits each)."""
    state = _new_state(seed, stream)
    out = np.empty(_check_count(n), np.float64)
    fill_uniforms(state, out)
    return out


def standard_normals(seed, stream, n):
    """Return the first ``n`` standard normals of stream ``(seed, stream)``.

    Draw ``i`` of a fastgrad run with seed ``s`` is normal ``i % CHUNK_SIZE``
    of stream ``(s, i // CHUNK_SIZE)``.

    Examples
    --------
    >>> from fastgrad import rng
    >>> z = rng.standard_normals(seed=0, stream=0, n=100_000)
    >>> abs(float(z.mean())) < 0.02
    True
    """
    state = _new_state(seed, stream)
    out = np.empty(_check_count(n), np.float64)
    fill_normals(state, out)
    return out


def standard_gammas(seed, stream, alpha, n):
    """Return the first ``n`` unit-rate Gamma(``alpha``) draws of stream ``(seed, stream)``.

    Divide by ``rate`` for Gamma(``alpha``, ``rate``).

    Examples
    --------
    >>> from fastgrad import rng
    >>> x = rng.standard_gammas(seed=0, stream=0, alpha=2.5, n=100_000)
    >>> abs(float(x.mean()) - 2.5) < 0.03
    True
    """
    alpha = _check_shape(alpha)
    state = _new_state(seed, stream)
    out = np.empty(_check_count(n), np.float64)
    fill_gammas(state, alpha, out)
    return out


def _check_shape(alpha):
    if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, (int, float, np.integer, np.floating)):
        raise TypeError(f"alpha must be a finite number > 0; got {alpha!r}")
    alpha = float(alpha)
    if not (0.0 < alpha < math.inf):
        raise ValueError(f"alpha must be a finite number > 0; got {alpha!r}")
    return alpha


def poissons(seed, stream, rate, n):
    """Return the first ``n`` Poisson(``rate``) draws of stream ``(seed, stream)``, as float64.

    Examples
    --------
    >>> from fastgrad import rng
    >>> x = rng.poissons(seed=0, stream=0, rate=3.5, n=100_000)
    >>> abs(float(x.mean()) - 3.5) < 0.03
    True
    """
    if isinstance(rate, (bool, np.bool_)) or not isinstance(rate, (int, float, np.integer, np.floating)):
        raise TypeError(f"rate must be a finite number > 0; got {rate!r}")
    rate = float(rate)
    if not (0.0 < rate < math.inf):
        raise ValueError(f"rate must be a finite number > 0; got {rate!r}")
    state = _new_state(seed, stream)
    out = np.empty(_check_count(n), np.float64)
    fill_poissons(state, rate, out)
    return out
