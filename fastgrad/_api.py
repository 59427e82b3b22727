"""``compare`` and ``estimate``: validate everything, run the fused kernel, build results."""

import math
import secrets
from contextlib import contextmanager

import numba
import numpy as np

from fastgrad import _kernels, results
from fastgrad._analytic import estimator_moments
from fastgrad.distributions import DISTRIBUTIONS, DiagNormal
from fastgrad.estimators import ESTIMATORS, layout, parse_estimator, parse_estimators
from fastgrad.functions import SeparableFunction, VectorFunction, resolve

#: Largest ``n``: counts are float64 in the moment records, exact up to 2**53.
MAX_DRAWS = 2**53

NAN_POLICIES = ("raise", "omit")

#: Draws of the independent pilot stream that estimates optimal baselines and
#: control-variate coefficients, by default.
DEFAULT_PILOT = 100_000

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
        ``docs/variance-reduction.md``). Returns a :class:`VariantComparison`.
        Scalar families only. With ``score+loo(K)``, ``n`` must be a multiple of K.
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
    options = _check_job_options(progress, checkpoint, checkpoint_every, shard, comm)
    if estimators is not None:
        return _compare_variants(distribution, function, n, estimators, seed, wrt, threads, nan_policy, pilot, options)
    if pilot is not None:
        raise ValueError("pilot is used with estimators=[... 'score+optimal-baseline' or 'score+cv' ...] only")
    if isinstance(distribution, DiagNormal):
        done = _run_vector(distribution, function, n, seed, wrt, threads, nan_policy, ESTIMATORS, options, "compare")
        if not isinstance(done, tuple):
            return done
        record, lay, analytic, context = done
        return results.vector_comparison(record, lay, analytic, **context)
    run = _prepare(distribution, function, n, seed, wrt, threads, nan_policy, ESTIMATORS)
    done = _execute(run, "compare", options)
    if not isinstance(done, tuple):
        return done  # a shard's Partial, or None on MPI ranks other than 0
    return _comparison(run["layout"], *done)


def _comparison(layout, record, context, analytic):
    """Comparison from a merged record (also used by :func:`merge`)."""
    run = {"layout": layout}
    score = results.estimator_result("score", record, run["layout"], context, analytic)
    pathwise = results.estimator_result("pathwise", record, run["layout"], context, analytic)
    ratios, intervals = {}, {}
    for pair, parameter in enumerate(run["layout"].wrt):
        ratios[parameter], intervals[parameter] = results.variance_ratio(record, run["layout"], pair)
    analytic_ratio = None
    if analytic is not None:
        analytic_ratio = {
            p: _safe_ratio(analytic["score"][p][1], analytic["pathwise"][p][1]) for p in run["layout"].wrt
        }
    return results.Comparison(
        score=score,
        pathwise=pathwise,
        variance_ratio=ratios,
        variance_ratio_ci=intervals,
        analytic_variance_ratio=analytic_ratio,
        **{k: context[k] for k in ("distribution", "function", "seed", "threads", "seconds", "draws_per_second")},
        wrt=run["layout"].wrt,
        n=score.n,
        n_omitted=score.n_omitted,
        interrupted=context.get("interrupted"),
        n_requested=context.get("n_requested"),
    )


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
    estimator : {"score", "pathwise"}
        ``"score"``: ``f(x) * d log q(x) / d theta``;
        ``"pathwise"``: ``f'(x) * d x / d theta`` (needs ``df``).

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
    if not isinstance(estimator, str) or estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {list(ESTIMATORS)}; got {estimator!r}")
    options = _check_job_options(progress, checkpoint, checkpoint_every, shard, comm)
    if isinstance(distribution, DiagNormal):
        done = _run_vector(distribution, function, n, seed, wrt, threads, nan_policy, (estimator,), options, "estimate")
        if not isinstance(done, tuple):
            return done
        record, lay, analytic, context = done
        return results.vector_estimator_result(estimator, record, lay, analytic, context)
    run = _prepare(distribution, function, n, seed, wrt, threads, nan_policy, (estimator,))
    done = _execute(run, "estimate", options)
    if not isinstance(done, tuple):
        return done
    record, context, analytic = done
    return results.estimator_result(estimator, record, run["layout"], context, analytic)


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
        score/pathwise variance ratio with its interval. ``plot(path)`` draws
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
    options = _check_job_options(progress, checkpoint, checkpoint_every, shard, comm)
    if estimators is not None:
        return _variant_curve(
            distribution, function, sample_sizes, repeats, seed, wrt, threads, estimators, pilot, options
        )
    if pilot is not None:
        raise ValueError("pilot is used with estimators=[... 'score+optimal-baseline' or 'score+cv' ...] only")
    run = _prepare(distribution, function, 2, seed, wrt, threads, "raise", ESTIMATORS)
    sizes = _check_sample_sizes(sample_sizes)
    repeats = _check_repeats(repeats, sizes)
    lay = run["layout"]
    job = _curve_job(run, lay.estimators, sizes, repeats, _kernels.CHUNK_SIZE, 1, options, lay)
    with _numba_threads(run["threads"]) as used_threads:
        part = _kernels.curve_run(run["distribution"], run["function"], lay, sizes, repeats, run["seed"], job=job)
    done = _curve_parts_done(job, part, sizes, repeats, 1, used_threads)
    if not isinstance(done, tuple):
        return done  # a shard's Partial, or None on MPI ranks other than 0
    totals, seconds, done, used_threads = done
    finished, context = _curve_finished(job, done, sizes, repeats, _kernels.CHUNK_SIZE, 1)
    totals = totals[:, : len(finished) * repeats]
    _check_curve_totals(totals)
    draws = repeats * sum(finished)
    analytic = estimator_moments(run["distribution"], run["function"], lay.estimators, lay.wrt)
    return results.variance_curve_result(
        totals,
        lay,
        finished,
        repeats,
        analytic,
        distribution=run["distribution"],
        function=run["function"],
        seed=run["seed"],
        threads=used_threads,
        seconds=seconds,
        draws=draws,
        draws_per_second=draws / seconds if seconds > 0 else math.inf,
        **context,
    )


def _curve_job(run, estimators, sizes, repeats, per_chunk, group, options, lay, **extra):
    """Build the Job of a curve: positions are draws (or loo groups), ``per_chunk`` to a chunk."""
    positions = repeats * sum(sizes) // group
    fingerprint = _jobs_fingerprint(
        "curve", run["distribution"], run["function"], positions * group, run["seed"], lay.wrt, estimators,
        sample_sizes=list(sizes), repeats=repeats, **extra,
    )  # fmt: skip
    draws_in = _draws_in(positions, per_chunk)
    return _make_curve_job(fingerprint, math.ceil(positions / per_chunk), lambda a, b: draws_in(a, b) * group, options)


def _make_curve_job(fingerprint, n_chunks, draws_between, options):
    """Build a curve's Job; an existing checkpoint is checked now, before the kernels compile."""
    from fastgrad._jobs import Job, Partial

    job = Job(fingerprint, n_chunks, draws_between, **options)
    if job.checkpoint is not None and job.checkpoint.exists():
        Partial.load(job.checkpoint).check_fingerprint(fingerprint, str(job.checkpoint))
    return job


def _curve_parts_done(job, part, unit_sizes, repeats, group, threads):
    """Return a curve job's (totals, seconds, chunks done, threads), a shard's Partial, or None off MPI rank 0."""
    from fastgrad import _jobs

    part.threads = threads
    if job.shard is not None:
        stopped = None if part.done else (job.stop_reason or "stopped")
        return _jobs.Partial(job.fingerprint, job.n_chunks, [part], shard=job.shard, interrupted=stopped)
    if job.comm is None:
        return part.extra, part.seconds, part.next, threads
    parts = job.comm.gather(part, root=0)
    if job.rank != 0:
        return None
    sizes = np.asarray(unit_sizes, dtype=np.int64)
    offsets = np.zeros(sizes.size + 1, np.int64)
    offsets[1:] = np.cumsum(sizes * repeats)
    starts = _jobs.repeat_starts(offsets, sizes, repeats)
    per_chunk = _kernels.CHUNK_SIZE // group
    totals = _jobs.merge_curve_parts(parts, job.n_chunks, starts, per_chunk, part.extra.shape, allow_gaps=True)
    done = job.n_chunks
    for other in sorted(parts, key=lambda p: p.first):
        if not other.done:  # the curve is good up to the first rank that stopped early
            done = other.next
            break
    return totals, max(p.seconds for p in parts), done, sum(p.threads for p in parts)


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


# --- validation: everything is checked before any work starts ---------------------


def _run_vector(distribution, function, n, seed, wrt, threads, nan_policy, estimators, options, kind):
    """Validate and run a DiagNormal; return (record, layout, analytic, context), a shard's Partial, or None."""
    from fastgrad import _vector

    if not isinstance(function, (SeparableFunction, VectorFunction)):
        raise TypeError(
            "a DiagNormal needs a function of a vector: fastgrad.functions.sum_of_squares(), quadratic(diag), "
            f"linear_form(weights), sum_cos(omega), or fastgrad.VectorFunction(f, grad_f); got {function!r}"
        )
    function.weights_for(distribution.dim)  # checks the number of weights
    n, seed, wrt, threads = _check_run(n, seed, wrt, threads, nan_policy, distribution.parameters)
    if "pathwise" in estimators and not function.has_derivative:
        raise ValueError(
            f"the pathwise estimator needs the gradient of {function.name}: pass fastgrad.VectorFunction(f, grad_f), "
            "or use estimator='score'"
        )
    lay = _vector.VectorLayout.build(distribution.dim, estimators, wrt)
    fingerprint = _jobs_fingerprint(kind, distribution, function, n, seed, wrt, estimators)
    per_chunk = _vector.draws_per_chunk(distribution.dim)
    job = _make_job(fingerprint, math.ceil(n / per_chunk), _draws_in(n, per_chunk), options, lay)
    with _numba_threads(threads) as used:
        tree, seconds, _ = _vector.vector_run(distribution, function, lay, n, seed, job=job)
    run = {"distribution": distribution, "function": function, "seed": seed, "n": n}
    done = _finish_job(job, tree, seconds, used, run, lay)
    if not isinstance(done, tuple):
        return done
    record, context, extra = done
    if int(record[1]) and nan_policy == "raise":
        raise NonFiniteValuesError(int(record[1]), n)
    return _vector_parts(record, lay, extra, context)


def _vector_parts(record, lay, extra, context):
    """(record, layout, analytic, context) of a DiagNormal run, the trace sums (per chunk) in the context."""
    from fastgrad._analytic import separable_moments

    if len(lay.estimators) == 2 and extra is not None:
        context["trace_sums"] = extra.reshape(len(extra), len(lay.estimators), len(lay.wrt))
    analytic = separable_moments(context["distribution"], context["function"], lay.estimators, lay.wrt)
    return record, lay, analytic, context


def _prepare(distribution, function, n, seed, wrt, threads, nan_policy, estimators):
    if isinstance(distribution, DiagNormal):
        raise TypeError("a DiagNormal works with fastgrad.compare and fastgrad.estimate, not yet with variance_curve")
    if not isinstance(distribution, DISTRIBUTIONS):
        accepted = ", ".join(f"fastgrad.{cls.__name__}" for cls in DISTRIBUTIONS)
        raise TypeError(f"distribution must be one of {accepted}; got {distribution!r}")
    function = resolve(function)
    n, seed, wrt, threads = _check_run(n, seed, wrt, threads, nan_policy, distribution.parameters)
    if "pathwise" in estimators and not distribution.family.pathwise:
        name = type(distribution).__name__
        raise ValueError(
            f"{name} has no pathwise (reparameterisation) estimator: its draws are discrete, so they do not move "
            f"smoothly with {', '.join(distribution.parameters)}; use fastgrad.estimate(..., estimator='score')"
        )
    if "pathwise" in estimators and not function.has_derivative:
        raise ValueError(
            f"the pathwise estimator needs the derivative of {function.name}: pass "
            "fastgrad.Function(f, df) with df an @njit function computing f'(x), or use estimator='score'"
        )
    return {
        "distribution": distribution,
        "function": function,
        "n": n,
        "seed": seed,
        "threads": threads,
        "nan_policy": nan_policy,
        "layout": layout(distribution.parameters, estimators, wrt),
    }


def _check_run(n, seed, wrt, threads, nan_policy, parameters):
    """Check what every run takes; return (n, seed, wrt, threads), normalised."""
    n = _check_n(n)
    seed = _check_seed(seed)
    wrt = _check_wrt(wrt, parameters)
    threads = _check_threads(threads)
    if not isinstance(nan_policy, str) or nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {list(NAN_POLICIES)}; got {nan_policy!r}")
    return n, seed, wrt, threads


def _check_n(n):
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        hint = " (write 10**8, not 1e8)" if isinstance(n, float) and float(n).is_integer() else ""
        raise TypeError(f"n must be an integer number of draws, 2 <= n <= 2**53; got {n!r}{hint}")
    n = int(n)
    if not 2 <= n <= MAX_DRAWS:
        why = " (a variance needs at least two draws)" if n == 1 else ""
        raise ValueError(f"n must be an integer number of draws, 2 <= n <= 2**53 = {MAX_DRAWS:,}; got {n}{why}")
    return n


def _check_sample_sizes(sample_sizes):
    accepted = "a non-empty sequence of different integers >= 1, e.g. [10, 100, 1000]"
    if isinstance(sample_sizes, (str, bytes)) or not hasattr(sample_sizes, "__iter__"):
        raise TypeError(f"sample_sizes must be {accepted}; got {sample_sizes!r}")
    sizes = list(sample_sizes)
    if not sizes:
        raise ValueError(f"sample_sizes must be {accepted}; got an empty sequence")
    for size in sizes:
        if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, np.integer)):
            raise TypeError(f"sample_sizes must be {accepted}; got {size!r} in it")
        if not 1 <= size <= MAX_DRAWS:
            raise ValueError(f"sample_sizes must be {accepted} (and <= 2**53); got {size!r} in it")
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"sample_sizes must be {accepted}; {sorted(sizes)} repeats a size")
    return tuple(sorted(int(size) for size in sizes))


def _check_repeats(repeats, sizes):
    if isinstance(repeats, (bool, np.bool_)) or not isinstance(repeats, (int, np.integer)):
        raise TypeError(f"repeats must be an integer >= 2 (estimates per sample size); got {repeats!r}")
    if repeats < 2:
        raise ValueError(f"repeats must be an integer >= 2 (a variance needs two estimates); got {repeats}")
    if int(repeats) * sum(sizes) > MAX_DRAWS:
        raise ValueError(
            f"repeats * sum(sample_sizes) must be at most 2**53 draws; got {int(repeats):,} * {sum(sizes):,}"
        )
    return int(repeats)


def _check_seed(seed):
    if seed is None:
        return secrets.randbits(64)
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be None or an integer in [0, 2**64); got {seed!r}")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must be None or an integer in [0, 2**64); got {seed!r}")
    return int(seed)


def _check_wrt(wrt, parameters):
    if wrt is None:
        return tuple(parameters)
    names = (wrt,) if isinstance(wrt, str) else wrt
    try:
        names = tuple(names)
    except TypeError:
        raise TypeError(
            f"wrt must be a parameter name or a sequence of them, from {list(parameters)}; got {wrt!r}"
        ) from None
    if not names:
        raise ValueError(f"wrt must name at least one parameter from {list(parameters)}")
    for name in names:
        if not isinstance(name, str) or name not in parameters:
            raise ValueError(f"wrt must contain parameter names from {list(parameters)}; got {name!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"wrt must not repeat a parameter; got {names!r}")
    return names


def _check_threads(threads):
    available = numba.config.NUMBA_NUM_THREADS
    if threads is None:
        return None
    if isinstance(threads, (bool, np.bool_)) or not isinstance(threads, (int, np.integer)):
        raise TypeError(f"threads must be an integer from 1 to {available}; got {threads!r}")
    if not 1 <= threads <= available:
        raise ValueError(f"threads must be an integer from 1 to {available} (NUMBA_NUM_THREADS); got {threads!r}")
    return int(threads)


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


# --- running ---------------------------------------------------------------------


def _execute(run, kind, options):
    """Run a classic (score/pathwise) job; return (record, context, analytic), a shard's Partial, or None."""
    lay = run["layout"]
    n = run["n"]
    fingerprint = _jobs_fingerprint(kind, run["distribution"], run["function"], n, run["seed"], lay.wrt, lay.estimators)
    job = _make_job(fingerprint, math.ceil(n / _kernels.CHUNK_SIZE), _draws_in(n, _kernels.CHUNK_SIZE), options, lay)
    with _numba_threads(run["threads"]) as threads:
        tree, seconds, _ = _kernels.run(run["distribution"], run["function"], lay, n, run["seed"], job=job)
    done = _finish_job(job, tree, seconds, threads, run, lay)
    if not isinstance(done, tuple):
        return done
    record, context, _ = done
    if int(record[1]) and run["nan_policy"] == "raise":
        raise NonFiniteValuesError(int(record[1]), n)
    return record, context, estimator_moments(run["distribution"], run["function"], lay.estimators, lay.wrt)


def _finish_job(job, tree, seconds, threads, run, lay, draws_per_unit=1):
    """Turn a finished (or stopped) job's tree into (record, context, extra values), a shard's Partial, or None."""
    from fastgrad import _jobs

    if job.shard is not None:
        return job.partial(tree, seconds, threads)
    if job.comm is not None:
        part = _jobs.Part.of(tree, job.first, job.stop, seconds, threads, job.extra_values())
        parts = job.comm.gather(part, root=0)
        if job.rank != 0:
            return None
        record = _jobs.merge_parts(parts, lay, job.n_chunks, allow_gaps=True)
        extra = _jobs.merge_extra(parts)
        done_all = all(part.done for part in parts)
        seconds = max(part.seconds for part in parts)
        threads = sum(part.threads for part in parts)
    else:
        record = tree.fold()
        extra = job.extra_values()
        done_all = tree.next_chunk == job.stop
    n = run["n"]
    draws = (int(record[0]) + int(record[1])) * draws_per_unit
    context = {
        "distribution": run["distribution"],
        "function": run["function"],
        "seed": run["seed"],
        "threads": threads,
        "seconds": seconds,
        "draws_per_second": draws / seconds if seconds > 0 else math.inf,
    }
    if not done_all:
        context["interrupted"] = job.stop_reason or "stopped"
        context["n_requested"] = n
    return record, context, extra


def _draws_in(n, per_chunk):
    """``draws_between(a, b)``: draws in chunks ``[a, b)`` of a run of ``n`` draws, ``per_chunk`` a chunk."""
    return lambda a, b: max(0, min(n, b * per_chunk) - a * per_chunk)


def _jobs_fingerprint(kind, distribution, function, n, seed, wrt, estimators, **extra):
    """Everything that determines a run's numbers: a checkpoint or partial from another run is refused."""
    from fastgrad import __version__
    from fastgrad._jobs import RECORD_LAYOUT_VERSION
    from fastgrad.rng import CHUNK_SIZE, STREAM_LAYOUT_VERSION

    return {
        "kind": kind,
        "distribution": distribution.to_dict(),
        "function": function.to_dict(),
        "n": n,
        "seed": seed,
        "wrt": list(wrt),
        "estimators": list(estimators),
        **extra,
        "fastgrad": __version__,
        "stream_layout": STREAM_LAYOUT_VERSION,
        "record_layout": RECORD_LAYOUT_VERSION,
        "chunk_size": CHUNK_SIZE,
    }


def _make_job(fingerprint, n_chunks, draws_between, options, layout):
    """Build a Job; any checkpoint is loaded and checked now, before the kernels compile."""
    from fastgrad._jobs import Job

    job = Job(fingerprint, n_chunks, draws_between, **options)
    job.prepare(layout)
    return job


def _check_job_options(progress, checkpoint, checkpoint_every, shard, comm):
    """Validate the long-run options; return them as Job keyword arguments."""
    import os
    from pathlib import Path

    if progress is not None and not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"progress must be None (on when stderr is a terminal), True or False; got {progress!r}")
    if checkpoint is not None:
        if not isinstance(checkpoint, (str, os.PathLike)):
            raise TypeError(f"checkpoint must be a file path; got {checkpoint!r}")
        path = Path(checkpoint)
        if path.is_dir():
            raise ValueError(f"checkpoint must be a file path; {str(path)!r} is a directory")
        if not path.parent.is_dir():
            raise ValueError(f"checkpoint: directory {str(path.parent)!r} does not exist")
        if not os.access(path.parent, os.W_OK):
            raise ValueError(f"checkpoint: cannot write in directory {str(path.parent)!r}")
    if (
        isinstance(checkpoint_every, (bool, np.bool_))
        or not isinstance(checkpoint_every, (int, float, np.integer, np.floating))
        or not (math.isfinite(checkpoint_every) and checkpoint_every >= 0)
    ):
        raise ValueError(f"checkpoint_every must be a number of seconds >= 0; got {checkpoint_every!r}")
    if shard is not None:
        accepted = "a pair (i, K) of integers with 0 <= i < K, e.g. (0, 4)"
        try:
            index, count = shard
        except (TypeError, ValueError):
            raise TypeError(f"shard must be {accepted}; got {shard!r}") from None
        for value in (index, count):
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"shard must be {accepted}; got {shard!r}")
        if not 0 <= index < count:
            raise ValueError(f"shard must be {accepted}; got {shard!r}")
        shard = (int(index), int(count))
    if comm is not None:
        if not (hasattr(comm, "Get_rank") and hasattr(comm, "Get_size") and hasattr(comm, "gather")):
            raise TypeError(f"comm must be an mpi4py communicator (e.g. mpi4py.MPI.COMM_WORLD); got {comm!r}")
        if shard is not None:
            raise ValueError("give shard or comm, not both: under MPI every rank is a shard already")
    return {
        "progress": None if progress is None else bool(progress),
        "checkpoint": checkpoint,
        "checkpoint_every": float(checkpoint_every),
        "shard": shard,
        "comm": comm,
    }


def _no_job_options(options, what):
    for name in ("checkpoint", "shard", "comm"):
        if options[name] is not None:
            raise ValueError(f"{name} is not yet supported for {what}; run it in one process")


def _safe_ratio(a, b):
    if b == 0:
        return math.inf if a > 0 else math.nan
    return a / b


# --- estimator variants ------------------------------------------------------------------


def _prepare_variants(distribution, function, estimators, wrt, threads, pilot, seed):
    """Validate a variant run; return (distribution, function, specs, reference, pilot, seed, wrt, threads)."""
    if isinstance(distribution, DiagNormal):
        raise TypeError(
            "estimators=[...] (variance reduction, measure-valued) works with the scalar families "
            "fastgrad.Normal, fastgrad.Exponential and fastgrad.Bernoulli, not yet with a DiagNormal"
        )
    if not isinstance(distribution, DISTRIBUTIONS):
        accepted = ", ".join(f"fastgrad.{cls.__name__}" for cls in DISTRIBUTIONS)
        raise TypeError(f"distribution must be one of {accepted}; got {distribution!r}")
    function = resolve(function)
    specs = list(parse_estimators(estimators))
    family = distribution.family
    name = type(distribution).__name__
    for spec in specs:
        if spec.base == "pathwise" and not family.pathwise:
            raise ValueError(
                f"estimators: {spec.name!r} needs a pathwise estimator, and {name} has none (its draws are "
                f"discrete, so they do not move smoothly with {', '.join(family.parameters)}); use score variants"
            )
        if spec.base == "pathwise" and not function.has_derivative:
            raise ValueError(
                f"estimators: {spec.name!r} needs the derivative of {function.name}: pass fastgrad.Function(f, df)"
            )
        if spec.antithetic and not family.symmetric:
            raise ValueError(
                f"estimators: {spec.name!r} pairs each draw's noise eps with -eps, which needs noise "
                f"symmetric about 0; {name}'s is not (antithetic pairs are implemented for fastgrad.Normal)"
            )
        if spec.base == "measure-valued" and family.weak_derivative is None:
            raise ValueError(
                f"estimators: {spec.name!r}: measure-valued gradients are implemented for fastgrad.Normal "
                f"(loc and scale), not for {name}"
            )
    reference = parse_estimator("pathwise" if family.pathwise and function.has_derivative else "score")
    if reference.name not in [spec.name for spec in specs]:
        specs.append(reference)
    reference_index = [spec.name for spec in specs].index(reference.name)
    needs_pilot = any(spec.needs_pilot for spec in specs)
    pilot = _check_pilot(pilot) if needs_pilot else 0
    _, seed, wrt, threads = _check_run(2, seed, wrt, threads, "raise", distribution.parameters)
    return distribution, function, tuple(specs), reference_index, pilot, seed, wrt, threads


def _check_pilot(pilot):
    accepted = "an integer number of pilot draws, 2 <= pilot <= 2**53"
    if pilot is None:
        return DEFAULT_PILOT
    if isinstance(pilot, (bool, np.bool_)) or not isinstance(pilot, (int, np.integer)):
        raise TypeError(f"pilot must be {accepted}; got {pilot!r}")
    if not 2 <= pilot <= MAX_DRAWS:
        raise ValueError(f"pilot must be {accepted}; got {pilot!r}")
    return int(pilot)


def _pilot_coefficients(distribution, function, specs, pilot, seed):
    """Per specification, its coefficient matrix ``B`` (or None); optimal ones estimated on the pilot streams.

    The pilot reads streams ``(seed, PILOT_STREAMS + c)``, independent of the
    run's, so the baseline is independent of the draws it is used on and the
    estimator stays unbiased. From the pilot's per-draw ``g_j = f s_j`` and
    ``s_k``::

        optimal baseline   b_j = E[f s_j**2] / E[s_j**2] = E[g_j s_j] / E[s_j**2]
        control variate    C_j = Cov(s)^-1 Cov(s, g_j)
    """
    from fastgrad import _variants

    n_params = len(distribution.parameters)
    out = []
    estimated = None
    if pilot:
        pilot_specs = (parse_estimator("score"), "control")
        pair_x = [j for j in range(n_params) for _ in range(n_params)]
        pair_y = [n_params + k for _ in range(n_params) for k in range(n_params)]
        for j in range(n_params):
            for k in range(j + 1, n_params):
                pair_x.append(n_params + j)
                pair_y.append(n_params + k)
        lay = _variants.VariantLayout(
            specs=pilot_specs,
            parameters=distribution.parameters,
            wrt=distribution.parameters,
            reference=0,
            rows=np.arange(2 * n_params, dtype=np.int64),
            pair_x=np.array(pair_x, np.int64),
            pair_y=np.array(pair_y, np.int64),
            group=1,
        )
        record, _ = _variants.variant_run(
            distribution, function, lay, pilot_specs, [None, None], pilot, seed, _variants.PILOT_STREAMS
        )
        if int(record[1]):
            raise NonFiniteValuesError(
                int(record[1]), pilot, f"{int(record[1]):,} of {pilot:,} pilot draws gave a non-finite f(x) * score: "
                "the optimal baseline and control variate cannot be estimated; check the function"
            )  # fmt: skip
        estimated = _pilot_solve(record, n_params)
    for spec in specs:
        if spec.baseline is None or spec.baseline == "loo":
            out.append(None)
        elif spec.baseline == "optimal":
            out.append(np.diag(estimated[0]))
        elif spec.baseline == "cv":
            out.append(estimated[1])
        else:
            out.append(np.eye(n_params) * spec.baseline)
    return out


def _pilot_solve(record, n_params):
    """(optimal baselines, control-variate matrix) from a pilot record of rows g_j, s_k and their pairs."""
    n = record[0]
    rows = 2 * n_params

    def mean(r):
        return record[2 + 4 * r]

    def m2(r):
        return record[3 + 4 * r]

    def c11(p):
        return record[2 + 4 * rows + 4 * p]

    baselines = np.empty(n_params)
    for j in range(n_params):
        gs = c11(j * n_params + j) / n + mean(j) * mean(n_params + j)
        ss = m2(n_params + j) / n + mean(n_params + j) ** 2
        baselines[j] = gs / ss
    cov_s = np.empty((n_params, n_params))
    p = n_params * n_params
    for j in range(n_params):
        cov_s[j, j] = m2(n_params + j) / (n - 1)
        for k in range(j + 1, n_params):
            cov_s[j, k] = cov_s[k, j] = c11(p) / (n - 1)
            p += 1
    cov_gs = np.array([[c11(j * n_params + k) / (n - 1) for k in range(n_params)] for j in range(n_params)])
    try:
        matrix = np.linalg.solve(cov_s, cov_gs.T).T
    except np.linalg.LinAlgError:
        raise ValueError("the pilot's score covariance is singular: the control variate is not defined") from None
    return baselines, matrix


def _compare_variants(distribution, function, n, estimators, seed, wrt, threads, nan_policy, pilot, options):
    from fastgrad import _variants

    distribution, function, specs, reference, pilot, seed, wrt, threads = _prepare_variants(
        distribution, function, estimators, wrt, threads, pilot, seed
    )
    n = _check_n(n)
    if not isinstance(nan_policy, str) or nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {list(NAN_POLICIES)}; got {nan_policy!r}")
    lay = _variants.VariantLayout.build(specs, distribution.parameters, wrt, reference)
    if n % lay.group or n // lay.group < 2:
        raise ValueError(
            f"n must be a multiple of the leave-one-out group size {lay.group}, at least {2 * lay.group}; got {n:,}"
        )
    names = [spec.name for spec in specs]
    fingerprint = _jobs_fingerprint("compare", distribution, function, n, seed, wrt, names, pilot=pilot)
    units = n // lay.group
    per_chunk = _kernels.CHUNK_SIZE // lay.group
    draws_in = _draws_in(units, per_chunk)
    job = _make_job(fingerprint, math.ceil(units / per_chunk), lambda a, b: draws_in(a, b) * lay.group, options, lay)
    with _numba_threads(threads) as used:
        coefficients = _pilot_coefficients(distribution, function, specs, pilot, seed)
        tree, seconds = _variants.variant_run(distribution, function, lay, specs, coefficients, units, seed, job=job)
    run = {"distribution": distribution, "function": function, "seed": seed, "n": n}
    done = _finish_job(job, tree, seconds, used, run, lay, draws_per_unit=lay.group)
    if not isinstance(done, tuple):
        return done
    record, context, _ = done
    if int(record[1]) and nan_policy == "raise":
        raise NonFiniteValuesError(int(record[1]) * lay.group, n)
    return _variant_result(record, lay, specs, coefficients, wrt, pilot, context)


def _variant_result(record, lay, specs, coefficients, wrt, pilot, context):
    from fastgrad._analytic import variant_moments

    analytic = variant_moments(context["distribution"], context["function"], specs, coefficients, wrt)
    return results.variant_comparison(record, lay, analytic, coefficients, pilot=pilot, **context)


def _check_curve_totals(totals):
    bad = int(np.count_nonzero(~np.isfinite(totals).all(axis=0)))
    if bad:
        raise NonFiniteValuesError(
            bad,
            totals.shape[1],
            f"{bad:,} of {totals.shape[1]:,} estimates were not finite (f or df returned nan/inf, or an overflow); "
            "a variance curve has no nan_policy='omit': check the function",
        )


def _variant_curve(distribution, function, sample_sizes, repeats, seed, wrt, threads, estimators, pilot, options):
    from fastgrad import _variants
    from fastgrad._analytic import variant_moments

    distribution, function, specs, reference, pilot, seed, wrt, threads = _prepare_variants(
        distribution, function, estimators, wrt, threads, pilot, seed
    )
    sizes = _check_sample_sizes(sample_sizes)
    repeats = _check_repeats(repeats, sizes)
    lay = _variants.VariantLayout.build(specs, distribution.parameters, wrt, reference)
    if any(size % lay.group for size in sizes):
        raise ValueError(
            f"sample_sizes must be multiples of the leave-one-out group size {lay.group}; got {list(sizes)}"
        )
    unit_sizes = [size // lay.group for size in sizes]
    run = {"distribution": distribution, "function": function, "seed": seed}
    names = [spec.name for spec in specs]
    per_chunk = _kernels.CHUNK_SIZE // lay.group
    job = _curve_job(run, names, sizes, repeats, per_chunk, lay.group, options, lay, pilot=pilot)
    with _numba_threads(threads) as used:
        coefficients = _pilot_coefficients(distribution, function, specs, pilot, seed)
        part = _variants.variant_curve_run(
            distribution, function, lay, specs, coefficients, unit_sizes, repeats, seed, job=job
        )
    done = _curve_parts_done(job, part, unit_sizes, repeats, lay.group, used)
    if not isinstance(done, tuple):
        return done
    totals, seconds, done, used = done
    finished, context = _curve_finished(job, done, sizes, repeats, per_chunk, lay.group)
    totals = totals[:, : len(finished) * repeats]
    _check_curve_totals(totals)
    draws = repeats * sum(finished)
    return results.variant_curve_result(
        totals,
        lay,
        [size // lay.group for size in finished],
        repeats,
        variant_moments(distribution, function, specs, coefficients, wrt),
        distribution=distribution,
        function=function,
        seed=seed,
        threads=used,
        seconds=seconds,
        draws=draws,
        draws_per_second=draws / seconds if seconds > 0 else math.inf,
        pilot=pilot,
        **context,
    )


# --- merging shards ------------------------------------------------------------------------


def merge(partials):
    """Combine the partial results of shards into the full result, bit-identical to a single run.

    Parameters
    ----------
    partials : sequence of paths or Partial
        The partial results of ``compare(..., shard=(i, K))`` (or ``fastgrad
        compare --shard i/K --json part_i.json``) for every ``i`` of one run.

    Returns
    -------
    Comparison, EstimatorResult or VariantComparison
        What the run would have returned in one process. Its ``seconds`` is
        the sum over the shards, ``threads`` the most any shard used.

    Raises
    ------
    fastgrad.PartialError
        A file is corrupted, from another run (parameters, seed or fastgrad
        version), or the shards overlap, leave chunks out, or are unfinished.
    """
    from fastgrad import _jobs

    if isinstance(partials, (str, bytes)) or not hasattr(partials, "__iter__"):
        raise TypeError(f"partials must be a sequence of paths or fastgrad.Partial objects; got {partials!r}")
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
    reference, _ = loaded[0]
    for partial, source in loaded[1:]:
        partial.check_fingerprint(reference.fingerprint, source)
    fingerprint = reference.fingerprint
    parts = [part for partial, _ in loaded for part in partial.parts]
    distribution = _distribution_from(fingerprint["distribution"])
    function = _function_from(fingerprint["function"])
    seconds = sum(part.seconds for part in parts)
    draws = fingerprint["n"]
    context = {
        "distribution": distribution,
        "function": function,
        "seed": fingerprint["seed"],
        "threads": max(part.threads for part in parts),
        "seconds": seconds,
        "draws_per_second": draws / seconds if seconds > 0 else math.inf,
    }
    wrt = tuple(fingerprint["wrt"])
    if fingerprint["kind"] == "curve":
        return _merge_curve(fingerprint, reference.n_chunks, parts, distribution, function, wrt, context)
    if isinstance(distribution, DiagNormal):
        from fastgrad import _vector

        estimators = tuple(fingerprint["estimators"])
        lay = _vector.VectorLayout.build(distribution.dim, estimators, wrt)
        record = _jobs.merge_parts(parts, lay, reference.n_chunks)
        record, lay, analytic, context = _vector_parts(record, lay, _jobs.merge_extra(parts), context)
        if fingerprint["kind"] == "estimate":
            return results.vector_estimator_result(estimators[0], record, lay, analytic, context)
        return results.vector_comparison(record, lay, analytic, **context)
    if "pilot" in fingerprint:  # estimator variants
        from fastgrad import _variants

        if function.builtin is None:
            raise _jobs.PartialError(
                "merging estimator variants of a user function needs the function to recompute the pilot's "
                "coefficients; run it in one process or under MPI instead"
            )
        specs = parse_estimators(fingerprint["estimators"])
        names = [spec.name for spec in specs]
        family = distribution.family
        reference_name = "pathwise" if family.pathwise and function.has_derivative else "score"
        lay = _variants.VariantLayout.build(specs, distribution.parameters, wrt, names.index(reference_name))
        record = _jobs.merge_parts(parts, lay, reference.n_chunks)
        coefficients = _pilot_coefficients(distribution, function, specs, fingerprint["pilot"], fingerprint["seed"])
        return _variant_result(record, lay, specs, coefficients, wrt, fingerprint["pilot"], context)
    estimators = tuple(fingerprint["estimators"])
    lay = layout(distribution.parameters, estimators, wrt)
    record = _jobs.merge_parts(parts, lay, reference.n_chunks)
    analytic = estimator_moments(distribution, function, estimators, wrt)
    if fingerprint["kind"] == "estimate":
        return results.estimator_result(estimators[0], record, lay, context, analytic)
    return _comparison(lay, record, context, analytic)


def _merge_curve(fingerprint, n_chunks, parts, distribution, function, wrt, context):
    """Return the VarianceCurve of merged curve shards (classic or estimator variants)."""
    from fastgrad import _jobs

    sizes = tuple(fingerprint["sample_sizes"])
    repeats = fingerprint["repeats"]
    context = dict(context, draws=repeats * sum(sizes))
    context["draws_per_second"] = context["draws"] / context["seconds"] if context["seconds"] > 0 else math.inf
    if "pilot" in fingerprint:
        from fastgrad import _variants
        from fastgrad._analytic import variant_moments

        specs = parse_estimators(fingerprint["estimators"])
        names = [spec.name for spec in specs]
        reference_name = "pathwise" if distribution.family.pathwise and function.has_derivative else "score"
        lay = _variants.VariantLayout.build(specs, distribution.parameters, wrt, names.index(reference_name))
    else:
        lay = layout(distribution.parameters, tuple(fingerprint["estimators"]), wrt)
    group = getattr(lay, "group", 1)
    unit_sizes = np.array([size // group for size in sizes], dtype=np.int64)
    offsets = np.zeros(unit_sizes.size + 1, np.int64)
    offsets[1:] = np.cumsum(unit_sizes * repeats)
    starts = _jobs.repeat_starts(offsets, unit_sizes, repeats)
    shape = (lay.n_rows, len(sizes) * repeats)
    totals = _jobs.merge_curve_parts(parts, n_chunks, starts, _kernels.CHUNK_SIZE // group, shape)
    _check_curve_totals(totals)
    if "pilot" in fingerprint:
        if function.builtin is None:
            raise _jobs.PartialError("merging estimator variants of a user function needs the function itself")
        coefficients = _pilot_coefficients(distribution, function, specs, fingerprint["pilot"], fingerprint["seed"])
        analytic = variant_moments(distribution, function, specs, coefficients, wrt)
        return results.variant_curve_result(
            totals, lay, list(unit_sizes), repeats, analytic, pilot=fingerprint["pilot"], **context
        )
    analytic = estimator_moments(distribution, function, lay.estimators, wrt)
    return results.variance_curve_result(totals, lay, sizes, repeats, analytic, **context)


def _distribution_from(data):
    classes = {cls.__name__: cls for cls in (*DISTRIBUTIONS, DiagNormal)}
    data = dict(data)
    name = data.pop("family", None)
    if name not in classes:
        from fastgrad._jobs import PartialError

        raise PartialError(f"partial result for an unknown distribution family {name!r}")
    return classes[name](**data)


class _RecordedFunction:
    """A user's function as a partial result records it: its name, not its code (no exact values)."""

    builtin = None

    def __init__(self, data):
        self.name = data["name"]
        self.has_derivative = bool(data.get("has_derivative"))
        self._data = dict(data)

    @property
    def formula(self):
        return f"user function {self.name}"

    def exact(self):
        return None

    def to_dict(self):
        return dict(self._data)

    def __repr__(self):
        return f"<user function {self.name} (from a partial result)>"


def _function_from(data):
    from fastgrad import functions

    if not data.get("builtin"):
        return _RecordedFunction(data)
    if "component" in data:  # a separable function of a vector
        name, weights = data["name"], data.get("weights")
        if name == "sum_cos":
            return functions.sum_cos(**data["component"].get("parameters", {}))
        return getattr(functions, name)(weights) if weights is not None else getattr(functions, name)()
    return resolve(getattr(functions, data["name"])(**data.get("parameters", {})))
