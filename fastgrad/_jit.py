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

Where the cache lives (``docs/hpc.md``, "Read-only installs"): Numba's own
choice first (``NUMBA_CACHE_DIR``, else ``__pycache__`` next to the sources,
else the user's cache directory under ``HOME``), where it can write. Between
the last two, a *pre-filled read-only* cache next to the sources (made by
``fastgrad warmup`` where the package was installed) is read, and never
written: a kernel it lacks compiles in memory, with one
:class:`CacheWarning`. Where there is nowhere to cache at all, every
function compiles in memory, with one :class:`CacheWarning` at the first run
(before this fallback, ``import fastgrad`` itself failed).
"""

import hashlib
import os
import warnings
from pathlib import Path

import numba
from numba.core import caching

from fastgrad._checks import FastgradWarning

PACKAGE = Path(__file__).resolve().parent


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


class CacheWarning(FastgradWarning):
    """Compiled code cannot be cached (or is missing from a read-only cache): each process compiles it anew."""


class ReadOnlyCacheLocator(caching._SourceFileBackedLocatorMixin, caching._CacheLocator):
    """Numba cache locator of a pre-filled cache next to fastgrad's sources that this process cannot write.

    Numba's own locators accept only directories they can write to, so a
    cache filled while building a container image (or by the administrator
    of a read-only software tree) would be ignored, and ``import fastgrad``
    failed when nothing else was writable. This one accepts a function of
    fastgrad whose index file is already in ``__pycache__``; Numba then loads
    from it, and :func:`_njit` turns its saves into a warning.
    """

    def __init__(self, py_func, py_file):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self._cache_path = os.path.join(os.path.dirname(py_file), "__pycache__")

    def get_cache_path(self):
        return self._cache_path

    def ensure_cache_path(self):
        """Nothing to create: the cache is read, never written."""

    @classmethod
    def from_function(cls, py_func, py_file):
        if Path(py_file).resolve().parent != PACKAGE:
            return None
        self = cls(py_func, py_file)
        stem = f"{Path(py_file).stem}.{py_func.__qualname__}".replace("<", "").replace(">", "")
        if not any(Path(self._cache_path).glob(f"{stem}-{self._lineno}.py*.nbi")):
            return None
        return self


def _register_locator():
    """Put :class:`ReadOnlyCacheLocator` after Numba's in-tree locator (before the user-wide one, so it is used)."""
    classes = caching.CacheImpl._locator_classes
    if ReadOnlyCacheLocator in classes:
        return
    names = [c.__name__.lstrip("_") for c in classes]
    where = names.index("InTreeCacheLocator") + 1 if "InTreeCacheLocator" in names else len(classes)
    classes.insert(where, ReadOnlyCacheLocator)


_register_locator()

#: Functions of the package compiled without a cache, because Numba found nowhere to keep them.
UNCACHED_FUNCTIONS = []
_warned = set()


def _warn_once(kind, message):
    if kind not in _warned:
        _warned.add(kind)
        warnings.warn(CacheWarning(message), stacklevel=3)


def report_uncached():
    """Warn once (at a run's first kernel) if the package's functions compile in memory for want of a cache."""
    if UNCACHED_FUNCTIONS:
        _warn_once(
            "uncached",
            "Numba found no writable cache directory (NUMBA_CACHE_DIR, fastgrad's __pycache__, the user cache "
            "under HOME) and no cache pre-filled by `fastgrad warmup`: every process compiles fastgrad's kernels "
            "in memory (seconds per kernel). Set NUMBA_CACHE_DIR to a writable directory, or run "
            "`fastgrad warmup` where fastgrad is installed.",
        )


def _skip_save(cache):
    def save_overload(sig, data):
        _warn_once(
            "read-only",
            f"the read-only Numba cache in {cache.cache_path} lacks a kernel this run needs (filled by another "
            "fastgrad, Numba or CPU?): it is compiled in memory, in every process. Run `fastgrad warmup` where "
            "fastgrad is installed to fill the cache.",
        )

    return save_overload


def _stamp_with_digest(cache):
    """Make ``cache`` (a function's Numba cache) stale whenever any of the package's sources changes.

    Numba stamps a cached function with its own file's time and size, and
    loads it as long as that file is unchanged, even when a core it calls
    from another module has changed since: ``distributions._normal_noise``
    kept an edited ``rng.normals_from_words``'s old code. With
    :data:`SOURCE_DIGEST` in the stamp, an edit anywhere in the package
    compiles every function afresh, as it already did the kernels.
    """
    cache_file = getattr(cache, "_cache_file", None)
    if cache_file is not None and hasattr(cache_file, "_source_stamp"):
        cache_file._source_stamp = (cache_file._source_stamp, SOURCE_DIGEST)


def _njit(**options):
    """``numba.njit(**options)``, falling back where the cache cannot be written (see the module docstring)."""
    if not options.get("cache"):
        return numba.njit(**options)

    def decorate(func):
        try:
            dispatcher = numba.njit(**options)(func)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            UNCACHED_FUNCTIONS.append(func.__qualname__)
            return numba.njit(**dict(options, cache=False))(func)
        cache = getattr(dispatcher, "_cache", None)
        impl = getattr(cache, "_impl", None)
        _stamp_with_digest(cache)
        if isinstance(getattr(impl, "locator", None), ReadOnlyCacheLocator):
            cache.save_overload = _skip_save(cache)
        return dispatcher

    return decorate


def _kernel_cache():
    """Numba's cache object of the package's cached kernel (None where it compiles without one)."""
    from fastgrad import _kernels

    cache = getattr(_kernels._cached_kernel, "_cache", None)
    if cache is None or isinstance(cache, caching.NullCache) or UNCACHED_FUNCTIONS:
        return None
    return cache


def cache_directory():
    """Where Numba keeps the package's compiled kernels in this process (None: nowhere, in memory only)."""
    cache = _kernel_cache()
    return None if cache is None else cache.cache_path


def cache_is_writable():
    """Whether new kernels compiled here are saved for later processes."""
    cache = _kernel_cache()
    return cache is not None and not isinstance(cache._impl.locator, ReadOnlyCacheLocator)


_OPTIONS = {"cache": True, "error_model": "numpy", "nogil": True}

#: Scalar and block cores: the pieces kernels are composed of, inlined into
#: them by LLVM. Users can call them from their own ``@njit`` code.
core = _njit(**_OPTIONS)

#: Cores inlined at Numba-IR level instead, where that measured faster: the
#: lane generator (LLVM only vectorises it this way: 1.6-1.8 G words/s
#: against 0.7 G/s) and the reduction loops. Not cached on their own: they
#: exist only inside their callers. (Inlining *everything* at IR level ran
#: about 50 % slower and compiled 30 % slower than leaving the rest to LLVM.)
inline_core = numba.njit(inline="always", **dict(_OPTIONS, cache=False))

#: Options of serial compiled functions (array helpers, merges, per-chunk work).
SERIAL = dict(_OPTIONS)

#: Serial compiled functions.
serial = _njit(**SERIAL)

#: Options of kernels specialised on a user's function: as :data:`SERIAL`, not cached.
UNCACHED = dict(_OPTIONS, cache=False)

#: The block fillers of estimator variants and of multivariate families: compiled
#: once per signature as functions of their own and called once per block. Not
#: cached on their own (their signatures may hold a user's function), but saved
#: with each cached kernel that calls them. Inlined at Numba-IR level they were
#: typed twice: a user function's variant kernel compiled in 13.8 s instead of 7.
block_filler = numba.njit(**UNCACHED)
