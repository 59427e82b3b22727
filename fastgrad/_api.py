"""``compare``, ``estimate``, ``variance_curve`` and ``merge``: validate -> plan -> job -> result.

Every entry point reads the same way: its arguments are checked
(:mod:`fastgrad._validate`), a :class:`~fastgrad.estimators.Plan` says what
the run computes, a :class:`~fastgrad._jobs.Job` runs its chunks (progress,
Ctrl-C, checkpoints, shards, MPI), and the result is built from the merged
record (:mod:`fastgrad.results`).
"""

import math
from contextlib import contextmanager

import numba
import numpy as np

from fastgrad import _kernels, _pilot, _validate, results
from fastgrad._fingerprint import fingerprint, plan_from
from fastgrad._reduction import record_width
from fastgrad._validate import MAX_DRAWS, check_job_options
from fastgrad.distributions import DiagNormal, natural_names
from fastgrad.estimators import ESTIMATORS, Plan, parse_estimators

__all__ = ["MAX_DRAWS", "NonFiniteValuesError", "compare", "estimate", "merge", "variance_curve"]

#: Sample sizes of :func:`variance_curve` by default: the seed article's.
DEFAULT_SAMPLE_SIZES = (10, 100, 1_000, 10_000, 100_000)


class NonFiniteValuesError(ValueError):
    """Some per-draw gradient values were NaN or infinite (``nan_policy="raise"``)."""

    def __init__(self, count, n, message=None):
        self.count = count
        self.n = n
        super().__init__(
            message
            or f"{count:,} of {n:,} draws gave a non-finite (nan or inf) per-draw gradient "
            "(f or df returned nan/inf, or an overflow); pass nan_policy='omit' to leave those draws "
            "out and report how many, or check the function"
        )


def compare(
    distribution,
    function,
    n,
    *,
    seed=None,
    wrt=None,
    threads=None,
    nan_policy="raise",
    estimators=None,
    pilot=None,
    progress=None,
    checkpoint=None,
    checkpoint_every=60.0,
    shard=None,
    comm=None,
):
    """Score-function and pathwise gradient estimates from one fused pass over the same draws.

    Parameters
    ----------
    distribution : Normal
        The distribution ``q_theta``; gradients are taken with respect to its
        parameters.
    function : str, Function or numba.njit function
        ``f`` in ``d/d theta E[f(x)]``: a built-in name (``"linear"``,
        ``"square"``, ``"shifted_square"``, ``"cos"``, ``"quartic"``), a
        built-in with parameters (``fastgrad.functions.cos(omega=2)``), or
        ``fastgrad.Function(f, df)`` wrapping your own ``@njit`` functions
        (``df`` is required here: the pathwise estimator needs it).
    n : int
        Number of draws, 2 <= n <= 2**53.
    seed : int, optional
        Integer in ``[0, 2**64)``. The same seed gives bit-identical results on
        any number of threads. Default: a fresh random seed, reported in the
        result so the run can be repeated.
    wrt : str or sequence of str, optional
        Parameters to differentiate with respect to, e.g. ``"loc"`` or
        ``("loc", "scale")``. Default: all of the distribution's parameters.
    threads : int, optional
        Threads for this call (1 .. ``numba.config.NUMBA_NUM_THREADS``);
        Numba's setting is restored afterwards. Default: Numba's current
        setting (``NUMBA_NUM_THREADS``, else all cores).
    nan_policy : {"raise", "omit"}
        What to do with draws where a per-draw gradient is NaN or infinite:
        ``"raise"`` (default) raises :class:`NonFiniteValuesError` with their
        count; ``"omit"`` leaves them out of both estimators and reports
        ``n_omitted``.
    estimators : list of str, optional
        Estimator specifications to compare on the same draws, e.g.
        ``["score", "score+optimal-baseline", "pathwise", "pathwise+antithetic",
        "measure-valued"]`` (grammar: :func:`fastgrad.estimators.parse_estimator`;
        ``docs/variance-reduction.md``). Returns a :class:`Comparison` with one
        row per specification; every family, a DiagNormal per component. With
        ``score+loo(K)``, ``n`` must be a multiple of K.
    pilot : int, optional
        Draws of the independent pilot stream that estimates
        ``optimal-baseline`` and ``cv`` coefficients (default 100 000).

    Returns
    -------
    Comparison
        ``score`` and ``pathwise`` results, ``variance_ratio`` with its 95 %
        confidence interval, and analytic values for built-in functions.
        With ``estimators``: a :class:`VariantComparison`, one row per
        estimator, with ratios to the pathwise estimator (the score function
        where there is none).
        A run stopped early (Ctrl-C, SIGTERM) returns the chunks it finished,
        with ``interrupted`` set; a ``shard`` run returns a :class:`Partial`;
        under ``comm``, ranks other than 0 return None.

    Other Parameters
    ----------------
    progress : bool, optional
        Show draws done, draws/s and the time left on stderr. Default: when
        stderr is a terminal.
    checkpoint : path, optional
        Save the run's partial moments here (atomically) at most every
        ``checkpoint_every`` seconds, on Ctrl-C, on SIGTERM and at the end;
        if the file exists, resume from it (bit-identical to an uninterrupted
        run). A file from another run, another fastgrad version or a corrupted
        one is refused, never overwritten. See ``docs/hpc.md``.
    checkpoint_every : float
        Seconds between checkpoint writes (default 60).
    shard : (int, int), optional
        ``(i, K)``: run only shard ``i`` (0-based) of ``K`` and return a
        :class:`Partial`; :func:`merge` combines the K partials into the
        result, bit-identical to a single run.
    comm : mpi4py communicator, optional
        Split the chunks across the communicator's ranks and merge on rank 0
        (bit-identical to a single process).

    Examples
    --------
    >>> import fastgrad as fg
    >>> r = fg.compare(fg.Normal(2.0, 1.0), "square", n=10**6, seed=0, wrt="loc")
    >>> r.score.analytic_variance, r.pathwise.analytic_variance, r.analytic_variance_ratio
    ({'loc': 87.0}, {'loc': 4.0}, {'loc': 21.75})
    >>> abs(r.score.variance["loc"] - 87.0) < 5 * r.score.variance_stderr["loc"]
    True
    >>> 20 < r.variance_ratio["loc"] < 23
    True
    >>> t = fg.compare(fg.Normal(2.0, 1.0), "square", n=10**6, seed=0, wrt="loc",
    ...                estimators=["score", "score+optimal-baseline", "pathwise+antithetic"])
    >>> t["score"].analytic_variance["loc"], t["pathwise+antithetic"].analytic_variance["loc"]
    (87.0, 0.0)
    """
    options = check_job_options(progress, checkpoint, checkpoint_every, shard, comm)
    if estimators is None and pilot is not None:
        raise ValueError("pilot is used with estimators=[... 'score+optimal-baseline' or 'score+cv' ...] only")
    plan, seed, threads, pilot = _plan(distribution, function, estimators, wrt, seed, threads, pilot, "compare")
    return _run(plan, "compare", _validate.check_n(n), seed, threads, _validate.check_nan_policy(nan_policy),
                pilot, options)  # fmt: skip


def estimate(
    distribution,
    function,
    n,
    *,
    estimator,
    seed=None,
    wrt=None,
    threads=None,
    nan_policy="raise",
    pilot=None,
    progress=None,
    checkpoint=None,
    checkpoint_every=60.0,
    shard=None,
    comm=None,
):
    """One estimator's gradient estimate.

    Parameters
    ----------
    distribution, function, n, seed, wrt, threads, nan_policy
        As in :func:`compare`. With ``estimator="score"`` a user function
        needs no derivative.
    progress, checkpoint, checkpoint_every, shard, comm
        As in :func:`compare`.
    estimator : str
        One estimator specification: ``"score"`` (``f(x) * d log q(x) / d theta``),
        ``"pathwise"`` (``f'(x) * d x / d theta``, needs ``df``), or any variant
        :func:`compare` takes (``"score+cv"``, ``"pathwise+antithetic"``,
        ``"measure-valued"``, ...; ``docs/variance-reduction.md``).
    pilot : int, optional
        As in :func:`compare`, for ``optimal-baseline`` and ``cv``.

    Returns
    -------
    EstimatorResult

    Examples
    --------
    >>> import numba
    >>> import fastgrad as fg
    >>> @numba.njit
    ... def f(x):
    ...     return x * x
    >>> @numba.njit
    ... def df(x):
    ...     return 2.0 * x
    >>> g = fg.estimate(fg.Normal(0.5, 2.0), fg.Function(f, df), n=10**6,
    ...                 estimator="pathwise", wrt=("loc", "scale"), seed=3)
    >>> abs(g.mean["loc"] - 1.0) < 5 * g.stderr["loc"]    # d/dloc E[x^2] = 2 loc
    True
    """
    if isinstance(estimator, (list, tuple)) or estimator is None:
        raise TypeError(f"estimator must be one specification, e.g. 'score' or 'score+cv'; got {estimator!r}")
    options = check_job_options(progress, checkpoint, checkpoint_every, shard, comm)
    plan, seed, threads, pilot = _plan(distribution, function, (estimator,), wrt, seed, threads, pilot, "estimate")
    return _run(plan, "estimate", _validate.check_n(n), seed, threads, _validate.check_nan_policy(nan_policy),
                pilot, options)  # fmt: skip


def variance_curve(
    distribution,
    function,
    sample_sizes=DEFAULT_SAMPLE_SIZES,
    repeats=1000,
    *,
    seed=None,
    wrt=None,
    threads=None,
    estimators=None,
    pilot=None,
    nan_policy="raise",
    progress=None,
    checkpoint=None,
    checkpoint_every=60.0,
    shard=None,
    comm=None,
):
    """How the variance of an ``n``-draw gradient estimate falls with ``n``, for both estimators.

    For every sample size ``n``, ``repeats`` independent ``n``-draw estimates
    are made with each estimator (score and pathwise on the same draws), and
    their spread across repeats is measured. The draws are never stored: a
    fused parallel kernel sums each repeat's per-draw gradients as it goes.

    Parameters
    ----------
    distribution, function, wrt, threads
        As in :func:`compare` (``function`` needs a derivative for the pathwise
        estimator).
    sample_sizes : sequence of int
        Draws per estimate, each >= 1, all different; they are run in
        increasing order. Default: 10, 100, ..., 100 000.
    repeats : int
        Independent estimates per sample size, >= 2. Memory is 8 bytes per
        repeat, size and (estimator, parameter) row.
    seed : int, optional
        As in :func:`compare`: bit-identical results on any number of
        threads. The estimates use the run's draws end to end: size
        ``n_k`` (sizes sorted) takes the ``repeats * n_k`` draws after those
        of the smaller sizes, repeat ``i`` the ``n_k`` draws from
        ``i * n_k`` on.
    estimators, pilot : optional
        As in :func:`compare`: a curve for every listed estimator variant, on
        the same draws, with each one's variance per evaluation over the
        reference estimator's. With ``score+loo(K)`` every size must be a
        multiple of K.
    nan_policy : {"raise", "omit"}
        What to do with estimates that are not finite (a draw's gradient was
        NaN or infinite): ``"raise"`` (default) raises
        :class:`NonFiniteValuesError`; ``"omit"`` leaves those repeats out of
        their size's statistics and reports how many in ``n_omitted`` (one
        count per size). A size left with fewer than 2 repeats raises.
    progress, checkpoint, checkpoint_every, shard, comm : optional
        As in :func:`compare`: shards merge (:func:`merge`) and MPI ranks
        combine into the single-process curve, bit for bit. A curve stopped
        early (Ctrl-C, SIGTERM) returns the sample sizes it finished, with
        ``interrupted`` set.

    Returns
    -------
    VarianceCurve
        Per estimator, parameter and size: the mean of the estimates, their
        variance across repeats with a 95 % confidence interval, the analytic
        variance (per-draw variance / n) for built-in functions, and the
        score/pathwise variance ratio with its interval. For a
        :class:`DiagNormal` the variance is the trace (summed over the
        components), the ratios are ratios of traces, and means are arrays. ``plot(path)`` draws
        it (needs the ``fastgrad[plot]`` extra).

    Examples
    --------
    >>> import fastgrad as fg
    >>> c = fg.variance_curve(fg.Normal(2.0, 1.0), "square", [10, 1000], repeats=2000, seed=0, wrt="loc")
    >>> c.analytic_variance["score"]["loc"], c.analytic_variance["pathwise"]["loc"]
    ((8.7, 0.087), (0.4, 0.004))
    >>> all(lo < truth < hi for (lo, hi), truth in zip(c.variance_ci["score"]["loc"], (8.7, 0.087)))
    True
    """
    options = check_job_options(progress, checkpoint, checkpoint_every, shard, comm)
    if estimators is None and pilot is not None:
        raise ValueError("pilot is used with estimators=[... 'score+optimal-baseline' or 'score+cv' ...] only")
    nan_policy = _validate.check_nan_policy(nan_policy)
    plan, seed, threads, pilot = _plan(distribution, function, estimators, wrt, seed, threads, pilot, "curve")
    sizes = _validate.check_sample_sizes(sample_sizes)
    repeats = _validate.check_repeats(repeats, sizes)
    if any(size % plan.group for size in sizes):
        raise ValueError(
            f"sample_sizes must be multiples of the leave-one-out group size {plan.group}; got {list(sizes)}"
        )
    _check_curve_memory(plan.n_rows, len(sizes), repeats)
    return _run_curve(plan, sizes, repeats, seed, threads, pilot, options, nan_policy)


def _check_curve_memory(n_rows, n_sizes, repeats):
    """Refuse, before any work, a curve whose per-repeat estimates would not fit in this machine's memory."""
    import os

    needed = 8 * n_rows * n_sizes * repeats  # the estimates of every repeat, float64 (and the result's copies)
    try:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover (no sysconf here)
        return
    if needed > available // 2:
        raise ValueError(
            f"repeats * len(sample_sizes) is too large for this machine: the curve keeps every repeat's estimates, "
            f"{needed / 2**30:,.1f} GiB ({n_rows} rows x {n_sizes} sizes x {repeats:,} repeats x 8 bytes), against "
            f"{available / 2**30:,.1f} GiB of memory (at most half of it is used); use fewer repeats"
        )


# --- plan, run, finish --------------------------------------------------------------------


def _plan(distribution, function, estimators, wrt, seed, threads, pilot, kind):
    """Check every argument a run shares and build its plan; return (plan, seed, threads, pilot)."""
    function = _validate.check_target(distribution, function)
    seed = _validate.check_seed(seed)
    wrt = _validate.check_wrt(wrt, distribution.parameters, natural_names(distribution))
    threads = _validate.check_threads(threads)
    classic = estimators is None
    if kind == "estimate":  # one specification: a plain one keeps the classic fingerprint and analytic engine
        classic = parse_estimators(estimators)[0].plain
    plan = Plan.build(distribution, function, ESTIMATORS if estimators is None else estimators, wrt,
                      classic=classic, compare=kind != "estimate")  # fmt: skip
    pilot = _validate.check_pilot(pilot) if plan.needs_pilot else 0
    return plan, seed, threads, pilot


def _run(plan, kind, n, seed, threads, nan_policy, pilot, options):
    """Run a plan over ``n`` draws; return its result, a shard's Partial, or None off MPI rank 0."""
    group = plan.group
    if group > 1 and (n % group or n // group < 2):
        raise ValueError(
            f"n must be a multiple of the leave-one-out group size {group}, at least {2 * group}; got {n:,}"
        )
    units = n // group
    per_chunk = plan.units_per_chunk
    draws_in = _draws_in(units, per_chunk)
    job = _make_job(fingerprint(plan, kind, n, seed, pilot), math.ceil(units / per_chunk),
                    lambda a, b: draws_in(a, b) * group, options, plan)  # fmt: skip
    with _running(job, plan, threads, pilot, seed) as (used, coefficients):
        kernel = plan.kernel("moments", seed=seed, n_units=units, coefficients=coefficients)
        extra = max_chunks = None
        if plan.multivariate:  # the trace ratio's interval needs each chunk's trace sums
            extra = lambda records: results.chunk_trace_sums(records, plan).reshape(len(records), -1)  # noqa: E731
            width = record_width(plan.n_rows, len(plan.pair_x))
            max_chunks = max(1, min(_kernels.BATCH_CHUNKS, _kernels.MAX_BATCH_VALUES // width))
        tree, seconds, _ = _kernels.run_records(kernel, plan, job, max_chunks, extra)
    done = _finish_job(job, tree, seconds, used, plan, n, group)
    if not isinstance(done, tuple):
        return done  # a shard's Partial, or None on MPI ranks other than 0
    record, context, extra = done
    if int(record[1]) and nan_policy == "raise":
        raise NonFiniteValuesError(int(record[1]) * group, n)
    return _result(plan, kind, record, context, extra, coefficients, pilot)


def _result(plan, kind, record, context, extra, coefficients, pilot):
    """Build the result of a finished (or stopped) run from its merged record."""
    kept, omitted = int(record[0]) * plan.group, int(record[1]) * plan.group
    if omitted and kept < 2:  # nan_policy="omit" left too few draws: a mean of none is not 0
        raise NonFiniteValuesError(
            omitted,
            kept + omitted,
            f"nan_policy='omit': {omitted:,} of the {kept + omitted:,} draws gave a non-finite per-draw gradient, "
            f"leaving {kept}: a mean needs at least 1 draw and its standard error 2; check the function",
        )
    trace_sums = None
    if plan.multivariate and extra is not None:
        trace_sums = extra.reshape(len(extra), len(plan.specs), len(plan.wrt))
    analytic, note = _analytic(plan, coefficients)
    context = dict(context, analytic_note=note)
    return results.comparison(plan, record, analytic, context, coefficients, pilot, trace_sums, kind)


def _analytic(plan, coefficients):
    """``(values, note)``: per specification its exact ``{parameter: (mean, variance)}`` or None; why some are missing.

    The run's own figures never depend on this: an exact value that does not
    fit a float64 (it overflows, or the arithmetic that gives it does) is
    None for its specification, and ``note`` says so.
    """
    try:
        found = _exact_values(plan, coefficients)
    except (OverflowError, ZeroDivisionError, FloatingPointError) as error:
        return None, f"the exact values do not fit a float64 ({type(error).__name__}: {error})"
    if found is None or all(values is None for values in found):  # (a family may say why it has none here)
        why = getattr(plan.distribution, "exact_values_note", None)
        return None, why(plan.function) if why is not None else None
    kept = [values if values is None or _finite(values) else None for values in found]
    if all(values is None for values in kept) and any(values is not None for values in found):
        return None, "the exact values do not fit a float64 (they overflow)"
    note = "some exact values do not fit a float64 (they overflow)" if kept != found else None
    why = getattr(plan.distribution, "exact_values_note", None)
    if why is not None and any(values is None for values in found):  # (some specifications have none: why)
        note = "; ".join(part for part in (note, why(plan.function)) if part) or None
    return kept, note


def _finite(values):
    return all(np.all(np.isfinite(np.asarray(v, dtype=float))) for pair in values.values() for v in pair)


def _exact_values(plan, coefficients):
    from fastgrad import _analytic

    joint = plan.distribution.family.joint
    if joint is not None:  # Beta, Dirichlet: every specification from the family's own exact engine
        return joint.moments(plan.distribution, plan.function, plan.specs, coefficients, plan.wrt)
    if isinstance(getattr(plan.distribution, "distribution", plan.distribution), DiagNormal):  # (or its NaturalView)
        if not plan.classic:
            return _analytic.separable_variant_moments(plan.distribution, plan.function, plan.specs, coefficients,
                                                       plan.wrt)  # fmt: skip
        found = _analytic.separable_moments(plan.distribution, plan.function, plan.names, plan.wrt)
    elif plan.classic or all(spec.plain for spec in plan.specs):  # (the same exact values, kept between calls)
        found = _analytic.estimator_moments(plan.distribution, plan.function, plan.names, plan.wrt)
    else:
        return _analytic.variant_moments(plan.distribution, plan.function, plan.specs, coefficients, plan.wrt)
    return None if found is None else [found.get(name) for name in plan.names]


def _finish_job(job, tree, seconds, threads, plan, n, draws_per_unit=1):
    """Turn a finished (or stopped) job's tree into (record, context, extra values), a shard's Partial, or None."""
    from fastgrad import _jobs

    if job.shard is not None:
        return job.partial(tree, seconds, threads)
    if job.comm is not None:
        part = _jobs.Part.of(tree, job.first, job.stop, seconds, threads, job.extra_values())
        parts = job.comm.gather(part, root=0)
        if job.rank != 0:
            return None
        record = _jobs.merge_parts(parts, plan, job.n_chunks, allow_gaps=True)
        extra = _jobs.merge_extra(parts)
        done_all = all(part.done for part in parts)
        seconds = max(part.seconds for part in parts)
        threads = sum(part.threads for part in parts)
    else:
        record = tree.fold()
        extra = job.extra_values()
        done_all = tree.next_chunk == job.stop
    draws = (int(record[0]) + int(record[1])) * draws_per_unit
    context = _context(plan, job.fingerprint["seed"], threads, seconds, draws)
    if not done_all:
        context["interrupted"] = job.stop_reason or "stopped"
        context["n_requested"] = n
    return record, context, extra


def _context(plan, seed, threads, seconds, draws):
    return {
        "distribution": plan.distribution,
        "function": plan.function,
        "seed": seed,
        "threads": threads,
        "seconds": seconds,
        "draws_per_second": draws / seconds if seconds > 0 else math.inf,
    }


def _draws_in(n, per_chunk):
    """``draws_between(a, b)``: units in chunks ``[a, b)`` of a run of ``n`` units, ``per_chunk`` a chunk."""
    return lambda a, b: max(0, min(n, b * per_chunk) - a * per_chunk)


@contextmanager
def _running(job, plan, threads, pilot, seed):
    """Hold the job's threads and checkpoint lock while it runs; yield (threads used, the pilot's coefficients).

    The pilot, the kernel's compilation and the batches run under the job's
    signal handlers: Ctrl-C or SIGTERM before the first batch stop the run
    there, with its checkpoint. The lock is released however the run ends.
    """
    try:
        with _numba_threads(threads) as used, job.signals():
            job.coefficients = None if plan.classic else _pilot.coefficients(plan, pilot, seed)
            yield used, job.coefficients
    finally:
        job.release()


def _make_job(fingerprint, n_chunks, draws_between, options, layout=None):
    """Build a Job; any checkpoint is loaded and checked now, before the kernels compile."""
    from fastgrad._jobs import Job, Partial

    job = Job(fingerprint, n_chunks, draws_between, **options)
    job.lock()  # a second run on the same checkpoint is refused now, before anything is read or written
    try:
        if layout is not None:
            job.prepare(layout)
        elif job.checkpoint is not None and job.checkpoint.exists():
            Partial.load(job.checkpoint).check_fingerprint(fingerprint, str(job.checkpoint))
    except BaseException:
        job.release()
        raise
    return job


# --- variance curves ------------------------------------------------------------------------


def _run_curve(plan, sizes, repeats, seed, threads, pilot, options, nan_policy="raise"):
    """Run a plan's variance curve; return it, a shard's Partial, or None off MPI rank 0."""
    group = plan.group
    unit_sizes = [size // group for size in sizes]
    positions = repeats * sum(unit_sizes)
    per_chunk = plan.units_per_chunk
    draws_in = _draws_in(positions, per_chunk)
    extra = {"nan_policy": "omit"} if nan_policy == "omit" else {}  # (named only when not the default)
    job = _make_job(fingerprint(plan, "curve", positions * group, seed, pilot, sample_sizes=list(sizes),
                                repeats=repeats, **extra), math.ceil(positions / per_chunk),
                    lambda a, b: draws_in(a, b) * group, options)  # fmt: skip
    with _running(job, plan, threads, pilot, seed) as (used, coefficients):
        kernel = plan.kernel("curve", seed=seed, n_units=positions, coefficients=coefficients)
        part = _kernels.curve_batches(kernel, unit_sizes, repeats, plan.n_rows, job)
    done = _curve_parts_done(job, part, unit_sizes, repeats, per_chunk, used)
    if not isinstance(done, tuple):
        return done  # a shard's Partial, or None on MPI ranks other than 0
    totals, seconds, done, used = done
    finished, context = _curve_finished(job, done, sizes, repeats, per_chunk, group)
    totals = totals[:, : len(finished) * repeats]
    kept = _check_curve_totals(totals, finished, repeats, nan_policy)
    draws = repeats * sum(finished)
    context = dict(_context(plan, seed, used, seconds, draws), draws=draws, **context)
    return _curve_result(plan, totals, finished, repeats, coefficients, pilot, context, kept)


def _curve_result(plan, totals, sizes, repeats, coefficients, pilot, context, kept=None):
    analytic, note = _analytic(plan, coefficients)
    return results.variance_curve(plan, totals, sizes, repeats, analytic, kept=kept, pilot=pilot, analytic_note=note,
                                  **context)  # fmt: skip


def _curve_parts_done(job, part, unit_sizes, repeats, per_chunk, threads):
    """Return a curve job's (totals, seconds, chunks done, threads), a shard's Partial, or None off MPI rank 0."""
    part.threads = threads
    if job.shard is not None:
        stopped = None if part.done else (job.stop_reason or "stopped")
        return job.make_partial([part], interrupted=stopped)
    if job.comm is None:
        return part.extra, part.seconds, part.next, threads
    parts = job.comm.gather(part, root=0)
    if job.rank != 0:
        return None
    totals = _merge_curve_totals(parts, job.n_chunks, unit_sizes, repeats, per_chunk, allow_gaps=True)
    done = job.n_chunks
    for other in sorted(parts, key=lambda p: p.first):
        if not other.done:  # the curve is good up to the first rank that stopped early
            done = other.next
            break
    return totals, max(p.seconds for p in parts), done, sum(p.threads for p in parts)


def _merge_curve_totals(parts, n_chunks, unit_sizes, repeats, per_chunk, allow_gaps=False):
    from fastgrad import _jobs

    sizes = np.asarray(unit_sizes, dtype=np.int64)
    offsets = np.zeros(sizes.size + 1, np.int64)
    offsets[1:] = np.cumsum(sizes * repeats)
    starts = _jobs.repeat_starts(offsets, sizes, repeats)
    shape = (parts[0].extra.shape[0], sizes.size * repeats) if parts[0].extra is not None else (0, 0)
    return _jobs.merge_curve_parts(parts, n_chunks, starts, per_chunk, shape, allow_gaps=allow_gaps)


def _curve_finished(job, done_chunks, sizes, repeats, per_chunk, group):
    """Return the sample sizes whose repeats all finished, and the interruption context if some did not."""
    done = done_chunks * per_chunk * group
    finished, end = [], 0
    for size in sizes:
        end += repeats * size
        if end > done:
            break
        finished.append(size)
    if len(finished) == len(sizes):
        return tuple(finished), {}
    return tuple(finished), {"interrupted": job.stop_reason or "stopped", "sample_sizes_requested": tuple(sizes)}


def _check_curve_totals(totals, sizes, repeats, nan_policy="raise"):
    """Refuse non-finite estimates, or with ``nan_policy="omit"`` return which repeats to keep (None: all)."""
    finite = np.isfinite(totals).all(axis=0)
    bad = int(np.count_nonzero(~finite))
    if not bad:
        return None
    if nan_policy != "omit":
        raise NonFiniteValuesError(
            bad,
            totals.shape[1],
            f"{bad:,} of {totals.shape[1]:,} estimates were not finite (f or df returned nan/inf, or an overflow); "
            "pass nan_policy='omit' to leave those repeats out and report how many, or check the function",
        )
    for k, size in enumerate(sizes):
        left = int(finite[k * repeats : (k + 1) * repeats].sum())
        if left < 2:
            raise NonFiniteValuesError(
                repeats - left,
                repeats,
                f"nan_policy='omit': {repeats - left:,} of the {repeats:,} estimates of {size:,} draws were not "
                f"finite, leaving {left}: a variance needs at least 2; check the function",
            )
    return finite


# --- merging shards ------------------------------------------------------------------------


def merge(partials):
    """Combine the partial results of shards into the full result, bit-identical to a single run.

    Parameters
    ----------
    partials : sequence of paths or Partial
        The partial results of ``compare(..., shard=(i, K))`` (or ``fastgrad
        compare --shard i/K --json part_i.json``) for every ``i`` of one run;
        or those of ``optimize(..., shard=(i, K))`` (OptimizationPartial).

    Returns
    -------
    Comparison, EstimatorResult, VariantComparison or OptimizationResult
        What the run would have returned in one process. Its ``seconds`` is
        the sum over the shards, ``threads`` the most any shard used.

    Raises
    ------
    fastgrad.PartialError
        A file is corrupted, from another run (parameters, seed or fastgrad
        version), or the shards overlap, leave chunks out, or are unfinished.
    """
    from fastgrad import _jobs
    from fastgrad.optimize import OptimizationPartial, is_partial_file, merge_partials

    if isinstance(partials, (str, bytes)) or not hasattr(partials, "__iter__"):
        raise TypeError(f"partials must be a sequence of paths or fastgrad.Partial objects; got {partials!r}")
    partials = list(partials)
    if partials and all(
        isinstance(item, OptimizationPartial)
        or ((isinstance(item, str) or hasattr(item, "__fspath__")) and is_partial_file(item))
        for item in partials
    ):
        return merge_partials(partials)
    loaded = []
    for item in partials:
        if isinstance(item, _jobs.Partial):
            loaded.append((item, "a partial"))
        elif isinstance(item, (str, bytes)) or hasattr(item, "__fspath__"):
            loaded.append((_jobs.Partial.load(item), str(item)))
        else:
            raise TypeError(f"partials must be paths or fastgrad.Partial objects; got {item!r}")
    if not loaded:
        raise ValueError("partials must name at least one partial result")
    for partial, source in loaded:
        partial.check_versions(source)
    reference, _ = loaded[0]
    for partial, source in loaded[1:]:
        partial.check_fingerprint(reference.fingerprint, source)
    found = reference.fingerprint
    parts = [part for partial, _ in loaded for part in partial.parts]
    plan = plan_from(found)
    coefficients = None
    if not plan.classic:  # the pilot's coefficients travel with the partials (a user's function does not)
        stored = next((partial.coefficients for partial, _ in loaded if partial.coefficients is not None), None)
        if stored is not None:
            coefficients = [None if c is None else np.array(c, dtype=float) for c in stored]
        elif plan.needs_pilot and plan.function.builtin is None:
            raise _jobs.PartialError(
                "these partial results carry no pilot coefficients (written by an older fastgrad), and the "
                "user function is not recorded in them: rerun the shards"
            )
        else:
            coefficients = _pilot.coefficients(plan, found.get("pilot", 0), found["seed"])
    seconds = sum(part.seconds for part in parts)
    threads = max(part.threads for part in parts)
    if found["kind"] == "curve":
        sizes, repeats = tuple(found["sample_sizes"]), found["repeats"]
        unit_sizes = [size // plan.group for size in sizes]
        totals = _merge_curve_totals(parts, reference.n_chunks, unit_sizes, repeats, plan.units_per_chunk)
        kept = _check_curve_totals(totals, sizes, repeats, found.get("nan_policy", "raise"))
        draws = repeats * sum(sizes)
        context = dict(_context(plan, found["seed"], threads, seconds, draws), draws=draws)
        return _curve_result(plan, totals, sizes, repeats, coefficients, found.get("pilot", 0), context, kept)
    record = _jobs.merge_parts(parts, plan, reference.n_chunks)
    context = _context(plan, found["seed"], threads, seconds, found["n"])
    return _result(plan, found["kind"], record, context, _jobs.merge_extra(parts), coefficients, found.get("pilot", 0))


# --- threads ---------------------------------------------------------------------------------


def default_threads():
    """Threads a run uses when none are given, and where that number comes from.

    ``NUMBA_NUM_THREADS`` if set; else ``SLURM_CPUS_PER_TASK`` (a SLURM job's
    allocation, capped at the cores Numba sees); else all cores.
    """
    import os

    available = numba.config.NUMBA_NUM_THREADS
    if os.environ.get("NUMBA_NUM_THREADS"):
        return numba.get_num_threads(), "NUMBA_NUM_THREADS"
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) >= 1:
        return min(int(slurm), available), "SLURM_CPUS_PER_TASK"
    return numba.get_num_threads(), "all cores"


@contextmanager
def _numba_threads(threads):
    """Use ``threads`` for the block (default: :func:`default_threads`), then restore Numba's previous setting."""
    previous = numba.get_num_threads()
    if threads is None:
        threads = default_threads()[0]
    if threads is not None:
        numba.set_num_threads(threads)
    try:
        yield numba.get_num_threads()
    finally:
        numba.set_num_threads(previous)
