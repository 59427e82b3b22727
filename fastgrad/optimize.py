"""Stochastic-gradient optimisation with each estimator: many replicates in parallel, exact and reproducible.

``optimize`` runs, for every estimator, ``replicates`` independent SGD (or
Adam) trajectories from the same start. Step ``t`` of replicate ``r`` draws
``batch`` draws from stream ``(seed, r * 2**32 + t)``, estimates the gradient
with the estimator at the replicate's current parameters, and updates them;
a replicate's trajectory depends on nothing but ``(seed, r)``, so it is the
same on any thread count and reruns alone. Positive parameters move through
their logarithms (``scale`` as ``log_scale``, ``rate`` as ``log_rate``, a
shape or concentration as ``log_shape`` or ``log_concentration``), a
Cholesky factor's diagonal through its logarithm (``log_diag_scale_tril``),
a probability through its logit and a Categorical's probabilities through
logits whose softmax they are, with gradients the estimators compute
natively for those parameterisations. Only the logged steps are kept.

Every family moves: those whose kernel parameters a kernel rebuilds from the
parameters (``Family.theta_of``, a joint family's ``Joint.theta_into``),
which every built-in family has.
"""

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numba
import numpy as np
from numba.extending import register_jitable

from fastgrad import _validate
from fastgrad._jit import serial
from fastgrad._parallel import _pool
from fastgrad.estimators import Plan, parse_estimators
from fastgrad.schedules import Schedule, constant

__all__ = ["OptimizationPartial", "OptimizationResult", "optimize"]

OPTIMIZERS = ("sgd", "adam")
#: Most replicates (stream r * 2**32 + t needs r < 2**30) and steps (t < 2**32).
MAX_REPLICATES = 2**30
MAX_STEPS = 2**32 - 1
QUANTILES = (0.1, 0.5, 0.9)
#: The columns of every logged statistic.
COLUMNS = ("mean", "q10", "q50", "q90", "std", "finite")
#: Most memory the logged parameters of one kernel call take (replicates x parameters x logged steps).
SNAPSHOT_BYTES = 64 * 2**20


@dataclass
class EstimatorTrajectory:
    """One estimator's replicates: statistics over them at every logged step.

    ``parameters[name]`` and ``objective`` are ``(steps logged, 5)`` arrays:
    the mean, the 10, 50 and 90 % quantiles and the standard deviation over
    replicates (:data:`COLUMNS`; for every
    parameter of the distribution and every optimised natural one);
    ``objective`` is the exact ``E_q[f]`` at each replicate's parameters
    (None for a user's function); ``distance`` the largest absolute
    difference to ``optimum`` over the optimised parameters (None without
    one). ``reached`` holds each replicate's steps to come within
    ``tolerance`` of the optimum the first time (-1: not within the steps
    run), ``settled`` the steps after which it stayed within up to the last
    step run (-1: outside at the end), ``final`` its parameters after the
    last step (replicates x the family's parameters).
    """

    estimator: str
    evaluations_per_step: int
    draws_per_step: int
    parameters: dict
    objective: object
    distance: object
    reached: np.ndarray = field(repr=False)
    final: np.ndarray = field(repr=False)
    settled: np.ndarray = field(repr=False, default=None)

    @property
    def diverged(self):
        """Replicates whose parameters are not all finite after the last step (SGD diverged)."""
        return int(np.sum(~np.all(np.isfinite(self.final), axis=1)))

    def steps_to_tolerance(self):
        """``(median, 10 %, 90 % quantiles, replicates that never reached it)`` of the steps needed (None: none did)."""
        return _step_quantiles(self.reached)

    def steps_to_settle(self):
        """``(median, 10 %, 90 % quantiles, replicates outside at the end)`` of the steps after which each stayed."""
        return _step_quantiles(self.settled)


def _step_quantiles(steps):
    done = steps[steps >= 0]
    never = int(np.sum(steps < 0))
    if done.size == 0:
        return None, never
    return tuple(float(v) for v in np.quantile(done, (0.5, 0.1, 0.9))), never


def _quantile_cell(quantiles):
    median, low, high = quantiles
    return f"{median:g} [{low:g}, {high:g}]"


@dataclass
class OptimizationResult:
    """What :func:`optimize` returns: per estimator, the logged statistics of its replicates.

    ``steps`` are the logged step counts (0 is the start); ``trajectories``
    maps each estimator's name to its :class:`EstimatorTrajectory`.
    """

    distribution: object
    function: object
    wrt: tuple
    optimized: tuple
    steps: np.ndarray
    batch: int
    replicates: int
    optimizer: str
    schedule: Schedule
    seed: int
    optimum: dict
    tolerance: float
    trajectories: dict
    seconds: float
    equal_cost: bool = False
    optimum_objective: object = None
    threads: int = 1
    steps_requested: int = None
    steps_done: int = None
    interrupted: str = None

    def __getitem__(self, estimator):
        return self.trajectories[parse_estimators([estimator])[0].name]

    def plot(self, path, *, dpi=150):
        """Write the objective (or distance) against steps and evaluations to ``path`` (PNG; needs matplotlib).

        See :func:`fastgrad.plotting.plot_optimization`.
        """
        from fastgrad.plotting import plot_optimization

        return plot_optimization(self, path, dpi=dpi)

    def to_dict(self):
        """JSON-ready: every logged statistic, the steps to tolerance per estimator, the run's settings."""

        def table(values):
            if values is None:
                return None
            return [{k: float(v) if math.isfinite(v) else None for k, v in zip(COLUMNS, row, strict=True)}
                    for row in values]  # fmt: skip

        out = {}
        for name, t in self.trajectories.items():
            quantiles, never = t.steps_to_tolerance()
            settled, outside = t.steps_to_settle()
            out[name] = {
                "draws_per_step": t.draws_per_step,
                "evaluations_per_step": t.evaluations_per_step,
                "parameters": {p: table(v) for p, v in t.parameters.items()},
                "objective": table(t.objective),
                "distance": table(t.distance),
                "steps_to_tolerance": None
                if quantiles is None
                else dict(zip(("q50", "q10", "q90"), quantiles, strict=True)),
                "never_reached": never,
                "steps_to_settle": None if settled is None else dict(zip(("q50", "q10", "q90"), settled, strict=True)),
                "outside_at_end": outside,
                "diverged": t.diverged,
            }
        return {
            "distribution": self.distribution.to_dict(),
            "function": self.function.to_dict() if hasattr(self.function, "to_dict") else str(self.function),
            "wrt": list(self.wrt),
            "optimized": list(self.optimized),
            "steps": self.steps.tolist(),
            "batch": self.batch,
            "equal_cost": self.equal_cost,
            "replicates": self.replicates,
            "optimizer": self.optimizer,
            "learning_rate": self.schedule.to_dict(),
            "seed": self.seed,
            "optimum": self.optimum,
            "tolerance": self.tolerance,
            "optimum_objective": self.optimum_objective,
            "threads": self.threads,
            "steps_requested": self.steps_requested,
            "steps_done": self.steps_done,
            "interrupted": self.interrupted,
            "estimators": out,
        }

    def __str__(self):
        lines = [
            f"fastgrad.optimize: {self.distribution!r}, {self.function}, wrt {', '.join(self.wrt)}",
            f"{self.optimizer}, learning rate {self.schedule}, batch {self.batch}"
            f"{' function evaluations (equal cost)' if self.equal_cost else ''}, {self.replicates:,} replicates "
            f"per estimator, {int(self.steps[-1]):,} steps, seed {self.seed}, {self.seconds:.3g} s",
        ]
        if self.optimum:
            target = ", ".join(
                f"{k} = {v:g}" if np.ndim(v) == 0 else f"{k} = {list(v)}" for k, v in self.optimum.items()
            )
            lines.append(
                f"steps (median [10 %, 90 %] over replicates) and function evaluations (median) to come "
                f"within {self.tolerance:g} of {target} (first), and to stay within it to the end (settled):"
            )
            rows = [("estimator", "first: steps", "evaluations", "never", "settled: steps", "evaluations",
                     "outside at end")]  # fmt: skip
            for name, t in self.trajectories.items():
                row = [name]
                for quantiles, never in (t.steps_to_tolerance(), t.steps_to_settle()):
                    if quantiles is None:
                        row += ["-", "-", f"{never:,}"]
                    else:
                        row += [_quantile_cell(quantiles), f"{quantiles[0] * t.evaluations_per_step:g}", f"{never:,}"]
                rows.append(tuple(row))
            lines += _columns(rows)
        final = len(self.steps) - 1
        rows = [("estimator", *(f"{p} mean [10 %, 90 %]" for p in self.optimized), "exact objective median")]
        for name, t in self.trajectories.items():
            cells = [f"{v[final, 0]:.6g} [{v[final, 1]:.4g}, {v[final, 3]:.4g}]"
                     for v in (t.parameters[p] for p in self.optimized)]  # fmt: skip
            objective = "-" if t.objective is None else f"{t.objective[final, 2]:.6g}"
            rows.append((name, *cells, objective))
        lines.append(f"at step {int(self.steps[-1]):,}:")
        lines += _columns(rows)
        diverged = [f"{name} {t.diverged:,}" for name, t in self.trajectories.items() if t.diverged]
        if diverged:
            lines.append(f"diverged (parameters no longer finite; the statistics are over the others): "
                         f"{', '.join(diverged)} of {self.replicates:,} replicates")  # fmt: skip
        if self.interrupted:
            lines.append(f"interrupted ({self.interrupted}) after step {self.steps_done:,} of "
                         f"{self.steps_requested:,}: the statistics cover the logged steps done (a checkpoint, if "
                         "given, resumes the run)")  # fmt: skip
        return "\n".join(lines)


def _columns(rows):
    widths = [max(len(str(row[c])) for row in rows) for c in range(len(rows[0]))]
    return ["  " + "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows]  # fmt: skip


#: A segment (every estimator's replicates advanced by the same steps, between two looks at signals,
#: progress and checkpoints) aims at this many seconds.
TARGET_SEGMENT_SECONDS = 0.5
#: Replicate-steps of the first segment, whose time sets the next segment's length (the general filler: about
#: 300 ns a replicate-step on one thread, so 0.3 s).
FIRST_SEGMENT = 2**20
#: ... times as many where every estimator runs on the plain kernel (about 2 ns a replicate-step: 35 ms on one
#: thread). The seed case, 10 000 replicates x 1 000 steps, is then one segment, not 512 steps and 488: one thread
#: hand-out and one wait for the slowest thread, not two (10.2-10.9 -> 9.4-10.8 ms a call on 2 threads,
#: 4 alternating runs).
PLAIN_FIRST_SEGMENT = 16
#: A segment that would end inside a block of draws may run on to the block's end if that makes it at most this
#: many times as long: a segment starting inside a block redraws the whole block (512 draws a replicate), which
#: for a short segment costs more than its steps (the seed case, 10 000 replicates, 1 000 steps: 104 steps, then
#: the rest, drew 1 536 normals a replicate; 512, then 488, draw 1 024).
SEGMENT_STRETCH = 8


def _segment_end(step, stop, limit, block_steps):
    """Move a segment's end ``stop`` (``step < stop <= limit``) to a boundary of blocks of ``block_steps`` steps.

    Back to the last boundary after ``step``, or on to the next one if it lies within ``limit`` and stretches
    the segment at most :data:`SEGMENT_STRETCH` times; else ``stop`` as it is (or ``block_steps`` is 0: steps
    and blocks do not line up).
    """
    if block_steps == 0 or stop >= limit:
        return stop
    aligned = stop - stop % block_steps
    if aligned > step:
        return aligned
    after = aligned + block_steps
    return after if after <= limit and after - step <= SEGMENT_STRETCH * (stop - step) else stop


CHECKPOINT_FORMAT = "fastgrad-optimize-checkpoint"
CHECKPOINT_VERSION = 1


class _EstimatorRun:
    """One estimator's replicates while they run: the kernel, the replicates' state, the statistics logged."""

    def __init__(self, spec, plan, draws, distribution, function, coordinates, wrt, layout, replicates, optimum,
                 tolerance):  # fmt: skip
        self.spec, self.plan, self.draws, self.units = spec, plan, draws, draws // plan.group
        self.distribution, self.function, self.coordinates, self.wrt = distribution, function, coordinates, wrt
        self.layout, self.targets, self.target, self.optimum = layout, layout.targets, layout.target, optimum
        self.params = np.tile(layout.start, (replicates, 1))
        self.state = np.zeros((replicates, 2, len(layout.targets)))
        # column 0: the first step count within tolerance; 1: the last one outside (0: the start; -1: never)
        self.reached = np.full((replicates, 2), -1, np.int64)
        if optimum is not None:
            start_within = bool(np.all(np.abs(layout.start[layout.targets] - layout.target) < tolerance))
            self.reached[:, 0 if start_within else 1] = 0
        offsets = np.concatenate([[0], np.cumsum(plan.sizes)]).astype(np.int64)
        self.rows = np.array([offsets[plan.parameters.index(c)] + i for c in coordinates
                              for i in range(plan.sizes[plan.parameters.index(c)])], np.int64)  # fmt: skip
        self.stats = {name: [] for name, _, _ in layout.columns}
        self.objective, self.distance = [], []
        self.history = []  # (a shard's) its replicates' parameters at each logged step, to merge
        self.kernel = None

    def prepare(self, pilot_module, kernel_class, make_run, seed, pilot):
        """Estimate any pilot coefficients and build the kernel (compiled or loaded on its first call)."""
        plan = self.plan
        coefficients = None if plan.classic else pilot_module.coefficients(plan, pilot or _validate.DEFAULT_PILOT,
                                                                             seed)  # fmt: skip
        active = [plan.parameters.index(c) for c in self.coordinates]
        theta, filler, extra = self.distribution.theta, "general", {}
        if self.layout.dim > 1 or _is_vector(self.distribution) or plan.distribution.family.joint is not None:
            theta = tuple(np.ascontiguousarray(row, dtype=np.float64) for row in theta)  # one array per parameter
            filler = "vector-general"
            weights = self.function.weights_for(self.layout.dim) if hasattr(self.function, "weights_for") else None
            extra = dict(dim=self.layout.dim, weights=weights, vector=True, n_pairs=plan.n_pairs)
        run = make_run(theta, self.function.param_vector, plan.specs, len(plan.parameters), coefficients, active,
                       plan.rows, seed=seed, n_units=len(self.params), group=plan.group, **extra)  # fmt: skip
        from fastgrad._kernels import plain_optimisation

        family = plan.distribution.family.name
        sink = "optimize-plain" if filler == "general" and plain_optimisation(family, run, self.units) else "optimize"
        self.kernel = kernel_class(family, self.function, filler, sink, run)

    def log(self, values, equal=False):
        """Append the statistics over replicates of ``values`` (replicates x parameters) at a logged step.

        Replicates that diverged (parameters overflowing) are counted, and reported, by the statistics: NumPy's
        overflow warnings about them (from squares in the exact objective and the spread) are not repeated.
        ``equal``: every row is the same (the start), so each statistic is that of one row's value repeated
        (:func:`_statistics_of_equal`), the same numbers without passes over the replicates.
        """
        with np.errstate(over="ignore", invalid="ignore"):
            self._log(values, equal)

    def _log(self, values, equal):
        count = len(values)

        def statistics(x):
            if equal:  # (a transformed column checked: one value's transform is not a whole array's by rule)
                bits = x.view(np.uint64) if x.flags.c_contiguous else np.ascontiguousarray(x).view(np.uint64)
                if x.size == 1 or (bits == bits[0]).all():
                    return _statistics_of_equal(float(x[0]), count)
            return _statistics(x)

        def parameters():
            rows = []
            for _, column, natural in self.layout.columns:
                x = values[:, column]
                if natural == "log":
                    x = np.log(x)
                elif natural == "logit":
                    x = np.log(x) - np.log1p(-x)
                rows.append(statistics(x[:1] if equal and natural is None else x))
            return rows

        # the parameters' statistics beside the objective's, where the run has a second thread: both compiled or
        # NumPy work that lets the other run (the seed case's last log, 2 threads: 0.9 -> 0.6 ms)
        helper = None if equal or numba.get_num_threads() < 2 else _pool(1).submit(parameters)
        rows = values[:1] if equal else values  # (a row's objective and distance are its own: one row will do)
        exact = _exact_objective(self.distribution, self.function, rows)
        objective = None if exact is None else statistics(exact)
        distance = None
        if self.optimum is not None:
            distance = statistics(np.max(np.abs(rows[:, self.targets] - self.target), axis=1))
        for (name, _, _), row in zip(self.layout.columns, parameters() if helper is None else helper.result(),
                                     strict=True):  # fmt: skip
            self.stats[name].append(row)
        if objective is not None:
            self.objective.append(objective)
        if distance is not None:
            self.distance.append(distance)

    def trajectory(self, steps_done):
        spec = self.spec
        last_outside = self.reached[:, 1]
        settled = np.where(last_outside < steps_done, last_outside + 1, -1)
        if self.optimum is None:
            settled[:] = -1
        return EstimatorTrajectory(
            spec.name, self.draws * spec.evaluations, self.draws, {k: np.array(v) for k, v in self.stats.items()},
            np.array(self.objective) if self.objective else None, np.array(self.distance) if self.distance else None,
            self.reached[:, 0].copy(), self.params.copy(), settled)  # fmt: skip

    def to_dict(self, lo, hi):
        """Return rows ``[lo, hi)`` of the replicates' state, the statistics logged and any history, JSON-ready."""
        from fastgrad._jobs import _encode

        def rows(values):
            return None if not values else _encode(np.array(values))

        return {"estimator": self.spec.name, "params": _encode(self.params[lo:hi]),
                "state": _encode(self.state[lo:hi]), "reached": _encode(self.reached[lo:hi].astype(np.float64)),
                "stats": {k: rows(v) for k, v in self.stats.items()}, "objective": rows(self.objective),
                "distance": rows(self.distance), "history": rows(self.history)}  # fmt: skip

    def restore(self, data, source, lo, hi):
        """Set rows ``[lo, hi)`` and the statistics from :meth:`to_dict`'s output."""
        from fastgrad._jobs import PartialError, _decode

        def rows(text, width):
            return [] if text is None else list(_decode(text).reshape(-1, *width))

        try:
            if data["estimator"] != self.spec.name:
                raise ValueError(f"estimator {data['estimator']!r} where {self.spec.name!r} was expected")
            self.params[lo:hi] = _decode(data["params"]).reshape(self.params[lo:hi].shape)
            self.state[lo:hi] = _decode(data["state"]).reshape(self.state[lo:hi].shape)
            self.reached[lo:hi] = _decode(data["reached"]).astype(np.int64).reshape(self.reached[lo:hi].shape)
            self.stats = {k: rows(data["stats"][k], (len(COLUMNS),)) for k in self.stats}
            self.objective = rows(data["objective"], (len(COLUMNS),))
            self.distance = rows(data["distance"], (len(COLUMNS),))
            self.history = rows(data.get("history"), (hi - lo, self.params.shape[1]))
        except (KeyError, TypeError, ValueError) as error:
            raise PartialError(f"{source!r} is corrupted: {error}") from None

    def collect(self, comm, lo, hi):
        """(MPI) Gather every rank's rows of the replicates' state into rank 0's arrays."""
        for array in (self.params, self.state, self.reached):
            parts = comm.gather((lo, hi, array[lo:hi].copy()), root=0)
            if parts is not None:
                for a, b, rows in parts:
                    array[a:b] = rows


def _save(job, runs, step, seconds, lo, hi, collected=False):
    """Write the checkpoint: the fingerprint, the step every replicate has done, each estimator's state.

    Under MPI the ranks' rows are gathered first and rank 0 writes; a shard
    saves its own rows (and its history).
    """
    from fastgrad._jobs import _digest, write_atomically

    if job.comm is not None:
        if not collected:
            for r in runs:
                r.collect(job.comm, lo, hi)
        lo, hi = 0, len(runs[0].params)
        if job.rank != 0:
            job._last_checkpoint = time.monotonic()
            return
    body = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "fingerprint": job.fingerprint,
            "shard": list(job.shard) if job.shard else None, "ranks": job.ranks, "step": int(step),
            "seconds": float(seconds), "estimators": [r.to_dict(lo, hi) for r in runs]}  # fmt: skip

    class _File:
        def save(self, path):
            write_atomically(path, json.dumps({"sha256": _digest(body), **body}, allow_nan=False) + "\n")

    job._write_checkpoint(_File())
    job._last_checkpoint = time.monotonic()


def _restore(job, runs):
    """Load the checkpoint into ``runs`` (refusing another run's, or a damaged one); return (step, seconds)."""
    from fastgrad._jobs import Partial, PartialError, shard_range

    source = str(job.checkpoint)
    try:
        text = job.checkpoint.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise PartialError(f"cannot read the checkpoint {source!r}: {error}") from None
    data = _checked_json(text, source, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "a fastgrad optimisation checkpoint")
    Partial(data["fingerprint"], 1, []).check_fingerprint(job.fingerprint, source)
    shard = list(job.shard) if job.shard else None
    if data.get("shard") != shard:
        raise PartialError(f"{source!r} is the checkpoint of shard {data.get('shard')}, not of {shard}")
    if len(data["estimators"]) != len(runs):
        raise PartialError(f"{source!r} is corrupted: {len(data['estimators'])} estimators, not {len(runs)}")
    replicates = len(runs[0].params)
    lo, hi = shard_range(replicates, *job.shard) if job.shard else (0, replicates)
    for r, saved in zip(runs, data["estimators"], strict=True):
        r.restore(saved, source, lo, hi)
    job.resumed_from = int(data["step"])
    return int(data["step"]), float(data["seconds"])


def _checked_json(text, source, form, version, what):
    """Read a file's JSON: refuse another format or version, or a checksum that does not match; return it."""
    from fastgrad._jobs import PartialError, _digest

    try:
        data = json.loads(text)
    except ValueError:
        raise PartialError(f"{source!r} is not {what}: not JSON (truncated?)") from None
    if not isinstance(data, dict) or data.get("format") != form:
        raise PartialError(f"{source!r} is not {what} (no format {form!r})")
    if data.get("format_version") != version:
        raise PartialError(f"{source!r} has format version {data.get('format_version')!r}; this fastgrad reads "
                           f"{version}")  # fmt: skip
    if data.pop("sha256", None) != _digest(data):
        raise PartialError(f"{source!r} is corrupted: its SHA-256 checksum does not match its contents")
    return data


def _show_progress(job, step, steps, replicates, started, earlier):
    if not job.progress:
        return
    from fastgrad._jobs import _duration

    here = step - (job.resumed_from or 0)
    elapsed = time.perf_counter() - started
    rate = here / elapsed if elapsed > 0 else 0.0
    eta = (steps - step) / rate if rate > 0 else math.inf
    sys.stderr.write(f"\rfastgrad: step {step:,} of {steps:,} ({100 * step / steps:.1f}%), "
                     f"{rate * replicates / 1e6:,.1f} M replicate-steps/s, ETA {_duration(eta)}  ")  # fmt: skip
    sys.stderr.flush()
    job._shown = True


def _check_count(name, value, low, high):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer from {low} to {high:,}; got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high:,}; got {value!r}")
    return int(value)


def _coordinates(distribution, wrt):
    """Return the optimised coordinates: each parameter or its natural one (``log_scale``, ``log_rate``, ``logits``)."""
    natural = {base: name for name, base in distribution.family.natural}
    return tuple(natural.get(name, name) for name in wrt)


@dataclass
class _Layout:
    """Where everything sits in a replicate's flat parameter vector (``P * dim`` numbers; ``dim`` 1 but DiagNormal).

    Parameter ``j`` of component ``i`` is at ``j * dim + i`` (the vector
    filler's pair order). ``targets[o]``, ``updates[o]`` and ``target[o]`` are
    the flat index, the update and the optimum of optimised coordinate ``o``;
    ``columns`` names every logged statistic: ``(name, flat index, natural)``
    with ``natural`` the transform (None, ``"log"``, ``"logit"``).
    """

    dim: int
    start: np.ndarray
    targets: np.ndarray
    updates: np.ndarray
    target: np.ndarray
    columns: list
    optimized: tuple


def _layout(distribution, wrt, coordinates, optimum):
    family = distribution.family
    dim = getattr(distribution, "dim", 1)
    flat = getattr(distribution, "flat", lambda p: getattr(distribution, p))  # (a MultivariateNormal's triangle)
    values = [np.asarray(flat(p), dtype=float) for p in family.parameters]
    sizes, offsets = _sizes(distribution)
    vector = [v.ndim > 0 for v in values]  # (a DiagNormal's at D = 1 too)

    def name(j, p, i):
        return f"{p}[{i}]" if vector[j] else p

    start = np.concatenate([v.ravel() for v in values])
    targets, updates, target, optimized = [], [], [], []
    columns = [(name(j, p, i), offsets[j] + i, None) for j, p in enumerate(family.parameters) for i in range(sizes[j])]
    for c, p in zip(coordinates, wrt, strict=True):
        j = family.parameters.index(p)
        value = None if optimum is None else np.broadcast_to(np.asarray(optimum[p], dtype=float), (sizes[j],))
        # how the coordinate moves its parameter (OptimizeSink.updates): itself (0), its logarithm (1: every log_
        # natural parameter; of a Cholesky factor, the diagonal's entries only), its logit (2: the Bernoulli's p),
        # or a Categorical's probabilities through logits whose softmax they are (3: the logarithm, normalised)
        update = 0 if c == p else (3 if family.joint is not None else 2) if c == "logits" else 1
        through_log = getattr(distribution, "diagonal_entries", None) if c == "log_diag_scale_tril" else None
        for i in range(sizes[j]):
            entry = update if through_log is None or through_log[i] else 0
            targets.append(offsets[j] + i)
            updates.append(entry)
            target.append(np.nan if value is None else float(value[i]))
            optimized.append(name(j, c, i))
            if c != p:
                columns.append((name(j, c, i), offsets[j] + i, {0: None, 2: "logit"}.get(entry, "log")))
    return _Layout(dim, start, np.array(targets, np.int64), np.array(updates, np.int64), np.array(target),
                   columns, tuple(optimized))  # fmt: skip


def _sizes(distribution):
    """Components of each parameter of the distribution's family and where each starts in a replicate's row."""
    from fastgrad.estimators import parameter_sizes

    sizes = parameter_sizes(distribution)
    return sizes, [sum(sizes[:j]) for j in range(len(sizes))]


def _is_vector(distribution):
    return getattr(distribution, "name", None) == "diagnormal"


def _kernel_families(distribution):  # (every built-in family; a family of one's own may have no theta_of)
    """Whether ``optimize`` can move ``distribution``'s parameters: its family rebuilds its kernel parameters."""
    family = distribution.family
    if family.joint is not None:
        return family.joint.theta_into is not None
    return family.theta_of is not None and (not hasattr(distribution, "dim") or _is_vector(distribution))


#: Rows of parameters the exact objective takes at a time. Its closed forms work on whole arrays of complex
#: numbers (16 bytes a row); 10 000 rows at once made each temporary 160 KB, past glibc's 128 KiB threshold for
#: taking memory from the system afresh, page by page: 0.09-0.5 ms a logged step, varying with the allocator's
#: state, against 0.09 in chunks (the seed case, 2026-12-07). Row by row, so the same numbers.
EXACT_ROWS = 4096


def _exact_objective(distribution, function, params):
    """``E_q[f]`` at each row of ``params`` (the family's parameters), or None for a user's function.

    Each row's number is computed from that row alone, the same way whatever
    the other rows (the closed forms elementwise, the analytic engine a row
    at a time), so rows that are all the same (every replicate at the start)
    take one row's computation; a Categorical's (a product of matrices, whose
    order of operations may depend on their shapes) is taken whole.
    """
    if distribution.family.name == "categorical" or len(params) <= 1:
        return _exact_rows(distribution, function, params)
    bits = np.ascontiguousarray(params).view(np.uint64)
    if (bits == bits[0]).all():
        one = _exact_rows(distribution, function, params[:1])
        return None if one is None else np.repeat(one, len(params))
    parts = [_exact_rows(distribution, function, params[i : i + EXACT_ROWS])
             for i in range(0, len(params), EXACT_ROWS)]  # fmt: skip
    return None if parts[0] is None else np.concatenate(parts)


def _exact_rows(distribution, function, params):
    """:func:`_exact_objective` of at most :data:`EXACT_ROWS` rows."""
    if _is_vector(distribution) or distribution.family.name in ("dirichlet", "mvn"):
        if not hasattr(function, "component_exact") or function.builtin is None:
            return None
        dim = distribution.dim
        hs = [function.component_exact(i, dim) for i in range(dim)]
        total = np.zeros(len(params))
        if _is_vector(distribution):
            for i, h in enumerate(hs):  # sum_i E[w_i h(x_i)], component by component
                total += _normal_expectations(h, params[:, i], params[:, dim + i])
            return total
        if distribution.family.name == "mvn":  # x_i ~ N(loc_i, sum_b L_ib**2): the marginals
            for i, h in enumerate(hs):
                row = params[:, dim + i * (i + 1) // 2 : dim + (i + 1) * (i + 2) // 2]
                total += _normal_expectations(h, params[:, i], np.sqrt(np.sum(row * row, axis=1)))
            return total
        if not all(_polynomial(h) for h in hs):
            return None
        concentration = params.sum(axis=1)
        for i, h in enumerate(hs):  # x_i ~ Beta(alpha_i, alpha_0 - alpha_i)
            total += _beta_expectations(h, params[:, i], concentration)
        return total
    h = function.exact() if hasattr(function, "exact") and function.builtin is not None else None
    if h is None:
        return None
    family = distribution.family
    if family.name == "categorical":  # sum_k probs[k] f(k)
        return params @ np.asarray(h.evaluate(np.arange(params.shape[1], dtype=np.float64)), dtype=float)
    if family.name == "beta":
        return _beta_expectations(h, params[:, 0], params[:, 0] + params[:, 1]) if _polynomial(h) else None
    # (sums of x**j e^(iwx), the polynomials and cos, have closed forms on whole arrays; a Smooth function
    # (exp_quadratic, logistic) is integrated a replicate at a time)
    terms = getattr(h, "terms", None)
    if terms is not None and all(omega == omega for _, omega in terms):
        if family.name == "normal" and all(omega == 0 and j <= 8 for j, omega in terms):
            return _normal_polynomial(h, params[:, 0], params[:, 1])
        if family.name == "normal":
            return _normal_expectations(h, params[:, 0], params[:, 1])
        if family.name == "gamma":
            return _gamma_expectations(h, params[:, 0], params[:, 1])
    out = np.empty(len(params))
    for r, row in enumerate(params):
        theta = family.theta_of(np.ascontiguousarray(row, dtype=np.float64))
        out[r] = float(family.expectation(h, theta, (1,)))
    return out


def _polynomial(h):
    """Whether ``h`` is a sum of ``c x**j`` (no ``exp(i w x)`` factors): a Beta's expectations in closed form."""
    terms = getattr(h, "terms", None)
    return terms is not None and all(omega == 0 for _, omega in terms)


def _beta_expectations(h, a, total):
    """``E[h(x)]``, ``x ~ Beta(a, total - a)``, for arrays and a polynomial ``h``.

    ``E[x**j] = prod_{i < j} (a + i) / (total + i)``.
    """
    out = np.zeros(a.shape)
    for (j, _), c in h.terms.items():
        moment = np.ones(a.shape)
        for i in range(j):
            moment = moment * ((a + i) / (total + i))
        out += float(np.real(c)) * moment
    return out


def _gamma_expectations(h, shape, rate):
    """``E[h(x)]``, ``x ~ Gamma(shape, rate)``, for arrays and ``h = sum c x**j exp(i w x)`` (vectorised).

    ``E[x**j e^(iwx)] = shape (shape + 1) ... (shape + j - 1) rate**shape / (rate - i w)**(shape + j)``: the
    integral of a Gamma density with rate ``rate - i w``. (A replicate at a time through the analytic engine
    took 170 us, 1.7 s for each logged step of 10 000 replicates.)
    """
    total = np.zeros(shape.shape, dtype=complex)
    for (j, w), c in h.terms.items():
        z = rate - 1j * w
        rising = np.ones(shape.shape)
        for i in range(j):
            rising = rising * (shape + i)
        total += complex(c) * rising * (rate / z) ** shape / z**j
    return total.real


def _normal_polynomial(h, loc, scale):
    """:func:`_normal_expectations` of a polynomial ``h`` (every ``w`` zero) in real arithmetic: the same numbers.

    With ``w = 0`` every imaginary part there is a signed zero (or NaN once
    something overflowed), so each complex product's real part is the
    product of the real parts, and each sum's the sum: the same operations
    on the real parts, in the same order (NumPy's ``m**2`` a square, higher
    powers by its repeated squaring; ``0 + x`` kept where it starts a sum).
    A result is the complex path's wherever either is finite (where one
    overflows, so does the other: inf here, NaN there), half the memory and a
    third of the time. Degrees to 8 (beyond, the complex path).
    """
    m = loc + 0.0 * scale**2  # (loc + i w scale**2 at w = 0: NaN where scale**2 overflows, as there)
    total = np.zeros(loc.shape)
    for (j, _), c in h.terms.items():
        moment = 0.0
        for k in range(0, j + 1, 2):
            if k == j:
                term = math.comb(j, k) * scale**k * math.prod(range(k - 1, 0, -2))
            else:
                term = math.comb(j, k) * _real_power(m, j - k) * scale**k * math.prod(range(k - 1, 0, -2))
            moment = moment + term
        total = total + complex(c).real * moment
    return total


def _real_power(m, p):
    """``m**p`` as NumPy's complex power takes it for a whole ``p < 100``, in real arithmetic.

    ``m * m`` for 2 (its square), ``m * (m * m)`` for 3, else the product of
    the squarings ``m, m**2, m**4, ...`` that ``p``'s bits select, in that
    order.
    """
    if p == 1:
        return m
    if p == 2:
        return m * m
    if p == 3:
        return m * (m * m)
    result, base, mask = None, m, 1
    while True:
        if p & mask:
            result = base if result is None else result * base
        mask <<= 1
        if p < mask:
            return result
        base = base * base


def _normal_expectations(h, loc, scale):
    """``E[h(loc + scale z)]`` for arrays ``loc``, ``scale`` and ``h = sum c x**j exp(i w x)`` (vectorised).

    Completing the square: ``E[x**j e^(iwx)] = e^(i w loc - w**2 scale**2 / 2) E[(m + scale z)**j]`` with
    ``m = loc + i w scale**2``, and ``E[(m + s z)**j] = sum_k C(j, k) m**(j - k) s**k (k - 1)!!`` over even ``k``.
    """
    total = np.zeros(loc.shape, dtype=complex)
    for (j, w), c in h.terms.items():
        m = loc + 1j * w * scale**2
        moment = np.zeros(loc.shape, dtype=complex)
        for k in range(0, j + 1, 2):
            # (m**0 and, below, the factor e**0 of a polynomial's term are 1 + 0j: left out, the real parts are
            # the same numbers wherever they are finite, at half the time: 0.22 -> 0.10 ms for 10 000 replicates)
            power = math.comb(j, k) if k == j else math.comb(j, k) * m ** (j - k)
            moment += power * scale**k * math.prod(range(k - 1, 0, -2))
        if w == 0:
            total += complex(c) * moment
        else:
            total += complex(c) * np.exp(1j * w * loc - 0.5 * w * w * scale**2) * moment
    return total.real


def _statistics(values):
    """Return a row of :data:`COLUMNS` over the replicates whose value is finite, and their number.

    ``std`` is the sample standard deviation (0 for one). A replicate whose
    parameters overflowed (SGD diverging: the score function's noise grows
    with the objective) counts in ``finite`` only; none finite: NaN.

    NumPy 2's numbers (``np.mean``, ``np.quantile``'s ``"linear"`` method,
    ``np.std(ddof=1)``), each bit of them, under any NumPy, from one compiled
    call (:func:`_column_statistics`; NumPy 1 sums more than 8192 values in
    buffers, so its own mean and spread can differ by an ulp or two); a tie
    of 0.0 and -0.0 at a quantile may give the other zero, as NumPy's own
    sorts do from one CPU to another.
    """
    return _column_statistics(np.asarray(values, dtype=np.float64), _QUANTILES)


_QUANTILES = np.array(QUANTILES)


def _statistics_of_equal(value, count):
    """:func:`_statistics` of ``count`` copies of ``value``, the same numbers, without the copies.

    NumPy's pairwise sum of equal values depends only on their number (the
    same additions in the same order: :func:`_pairwise_of_equal`); the
    deviations from the mean are all alike, and every order statistic is
    ``value``.
    """
    out = np.empty(3 + len(QUANTILES))
    out[-1] = count if math.isfinite(value) else 0
    if not math.isfinite(value):
        out[:-1] = math.nan
        return out
    mean = _pairwise_of_equal(value, count, {}) / count
    out[0] = mean
    spread = 0.0
    if count > 1:
        deviation = value - mean
        spread = math.sqrt(_pairwise_of_equal(deviation * deviation, count, {}) / (count - 1))
    out[-2] = spread
    for q, quantile in enumerate(QUANTILES):  # (:func:`_column_statistics`' interpolation, a == b == value)
        virtual = (count - 1) * quantile
        previous = math.floor(virtual)
        t = virtual - (-1 if virtual >= count - 1 else previous)
        difference = value - value
        out[1 + q] = value - difference * (1.0 - t) if t >= 0.5 else value + difference * t
    return out


def _pairwise_of_equal(value, n, memo):
    """:func:`_pairwise_sum` of ``n`` copies of ``value`` (Python floats: the same IEEE additions)."""
    if n in memo:
        return memo[n]
    if n < 8:
        total = 0.0
        for _ in range(n):
            total += value
    elif n <= 128:
        r = value  # (each of the eight interleaved sums)
        for _ in range(n // 8 - 1):
            r += value
        total = ((r + r) + (r + r)) + ((r + r) + (r + r))
        for _ in range(n % 8):
            total += value
    else:
        half = n // 2
        half -= half % 8
        total = _pairwise_of_equal(value, half, memo) + _pairwise_of_equal(value, n - half, memo)
    memo[n] = total
    return total


@register_jitable
def _pairwise_leaf(a, lo, n):
    """NumPy's pairwise summation of at most 128 values (:func:`_pairwise_sum`)."""
    if n < 8:
        total = 0.0
        for i in range(lo, lo + n):
            total += a[i]
        return total
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = lo + 8
    end = lo + n - n % 8
    while i < end:
        r0 += a[i]
        r1 += a[i + 1]
        r2 += a[i + 2]
        r3 += a[i + 3]
        r4 += a[i + 4]
        r5 += a[i + 5]
        r6 += a[i + 6]
        r7 += a[i + 7]
        i += 8
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < lo + n:
        total += a[i]
        i += 1
    return total


@register_jitable
def _pairwise_sum(a, n):
    """``np.add.reduce(a[:n])`` for float64, bit for bit: NumPy's pairwise summation.

    Fewer than 8 values summed in order from 0.0; at most 128 in 8
    interleaved sums added as ``((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 +
    r7))``, then the rest in order; more: the sum of the two halves' sums (the
    first half a multiple of 8 long), each so summed. (The halves on a stack
    of our own: Numba's cache reloads a recursive function into a crash.)
    """
    if n <= 128:
        return _pairwise_leaf(a, 0, n)
    starts, lengths = np.empty(64, np.int64), np.empty(64, np.int64)
    stages, lefts = np.zeros(64, np.int64), np.empty(64)
    starts[0], lengths[0], stages[0] = 0, n, 0
    depth = 1
    result = 0.0  # the sum the frame just finished returns to its parent
    while depth > 0:
        f = depth - 1
        length = lengths[f]
        if length <= 128:
            result = _pairwise_leaf(a, starts[f], length)
            depth -= 1
            continue
        half = length // 2
        half -= half % 8
        if stages[f] == 0:  # the first half
            stages[f] = 1
            starts[depth], lengths[depth], stages[depth] = starts[f], half, 0
            depth += 1
        elif stages[f] == 1:  # the first half's sum kept; the second half
            lefts[f] = result
            stages[f] = 2
            starts[depth], lengths[depth], stages[depth] = starts[f] + half, length - half, 0
            depth += 1
        else:
            result = lefts[f] + result
            depth -= 1
    return result


@register_jitable
def _heap_sort(a, lo, hi):
    """Sort ``a[lo:hi]`` in place (heapsort: :func:`_select`'s way out of a pathological order)."""
    n = hi - lo
    for start in range(n // 2 - 1, -1, -1):
        _sift_down(a, lo, start, n)
    for end in range(n - 1, 0, -1):
        a[lo], a[lo + end] = a[lo + end], a[lo]
        _sift_down(a, lo, 0, end)


@register_jitable
def _sift_down(a, lo, root, n):
    while 2 * root + 1 < n:
        child = 2 * root + 1
        if child + 1 < n and a[lo + child] < a[lo + child + 1]:
            child += 1
        if a[lo + root] < a[lo + child]:
            a[lo + root], a[lo + child] = a[lo + child], a[lo + root]
            root = child
        else:
            return


@register_jitable
def _select(a, k, lo, hi):
    """Place the ``k``-th smallest of ``a[lo:hi]`` at ``a[k]``, smaller ones before it and larger after.

    Quickselect with a median-of-three pivot and Hoare's scheme (values equal
    to the pivot stop both scans, so equal values split evenly); after 64
    rounds (a pathological order) the rest of the range is heap-sorted
    (with NumPy's sort instead the statistics compiled in 6.6 s, not 3.4).
    """
    rounds = 0
    while hi - lo > 1:
        rounds += 1
        if rounds > 64:
            _heap_sort(a, lo, hi)
            return
        mid = (lo + hi - 1) // 2
        x, y, z = a[lo], a[mid], a[hi - 1]
        pivot = max(min(x, y), min(max(x, y), z))
        i, j = lo, hi - 1
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        # now a[lo:j+1] <= pivot <= a[i:hi], and a[j+1:i] == pivot
        if k <= j:
            hi = j + 1
        elif k >= i:
            lo = i
        else:
            return


@serial
def _column_statistics(values, quantiles):
    """:func:`_statistics` of a 1-D float64 array (compiled; the quantiles ``quantiles``).

    Its helpers compile with it (``register_jitable``), and it uses plain
    loops and the math module, not NumPy's array methods: 3.4 -> 2.2 s to
    compile, cold (2026-12-07).
    """
    out = np.empty(3 + quantiles.size)
    kept = np.empty(values.size)
    n = 0
    low, high = math.inf, -math.inf
    for v in values:
        if math.isfinite(v):
            kept[n] = v
            n += 1
            low = min(low, v)
            high = max(high, v)
    out[out.size - 1] = n
    if n == 0:
        for i in range(out.size - 1):
            out[i] = math.nan
        return out
    mean = _pairwise_sum(kept, n) / n
    out[0] = mean
    spread = 0.0
    if n > 1:  # np.std(ddof=1): the squared deviations from the mean, summed pairwise
        squares = np.empty(n)
        for i in range(n):
            d = kept[i] - mean
            squares[i] = d * d
        spread = math.sqrt(_pairwise_sum(squares, n) / (n - 1))
    out[out.size - 2] = spread
    # np.quantile's "linear" method: virtual index (n - 1) q, the order statistics at its floor and the next
    # index (the largest value at or past n - 1), interpolated a + (b - a) t, or b - (b - a) (1 - t) at t >= 0.5
    same = low == high and low != 0.0  # (equal nonzero doubles have the same bits: no selection needed)
    done = -1  # kept[: done + 1] holds the order statistics up to index done, placed
    for q in range(quantiles.size):
        virtual = (n - 1) * quantiles[q]
        previous = math.floor(virtual)
        following = previous + 1
        beyond = virtual >= n - 1
        if beyond:
            previous = following = n - 1
        if same:
            a = b = low
        else:
            if previous > done:
                _select(kept, previous, done + 1, n)
                done = previous
            a = kept[previous]
            if following > done:
                _select(kept, following, done + 1, n)
                done = following
            b = kept[following]
        t = virtual - (-1 if beyond else previous)
        difference = b - a
        out[1 + q] = b - difference * (1.0 - t) if t >= 0.5 else a + difference * t
    return out


def optimize(distribution, function, wrt=None, *, estimators=("score", "pathwise"), steps, learning_rate,
             batch=1, optimizer="sgd", replicates=1000, first_replicate=0, seed=None, log_every=None, optimum=None,
             tolerance=None, pilot=None, threads=None, adam=(0.9, 0.999, 1e-8), equal_cost=False, progress=None,
             checkpoint=None, checkpoint_every=60.0, shard=None, comm=None):  # fmt: skip
    """Run ``replicates`` stochastic-gradient optimisations of ``E_q[f]`` per estimator, in parallel.

    Parameters
    ----------
    distribution : any built-in family (Normal, ..., Categorical, Dirichlet, MultivariateNormal)
        The start.
    function : built-in name, Function or @njit function
    wrt : str or sequence of str, optional
        Parameters to optimise (default: all); the others stay fixed.
        Positive ones move through their logarithms, probabilities through
        their logits, a Cholesky factor's diagonal through its logarithm
        (reported in both parameterisations).
    estimators : sequence of str
        Specifications (``score``, ``score+optimal-baseline``,
        ``pathwise+antithetic``, ``measure-valued``, ...). Optimal
        baselines and control variates are estimated once, on ``pilot``
        draws at the start.
    steps : int
        Steps per replicate, 1 to 2**32 - 1.
    learning_rate : float or fastgrad.schedules.Schedule
    batch : int
        Draws per step (a multiple of a leave-one-out group); with
        ``equal_cost``, function evaluations per step.
    optimizer : "sgd" or "adam"
    replicates : int
        Independent runs per estimator, 1 to 2**30.
    first_replicate : int
        Number of the first (default 0): ``first_replicate=r, replicates=1``
        reruns replicate ``r`` of a larger run alone, bit for bit.
    seed : int, optional
    log_every : int, optional
        Steps between logged statistics (default: about 100 logged steps).
    optimum : dict, optional
        Known optimum of the optimised parameters (original
        parameterisation), e.g. ``{"loc": 0.0}``, with ``tolerance``: the
        steps each replicate needs to come within it.
    threads : int, optional
    adam : (beta1, beta2, epsilon)
    equal_cost : bool
        Compare at equal cost: ``batch`` counts evaluations of ``f`` (or
        ``f'``) per step, so an estimator with two a draw (antithetic,
        measure-valued) draws ``batch / 2`` a step (``batch`` must be even).
    progress : bool, optional
        Show the steps done on stderr (default: when it is a terminal).
    checkpoint : path, optional
        Save every replicate's state there every ``checkpoint_every``
        seconds, on Ctrl-C/SIGTERM and at the end; a run given a checkpoint
        that exists resumes from it, bit for bit (the same arguments only).
    checkpoint_every : float
    shard : (int, int), optional
        ``(i, K)``: run only the ``i``-th of ``K`` near-equal ranges of the
        replicates and return an :class:`OptimizationPartial` (its
        replicates' parameters at every logged step); :func:`fastgrad.merge`
        of all ``K`` gives the single run's result, bit for bit.
    comm : mpi4py communicator, optional
        Split the replicates across its ranks (as ``shard``); rank 0 gathers
        the logged values and returns the result, the others None.

    Returns
    -------
    OptimizationResult (or OptimizationPartial for a shard; None off MPI rank 0)

    Examples
    --------
    >>> import fastgrad as fg
    >>> r = fg.optimize(fg.Normal(2.0, 1.0), "square", "loc", estimators=["pathwise"], steps=100,
    ...                 learning_rate=0.01, replicates=100, seed=0)
    >>> round(float(r["pathwise"].parameters["loc"][-1, 0]), 4)    # E[theta_t] = (1 - 2 eta)**t theta_0 = 0.2652
    0.2521
    """
    from fastgrad._kernels import Kernel, OptimizeSink, make_run

    started = time.perf_counter()
    function = _validate.check_target(distribution, function)
    family = distribution.family
    if not _kernel_families(distribution):
        raise ValueError(f"optimize moves a family's parameters inside its kernel, through the family's theta_of (a "
                         f"joint family's Joint.theta_into); {type(distribution).__name__}'s family "
                         f"{family.name!r} has none (every built-in family has)")  # fmt: skip
    wrt = _validate.check_wrt(wrt, family.parameters)
    coordinates = _coordinates(distribution, wrt)
    steps = _check_count("steps", steps, 1, MAX_STEPS)
    batch = _check_count("batch", batch, 1, 2**31)
    replicates = _check_count("replicates", replicates, 1, MAX_REPLICATES)
    first_replicate = _check_count("first_replicate", first_replicate, 0, MAX_REPLICATES - replicates)
    seed = _validate.check_seed(seed)
    threads = _validate.check_threads(threads)
    log_every = max(1, steps // 100) if log_every is None else _check_count("log_every", log_every, 1, MAX_STEPS)
    if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}; got {optimizer!r}")
    schedule = learning_rate if isinstance(learning_rate, Schedule) else constant(learning_rate)
    if optimum is not None:
        if not isinstance(optimum, dict) or set(optimum) != set(wrt):
            raise ValueError(f"optimum must be a dict with a value for each of {list(wrt)}; got {optimum!r}")
        sizes = dict(zip(family.parameters, _sizes(distribution)[0], strict=True))
        for p, value in optimum.items():
            dim = sizes[p]
            if np.ndim(value) > 1 or (np.ndim(value) == 1 and len(value) != dim) or not np.all(np.isfinite(value)):
                raise ValueError(f"optimum[{p!r}] must be a finite number{' or one per component' if dim > 1 else ''}"
                                 f"; got {value!r}")  # fmt: skip
        optimum = {p: (np.asarray(v, dtype=float).tolist()) for p, v in optimum.items()}
        if tolerance is None or not (isinstance(tolerance, (int, float)) and tolerance > 0):
            raise ValueError(f"tolerance must be a number > 0 with optimum; got {tolerance!r}")
    if not isinstance(equal_cost, (bool, np.bool_)):
        raise TypeError(f"equal_cost must be True or False; got {equal_cost!r}")
    specs = parse_estimators(estimators)
    draws = {}
    for spec in specs:
        if equal_cost and batch % spec.evaluations:
            raise ValueError(f"batch must be a multiple of {spec.evaluations} with equal_cost ({spec.name} evaluates "
                             f"f {spec.evaluations} times a draw); got {batch}")  # fmt: skip
        draws[spec.name] = batch // spec.evaluations if equal_cost else batch
        if spec.baseline == "loo" and draws[spec.name] % spec.group:
            raise ValueError(f"batch must be a multiple of {spec.name}'s group of {spec.group}"
                             f"{' (draws a step)' if equal_cost else ''}; got {batch}")  # fmt: skip
    plans = [Plan.build(distribution, function, [spec], coordinates, compare=False) for spec in specs]
    layout = _layout(distribution, wrt, coordinates, optimum)
    start, targets, updates, target = layout.start, layout.targets, layout.updates, layout.target
    logged = np.append(np.arange(0, steps, log_every, dtype=np.int64), np.int64(steps))  # (steps is not in the range)
    from fastgrad import _pilot
    from fastgrad._api import _numba_threads
    from fastgrad._fingerprint import fingerprint as run_fingerprint
    from fastgrad._jobs import Job, shard_range

    settings = {"learning_rate": schedule.to_dict(), "optimizer": optimizer, "adam": list(map(float, adam)),
              "steps": steps, "batch": batch, "equal_cost": bool(equal_cost), "replicates": replicates,
              "first_replicate": first_replicate, "log_every": log_every, "optimum": dict(optimum or {}),
              "tolerance": tolerance}  # fmt: skip
    fingerprint = run_fingerprint(plans[0], "optimize", replicates, seed, pilot or _validate.DEFAULT_PILOT, **settings)
    fingerprint["pilot"] = pilot or _validate.DEFAULT_PILOT
    fingerprint["estimators"] = [spec.name for spec in specs]
    options = _validate.check_job_options(progress, checkpoint, checkpoint_every, shard, comm)
    if options["shard"] is not None and options["shard"][1] > replicates:
        raise ValueError(f"shard must split the replicates into at most {replicates} ranges; got {shard!r}")
    if comm is not None and comm.Get_size() > replicates:
        raise ValueError(f"comm has {comm.Get_size()} ranks, more than the {replicates} replicates to split")
    job = Job(fingerprint, 1, lambda a, b: 0, **options)
    rank, ranks = job.rank, job.ranks
    if comm is not None:
        lo, hi = shard_range(replicates, rank, ranks)
    elif job.shard is not None:
        lo, hi = shard_range(replicates, *job.shard)
    else:
        lo, hi = 0, replicates
    runs = []
    for spec, plan in zip(specs, plans, strict=True):
        runs.append(_EstimatorRun(spec, plan, draws[spec.name], distribution, function, coordinates, wrt, layout,
                                  replicates, optimum, tolerance))  # fmt: skip
    keep_history = job.shard is not None  # a shard keeps its replicates' values at every logged step, to merge
    step, earlier, used = 0, 0.0, 1
    try:
        if job.checkpoint is not None:
            job.lock()
            if job.checkpoint.exists():
                step, earlier = _restore(job, runs)
        # signals held from the pilot and the compilation on: a stop then ends the run before its first step
        with job.signals():
            for r in runs:
                r.prepare(_pilot, Kernel, make_run, seed, pilot)
                if step == 0 and keep_history and not r.history:
                    r.history.append(r.params[lo:hi].copy())
                elif step == 0 and not keep_history and not r.stats[layout.columns[0][0]]:
                    r.log(r.params, equal=True)  # (every replicate at the start)
            # the kernel logs up to `per_call` steps a call into each run's snapshots (at most SNAPSHOT_BYTES)
            local = hi - lo
            per_call = max(1, min(len(logged) - 1, SNAPSHOT_BYTES // (8 * max(1, replicates) * len(start))))
            snapshots = np.empty((per_call, local, len(start)))
            schedule_row = np.array([schedule.a, schedule.t0, schedule.power])
            moments = np.array(adam, float)
            # steps a block of draws lasts, the same for every estimator (0: blocks and steps do not line up)
            lengths = {r.kernel.run.per_block // r.units if r.kernel.run.per_block % r.units == 0 else 0 for r in runs}
            block_steps = int(lengths.pop()) if len(lengths) == 1 else 0
            # the first segment: about FIRST_SEGMENT replicate-steps (their time sets the next segment's length),
            # or a block's steps if that is at most 8 times as many
            plain = all(r.kernel.key.sink == "optimize-plain" for r in runs)
            budget = FIRST_SEGMENT * (PLAIN_FIRST_SEGMENT if plain else 1)
            segment = max(1, min(steps, 8 * budget // replicates, max(budget // replicates, block_steps)))

            def sink_of(r, step, stop, log_steps):
                return OptimizeSink(r.params[lo:hi], r.state[lo:hi], r.reached[lo:hi], r.rows, targets, updates,
                                    target, np.int64(step), np.int64(stop), np.int64(r.units),
                                    np.int64(optimizer == "adam"), schedule_row, moments, np.float64(tolerance or 0.0),
                                    log_steps, snapshots)  # fmt: skip

            for r in runs:  # compiled (or loaded) before the clock and the first segment's timing
                r.kernel.warm_up(sink_of(r, step, step, logged[:0]), np.empty((1, 1)))
            clock = time.perf_counter()
            with _numba_threads(threads) as used:
                while step < steps:
                    if comm is not None:  # every rank runs the same segments and stops together
                        flags = comm.allreduce(int(job.stop_reason is not None), op=_mpi_max())
                        segment = comm.bcast(segment, root=0)
                        if flags:
                            job.stop_reason = job.stop_reason or "SIGTERM"
                    if job.stop_reason is not None:
                        break
                    first = int(np.searchsorted(logged, step, side="right"))
                    limit = min(steps, int(logged[min(first + per_call, len(logged)) - 1]))
                    stop = _segment_end(step, min(limit, step + segment), limit, block_steps)
                    log_steps = logged[first : int(np.searchsorted(logged, stop, side="right"))]
                    begun = time.perf_counter()
                    for r in runs:
                        if local > 0:
                            r.kernel(first_replicate + lo, sink_of(r, step, stop, log_steps), np.empty((1, 1)), local)
                        values = snapshots[: len(log_steps)]
                        if comm is not None:
                            gathered = comm.gather(values.copy(), root=0)
                            values = np.concatenate(gathered, axis=1) if rank == 0 else values[:, :0]
                        for i in range(len(log_steps)):
                            if keep_history:
                                r.history.append(values[i].copy())
                            elif rank == 0:
                                r.log(values[i])
                    took = time.perf_counter() - begun
                    segment = max(1, int((stop - step) * TARGET_SEGMENT_SECONDS / took)) if took > 0 else 2 * segment
                    step = stop
                    if rank == 0:
                        _show_progress(job, step, steps, replicates * len(runs), clock, earlier)
                    due = job.checkpoint is not None and time.monotonic() - job._last_checkpoint >= job.checkpoint_every
                    if comm is not None:
                        due = bool(comm.allreduce(int(due), op=_mpi_max()))
                    if due:
                        _save(job, runs, step, earlier + time.perf_counter() - clock, lo, hi)
        job._end_progress()
        seconds = earlier + time.perf_counter() - clock
        if comm is not None:
            for r in runs:
                r.collect(comm, lo, hi)
        if job.checkpoint is not None:
            _save(job, runs, step, seconds, lo, hi, collected=True)
    finally:
        job.release()
    interrupted = job.stop_reason if step < steps else None
    if rank != 0:
        return None
    if keep_history:
        return OptimizationPartial(fingerprint, job.shard, (lo, hi), step, [r.to_dict(lo, hi) for r in runs],
                                   seconds, used, interrupted)  # fmt: skip
    return _result(fingerprint, distribution, function, wrt, coordinates, runs, logged[logged <= step], step,
                   time.perf_counter() - started, used, interrupted)  # fmt: skip


def _result(fingerprint, distribution, function, wrt, coordinates, runs, done, step, seconds, threads, interrupted):
    """Build the :class:`OptimizationResult` of finished (or stopped) runs from the fingerprint's settings."""
    settings = fingerprint
    optimum = settings["optimum"] or None
    optimum_objective = None
    if optimum is not None:
        layout = _layout(distribution, wrt, coordinates, optimum)
        at_optimum = layout.start.copy()
        at_optimum[layout.targets] = layout.target
        exact = _exact_objective(distribution, function, at_optimum[None, :])
        optimum_objective = None if exact is None else float(exact[0])
    schedule = Schedule(**settings["learning_rate"])
    trajectories = {r.spec.name: r.trajectory(step) for r in runs}
    optimized = _layout(distribution, wrt, coordinates, None).optimized
    return OptimizationResult(distribution, function, tuple(wrt), optimized, done, settings["batch"],
                              settings["replicates"], settings["optimizer"], schedule, settings["seed"],
                              dict(optimum or {}), settings["tolerance"], trajectories, seconds,
                              settings["equal_cost"], optimum_objective, threads, settings["steps"], step,
                              interrupted)  # fmt: skip


PARTIAL_FORMAT = "fastgrad-optimize-partial"
PARTIAL_VERSION = 1


@dataclass
class OptimizationPartial:
    """What ``optimize(..., shard=(i, K))`` returns: its replicates' state and logged values, to merge.

    ``replicates`` is the range ``[lo, hi)`` of replicates (counted from the
    run's ``first_replicate``) the shard ran; ``estimators`` holds, per
    estimator, their final parameters, optimiser state, steps to tolerance
    and their parameters at every logged step (base64 float64).
    :func:`fastgrad.merge` of every shard's gives the single run's
    :class:`OptimizationResult`, bit for bit.
    """

    fingerprint: dict
    shard: tuple
    replicates: tuple
    steps_done: int
    estimators: list
    seconds: float
    threads: int = 1
    interrupted: str = None

    def body(self):
        """Return the file's contents but its checksum."""
        return {"format": PARTIAL_FORMAT, "format_version": PARTIAL_VERSION, "fingerprint": self.fingerprint,
                "shard": list(self.shard), "replicates": list(self.replicates), "steps_done": self.steps_done,
                "seconds": self.seconds, "threads": self.threads, "estimators": self.estimators}  # fmt: skip

    def dumps(self):
        """Return the JSON text a file holds (with a SHA-256 of the rest)."""
        from fastgrad._jobs import _digest

        body = self.body()
        return json.dumps({"sha256": _digest(body), **body}, allow_nan=False) + "\n"

    def save(self, path):
        """Write it to ``path`` atomically."""
        from fastgrad._jobs import write_atomically

        write_atomically(Path(path), self.dumps())

    @classmethod
    def loads(cls, text, source="<text>"):
        """Read one back (refusing another format, version, or a damaged file)."""
        from fastgrad._jobs import PartialError

        data = _checked_json(text, source, PARTIAL_FORMAT, PARTIAL_VERSION, "an optimisation's partial result")
        try:
            return cls(data["fingerprint"], tuple(data["shard"]), tuple(data["replicates"]), int(data["steps_done"]),
                       data["estimators"], float(data["seconds"]), int(data["threads"]))  # fmt: skip
        except (KeyError, TypeError, ValueError) as error:
            raise PartialError(f"{source!r} is corrupted: {error}") from None


def is_partial_file(path):
    """Whether ``path`` holds an optimisation's partial result (for :func:`fastgrad.merge` to dispatch)."""
    try:
        with open(path, encoding="utf-8") as handle:
            head = handle.read(4096)
    except (OSError, UnicodeDecodeError):
        return False
    return f'"format": "{PARTIAL_FORMAT}"' in head


def merge_partials(partials):
    """Combine every shard's :class:`OptimizationPartial` (objects or paths) into the single run's result."""
    from fastgrad._fingerprint import distribution_from, function_from
    from fastgrad._jobs import Partial, PartialError

    loaded = []
    for item in partials:
        if isinstance(item, OptimizationPartial):
            loaded.append((item, "a partial"))
        else:
            try:
                text = Path(item).read_text()
            except OSError as error:
                raise PartialError(f"cannot read {str(item)!r}: {error.strerror}") from None
            loaded.append((OptimizationPartial.loads(text, str(item)), str(item)))
    reference = loaded[0][0].fingerprint
    for partial, source in loaded:
        Partial(partial.fingerprint, 1, []).check_fingerprint(reference, source)
        if partial.steps_done != reference["steps"]:
            raise PartialError(f"{source!r} is unfinished (step {partial.steps_done:,} of {reference['steps']:,}): "
                               "rerun that shard (with its checkpoint, if it had one)")  # fmt: skip
    loaded.sort(key=lambda item: item[0].replicates[0])
    replicates, covered = reference["replicates"], 0
    for partial, source in loaded:
        lo, hi = partial.replicates
        if lo != covered:
            gap = "overlaps another" if lo < covered else f"leaves replicates [{covered}, {lo}) to no shard"
            raise PartialError(f"{source!r} (replicates [{lo}, {hi})) {gap}: give each shard's result once")
        covered = hi
    if covered != replicates:
        raise PartialError(f"the partial results cover replicates [0, {covered}) of {replicates}: a shard is missing")
    distribution = distribution_from(reference["distribution"])
    function = function_from(reference["function"])
    # (the fingerprint names the moved coordinates: log_scale for scale, logits for probs)
    base = {name: of for name, of in distribution.family.natural}
    wrt = tuple(base.get(name, name) for name in reference["wrt"])
    coordinates = _coordinates(distribution, wrt)
    optimum = reference["optimum"] or None
    layout = _layout(distribution, wrt, coordinates, optimum)
    runs = []
    for k, spec in enumerate(parse_estimators(reference["estimators"])):
        draws = reference["batch"] // spec.evaluations if reference["equal_cost"] else reference["batch"]
        plan = Plan.build(distribution, function, [spec], coordinates, compare=False)
        run = _EstimatorRun(spec, plan, draws, distribution, function, coordinates, wrt, layout, replicates, optimum,
                            reference["tolerance"])  # fmt: skip
        histories = []
        for partial, source in loaded:
            lo, hi = partial.replicates
            run.restore(partial.estimators[k], source, lo, hi)
            histories.append(run.history)
        for values in zip(*histories, strict=True):
            run.log(np.concatenate(values, axis=0))
        runs.append(run)
    steps = reference["steps"]
    logged = np.append(np.arange(0, steps, reference["log_every"], dtype=np.int64), np.int64(steps))
    seconds = sum(partial.seconds for partial, _ in loaded)
    threads = max(partial.threads for partial, _ in loaded)
    return _result(reference, distribution, function, wrt, coordinates, runs, logged, steps, seconds, threads, None)


def _mpi_max():
    from mpi4py import MPI

    return MPI.MAX
