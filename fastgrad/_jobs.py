"""Long runs: batches of chunks, progress, interruption, checkpoints, shards and MPI.

A run is a range of chunks, computed in batches from Python. After every
batch the chunk records are merged into a :class:`~fastgrad._reduction.MomentTree`,
whose state (a stack of nodes of a tree fixed by the chunk indices) is all
a run has to remember. That state is what this module saves, restores,
ships between processes and merges:

* **checkpoint**: the tree of chunks ``[first, next)`` done so far, written
  atomically; a resumed run pushes the remaining chunks onto the restored
  tree, so its result is bit-identical to an uninterrupted run;
* **shard** ``i`` of ``K``: chunks ``[floor(i C / K), floor((i+1) C / K))`` of
  the ``C`` chunks; merging the shards' trees in chunk order gives the
  single-process tree, bit for bit;
* **MPI**: rank ``r`` of ``P`` runs shard ``r`` of ``P`` and rank 0 merges.

Between batches the driver shows progress (stderr, when it is a terminal),
writes checkpoints when due, and stops early when asked (Ctrl-C, SIGTERM):
the result then covers the chunks finished, flagged ``interrupted``.

File format (:data:`PARTIAL_FORMAT`, version :data:`PARTIAL_VERSION`): JSON
with the run's *fingerprint* (everything that determines its numbers), the
parts (chunk ranges with their tree nodes; records as base64 float64) and a
SHA-256 of the rest, so a truncated or altered file is refused.
"""

import base64
import contextlib
import hashlib
import json
import math
import os
import pickle
import signal
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastgrad._checks import FastgradWarning
from fastgrad._reduction import MomentTree, tree_push_node

PARTIAL_FORMAT = "fastgrad-partial"
PARTIAL_VERSION = 1

#: Version of the record and merge-tree layout (fastgrad._reduction). Changes
#: whenever a saved tree would merge differently.
RECORD_LAYOUT_VERSION = 1

#: A batch aims at this many seconds: progress and checkpoints stay responsive,
#: and the Python work between batches (about 0.2 ms) stays far below 2 %.
TARGET_BATCH_SECONDS = 0.5

#: Most chunks in one batch (and its records), whatever the speed.
MAX_BATCH_CHUNKS = 8192

#: Chunks in the first batch, which measures the speed (None: 4 per core).
FIRST_BATCH_CHUNKS = None

#: Chunks per batch under MPI: every rank runs the same number of batches.
MPI_BATCH_CHUNKS = 1024


class PartialError(ValueError):
    """A checkpoint or partial result cannot be used: corrupted, or from a different run."""


class CheckpointWarning(FastgradWarning):
    """A checkpoint could not be written (a full disk, a removed directory): the run goes on without it."""


class UserFunctionError(RuntimeError):
    """A user's function raised while the draws were evaluated.

    ``function`` is its name, ``error`` the exception it raised (also the
    ``__cause__``), ``draws_done`` the draws finished before the batch that
    raised, and ``checkpoint`` the file that holds them (None without one).
    Under MPI every rank raises it, ``where`` naming the rank that raised
    first, and ``draws_done`` counting every rank's.
    """

    def __init__(self, function, error, draws_done=None, checkpoint=None, where=None):
        self.function, self.error, self.draws_done, self.checkpoint = function, error, draws_done, checkpoint
        self.where = where
        message = f"the function {function!r} raised {type(error).__name__}: {error} while evaluating draws"
        if where is not None:
            message += f" on {where}"
        if draws_done:  # (with none done, there is nothing to keep or lose)
            if checkpoint is not None:
                message += f"; the {draws_done:,} draws finished before it are saved in the checkpoint {checkpoint}"
            else:
                message += f"; the {draws_done:,} draws finished before it are lost (no checkpoint)"
        super().__init__(message)

    def __reduce__(self):  # (pickled across MPI ranks and processes)
        return type(self), (self.function, self.error, self.draws_done, self.checkpoint, self.where)


def _picklable(failure):
    """Return ``(function name, error)`` of a :class:`UserFunctionError`, the error replaced if it cannot be sent."""
    try:
        pickle.loads(pickle.dumps(failure.error))
    except Exception:  # (an exception class that does not pickle, or unpickle, e.g. with extra arguments)
        return failure.function, RuntimeError(f"{type(failure.error).__name__}: {failure.error}")
    return failure.function, failure.error


# --- the state of a run: parts of the chunk range, each with its tree ----------------------


@dataclass
class Part:
    """Chunks ``[first, stop)`` of a run, of which ``[first, next)`` are done and merged in the tree nodes."""

    first: int
    stop: int
    next: int
    levels: np.ndarray
    indices: np.ndarray
    records: np.ndarray  # (depth, width)
    seconds: float = 0.0
    threads: int = 1
    extra: np.ndarray = None  # per chunk done, values a run keeps beside the tree (DiagNormal: trace sums)
    lead_owner: int = -1  # curves: the repeat that began before this part ...
    lead: np.ndarray = None  # ... and this part's piece sums of it, in order (pieces, rows)

    @classmethod
    def of(cls, tree, first, stop, seconds, threads=1, extra=None):
        depth = tree.depth
        return cls(
            first=first,
            stop=stop,
            next=tree.next_chunk,
            levels=tree.levels[:depth].copy(),
            indices=tree.indices[:depth].copy(),
            records=tree.records[:depth].copy(),
            seconds=seconds,
            threads=threads,
            extra=extra,
        )

    @property
    def done(self):
        return self.next == self.stop

    def tree(self, layout):
        """Return a :class:`MomentTree` holding this part's nodes, ready for chunk ``next``."""
        tree = MomentTree(layout)
        if self.records.shape[1:] != (tree.width,):
            raise PartialError(f"records of width {self.records.shape[1:]} do not fit this run (width {tree.width})")
        depth = len(self.levels)
        tree.levels[:depth] = self.levels
        tree.indices[:depth] = self.indices
        tree.records[:depth] = self.records
        tree.depth = depth
        tree.next_chunk = self.next
        return tree

    def to_dict(self):
        return {
            "first": self.first,
            "stop": self.stop,
            "next": self.next,
            "levels": [int(v) for v in self.levels],
            "indices": [int(v) for v in self.indices],
            "records": _encode(self.records),
            "width": int(self.records.shape[1]) if self.records.ndim == 2 else 0,
            "seconds": self.seconds,
            "threads": self.threads,
            "extra": None if self.extra is None else _encode(self.extra),
            "extra_shape": None if self.extra is None else list(self.extra.shape),
            "lead_owner": self.lead_owner,
            "lead": None if self.lead is None else _encode(self.lead),
            "lead_shape": None if self.lead is None else list(self.lead.shape),
        }

    @classmethod
    def from_dict(cls, data):
        depth = len(data["levels"])
        records = _decode(data["records"]).reshape(depth, data["width"])
        extra = lead = None
        if data.get("extra") is not None:
            extra = _decode(data["extra"]).reshape(data["extra_shape"])
        if data.get("lead") is not None:
            lead = _decode(data["lead"]).reshape(data["lead_shape"])
        return cls(
            first=int(data["first"]),
            stop=int(data["stop"]),
            next=int(data["next"]),
            levels=np.array(data["levels"], dtype=np.int64),
            indices=np.array(data["indices"], dtype=np.int64),
            records=records,
            seconds=float(data["seconds"]),
            threads=int(data.get("threads", 1)),
            extra=extra,
            lead_owner=int(data.get("lead_owner", -1)),
            lead=lead,
        )


def _check_schema(data, source):
    """Refuse a checkpoint or partial whose fields are missing, of the wrong type or inconsistent, naming the field.

    Run on every file after its checksum matched (so also on a hand-edited
    file whose checksum was recomputed), before anything else reads it.
    """
    from fastgrad._reduction import MAX_TREE_DEPTH

    def refuse(field, wanted, value):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise PartialError(f"{source!r} is corrupted: {field} must be {wanted}; got {shown}")

    def integer(container, key, field, low=0, high=None, optional=False):
        if optional and container.get(key) is None:
            return None
        value = container.get(key)
        bounds = f">= {low}" + (f" and <= {high}" if high is not None else "")
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            refuse(field, f"an integer {bounds}", value)
        return value

    if not isinstance(data.get("fingerprint"), dict) or not all(isinstance(k, str) for k in data["fingerprint"]):
        refuse("fingerprint", "an object (the run's description)", data.get("fingerprint"))
    n_chunks = integer(data, "n_chunks", "n_chunks", low=1)
    ranks = integer(data, "ranks", "ranks", low=1) if "ranks" in data else 1
    shard = data.get("shard")
    if shard is not None and not (isinstance(shard, list) and len(shard) == 2
                                  and all(isinstance(v, int) and not isinstance(v, bool) for v in shard)
                                  and 0 <= shard[0] < shard[1]):  # fmt: skip
        refuse("shard", "null or [i, K] with 0 <= i < K", shard)
    coefficients = data.get("coefficients")
    if coefficients is not None and not isinstance(coefficients, list):
        refuse("coefficients", "null or a list (one entry per estimator)", coefficients)
    parts = data.get("parts")
    if not isinstance(parts, list) or not parts or len(parts) > ranks:
        refuse("parts", f"a list of 1 to {ranks} parts", parts)
    for k, part in enumerate(parts):
        where = f"parts[{k}]"
        if not isinstance(part, dict):
            refuse(where, "an object", part)
        first = integer(part, "first", f"{where}.first", high=n_chunks)
        stop = integer(part, "stop", f"{where}.stop", low=first, high=n_chunks)
        integer(part, "next", f"{where}.next", low=first, high=stop)
        integer(part, "width", f"{where}.width", low=0)
        integer(part, "threads", f"{where}.threads", low=1, optional=True)
        for key in ("levels", "indices"):
            values = part.get(key)
            if (
                not isinstance(values, list)
                or len(values) > MAX_TREE_DEPTH
                or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**62 for v in values)
            ):
                refuse(f"{where}.{key}", f"a list of at most {MAX_TREE_DEPTH} non-negative integers", values)
        if len(part["levels"]) != len(part["indices"]):
            refuse(f"{where}.indices", f"as long as {where}.levels ({len(part['levels'])})", part["indices"])
        seconds = part.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < float("inf"):
            refuse(f"{where}.seconds", "a number of seconds >= 0", seconds)
        for key in ("records", "extra", "lead"):
            if (key == "records" or part.get(key) is not None) and not isinstance(part.get(key), str):
                refuse(f"{where}.{key}", "base64 text", part.get(key))
        for key in ("extra_shape", "lead_shape"):
            shape = part.get(key)
            if shape is not None and not (isinstance(shape, list) and all(
                    isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in shape)):  # fmt: skip
                refuse(f"{where}.{key}", "null or a list of non-negative integers", shape)
        if "lead_owner" in part and (isinstance(part["lead_owner"], bool) or not isinstance(part["lead_owner"], int)):
            refuse(f"{where}.lead_owner", "an integer", part["lead_owner"])


def _encode(array):
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f8").tobytes()).decode("ascii")


def _decode(text):
    return np.frombuffer(base64.b64decode(text.encode("ascii"), validate=True), dtype="<f8").astype(np.float64)


@dataclass
class Partial:
    """What a checkpoint file or a shard's partial result holds: a run's fingerprint and its parts."""

    fingerprint: dict
    n_chunks: int
    parts: list
    shard: tuple = None  # (i, K) of a --shard run
    ranks: int = 1  # MPI ranks that wrote it (one part each)
    interrupted: str = None  # "SIGINT"/"SIGTERM" when the shard stopped early (not saved)
    coefficients: list = None  # per specification, the pilot's coefficient matrix (lists) or None

    def body(self):
        return {
            "coefficients": self.coefficients,
            "format": PARTIAL_FORMAT,
            "format_version": PARTIAL_VERSION,
            "fingerprint": self.fingerprint,
            "n_chunks": self.n_chunks,
            "shard": list(self.shard) if self.shard else None,
            "ranks": self.ranks,
            "parts": [part.to_dict() for part in self.parts],
        }

    def dumps(self):
        body = self.body()
        return json.dumps({"sha256": _digest(body), **body}, indent=1, allow_nan=False) + "\n"

    def save(self, path):
        write_atomically(Path(path), self.dumps())

    @classmethod
    def load(cls, path):
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as error:
            raise PartialError(f"cannot read {str(path)!r}: {error.strerror}") from None
        except UnicodeDecodeError:
            raise PartialError(
                f"{str(path)!r} is not a fastgrad checkpoint or partial result: not text (a binary file?)"
            ) from None
        return cls.loads(text, str(path))

    @classmethod
    def loads(cls, text, source="<text>"):
        try:
            data = json.loads(text)
        except ValueError:
            raise PartialError(
                f"{source!r} is not a fastgrad checkpoint or partial result: not JSON (truncated?)"
            ) from None
        if not isinstance(data, dict) or data.get("format") != PARTIAL_FORMAT:
            raise PartialError(
                f"{source!r} is not a fastgrad checkpoint or partial result (no format {PARTIAL_FORMAT!r})"
            )
        if data.get("format_version") != PARTIAL_VERSION:
            raise PartialError(
                f"{source!r} has format version {data.get('format_version')!r}; this fastgrad reads {PARTIAL_VERSION}"
            )
        stored = data.pop("sha256", None)
        try:
            digest = _digest(data)
        except (TypeError, ValueError):  # (keys that JSON cannot sort)
            digest = None
        if stored != digest:
            raise PartialError(f"{source!r} is corrupted: its SHA-256 checksum does not match its contents")
        _check_schema(data, source)
        try:
            parts = [Part.from_dict(part) for part in data["parts"]]
        except (KeyError, TypeError, ValueError) as error:
            raise PartialError(f"{source!r} is corrupted: {error}") from None
        return cls(
            fingerprint=data["fingerprint"],
            n_chunks=int(data["n_chunks"]),
            parts=parts,
            shard=tuple(data["shard"]) if data.get("shard") else None,
            ranks=int(data.get("ranks", 1)),
            coefficients=data.get("coefficients"),
        )

    def check_versions(self, source, use="merge it with the fastgrad that wrote it"):
        """Refuse a file written by another fastgrad version or stream/record layout than the running one."""
        from fastgrad import __version__
        from fastgrad.rng import CHUNK_SIZE, STREAM_LAYOUT_VERSION

        running = {"fastgrad": __version__, "stream_layout": STREAM_LAYOUT_VERSION,
                   "record_layout": RECORD_LAYOUT_VERSION, "chunk_size": CHUNK_SIZE}  # fmt: skip
        for key, ours in running.items():
            theirs = self.fingerprint.get(key)
            if theirs != ours:
                raise PartialError(
                    f"{source!r} was written with {key} {theirs!r}; this fastgrad has {key} {ours!r}, and its "
                    f"numbers would not be comparable: {use}"
                )

    def check_fingerprint(self, fingerprint, source):
        """Refuse, naming the first difference, when this file is from another run (or another fastgrad)."""
        if self.fingerprint == fingerprint:
            return
        self.check_versions(source, "finish that run with the fastgrad that wrote it, or delete the file or choose "
                                    "another path to start again")  # fmt: skip
        for key in sorted(set(self.fingerprint) | set(fingerprint)):
            theirs, ours = self.fingerprint.get(key), fingerprint.get(key)
            if theirs != ours:
                raise PartialError(
                    f"{source!r} is from a different run: {key} is {theirs!r} there and {ours!r} here; "
                    "refusing to use it or write over it (delete it, or choose another path)"
                )


def _digest(body):
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def output_target(path, what):
    """Return the file that writing ``path`` writes (links followed); refuse what is not a regular file.

    ``what`` names the argument in messages. The directory must exist and be
    writable; an existing target must be a regular file (not a directory, a
    FIFO, a device or a socket: results are written through a temporary file
    and a rename, which would replace such a node instead of writing to it).
    """
    import stat

    target = Path(os.path.realpath(path))
    if target != Path(path).absolute() and Path(path).is_symlink():
        shown = f"{str(path)!r} (a link to {str(target)!r})"
    else:
        shown = repr(str(path))
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and stat.S_ISDIR(mode):
        raise ValueError(f"{what}: {shown} is a directory; give a file name")
    if mode is not None and not stat.S_ISREG(mode):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")  # fmt: skip
        raise ValueError(f"{what}: {shown} is {kind}; fastgrad writes to regular files (or '-', standard output)")
    if not target.parent.is_dir():
        raise ValueError(f"{what}: directory {str(target.parent)!r} does not exist")
    if not os.access(target.parent, os.W_OK):
        raise ValueError(f"{what}: cannot write in directory {str(target.parent)!r}")
    return target


def _new_file_mode(target):
    """Return the mode a written file gets: an existing file's own, else 0666 less the umask (as open() gives)."""
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask():
    """Return the umask, read without setting it where the system allows (Linux: ``/proc/self/status``).

    Setting it to read it (``os.umask``'s only way) briefly changes it for
    every thread, and a file another thread creates meanwhile gets mode 0666.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o077)  # (elsewhere: the brief change is to a safe mask)
    os.umask(umask)
    return umask


def write_atomically(path, text):
    """Write ``text`` to ``path`` through a temporary file, fsync and a rename: never a half-written file.

    A symbolic link is followed (its target is replaced, the link stays), and
    the file keeps its mode, or gets the umask's (``mkstemp`` alone gives 0600).
    """
    target = output_target(path, "output")
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    path = target
    try:
        os.fchmod(handle, _new_file_mode(target))
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def shard_range(n_chunks, index, count):
    """Chunks ``[lo, hi)`` of shard ``index`` of ``count``."""
    return n_chunks * index // count, n_chunks * (index + 1) // count


def merge_parts(parts, layout, n_chunks, source="the partial results", allow_gaps=False):
    """Merge finished parts covering ``[0, n_chunks)`` exactly once, in chunk order; return the record.

    With ``allow_gaps`` (an MPI run stopped early), unfinished parts are
    merged as they are: the record then holds the moments of the chunks done.
    """
    parts = check_coverage(parts, n_chunks, source, allow_gaps)
    tree = MomentTree(layout)
    for part in parts:
        for level, index, record in zip(part.levels, part.indices, part.records, strict=True):
            tree.depth = tree_push_node(
                tree.levels, tree.indices, tree.records, tree.depth, level, index, record,
                layout.n_rows, layout.pair_x, layout.pair_y,
            )  # fmt: skip
    tree.next_chunk = n_chunks
    return tree.fold()


def check_coverage(parts, n_chunks, source, allow_gaps=False):
    """Return the parts in chunk order, after checking they are finished and cover ``[0, n_chunks)`` once."""
    parts = sorted(parts, key=lambda part: (part.first, part.stop))
    position = 0
    for part in parts:
        if allow_gaps:
            break
        if not part.done:
            raise PartialError(
                f"{source}: chunks [{part.first}, {part.stop}) are not finished (done up to {part.next}); "
                "resume that run first"
            )
        if part.first > position:
            raise PartialError(f"{source}: chunks [{position}, {part.first}) are missing (a shard was not given)")
        if part.first < position:
            raise PartialError(f"{source}: chunks [{part.first}, {min(position, part.stop)}) are given twice")
        position = part.stop
    if position != n_chunks and not allow_gaps:
        raise PartialError(f"{source}: chunks [{position}, {n_chunks}) are missing (a shard was not given)")
    return parts


def repeat_starts(offsets, sizes, repeats):
    """Position where each repeat of a curve starts, in the order of its per-repeat sums."""
    return np.concatenate([offsets[k] + np.arange(repeats) * size for k, size in enumerate(sizes)])


def merge_curve_parts(parts, n_chunks, starts, per_chunk, shape, source="the partial results", allow_gaps=False):
    """Per-repeat sums of a curve from its parts, bit-identical to one process.

    Each repeat's sum is taken from the part where the repeat starts; the
    pieces later parts hold of it (their *lead*) are then added in chunk
    order, as one process adds them.
    """
    parts = check_coverage(parts, n_chunks, source, allow_gaps)
    totals = np.zeros(shape)
    for part in parts:
        own = (starts >= part.first * per_chunk) & (starts < part.stop * per_chunk)
        totals[:, own] = part.extra[:, own]
        if part.lead is not None:
            for piece in part.lead:
                totals[:, part.lead_owner] += piece
    return totals


def merge_extra(parts):
    """Return the parts' per-chunk extra values, in chunk order (None if they keep none)."""
    parts = sorted(parts, key=lambda part: (part.first, part.stop))
    arrays = [part.extra for part in parts if part.extra is not None]
    return np.concatenate(arrays) if arrays else None


# --- running a range of chunks in batches ------------------------------------------------------


class Job:
    """How to run the chunks of one run: which, with what reporting, saving and stopping.

    Parameters
    ----------
    fingerprint : dict
        What determines the run's numbers (checked against checkpoints).
    n_chunks : int
    draws_between : callable ``(a, b) -> int``
        Draws in chunks ``[a, b)`` (for progress and partial results).
    progress : bool or None
        Show progress on stderr; None: when stderr is a terminal.
    checkpoint : path or None
    checkpoint_every : float
        Seconds between checkpoint writes (also written at the end, on
        interruption and on SIGTERM).
    shard : (i, K) or None
    comm : mpi4py communicator or None
    """

    def __init__(
        self, fingerprint, n_chunks, draws_between, *, progress=None, checkpoint=None, checkpoint_every=60.0,
        shard=None, comm=None,
    ):  # fmt: skip
        self.fingerprint = fingerprint
        self.n_chunks = n_chunks
        self.draws_between = draws_between
        self.progress = sys.stderr.isatty() if progress is None else bool(progress)
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.checkpoint_every = checkpoint_every
        self.shard = shard
        self.comm = comm
        self.rank = comm.Get_rank() if comm is not None else 0
        self.ranks = comm.Get_size() if comm is not None else 1
        if comm is not None:
            self.first, self.stop = shard_range(n_chunks, self.rank, self.ranks)
        elif shard is not None:
            self.first, self.stop = shard_range(n_chunks, *shard)
        else:
            self.first, self.stop = 0, n_chunks
        self._lock = None  # the checkpoint's lock file descriptor while this job holds it
        self.checkpoint_error = None  # why the last checkpoint write failed (None: it did, or none was due)
        self._warned_checkpoint = False
        self.stop_reason = None  # "SIGINT" or "SIGTERM" once a stop was asked for
        self._holding_signals = False  # inside signals(): its handlers are installed
        self.coefficients = None  # the pilot's, when there is one: partial results carry them to merge
        self.resumed_from = None
        self.dispatch_seconds = 0.0  # time between batches spent outside the kernels
        self._prepared = None
        self._extras = []  # per-chunk extra values, in chunk order
        self._last_checkpoint = time.monotonic()
        self._shown = False

    # -- resuming ---------------------------------------------------------------------------

    def prepare(self, layout):
        """Load and check any checkpoint now (before compiling), and keep the tree to start from."""
        self._prepared = self.resume(layout)

    def lock(self):
        """Take the checkpoint's lock (``<checkpoint>.lock``, pid inside), or refuse at once if another run has it.

        An exclusive ``flock``: the system drops it when the process ends in
        any way (``kill -9`` too), so a stale lock file never blocks a rerun.
        Only the process that writes the checkpoint (MPI rank 0) takes it.
        """
        try:
            import fcntl
        except ImportError:  # pragma: no cover (no flock on this platform: no lock)
            return
        if self.checkpoint is None or self.rank != 0 or self._lock is not None:
            return
        target = Path(os.path.realpath(self.checkpoint))
        path = target.with_name(target.name + ".lock")
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as error:
                raise PartialError(f"cannot lock the checkpoint {str(self.checkpoint)!r}: {error}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise PartialError(
                    f"the checkpoint {str(self.checkpoint)!r} is in use by another run (pid {holder}, lock file "
                    f"{str(path)!r}): wait for it to finish, or choose another path"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino  # not a file a finishing holder just removed
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock = (fd, path)

    def release(self):
        """Give the checkpoint's lock back (and remove its file)."""
        if self._lock is None:
            return
        fd, path = self._lock
        self._lock = None
        try:
            path.unlink()
        except OSError:
            pass
        os.close(fd)

    def _checkpoint_part(self):
        """Load and check the checkpoint (same work, ranks and shard); return (its name, this rank's part)."""
        partial = Partial.load(self.checkpoint)
        source = str(self.checkpoint)
        partial.check_fingerprint(self.fingerprint, source)
        if partial.n_chunks != self.n_chunks or partial.ranks != self.ranks or len(partial.parts) != self.ranks:
            raise PartialError(
                f"{source!r} was written by a run over {partial.n_chunks} chunks on {partial.ranks} process(es); "
                f"this one has {self.n_chunks} chunks on {self.ranks}: resume with the same number of MPI ranks"
            )
        if (partial.shard and tuple(partial.shard)) != (self.shard and tuple(self.shard)):
            raise PartialError(f"{source!r} is for shard {partial.shard}, not {self.shard}")
        return source, partial.parts[self.rank]

    def resume(self, layout):
        """Return the tree to start from (restored from the checkpoint if one exists, else empty) and its seconds."""
        if self.checkpoint is None or not self.checkpoint.exists():
            tree = MomentTree(layout)
            tree.next_chunk = self.first
            return tree, 0.0
        source, part = self._checkpoint_part()
        if (part.first, part.stop) != (self.first, self.stop):
            raise PartialError(f"{source!r} covers chunks [{part.first}, {part.stop}), not [{self.first}, {self.stop})")
        self.resumed_from = part.next
        if part.extra is not None:
            self._extras = [part.extra]
        return part.tree(layout), part.seconds

    # -- the batch loop ---------------------------------------------------------------------

    def run(self, batch, layout, extra=None, max_chunks=None):
        """Run the job's chunks; return (tree, seconds of this run and any resumed one).

        ``batch(lo, hi)`` returns the moment records of chunks ``[lo, hi)``.
        ``extra(records)``, if given, maps a batch's chunk records to per-chunk
        values the run keeps beside the tree (checkpointed, shipped and merged
        with it): :meth:`extra_values` returns them in chunk order. Batches
        hold at most ``max_chunks`` chunks (default :data:`MAX_BATCH_CHUNKS`).
        """
        max_chunks = MAX_BATCH_CHUNKS if max_chunks is None else min(max_chunks, MAX_BATCH_CHUNKS)
        tree, earlier = self._prepared if self._prepared is not None else self.resume(layout)
        self._prepared = None

        def step(lo, hi):
            records = batch(lo, hi)
            if extra is not None:
                self._extras.append(extra(records))
            tree.push(lo, records)

        _, seconds = self._loop(
            step, lambda lo, seconds: self._save(tree, seconds), tree.next_chunk, max_chunks, earlier
        )
        return tree, seconds

    def _loop(self, step, save, lo, max_chunks, earlier):
        """Run chunks ``[lo, stop)`` in batches with ``step(lo, hi)``; return (next chunk, seconds so far in all).

        Between batches: progress, ``save(next chunk, seconds)`` when a
        checkpoint is due, and stopping when asked. One process sizes its
        batches to :data:`TARGET_BATCH_SECONDS`; MPI ranks run the same number
        of batches and agree after each, with one ``Allreduce``, whether to
        stop and whether to save, so every rank does both together.
        """
        started = time.perf_counter()
        if self.comm is None:
            per_batch = min(max_chunks, FIRST_BATCH_CHUNKS or 4 * max(1, min(os.cpu_count() or 1, 64)))
        else:
            from mpi4py import MPI

            size = self.stop - self.first
            n_batches = max(1, math.ceil((self.n_chunks // self.ranks + 1) / min(MPI_BATCH_CHUNKS, max_chunks)))
            bounds = [self.first + size * k // n_batches for k in range(n_batches + 1)]
        with self.signals():
            k = 0
            while True:
                if self.comm is None:
                    if lo >= self.stop or self.stop_reason is not None:
                        break
                    hi = min(self.stop, lo + per_batch)
                else:
                    if k == n_batches:
                        break
                    k += 1
                    hi = bounds[k]
                begun = time.perf_counter()
                failure = None  # (MPI) what stopped this rank's batch: told to every rank after it
                if hi > lo:  # (under MPI, batches finished before a resume are skipped)
                    try:
                        step(lo, hi)
                    except UserFunctionError as error:  # keep what is finished, and say where
                        if self.comm is not None:
                            failure = error
                        else:
                            self._end_progress()
                            if self.checkpoint is not None:
                                save(lo, earlier + time.perf_counter() - started)
                            done = self.draws_between(self.first, lo)
                            raise UserFunctionError(error.function, error.error, done, self.checkpoint) from error.error
                    except Exception as error:
                        if self.comm is None:
                            raise
                        failure = error
                took = time.perf_counter() - begun
                between = time.perf_counter()
                count, lo = hi - lo, lo if failure is not None else max(lo, hi)
                due = self.checkpoint is not None and time.monotonic() - self._last_checkpoint >= self.checkpoint_every
                stop = False
                if self.comm is None:
                    if took > 0:  # aim the next batch at TARGET_BATCH_SECONDS
                        per_batch = int(min(max_chunks, max(1, count * TARGET_BATCH_SECONDS / took)))
                else:
                    flags = np.array([self.stop_reason is not None, due, failure is not None], dtype=np.int64)
                    self.comm.Allreduce(MPI.IN_PLACE, flags, op=MPI.MAX)
                    stop, due = bool(flags[0]), bool(flags[1])
                    if flags[2]:
                        self._rank_failed(failure, lo, save, earlier + time.perf_counter() - started)
                    if stop:
                        self.stop_reason = self.stop_reason or "SIGTERM"
                        due = self.checkpoint is not None
                if self.rank == 0:
                    self._show(lo, started, earlier)
                if due:
                    save(lo, earlier + time.perf_counter() - started)
                self.dispatch_seconds += time.perf_counter() - between
                if stop:
                    break
        self._end_progress()
        seconds = earlier + time.perf_counter() - started
        if self.checkpoint is not None:
            save(lo, seconds)
        return lo, seconds

    def _rank_failed(self, failure, lo, save, seconds):
        """(MPI) Some rank's batch raised: every rank stops here together, and raises the same error.

        Every rank calls this after the ``Allreduce`` that told them. A user's
        function that raised (:class:`UserFunctionError`) is handled as in one
        process: the checkpoint is saved with every rank's finished batches
        (the failing ranks' last batch not among them), and every rank raises
        the first failing rank's error with the rank named and the draws kept
        by all. Anything else (fastgrad's own fault, ``MemoryError``) saves
        nothing: the failing rank raises its own exception, the others a
        ``RuntimeError`` that names it.
        """
        self._end_progress()
        own = None
        if failure is not None:
            own = (isinstance(failure, UserFunctionError), f"{type(failure).__name__}: {failure}")
        told = self.comm.allgather((lo, own))
        failed = [rank for rank, (_, what) in enumerate(told) if what is not None]
        first = failed[0]
        user = all(told[rank][1][0] for rank in failed)
        if not user:
            if failure is not None and not isinstance(failure, UserFunctionError):
                raise failure
            culprit = next(rank for rank in failed if not told[rank][1][0])
            raise RuntimeError(
                f"MPI rank {culprit} of {self.ranks} failed with {told[culprit][1][1]}; every rank stopped "
                "(the last checkpoint written, if any, is kept)"
            )
        if self.checkpoint is not None:
            save(lo, seconds)
        done = sum(self.draws_between(shard_range(self.n_chunks, rank, self.ranks)[0], next_chunk)
                   for rank, (next_chunk, _) in enumerate(told))  # fmt: skip
        function, error = self.comm.bcast(_picklable(failure) if self.rank == first else None, root=first)
        where = f"MPI rank {first} of {self.ranks}"
        if len(failed) > 1:
            where += f" (and {len(failed) - 1} other rank{'s' if len(failed) > 2 else ''})"
        raise UserFunctionError(function, error, done, self.checkpoint, where=where) from error

    # -- checkpoints ------------------------------------------------------------------------

    # -- variance curves: the state is the per-repeat sums, not a tree ----------------------

    def run_curve(self, step, shape, max_chunks, lead_owner=-1):
        """Run a curve's chunks: ``step(lo, hi, totals, lead)`` adds chunks ``[lo, hi)`` into the per-repeat sums.

        Pieces are added in chunk order whatever the batches, so a resumed
        curve is bit-identical. A shard or rank that starts inside a repeat
        (``lead_owner``) keeps that repeat's pieces apart, in ``lead``, for
        :func:`merge_curve_parts`. Returns a finished or stopped :class:`Part`.
        """
        totals, lead, lo, earlier = self._resume_curve(shape)
        lo, seconds = self._loop(
            lambda lo, hi: step(lo, hi, totals, lead),
            lambda lo, seconds: self._save_curve(totals, lead, lo, seconds, lead_owner),
            lo,
            max_chunks,
            earlier,
        )
        return self._curve_part(totals, lead, lo, seconds, lead_owner)

    def _curve_part(self, totals, lead, next_chunk, seconds, lead_owner, threads=1):
        return Part(
            first=self.first, stop=self.stop, next=next_chunk, levels=np.zeros(0, np.int64),
            indices=np.zeros(0, np.int64), records=np.zeros((0, 0)), seconds=seconds, threads=threads,
            extra=totals, lead_owner=lead_owner, lead=np.array(lead).reshape(len(lead), totals.shape[0]),
        )  # fmt: skip

    def _resume_curve(self, shape):
        if self.checkpoint is None or not self.checkpoint.exists():
            return np.zeros(shape), [], self.first, 0.0
        source, part = self._checkpoint_part()
        if part.extra is None or part.extra.shape != tuple(shape) or (part.first, part.stop) != (self.first, self.stop):
            raise PartialError(f"{source!r} does not hold this curve's per-repeat sums")
        self.resumed_from = part.next
        lead = [] if part.lead is None else list(part.lead)
        return part.extra.copy(), lead, part.next, part.seconds

    def _save_curve(self, totals, lead, next_chunk, seconds, lead_owner):
        part = self._curve_part(totals, lead, next_chunk, seconds, lead_owner)
        parts = [part]
        if self.comm is not None:
            parts = self.comm.gather(part, root=0)
            if self.rank != 0:
                self._last_checkpoint = time.monotonic()
                return
        self._write_checkpoint(self.make_partial(parts))
        self._last_checkpoint = time.monotonic()

    def _write_checkpoint(self, partial):
        """Save the checkpoint; if the file system refuses, warn once and let the run go on."""
        try:
            partial.save(self.checkpoint)
        except (OSError, ValueError) as error:  # (ValueError: the path is no longer a writable regular file)
            self.checkpoint_error = f"{type(error).__name__}: {error}"
            if not self._warned_checkpoint:
                self._warned_checkpoint = True
                warnings.warn(
                    CheckpointWarning(
                        f"could not write the checkpoint {str(self.checkpoint)!r} ({self.checkpoint_error}); "
                        "the run goes on and its result is returned, but it cannot be resumed from there"
                    ),
                    stacklevel=2,
                )
        else:
            self.checkpoint_error = None

    def extra_values(self):
        """Return the per-chunk extra values of the chunks done, in chunk order (None without ``extra``)."""
        return np.concatenate(self._extras) if self._extras else None

    def _save(self, tree, seconds):
        part = Part.of(tree, self.first, self.stop, seconds, extra=self.extra_values())
        if self.comm is not None:
            parts = self.comm.gather(part, root=0)
            if self.rank != 0:
                self._last_checkpoint = time.monotonic()
                return
        else:
            parts = [part]
        self._write_checkpoint(self.make_partial(parts))
        self._last_checkpoint = time.monotonic()

    def partial(self, tree, seconds, threads=1):
        """Return the :class:`Partial` of a shard (finished, or stopped early)."""
        part = Part.of(tree, self.first, self.stop, seconds, threads, self.extra_values())
        stopped = None if part.done else (self.stop_reason or "stopped")
        return self.make_partial([part], interrupted=stopped)

    def make_partial(self, parts, **extra):
        """Return the :class:`Partial` of these parts (and the pilot's coefficients, if any)."""
        coefficients = None
        if self.coefficients is not None:
            coefficients = [None if c is None else np.asarray(c).tolist() for c in self.coefficients]
        return Partial(self.fingerprint, self.n_chunks, parts, shard=self.shard, ranks=self.ranks,
                       coefficients=coefficients, **extra)  # fmt: skip

    # -- progress ---------------------------------------------------------------------------

    def _show(self, next_chunk, started, earlier):
        if not self.progress:
            return
        total = self.draws_between(self.first, self.stop) * self.ranks
        done = self.draws_between(self.first, next_chunk) * self.ranks
        here = self.draws_between(self.resumed_from if self.resumed_from is not None else self.first, next_chunk)
        elapsed = time.perf_counter() - started
        rate = here * self.ranks / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else math.inf
        text = (
            f"\rfastgrad: {done:,} of {total:,} draws ({100 * done / total:.1f}%), "
            f"{rate / 1e6:,.0f} M draws/s, ETA {_duration(eta)}  "
        )
        sys.stderr.write(text)
        sys.stderr.flush()
        self._shown = True

    def _end_progress(self):
        if self._shown:
            sys.stderr.write("\n")
            sys.stderr.flush()

    # -- signals ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def signals(self):
        """Ctrl-C and SIGTERM ask the loop to stop after the current batch (a second Ctrl-C aborts).

        Re-entrant: a run holds them from its pilot to its last batch, and the
        loop's own use inside that changes nothing. A stop already received
        by :func:`holding_stops` (while the command started up or compiled)
        counts as received now: the run stops before its first batch.
        """
        if threading.current_thread() is not threading.main_thread() or self._holding_signals:
            yield
            return
        held = _held_stops
        if held and self.stop_reason is None:
            self.stop_reason = held[-1]

        def on_interrupt(signum, frame):
            if held is not None:
                held.append("SIGINT")
            if self.stop_reason == "SIGINT":
                raise KeyboardInterrupt
            self.stop_reason = "SIGINT"

        def on_terminate(signum, frame):
            if held is not None:
                held.append("SIGTERM")
            self.stop_reason = "SIGTERM"

        previous = signal.signal(signal.SIGINT, on_interrupt), signal.signal(signal.SIGTERM, on_terminate)
        self._holding_signals = True
        try:
            yield
        finally:
            self._holding_signals = False
            signal.signal(signal.SIGINT, previous[0])
            signal.signal(signal.SIGTERM, previous[1])


#: The stops (``"SIGINT"``, ``"SIGTERM"``) received while :func:`holding_stops` holds, in order (None: it
#: does not hold).
_held_stops = None


@contextlib.contextmanager
def holding_stops():
    """Hold Ctrl-C and SIGTERM for a whole command, not only a run's batches; yield the stops received.

    The command line wraps each run in this. Outside the batches (starting
    up, compiling, printing and writing the result) a signal is remembered
    instead of ending the process at once: a run that has not started its
    batches yet stops before the first (:meth:`Job.signals`), and a run that
    had already finished keeps its complete result, printed and written. A
    second Ctrl-C still aborts at once. Outside the main thread it does
    nothing.
    """
    global _held_stops
    if threading.current_thread() is not threading.main_thread() or _held_stops is not None:
        yield [] if _held_stops is None else _held_stops
        return
    received = []

    def on_interrupt(signum, frame):
        if "SIGINT" in received:
            raise KeyboardInterrupt
        received.append("SIGINT")

    def on_terminate(signum, frame):
        received.append("SIGTERM")

    previous = signal.signal(signal.SIGINT, on_interrupt), signal.signal(signal.SIGTERM, on_terminate)
    _held_stops = received
    try:
        yield received
    finally:
        _held_stops = None
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


def _duration(seconds):
    if not math.isfinite(seconds):
        return "-"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"
