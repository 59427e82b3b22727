"""Result objects: estimates with their uncertainty, beside the analytic truth.

One :class:`EstimatorResult` per estimator (floats per parameter for a scalar
family, arrays over components for a multivariate one), one
:class:`Comparison` of any number of them on the same draws, and one
:class:`VarianceCurve`. Every figure comes with an uncertainty computed from
the same draws:

* ``stderr`` of a mean: ``sqrt(variance / n)``;
* ``variance_stderr`` of a per-draw variance: ``sqrt((m4 - m2**2) / n)``
  (``m2``, ``m4``: central moments), the large-``n`` standard error;
* the variance ratio of two estimators, with a 95 % confidence interval from
  the delta method on ``log(ratio)``. The two variances are estimated on the
  *same* draws, so they are correlated; the interval accounts for it::

      n Var[log ratio] ~ m4_s / m2_s**2 + m4_p / m2_p**2 - 2 m22 / (m2_s m2_p)

  with ``m22 = mean(d_s**2 d_p**2)`` the mixed fourth moment of the two
  estimators' deviations (see ``docs/reading-results.md``).

Every ``to_dict()`` is strict JSON (inf and nan become null) in one schema,
version :data:`SCHEMA`.
"""

import math
from dataclasses import dataclass

import numpy as np

from fastgrad import _format

#: Normal quantile for the 95 % intervals.
Z95 = 1.959963984540054

#: Fewest samples (draws, or a curve's repeats) for an interval on a variance or a ratio of variances: they rest
#: on fourth-moment estimates, which from fewer samples are meaningless (at n = 2 the interval had zero width).
#: Below it those intervals are NaN (null in JSON), and the tables say so.
MIN_INTERVAL_SAMPLES = 10

#: Per-draw variances below the smallest normal float64 (2**-1022) are sums of squared deviations that underflowed
#: (subnormal or zero): they lose more than rounding, and are reported as NaN with a :class:`PrecisionWarning`.
SQUARES_FLOOR = 2.0**-1022

#: Below this variance (2**-511) the fourth powers behind a variance's interval underflow the same way.
FOURTH_POWERS_FLOOR = 2.0**-511

#: An exactly zero variance is real (every value equal) when the mean is 0 (every value 0: a gradient component f
#: does not depend on) or at least this: distinct values near such a mean differ by at least ulp(mean) >= 2**-532,
#: whose square, 2**-1064 or more, does not round to zero.
EXACT_ZERO_MEAN = 2.0**-480

#: Version of the ``to_dict()`` schema, written as its ``"schema"`` field
#: (3: ``"analytic_note"``, why exact values are missing, in every document).
SCHEMA = 3

__all__ = ["SCHEMA", "Comparison", "EstimatorResult", "VarianceCurve"]


def _json_float(value):
    """JSON has no inf/nan: map them to None."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _json(value):
    """Strict-JSON form of a figure: floats, lists of floats, nested dicts and tuples."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        return {key: _json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    return _json_float(value)


def _run_dict(result):
    """Describe a result's run (every result's ``to_dict`` starts with this)."""
    return {
        "schema": SCHEMA,
        "distribution": result.distribution.to_dict(),
        "function": result.function.to_dict(),
        "wrt": list(result.wrt),
        "dim": result.dim,
        "n": result.n,
        "n_omitted": result.n_omitted,
        "group": result.group,
        "pilot": result.pilot,
        "seed": result.seed,
        "threads": result.threads,
        "seconds": result.seconds,
        "draws_per_second": result.draws_per_second,
        "interrupted": result.interrupted,
        "n_requested": result.n_requested,
        "analytic_note": result.analytic_note,
    }


@dataclass(frozen=True)
class EstimatorResult:
    """One estimator's gradient estimate, per parameter.

    Per-parameter figures are dicts keyed by parameter name: floats for a
    scalar family, float64 arrays of length ``dim`` (one value per
    component) for :class:`~fastgrad.DiagNormal`.

    Attributes
    ----------
    estimator : str
        Canonical specification: ``"score"``, ``"pathwise"``, ``"score+cv"``, ...
    distribution, function
        What was differentiated: ``d/d theta E_{x ~ distribution}[function(x)]``.
    wrt : tuple of str
        Parameters, in the order of the dicts below.
    n : int
        Draws used (for ``loo(K)``: a multiple of ``K``).
    n_omitted : int
        Draws left out because a value was not finite (``nan_policy="omit"``).
    mean, variance, stderr, variance_stderr : dict
        Per parameter: the gradient estimate, the variance per draw of the
        noise (``n`` times the variance of the ``n``-draw estimate: for an
        antithetic pair, of the pair's average; for ``loo(K)``, K times the
        variance of a group's estimate), the standard error of the mean and
        that of the variance.
    third_moment, fourth_moment : dict
        Per parameter: central moments of the per-draw values (of the
        per-group values for ``loo(K)``).
    analytic_mean, analytic_variance : dict or None
        The true gradient and per-draw variance, where the function is a
        built-in with an exact form; ``None`` otherwise.
    evaluations_per_draw : int
        Evaluations of ``f`` (or ``f'``) per draw, for one parameter: 2 for
        antithetic pairs and measure-valued estimators, else 1.
    variance_per_evaluation : dict
        ``variance * evaluations_per_draw``: what an equal budget of function
        evaluations buys. Ratios compare this.
    ratio, ratio_ci, analytic_ratio : dict or None
        In a :class:`Comparison`: ``variance_per_evaluation`` over the
        reference estimator's, its 95 % interval (delta method with the
        co-moments of the two on the same draws) and the true ratio. The
        reference's own ratio is 1 with no interval; None in an estimate.
    coefficients : dict or None
        Per parameter, the baseline ``b`` (``baseline``, ``optimal-baseline``)
        or the control-variate coefficients on the score vector (``cv``, a list
        over the distribution's parameters) used.
    dim : int
        Components of one draw (1 for a scalar family).
    total_variance, analytic_total_variance : dict or None
        :class:`~fastgrad.DiagNormal` only: per parameter, the sum of the
        per-component variances (the trace of the per-draw gradient's
        covariance), measured and exact.
    total_ratio, total_ratio_ci, analytic_total_ratio : dict or None
        :class:`~fastgrad.DiagNormal` in a comparison: the ratio of the
        traces (per evaluation) to the reference's, with a 95 % interval by
        batch means over chunks (NaN with fewer than 10 chunks).
    seed : int
        Seed of the streams (give it back to reproduce the run bit for bit).
    threads : int
    seconds : float
        Wall time of the draws, excluding compilation.
    draws_per_second : float
        ``n / seconds``. In a :class:`Comparison` every estimator comes from
        one fused pass, so this is the fused rate.
    interrupted : str or None
        ``"SIGINT"`` (Ctrl-C) or ``"SIGTERM"`` when the run stopped early: the
        figures then cover the ``n`` draws finished, of ``n_requested``.
    n_requested : int or None
        The ``n`` asked for, when the run was interrupted.
    analytic_note : str or None
        Why exact values that a built-in function would have are missing
        (None when nothing is missing): e.g. they do not fit a float64.
    group, pilot : int
        Draws per leave-one-out group (1 without), and draws of the pilot
        that estimated the coefficients (0 when none was needed).
    """

    estimator: str
    distribution: object
    function: object
    wrt: tuple
    n: int
    n_omitted: int
    mean: dict
    variance: dict
    stderr: dict
    variance_stderr: dict
    third_moment: dict
    fourth_moment: dict
    analytic_mean: dict
    analytic_variance: dict
    seed: int
    threads: int
    seconds: float
    draws_per_second: float
    interrupted: str = None
    analytic_note: str = None
    n_requested: int = None
    evaluations_per_draw: int = 1
    variance_per_evaluation: dict = None
    ratio: dict = None
    ratio_ci: dict = None
    analytic_ratio: dict = None
    coefficients: dict = None
    dim: int = 1
    total_variance: dict = None
    analytic_total_variance: dict = None
    total_ratio: dict = None
    total_ratio_ci: dict = None
    analytic_total_ratio: dict = None
    group: int = 1
    pilot: int = 0

    @property
    def vector(self):
        """Whether per-parameter figures are arrays over components."""
        return self.total_variance is not None

    def z_scores(self):
        """Per parameter, ``(mean - analytic) / stderr``; None without an analytic value."""
        if self.analytic_mean is None:
            return None
        if self.vector:
            return {p: (self.mean[p] - self.analytic_mean[p]) / self.stderr[p] for p in self.wrt}
        return {p: _z(self.mean[p], self.analytic_mean[p], self.stderr[p]) for p in self.wrt}

    def row_dict(self):
        """Return this estimator's own figures as JSON (what a comparison lists under ``"estimators"``)."""
        out = {
            "evaluations_per_draw": self.evaluations_per_draw,
            "mean": self.mean,
            "stderr": self.stderr,
            "variance": self.variance,
            "variance_stderr": self.variance_stderr,
            "variance_per_evaluation": self.variance_per_evaluation,
            "third_moment": self.third_moment,
            "fourth_moment": self.fourth_moment,
            "analytic_mean": self.analytic_mean,
            "analytic_variance": self.analytic_variance,
            "ratio": self.ratio,
            "ratio_ci95": self.ratio_ci,
            "analytic_ratio": self.analytic_ratio,
            "coefficients": self.coefficients,
        }
        if self.vector:
            out |= {
                "total_variance": self.total_variance,
                "analytic_total_variance": self.analytic_total_variance,
                "total_ratio": self.total_ratio,
                "total_ratio_ci95": self.total_ratio_ci,
                "analytic_total_ratio": self.analytic_total_ratio,
            }
        return _json(out)

    def to_dict(self):
        """JSON-ready dict (inf and nan become None): the run, and this estimator under ``"estimators"``."""
        return {"kind": "estimate", **_run_dict(self), "estimators": {self.estimator: self.row_dict()}}

    def __str__(self):
        return _format.estimate_text(self)


@dataclass(frozen=True)
class Comparison:
    """Several gradient estimators on the same draws, with their variance ratios (see :func:`fastgrad.compare`).

    ``c["score+cv"]`` is one estimator's :class:`EstimatorResult`; ``c.score``
    and ``c.pathwise`` the plain ones. ``c.variance_ratio`` is the score's
    variance over the pathwise one's, per parameter.

    Attributes
    ----------
    results : tuple of EstimatorResult
        In the order asked for (the reference appended if it was not asked for).
    reference : str
        The estimator ratios are taken against: ``"pathwise"`` when the family
        and function have one, else ``"score"``.
    classic : bool
        Made by ``compare`` without ``estimators=`` (the score/pathwise table).
    distribution, function, wrt, dim, n, n_omitted, seed, threads, seconds, draws_per_second
        As in :class:`EstimatorResult`: one fused pass computed every estimator.
    group, pilot, interrupted, n_requested
        As in :class:`EstimatorResult`.
    """

    results: tuple
    reference: str
    distribution: object
    function: object
    wrt: tuple
    n: int
    n_omitted: int
    seed: int
    threads: int
    seconds: float
    draws_per_second: float
    interrupted: str = None
    analytic_note: str = None
    n_requested: int = None
    group: int = 1
    pilot: int = 0
    dim: int = 1
    classic: bool = False

    @property
    def estimators(self):
        """Canonical names of the estimators, in table order."""
        return tuple(r.estimator for r in self.results)

    @property
    def vector(self):
        """Whether per-parameter figures are arrays over components."""
        return self.results[0].vector

    @property
    def reference_index(self):
        """Position of the reference estimator in :attr:`results`."""
        return self.estimators.index(self.reference)

    def __getitem__(self, estimator):
        """Return one estimator's result, by its specification (``c["score+cv"]``)."""
        from fastgrad.estimators import parse_estimator

        name = parse_estimator(estimator).name
        for result in self.results:
            if result.estimator == name:
                return result
        raise KeyError(f"{estimator!r} is not in this comparison; it has {list(self.estimators)}")

    def _plain(self, name):
        if name not in self.estimators:
            raise AttributeError(f"this comparison has no {name!r} estimator; it has {list(self.estimators)}")
        return self[name]

    @property
    def score(self):
        """The plain score-function estimator's result."""
        return self._plain("score")

    @property
    def pathwise(self):
        """The plain pathwise estimator's result."""
        return self._plain("pathwise")

    @property
    def analytic_gradient(self):
        """The true gradient per parameter, or None for user functions."""
        return self.results[0].analytic_mean

    def _score_over_pathwise(self, field):
        if "score" not in self.estimators or self.reference != "pathwise":
            return None
        return getattr(self["score"], field)

    @property
    def variance_ratio(self):
        """Per parameter: the score's per-draw variance over the pathwise one's (None without both)."""
        return self._score_over_pathwise("ratio")

    @property
    def variance_ratio_ci(self):
        """Per parameter: the 95 % interval ``(low, high)`` of :attr:`variance_ratio`."""
        return self._score_over_pathwise("ratio_ci")

    @property
    def analytic_variance_ratio(self):
        """Per parameter: the true :attr:`variance_ratio`, for built-in functions."""
        return self._score_over_pathwise("analytic_ratio")

    @property
    def total_variance_ratio(self):
        """:class:`~fastgrad.DiagNormal`: per parameter, the ratio of the score's and the pathwise traces."""
        return self._score_over_pathwise("total_ratio")

    @property
    def total_variance_ratio_ci(self):
        """Its 95 % interval by batch means over chunks (NaN with fewer than 10 chunks)."""
        return self._score_over_pathwise("total_ratio_ci")

    @property
    def analytic_total_variance_ratio(self):
        """The true :attr:`total_variance_ratio`, for built-in functions."""
        return self._score_over_pathwise("analytic_total_ratio")

    def to_dict(self):
        """JSON-ready dict (inf and nan become None); each estimator under ``"estimators"``, by name."""
        out = {
            "kind": "comparison",
            **_run_dict(self),
            "reference": self.reference,
            "estimators": {r.estimator: r.row_dict() for r in self.results},
        }
        if self.variance_ratio is not None:  # the seed question's answer, where both estimators are here
            out |= {
                "variance_ratio": self.variance_ratio,
                "variance_ratio_ci95": self.variance_ratio_ci,
                "analytic_variance_ratio": self.analytic_variance_ratio,
            }
            if self.vector:
                out |= {
                    "total_variance_ratio": self.total_variance_ratio,
                    "total_variance_ratio_ci95": self.total_variance_ratio_ci,
                    "analytic_total_variance_ratio": self.analytic_total_variance_ratio,
                }
        return _json(out)

    def __str__(self):
        return _format.comparison_text(self)


#: Old names, from when each kind of run had its own result classes.
VariantComparison = VectorComparison = Comparison
VariantResult = VectorEstimatorResult = EstimatorResult


@dataclass(frozen=True)
class VarianceCurve:
    """Variance of ``n``-draw gradient estimates against ``n``, per estimator (see :func:`fastgrad.variance_curve`).

    Every per-size figure is a tuple in the order of :attr:`sample_sizes`,
    inside dicts keyed by estimator (``"score"``, ``"pathwise"``, ...) and then by
    parameter.

    Attributes
    ----------
    sample_sizes : tuple of int
        Draws per estimate, increasing.
    repeats : int
        Independent estimates per size.
    mean, mean_stderr : dict
        Mean of the ``repeats`` estimates, and its standard error.
    variance : dict
        Unbiased variance of the estimates across repeats.
    variance_ci : dict
        95 % confidence interval ``(low, high)`` of that variance: the delta
        method on ``log(variance)``, ``variance * exp(±1.96 sqrt((k - 1) / repeats))``
        with ``k`` the kurtosis of the estimates.
    analytic_gradient : dict or None
        The true gradient per parameter, for built-in functions.
    analytic_variance : dict or None
        Per-draw variance / ``n``: the true variance of an ``n``-draw estimate.
    variance_ratio, variance_ratio_ci : dict
        Per parameter and size: score variance over pathwise variance, both
        measured on the same repeats, with its 95 % interval (as in
        :class:`Comparison`).
    analytic_variance_ratio : dict or None
        Per parameter: the true ratio (the same at every ``n``).
    reference, ratio_to_reference, ratio_to_reference_ci, analytic_ratio_to_reference
        Curves of estimator variants (``estimators=[...]``) only, where
        ``variance_ratio`` and its siblings are None: per estimator and
        parameter, the variance per function evaluation over the reference
        estimator's, per size, with its 95 % interval, and the true ratio.
    distribution, function, wrt, seed, threads, seconds
        As in :class:`Comparison`.
    draws : int
        Draws in the whole curve: ``repeats * sum(sample_sizes)``.
    draws_per_second : float
    """

    distribution: object
    function: object
    wrt: tuple
    estimators: tuple
    sample_sizes: tuple
    repeats: int
    mean: dict
    mean_stderr: dict
    variance: dict
    variance_ci: dict
    analytic_gradient: dict
    analytic_variance: dict
    variance_ratio: dict
    variance_ratio_ci: dict
    analytic_variance_ratio: dict
    seed: int
    threads: int
    seconds: float
    draws: int
    draws_per_second: float
    reference: str = None
    ratio_to_reference: dict = None
    ratio_to_reference_ci: dict = None
    analytic_ratio_to_reference: dict = None
    pilot: int = 0
    interrupted: str = None
    analytic_note: str = None
    sample_sizes_requested: tuple = None
    n_omitted: tuple = None
    dim: int = None

    def to_dict(self):
        """JSON-ready dict (inf and nan become None): one entry per sample size under ``"points"``."""
        points = []
        for i, n in enumerate(self.sample_sizes):
            point = {"n": n}
            for e in self.estimators:
                point[e] = {
                    p: {
                        "mean": self.mean[e][p][i],
                        "mean_stderr": self.mean_stderr[e][p][i],
                        "variance": self.variance[e][p][i],
                        "variance_ci95": self.variance_ci[e][p][i],
                        "analytic_variance": self.analytic_variance[e][p][i] if self.analytic_variance else None,
                    }
                    for p in self.wrt
                }
                if self.reference is not None:
                    for p in self.wrt:
                        point[e][p]["ratio_to_reference"] = self.ratio_to_reference[e][p][i]
                        point[e][p]["ratio_to_reference_ci95"] = self.ratio_to_reference_ci[e][p][i]
            if self.reference is None:
                point["variance_ratio"] = {
                    p: {"value": self.variance_ratio[p][i], "ci95": self.variance_ratio_ci[p][i]} for p in self.wrt
                }
            points.append(point)
        return _json(
            {
                "kind": "variance_curve",
                "schema": SCHEMA,
                "distribution": self.distribution.to_dict(),
                "function": self.function.to_dict(),
                "wrt": list(self.wrt),
                "estimators": list(self.estimators),
                "sample_sizes": list(self.sample_sizes),
                "repeats": self.repeats,
                "seed": self.seed,
                "threads": self.threads,
                "seconds": self.seconds,
                "draws": self.draws,
                "draws_per_second": self.draws_per_second,
                "analytic_gradient": self.analytic_gradient,
                "analytic_variance_ratio": self.analytic_variance_ratio,
                "reference": self.reference,
                "pilot": self.pilot,
                "interrupted": self.interrupted,
                "analytic_note": self.analytic_note,
                "sample_sizes_requested": self.sample_sizes_requested,
                "analytic_ratio_to_reference": self.analytic_ratio_to_reference,
                "n_omitted": None if self.n_omitted is None else list(self.n_omitted),
                "dim": self.dim,
                "points": points,
            }
        )

    def plot(self, path, *, dpi=150):
        """Write a log-log PNG of the curve to ``path``; return the path.

        Empirical variances with their 95 % intervals as error bars, analytic
        lines (per-draw variance / n) overlaid, one panel per parameter.
        Needs matplotlib: ``pip install 'fastgrad[plot]'``.
        """
        from fastgrad.plotting import plot_curve

        return plot_curve(self, path, dpi=dpi)

    def __str__(self):
        return _format.curve_text(self)


# --- statistics of a merged record ----------------------------------------------------------


def variance_ratio(record, layout, pair, confidence_z=Z95):
    """(ratio, (low, high)) of pair ``pair`` of the layout: its x row's variance over its y row's (internal)."""
    n = record[0]
    kx = 2 + 4 * layout.pair_x[pair]
    ky = 2 + 4 * layout.pair_y[pair]
    m2s, m4s = record[kx + 1], record[kx + 3]
    m2p, m4p = record[ky + 1], record[ky + 3]
    c22 = record[2 + 4 * layout.n_rows + 4 * pair + 3]
    if m2p == 0.0:  # (0 / 0: both estimators exact, or both lost; no ratio)
        return (math.nan if m2s == 0.0 else math.inf), (math.nan, math.nan)
    ratio = float(m2s / m2p)
    if m2s == 0.0:
        return ratio, (math.nan, math.nan)
    # All central moments divided by n; n * Var[log ratio] is a sample variance, so >= 0 up to rounding.
    s2, p2 = m2s / n, m2p / n
    spread = (m4s / n) / (s2 * s2) + (m4p / n) / (p2 * p2) - 2.0 * (c22 / n) / (s2 * p2)
    half_width = confidence_z * math.sqrt(max(spread, 0.0) / n)
    return ratio, (ratio * math.exp(-half_width), ratio * math.exp(half_width))


def _log_interval(variance, central2, central4, count, confidence_z=Z95):
    """95 % interval of a variance from the delta method on its log: ``Var[log s2] ~ (k - 1) / count``."""
    if not variance > 0 or not math.isfinite(variance):
        return (math.nan, math.nan)
    kurtosis = central4 / (central2 * central2)
    half_width = confidence_z * math.sqrt(max(kurtosis - 1.0, 0.0) / count)
    return (variance * math.exp(-half_width), variance * math.exp(half_width))


#: Fewest chunks for a batch-means interval of the trace ratio.
MIN_TRACE_CHUNKS = 10


def _student_quantile(z, df):
    """Student-t quantile from the normal one (Abramowitz & Stegun 26.7.5; 1e-3 accurate for df >= 9)."""
    z3, z5 = z**3, z**5
    return z + (z3 + z) / (4 * df) + (5 * z5 + 16 * z3 + 3 * z) / (96 * df * df)


def trace_ratio_interval(ratio, score_sums, path_sums, confidence_z=Z95):
    """95 % interval of a trace ratio by batch means over chunks (internal).

    ``score_sums[c]``, ``path_sums[c]``: chunk ``c``'s sum over components of
    the two estimators' ``M2``. Chunks are independent, so the ratio of sums
    has ``Var[R] ~ C / (C - 1) * sum_c (S_c - R P_c)**2 / (sum_c P_c)**2``;
    the interval is on ``log R``, with a Student-t quantile on ``C - 1``
    degrees of freedom. NaN with fewer than :data:`MIN_TRACE_CHUNKS`
    chunks, or without a finite positive ratio.
    """
    count = len(score_sums)
    if count < MIN_TRACE_CHUNKS or not (math.isfinite(ratio) and ratio > 0):
        return (math.nan, math.nan)
    total = float(np.sum(path_sums))
    if total <= 0:
        return (math.nan, math.nan)
    residual = np.asarray(score_sums) - ratio * np.asarray(path_sums)
    variance = count / (count - 1) * float(np.sum(residual * residual)) / (total * total)
    half_width = _student_quantile(confidence_z, count - 1) * math.sqrt(variance) / ratio
    return (ratio * math.exp(-half_width), ratio * math.exp(half_width))


def chunk_trace_sums(records, plan):
    """Per chunk, specification and parameter: the sum over components of M2, ``(chunks, specs, parameters)``."""
    out = np.zeros((len(records), len(plan.specs), len(plan.wrt)))
    for a in range(len(plan.specs)):
        for b, p in enumerate(plan.wrt):
            columns = 2 + 4 * np.array([plan.row(a, p, i) for i in range(plan.size(p))]) + 1
            out[:, a, b] = records[:, columns].sum(axis=1)
    return out


def _ratio_or_inf(a, b):
    if b == 0:
        return math.inf if a > 0 else math.nan
    return a / b


def _z(value, truth, stderr):
    if stderr == 0 or not math.isfinite(stderr):
        return 0.0 if value == truth else math.inf
    return (value - truth) / stderr


# --- building results from a merged record ---------------------------------------------------


def _row_stats(plan, s, record):
    """Per parameter, arrays over components: mean, variance, stderr, variance stderr, third, fourth."""
    units = int(record[0])
    group = plan.group
    out = {key: {} for key in ("mean", "variance", "stderr", "variance_stderr", "third", "fourth")}
    lost = []  # (parameter, component, what): figures float64 cannot hold, made NaN
    for p in plan.wrt:
        base = 2 + 4 * np.array([plan.row(s, p, i) for i in range(plan.size(p))])
        mean, m2, m3, m4 = record[base], record[base + 1], record[base + 2], record[base + 3]
        out["mean"][p] = mean.copy()
        out["third"][p] = m3 / units if units else np.full(plan.size(p), math.nan)
        out["fourth"][p] = m4 / units if units else np.full(plan.size(p), math.nan)
        if units > 1:
            unit_variance = m2 / (units - 1)
            central2 = m2 / units
            out["variance"][p] = unit_variance * group
            out["stderr"][p] = np.sqrt(unit_variance / units)
            out["variance_stderr"][p] = group * np.sqrt(np.maximum(m4 / units - central2 * central2, 0.0) / units)
            if units < MIN_INTERVAL_SAMPLES:
                out["variance_stderr"][p] = np.full(plan.size(p), math.nan)
            squares, fourths = outside_float64(mean, unit_variance, m4)
            for i in np.flatnonzero(fourths):
                lost.append((p, int(i), "variance" if squares[i] else "interval"))
                out["variance_stderr"][p][i] = out["third"][p][i] = out["fourth"][p][i] = math.nan
                if squares[i]:
                    out["variance"][p][i] = out["stderr"][p][i] = math.nan
        else:
            out["variance"][p] = out["stderr"][p] = out["variance_stderr"][p] = np.full(plan.size(p), math.nan)
    out["lost"] = lost
    return out


def outside_float64(mean, variance, m4):
    """Which variances (and which of their intervals) float64 cannot hold: (squares lost, fourth powers lost).

    Arrays of booleans over components. A variance is lost when its sum of
    squared deviations overflowed or underflowed (below
    :data:`SQUARES_FLOOR`), unless it is an exact zero (every value equal,
    see :data:`EXACT_ZERO_MEAN`); its interval also when the fourth powers
    did (below :data:`FOURTH_POWERS_FLOOR`, or not finite).
    """
    mean, variance, m4 = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (mean, variance, m4))
    exact_zero = (variance == 0) & ((mean == 0) | (np.abs(mean) >= EXACT_ZERO_MEAN))
    squares = ~np.isfinite(variance) | ((variance < SQUARES_FLOOR) & ~exact_zero)
    fourths = squares | ~np.isfinite(m4) | ((variance < FOURTH_POWERS_FLOOR) & ~exact_zero)
    return squares, fourths


def warn_outside_float64(lost, dim=1):
    """One :class:`PrecisionWarning` for the figures :func:`outside_float64` found, named ``estimator wrt p[i]``."""
    if not lost:
        return
    from fastgrad._checks import PrecisionWarning, warn_from_caller

    def names(what):
        found = [f"{e} wrt {p}" + (f"[{i}]" if dim > 1 else "") for e, p, i, kind in lost if kind == what]
        return ", ".join(found[:6]) + (f" and {len(found) - 6} more" if len(found) > 6 else "")

    parts = []
    if names("variance"):
        parts.append(f"the per-draw variances of {names('variance')} (their sums of squared deviations underflow, "
                     f"below {SQUARES_FLOOR:.3g}, or overflow), with their standard errors")  # fmt: skip
    if names("interval"):
        parts.append(f"the intervals of the per-draw variances of {names('interval')} (their fourth powers underflow, "
                     f"variances below {FOURTH_POWERS_FLOOR:.3g}, or overflow)")  # fmt: skip
    warn_from_caller(
        PrecisionWarning(
            "float64 cannot hold " + "; and ".join(parts) + ": reported as nan, with the ratios they enter. The means "
            "need no squares, but values this far from 1 may also have lost precision inside f: rescale f or the "
            "distribution's parameters"
        )
    )


def _coefficient_dict(matrix, plan, full):
    """Per parameter: the baseline (a number), or with ``full`` the coefficients on every score component."""
    if matrix is None:
        return None
    out = {}
    for p in plan.wrt:
        j = plan.parameters.index(p)
        if plan.multivariate:  # per component: its baseline, or its coefficients on every score component
            out[p] = np.array(matrix[plan.offset(p) : plan.offset(p) + plan.size(p)], dtype=float)
        else:
            out[p] = [float(v) for v in matrix[j]] if full else float(matrix[j][j])
    return out


@np.errstate(over="ignore", invalid="ignore", divide="ignore")  # overflowing figures are reported as inf/nan
def comparison(plan, record, analytic, context, coefficients=None, pilot=0, trace_sums=None, kind="compare"):
    """Build the :class:`Comparison` (for ``kind="estimate"``: the :class:`EstimatorResult`) of a merged record.

    ``analytic[s]`` is ``{parameter: (mean, variance)}`` of specification
    ``s`` (arrays over components for a multivariate family), or None;
    ``trace_sums`` the chunks' trace sums (:func:`chunk_trace_sums`) of a
    multivariate run.
    """
    vector = plan.multivariate
    units = int(record[0])
    n, n_omitted = units * plan.group, int(record[1]) * plan.group
    specs = plan.specs
    ref = plan.reference
    stats = [_row_stats(plan, s, record) for s in range(len(specs))]
    warn_outside_float64([(plan.names[s], *lost) for s, st in enumerate(stats) for lost in st["lost"]], plan.dim)
    evaluations = [spec.evaluations for spec in specs]

    def per_parameter(values):
        """Arrays to the result's form: floats for a scalar family."""
        return {p: (v.copy() if vector else float(v[0])) for p, v in values.items()}

    def totals(s):
        return {p: float(np.sum(stats[s]["variance"][p])) for p in plan.wrt}

    rows = []
    for s, spec in enumerate(specs):
        st = stats[s]
        per_evaluation = {p: v * evaluations[s] for p, v in st["variance"].items()}
        ratio = ratio_ci = analytic_ratio = None
        total_ratio = total_ratio_ci = analytic_total_ratio = None
        truth = analytic[s] if analytic is not None else None
        truth_ref = analytic[ref] if analytic is not None and ref is not None else None
        if ref is not None:
            scale = evaluations[s] / evaluations[ref]
            ratio, ratio_ci = {}, {}
            for p in plan.wrt:
                if s == ref:
                    values = [(1.0, (math.nan, math.nan))] * plan.size(p)
                else:
                    values = [variance_ratio(record, plan, plan.pair(s, p, i)) for i in range(plan.size(p))]
                    values = [(v * scale, (lo * scale, hi * scale)) for v, (lo, hi) in values]
                    for i in range(plan.size(p)):  # a variance float64 cannot hold: no ratio; no fourths: no interval
                        kinds = {kind for e in (s, ref) for q, k, kind in stats[e]["lost"] if (q, k) == (p, i)}
                        if kinds:
                            values[i] = (math.nan if "variance" in kinds else values[i][0], (math.nan, math.nan))
                    if units < MIN_INTERVAL_SAMPLES:
                        values = [(v, (math.nan, math.nan)) for v, _ in values]
                ratio[p] = np.array([v for v, _ in values])
                ratio_ci[p] = (np.array([lo for _, (lo, _) in values]), np.array([hi for _, (_, hi) in values]))
            if truth is not None and truth_ref is not None:
                analytic_ratio = {
                    p: np.array([_ratio_or_inf(a * evaluations[s], b * evaluations[ref])
                                 for a, b in zip(np.atleast_1d(truth[p][1]), np.atleast_1d(truth_ref[p][1]),
                                                 strict=True)])
                    for p in plan.wrt
                }  # fmt: skip
            if vector:
                mine, theirs = totals(s), totals(ref)
                total_ratio = {p: _ratio_or_inf(mine[p] * evaluations[s], theirs[p] * evaluations[ref])
                               for p in plan.wrt}  # fmt: skip
                total_ratio_ci = {}
                for b, p in enumerate(plan.wrt):
                    if s == ref:
                        total_ratio[p], total_ratio_ci[p] = 1.0, (math.nan, math.nan)
                    elif trace_sums is None or units < MIN_INTERVAL_SAMPLES:
                        total_ratio_ci[p] = (math.nan, math.nan)
                    else:
                        raw = total_ratio[p] / scale
                        lo, hi = trace_ratio_interval(raw, trace_sums[:, s, b], trace_sums[:, ref, b])
                        total_ratio_ci[p] = (lo * scale, hi * scale)
                if truth is not None and truth_ref is not None:
                    analytic_total_ratio = {
                        p: _ratio_or_inf(float(np.sum(truth[p][1])) * evaluations[s],
                                         float(np.sum(truth_ref[p][1])) * evaluations[ref])
                        for p in plan.wrt
                    }  # fmt: skip
            if not vector:
                ratio = {p: float(v[0]) for p, v in ratio.items()}
                ratio_ci = {p: (float(lo[0]), float(hi[0])) for p, (lo, hi) in ratio_ci.items()}
                if analytic_ratio is not None:
                    analytic_ratio = {p: float(v[0]) for p, v in analytic_ratio.items()}
        rows.append(
            EstimatorResult(
                estimator=plan.names[s],
                wrt=plan.wrt,
                n=n,
                n_omitted=n_omitted,
                mean=per_parameter(st["mean"]),
                variance=per_parameter(st["variance"]),
                stderr=per_parameter(st["stderr"]),
                variance_stderr=per_parameter(st["variance_stderr"]),
                third_moment=per_parameter(st["third"]),
                fourth_moment=per_parameter(st["fourth"]),
                analytic_mean=None if truth is None else _truth(truth, 0, vector),
                analytic_variance=None if truth is None else _truth(truth, 1, vector),
                evaluations_per_draw=evaluations[s],
                variance_per_evaluation=per_parameter(per_evaluation),
                ratio=ratio,
                ratio_ci=ratio_ci,
                analytic_ratio=analytic_ratio,
                coefficients=_coefficient_dict(coefficients[s] if coefficients else None, plan, spec.baseline == "cv"),
                dim=plan.dim,
                total_variance=totals(s) if vector else None,
                analytic_total_variance=(
                    {p: float(np.sum(truth[p][1])) for p in plan.wrt} if vector and truth is not None else None
                ),
                total_ratio=total_ratio,
                total_ratio_ci=total_ratio_ci,
                analytic_total_ratio=analytic_total_ratio,
                group=plan.group,
                pilot=pilot,
                **context,
            )
        )
    if kind == "estimate":
        return rows[0]
    return Comparison(
        results=tuple(rows),
        reference=plan.names[ref],
        wrt=plan.wrt,
        n=n,
        n_omitted=n_omitted,
        group=plan.group,
        pilot=pilot,
        dim=plan.dim,
        classic=plan.classic,
        **context,
    )


def _truth(truth, k, vector):
    return {p: (np.array(values[k], dtype=float) if vector else values[k]) for p, values in truth.items()}


def _trace_point(plan, estimates, per, lost_here, confidence_z=Z95):
    """One sample size of a multivariate curve: per (estimator, parameter), the trace and its ratio.

    With ``y_r`` the squared distance of repeat ``r``'s estimate vector
    from the mean estimate, the trace is ``sum_r y_r / (R - 1)``; its
    interval and the ratios' come from the delta method on the log of the
    mean of ``y`` (and of two such means), across repeats.
    """
    count = estimates.shape[1]
    squares = {}
    for s, e in enumerate(plan.names):
        for p in plan.wrt:
            rows = [plan.row(s, p, i) for i in range(plan.size(p))]
            block = estimates[rows]
            mean = block.mean(axis=1)
            y = ((block - mean[:, None]) ** 2).sum(axis=0)
            squares[s, p] = y
            trace = float(y.sum() / (count - 1))
            half = confidence_z * float(y.std()) / (float(y.mean()) * math.sqrt(count)) if y.mean() > 0 else math.nan
            half = math.nan if count < MIN_INTERVAL_SAMPLES else half
            gone, fourths = outside_float64(np.max(np.abs(mean)), trace, np.sum(y * y))
            if fourths[0]:  # the trace and its interval, as for one variance (no ratio either: see below)
                lost_here.append((e, p, 0, "variance" if gone[0] else "interval"))
                trace, half = (math.nan if gone[0] else trace), math.nan
                squares[s, p] = np.full_like(y, math.nan) if gone[0] else y
            per["mean"][e][p].append(mean)
            spread = block.std(axis=1, ddof=1) / math.sqrt(count)
            per["se"][e][p].append(np.full_like(spread, math.nan) if gone[0] else spread)
            per["var"][e][p].append(trace)
            per["ci"][e][p].append((trace * math.exp(-half), trace * math.exp(half)) if half == half else
                                   (math.nan, math.nan))  # fmt: skip
    ref = plan.reference
    for s, e in enumerate(plan.names):
        for p in plan.wrt:
            if ref is None or s == ref:
                per["ratio"][e][p].append(1.0)
                per["rci"][e][p].append((math.nan, math.nan))
                continue
            scale = plan.specs[s].evaluations / plan.specs[ref].evaluations
            a, b = squares[s, p], squares[ref, p]
            ratio = _ratio_or_inf(float(a.sum()), float(b.sum())) * scale
            if a.mean() > 0 and b.mean() > 0 and count >= MIN_INTERVAL_SAMPLES:
                spread = np.var(a / a.mean() - b / b.mean())
                half = confidence_z * math.sqrt(float(spread) / count)
                per["ratio"][e][p].append(ratio)
                per["rci"][e][p].append((ratio * math.exp(-half), ratio * math.exp(half)))
            else:
                per["ratio"][e][p].append(ratio)
                per["rci"][e][p].append((math.nan, math.nan))


@np.errstate(over="ignore", invalid="ignore", divide="ignore")  # overflowing figures are reported as inf/nan
def variance_curve(plan, totals, sizes, repeats, analytic, kept=None, **context):
    """Build the :class:`VarianceCurve` of per-repeat sums over units (internal).

    ``analytic[s][p] = (mean, per-draw variance)``; the variance of an
    ``n``-draw estimate is per-draw variance / n. ``kept`` (a boolean per
    repeat column, optional) leaves out the repeats ``nan_policy="omit"``
    dropped. For a multivariate family each point is the trace: the sum
    over components of the estimate's variances, and the ratio of traces.
    """
    from fastgrad._reduction import columns_record, record_width

    group = plan.group
    names = plan.names
    ref = plan.reference
    specs = plan.specs
    per = {key: {e: {p: [] for p in plan.wrt} for e in names} for key in ("mean", "se", "var", "ci", "ratio", "rci")}
    record = np.empty(record_width(plan.n_rows, len(plan.pair_x)))
    omitted = []
    lost_here = []  # figures float64 cannot hold, at any size
    for k, size in enumerate(sizes):
        units = size // group
        columns = slice(k * repeats, (k + 1) * repeats)
        estimates = totals[:, columns] / units
        if kept is not None:
            estimates = estimates[:, kept[columns]]
        estimates = np.ascontiguousarray(estimates)
        count = estimates.shape[1]
        omitted.append(repeats - count)
        if plan.multivariate:
            _trace_point(plan, estimates, per, lost_here)
            continue
        columns_record(estimates, plan.pair_x, plan.pair_y, record)
        lost = {}  # (s, p): (squares lost, fourth powers lost), as in a comparison
        for s in range(len(names)):
            for p in plan.wrt:
                base = 2 + 4 * plan.row(s, p)
                squares, fourths = outside_float64(record[base], record[base + 1] / (count - 1), record[base + 3])
                lost[s, p] = (bool(squares[0]), bool(fourths[0]))
                if fourths[0]:
                    lost_here.append((names[s], p, 0, "variance" if squares[0] else "interval"))
        for s, e in enumerate(names):
            for p in plan.wrt:
                base = 2 + 4 * plan.row(s, p)
                mean, m2, _, m4 = (float(v) for v in record[base : base + 4])
                variance = m2 / (count - 1)
                squares, fourths = lost[s, p]
                per["mean"][e][p].append(mean)
                per["se"][e][p].append(math.nan if squares else math.sqrt(variance / count))
                per["var"][e][p].append(math.nan if squares else variance)
                few = count < MIN_INTERVAL_SAMPLES or fourths
                interval = _log_interval(variance, m2 / count, m4 / count, count)
                per["ci"][e][p].append((math.nan, math.nan) if few else interval)
                pair = plan.pair(s, p)
                if pair is None:
                    per["ratio"][e][p].append(1.0)
                    per["rci"][e][p].append((math.nan, math.nan))
                else:
                    scale = specs[s].evaluations / specs[ref].evaluations
                    value, (low, high) = variance_ratio(record, plan, pair)
                    if squares or lost[ref, p][0]:
                        value = math.nan
                    few = few or lost[ref, p][1]
                    per["ratio"][e][p].append(value * scale)
                    per["rci"][e][p].append((math.nan, math.nan) if few else (low * scale, high * scale))
    # (each size's figures counted once per estimator and parameter in the one warning)
    warn_outside_float64(sorted(set(lost_here), key=lost_here.index))
    context["n_omitted"] = tuple(omitted) if kept is not None else None

    def freeze(table):
        return {e: {p: tuple(v) for p, v in by_p.items()} for e, by_p in table.items()}

    analytic_variance = analytic_ratio = gradient = None
    if analytic is not None and all(a is not None for a in analytic):

        def per_draw(s, p):  # a multivariate family's trace: the sum over components
            value = analytic[s][p][1]
            return float(np.sum(value)) if plan.multivariate else value

        analytic_variance = {e: {p: tuple(per_draw(s, p) / n for n in sizes) for p in plan.wrt}
                             for s, e in enumerate(names)}  # fmt: skip
        gradient = {p: (np.array(analytic[0][p][0]) if plan.multivariate else analytic[0][p][0]) for p in plan.wrt}
        analytic_ratio = {
            e: {
                p: _ratio_or_inf(per_draw(s, p) * specs[s].evaluations, per_draw(ref, p) * specs[ref].evaluations)
                for p in plan.wrt
            }
            for s, e in enumerate(names)
        }
    classic = {}
    if plan.classic:  # the score/pathwise curve: its ratio is the score's ratio to the reference
        score = names.index("score")
        classic = {
            "variance_ratio": {p: tuple(per["ratio"]["score"][p]) for p in plan.wrt},
            "variance_ratio_ci": {p: tuple(per["rci"]["score"][p]) for p in plan.wrt},
            "analytic_variance_ratio": None if analytic_ratio is None else analytic_ratio[names[score]],
        }
    return VarianceCurve(
        wrt=plan.wrt,
        estimators=names,
        sample_sizes=tuple(sizes),
        repeats=repeats,
        mean=freeze(per["mean"]),
        mean_stderr=freeze(per["se"]),
        variance=freeze(per["var"]),
        variance_ci=freeze(per["ci"]),
        analytic_gradient=gradient,
        analytic_variance=analytic_variance,
        variance_ratio=classic.get("variance_ratio"),
        variance_ratio_ci=classic.get("variance_ratio_ci"),
        analytic_variance_ratio=classic.get("analytic_variance_ratio"),
        reference=None if plan.classic else names[ref],
        ratio_to_reference=None if plan.classic else freeze(per["ratio"]),
        ratio_to_reference_ci=None if plan.classic else freeze(per["rci"]),
        analytic_ratio_to_reference=None if plan.classic else analytic_ratio,
        dim=plan.dim if plan.multivariate else None,
        **context,
    )
