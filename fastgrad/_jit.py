"""The one place where fastgrad decides how Numba compiles its code.

Every compiled function in the package is made with one of the decorators
below; no kernel spells out its own options.

Policy, and why:

* ``cache=True``: compiled code is written next to the sources and reused by
  the next process, so only the first run on a machine pays for compilation
  (cached functions can still be inlined into their callers). Kernels
  specialised on a *user's* function are the exception: Numba cannot key
  their cache entries stably across processes (each process would write a
  new entry and never read it back), so those use :data:`UNCACHED`.
* ``error_model="numpy"``: division by zero gives inf/nan like NumPy instead of
  raising, and keeps the inner loops free of exception checks.
* no ``fastmath``: fastgrad promises bit-identical results for a seed. The
  ``reassoc``/``contract`` flags let LLVM reorder sums or fuse multiply-adds
  differently depending on vector width, and ``nnan``/``ninf`` would make the
  non-finite-value check (``nan_policy``) unreliable. Reductions are written
  with a fixed summation order instead.
* ``nogil=True``: kernels release the GIL, so they can run beside other
  Python threads.
"""

import hashlib
from pathlib import Path

import numba

_OPTIONS = {"cache": True, "error_model": "numpy", "nogil": True}

#: Scalar and block cores: the pieces kernels are composed of, inlined into
#: them by LLVM. Users can call them from their own ``@njit`` code.
core = numba.njit(**_OPTIONS)

#: Cores inlined at Numba-IR level instead, where that measured faster: the
#: lane generator (LLVM only vectorises it this way: 1.6-1.8 G words/s
#: against 0.7 G/s) and the reduction loops. Not cached on their own: they
#: exist only inside their callers. (Inlining *everything* at IR level ran
#: about 50 % slower and compiled 30 % slower than leaving the rest to LLVM.)
inline_core = numba.njit(inline="always", **dict(_OPTIONS, cache=False))

#: Options of serial compiled functions (array helpers, merges, per-chunk work).
SERIAL = dict(_OPTIONS)

#: Serial compiled functions.
serial = numba.njit(**SERIAL)

#: Options of kernels specialised on a user's function: as :data:`SERIAL`, not cached.
UNCACHED = dict(_OPTIONS, cache=False)

#: The block fillers of estimator variants and of multivariate families: compiled
#: once per signature as functions of their own and called once per block. Not
#: cached on their own (their signatures may hold a user's function), but saved
#: with each cached kernel that calls them. Inlined at Numba-IR level they were
#: typed twice: a user function's variant kernel compiled in 13.8 s instead of 7.
block_filler = numba.njit(**UNCACHED)


def _source_digest():
    """Digest of the package's own sources.

    Numba only invalidates a cached kernel when *its* file changes, not when a
    core it inlines from another module does. Kernel keys carry this digest,
    so any edit to the package compiles fresh kernels instead of loading
    stale ones.
    """
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


SOURCE_DIGEST = _source_digest()
