"""Result objects: estimates with their uncertainty, beside the analytic truth.

Every figure comes with an uncertainty computed from the same draws:

* ``stderr`` of a mean: ``sqrt(variance / n)``;
* ``variance_stderr`` of a per-draw variance: ``sqrt((m4 - m2**2) / n)``
  (``m2``, ``m4``: central moments), the large-``n`` standard error;
* the variance ratio score/pathwise, with a 95 % confidence interval from
  the delta method on ``log(ratio)``. The two variances are estimated on the
  *same* draws, so they are correlated; the interval accounts for it::

      n Var[log ratio] ~ m4_s / m2_s**2 + m4_p / m2_p**2 - 2 m22 / (m2_s m2_p)

  with ``m22 = mean(d_s**2 d_p**2)`` the mixed fourth moment of the score
  and pathwise deviations (see ``docs/reading-results.md``).
"""

import math
from dataclasses import dataclass

import numpy as np

#: Normal quantile for the 95 % intervals.
Z95 = 1.959963984540054

__all__ = [
    "Comparison",
    "EstimatorResult",
    "VarianceCurve",
    "VariantComparison",
    "VariantResult",
    "VectorComparison",
    "VectorEstimatorResult",
]


def _json_float(value):
    """JSON has no inf/nan: map them to None."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _json_map(mapping):
    if mapping is None:
        return None
    return {key: _json_float(value) for key, value in mapping.items()}


@dataclass(frozen=True)
class EstimatorResult:
    """One estimator's gradient estimate, per parameter.

    Attributes
    ----------
    estimator : str
        ``"score"`` or ``"pathwise"``.
    distribution, function
        What was differentiated: ``d/d theta E_{x ~ distribution}[function(x)]``.
    wrt : tuple of str
        Parameters, in the order of the dicts below.
    n : int
        Draws used.
    n_omitted : int
        Draws left out because a value was not finite (``nan_policy="omit"``).
    mean, variance, stderr, variance_stderr : dict
        Per parameter: the gradient estimate (mean of the per-draw values),
        the per-draw variance (unbiased), the standard error of the mean, and
        the standard error of the per-draw variance.
    third_moment, fourth_moment : dict
        Per parameter: central moments of the per-draw values.
    analytic_mean, analytic_variance : dict or None
        The true gradient and the true per-draw variance, when the function is
        a built-in; ``None`` otherwise.
    seed : int
        Seed of the streams (give it back to reproduce the run bit for bit).
    threads : int
    seconds : float
        Wall time of the draws, excluding compilation.
    draws_per_second : float
        ``n / seconds``. In a :class:`Comparison`, both estimators come from one
        fused pass, so this is the fused rate.
    interrupted : str or None
        ``"SIGINT"`` (Ctrl-C) or ``"SIGTERM"`` when the run stopped early: the
        figures then cover the ``n`` draws finished, of ``n_requested``.
    n_requested : int or None
        The ``n`` asked for, when the run was interrupted.
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
    n_requested: int = None

    def z_scores(self):
        """Per parameter, ``(mean - analytic) / stderr``; None without an analytic value."""
        if self.analytic_mean is None:
            return None
        return {p: _z(self.mean[p], self.analytic_mean[p], self.stderr[p]) for p in self.wrt}

    def to_dict(self):
        """JSON-ready dict (inf and nan become None)."""
        return {
            "estimator": self.estimator,
            "distribution": self.distribution.to_dict(),
            "function": self.function.to_dict(),
            "wrt": list(self.wrt),
            "n": self.n,
            "n_omitted": self.n_omitted,
            "mean": _json_map(self.mean),
            "variance": _json_map(self.variance),
            "stderr": _json_map(self.stderr),
            "variance_stderr": _json_map(self.variance_stderr),
            "third_moment": _json_map(self.third_moment),
            "fourth_moment": _json_map(self.fourth_moment),
            "analytic_mean": _json_map(self.analytic_mean),
            "analytic_variance": _json_map(self.analytic_variance),
            "seed": self.seed,
            "threads": self.threads,
            "seconds": self.seconds,
            "draws_per_second": self.draws_per_second,
            "interrupted": self.interrupted,
            "n_requested": self.n_requested,
        }

    def __str__(self):
        lines = [_header(f"fastgrad.estimate ({self.estimator})", self)]
        for p in self.wrt:
            lines.append("")
            lines.append(_gradient_line(p, self.analytic_mean))
            lines.extend(_table([self], p))
        return "\n".join(lines)


@dataclass(frozen=True)
class Comparison:
    """Score-function and pathwise estimates from the same draws, and their variance ratio.

    Attributes
    ----------
    score, pathwise : EstimatorResult
    variance_ratio : dict
        Per parameter: per-draw variance of the score estimator over that of
        the pathwise estimator (``inf`` when the pathwise variance is 0).
    variance_ratio_ci : dict
        Per parameter: ``(low, high)``, 95 % confidence interval of the ratio.
    analytic_variance_ratio : dict or None
        The true ratio, for built-in functions.
    distribution, function, wrt, n, n_omitted, seed, threads, seconds, draws_per_second
        As in :class:`EstimatorResult`; ``draws_per_second`` is the rate of
        the fused pass that computed both estimators.
    """

    score: EstimatorResult
    pathwise: EstimatorResult
    variance_ratio: dict
    variance_ratio_ci: dict
    analytic_variance_ratio: dict
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
    n_requested: int = None

    @property
    def analytic_gradient(self):
        """The true gradient per parameter, or None for user functions."""
        return self.score.analytic_mean

    def to_dict(self):
        """JSON-ready dict (inf and nan become None)."""
        ci = {p: [_json_float(lo), _json_float(hi)] for p, (lo, hi) in self.variance_ratio_ci.items()}
        return {
            "distribution": self.distribution.to_dict(),
            "function": self.function.to_dict(),
            "wrt": list(self.wrt),
            "n": self.n,
            "n_omitted": self.n_omitted,
            "seed": self.seed,
            "threads": self.threads,
            "seconds": self.seconds,
            "draws_per_second": self.draws_per_second,
            "interrupted": self.interrupted,
            "n_requested": self.n_requested,
            "score": self.score.to_dict(),
            "pathwise": self.pathwise.to_dict(),
            "variance_ratio": _json_map(self.variance_ratio),
            "variance_ratio_ci95": ci,
            "analytic_variance_ratio": _json_map(self.analytic_variance_ratio),
        }

    def __str__(self):
        lines = [_header("fastgrad.compare", self) + ", both estimators in one pass over the same draws"]
        for p in self.wrt:
            lines.append("")
            lines.append(_gradient_line(p, self.analytic_gradient))
            lines.extend(_table([self.score, self.pathwise], p))
            low, high = self.variance_ratio_ci[p]
            text = f"  variance ratio score/pathwise: {_fmt(self.variance_ratio[p], 5)}"
            if math.isfinite(low) and math.isfinite(high):
                text += f", 95% CI [{_fmt(low, 5)}, {_fmt(high, 5)}]"
            if self.analytic_variance_ratio is not None:
                text += f"  (analytic {_fmt(self.analytic_variance_ratio[p], 6)})"
            lines.append(text)
        return "\n".join(lines)


@dataclass(frozen=True)
class VarianceCurve:
    """Variance of ``n``-draw gradient estimates against ``n``, per estimator (see :func:`fastgrad.variance_curve`).

    Every per-size figure is a tuple in the order of :attr:`sample_sizes`,
    inside dicts keyed by estimator (``"score"``, ``"pathwise"``) and then by
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
    sample_sizes_requested: tuple = None

    def to_dict(self):
        """JSON-ready dict (inf and nan become None): one entry per sample size under ``"points"``."""
        points = []
        for i, n in enumerate(self.sample_sizes):
            point = {"n": n}
            for e in self.estimators:
                point[e] = {
                    p: {
                        "mean": _json_float(self.mean[e][p][i]),
                        "mean_stderr": _json_float(self.mean_stderr[e][p][i]),
                        "variance": _json_float(self.variance[e][p][i]),
                        "variance_ci95": [_json_float(v) for v in self.variance_ci[e][p][i]],
                        "analytic_variance": _json_float(self.analytic_variance[e][p][i])
                        if self.analytic_variance
                        else None,
                    }
                    for p in self.wrt
                }
                if self.reference is not None:
                    for p in self.wrt:
                        point[e][p]["ratio_to_reference"] = _json_float(self.ratio_to_reference[e][p][i])
                        point[e][p]["ratio_to_reference_ci95"] = [
                            _json_float(v) for v in self.ratio_to_reference_ci[e][p][i]
                        ]
            if self.reference is None:
                point["variance_ratio"] = {
                    p: {
                        "value": _json_float(self.variance_ratio[p][i]),
                        "ci95": [_json_float(v) for v in self.variance_ratio_ci[p][i]],
                    }
                    for p in self.wrt
                }
            points.append(point)
        return {
            "kind": "variance_curve",
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
            "analytic_gradient": _json_map(self.analytic_gradient),
            "analytic_variance_ratio": _json_map(self.analytic_variance_ratio),
            "reference": self.reference,
            "pilot": self.pilot,
            "interrupted": self.interrupted,
            "sample_sizes_requested": None
            if self.sample_sizes_requested is None
            else list(self.sample_sizes_requested),
            "analytic_ratio_to_reference": None
            if self.analytic_ratio_to_reference is None
            else {e: _json_map(by_p) for e, by_p in self.analytic_ratio_to_reference.items()},
            "points": points,
        }

    def plot(self, path, *, dpi=150):
        """Write a log-log PNG of the curve to ``path``; return the path.

        Empirical variances with their 95 % intervals as error bars, analytic
        lines (per-draw variance / n) overlaid, one panel per parameter.
        Needs matplotlib: ``pip install 'fastgrad[plot]'``.
        """
        from fastgrad.plotting import plot_curve

        return plot_curve(self, path, dpi=dpi)

    def __str__(self):
        sizes = ", ".join(f"{n:,}" for n in self.sample_sizes) or "none"
        stopped = ""
        if self.interrupted:
            stopped = (
                f"INTERRUPTED ({self.interrupted}): {len(self.sample_sizes)} of {len(self.sample_sizes_requested)} "
                "sample sizes finished; the others are left out\n"
            )
        lines = [
            stopped + f"fastgrad.variance_curve: {self.distribution!r}, {self.function.formula}\n"
            f"n = {sizes}; {self.repeats:,} estimates per n, seed {self.seed}, {self.threads} thread"
            f"{'s' if self.threads != 1 else ''}, {self.draws:,} draws in {self.seconds:.3g} s "
            f"({_rate(self.draws_per_second)})"
        ]
        for p in self.wrt:
            lines.append("")
            lines.append(_gradient_line(p, self.analytic_gradient))
            rows = [("n", "estimator", "mean ± stderr", "variance [95% CI]", "analytic", "n × variance")]
            if self.reference is not None:
                rows[0] += (f"ratio to {self.reference} per eval [95% CI]", "analytic")
            for i, n in enumerate(self.sample_sizes):
                for e in self.estimators:
                    lo, hi = self.variance_ci[e][p][i]
                    v = self.variance[e][p][i]
                    truth = _fmt(self.analytic_variance[e][p][i], 6) if self.analytic_variance else "-"
                    row = (
                        f"{n:,}" if e == self.estimators[0] else "",
                        e,
                        _fmt_pm(self.mean[e][p][i], self.mean_stderr[e][p][i]),
                        f"{_fmt(v, 4)} [{_fmt(lo, 4)}, {_fmt(hi, 4)}]",
                        truth,
                        _fmt(n * v, 4),
                    )
                    if self.reference is not None:
                        r_lo, r_hi = self.ratio_to_reference_ci[e][p][i]
                        interval = f" [{_fmt(r_lo, 4)}, {_fmt(r_hi, 4)}]" if math.isfinite(r_lo) else ""
                        analytic = self.analytic_ratio_to_reference
                        row += (
                            _fmt(self.ratio_to_reference[e][p][i], 4) + interval,
                            _fmt(analytic[e][p], 5) if analytic and analytic[e] else "-",
                        )
                    rows.append(row)
                if self.reference is not None:
                    continue
                lo, hi = self.variance_ratio_ci[p][i]
                truth = _fmt(self.analytic_variance_ratio[p], 6) if self.analytic_variance_ratio else "-"
                rows.append(("", "ratio", "", f"{_fmt(self.variance_ratio[p][i], 4)} [{_fmt(lo, 4)}, {_fmt(hi, 4)}]",
                             truth, ""))  # fmt: skip
            rows = [row + ("",) * (len(rows[0]) - len(row)) for row in rows]
            widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
            for row in rows:
                cells = [row[0].rjust(widths[0])] + [cell.ljust(w) for cell, w in zip(row[1:], widths[1:], strict=True)]
                lines.append("  " + "  ".join(cells).rstrip())
        return "\n".join(lines)


def variance_curve_result(totals, layout, sizes, repeats, analytic, **context):
    """VarianceCurve from the per-repeat sums of the curve kernel (internal)."""
    from fastgrad._reduction import columns_record, record_width

    per = {key: {e: {p: [] for p in layout.wrt} for e in layout.estimators} for key in ("mean", "se", "var", "ci")}
    ratio = {p: [] for p in layout.wrt}
    ratio_ci = {p: [] for p in layout.wrt}
    record = np.empty(record_width(layout.n_rows, len(layout.pair_x)))
    for k, n in enumerate(sizes):
        estimates = np.ascontiguousarray(totals[:, k * repeats : (k + 1) * repeats]) / n
        columns_record(estimates, layout.pair_x, layout.pair_y, record)
        for e in layout.estimators:
            for p in layout.wrt:
                base = 2 + 4 * layout.row(e, p)
                mean, m2, _, m4 = (float(v) for v in record[base : base + 4])
                variance = m2 / (repeats - 1)
                per["mean"][e][p].append(mean)
                per["se"][e][p].append(math.sqrt(variance / repeats))
                per["var"][e][p].append(variance)
                per["ci"][e][p].append(_log_interval(variance, m2 / repeats, m4 / repeats, repeats))
        for pair, p in enumerate(layout.wrt):
            value, interval = variance_ratio(record, layout, pair)
            ratio[p].append(value)
            ratio_ci[p].append(interval)

    def freeze(table):
        return {e: {p: tuple(v) for p, v in by_p.items()} for e, by_p in table.items()}

    analytic_variance = analytic_ratio = gradient = None
    if analytic is not None:
        analytic_variance = {e: {p: tuple(analytic[e][p][1] / n for n in sizes) for p in layout.wrt} for e in analytic}
        gradient = {p: analytic["score"][p][0] for p in layout.wrt}
        analytic_ratio = {
            p: analytic["score"][p][1] / analytic["pathwise"][p][1] if analytic["pathwise"][p][1] else math.inf
            for p in layout.wrt
        }
    return VarianceCurve(
        wrt=layout.wrt,
        estimators=layout.estimators,
        sample_sizes=tuple(sizes),
        repeats=repeats,
        mean=freeze(per["mean"]),
        mean_stderr=freeze(per["se"]),
        variance=freeze(per["var"]),
        variance_ci=freeze(per["ci"]),
        analytic_gradient=gradient,
        analytic_variance=analytic_variance,
        variance_ratio={p: tuple(v) for p, v in ratio.items()},
        variance_ratio_ci={p: tuple(v) for p, v in ratio_ci.items()},
        analytic_variance_ratio=analytic_ratio,
        **context,
    )


def _log_interval(variance, central2, central4, count, confidence_z=Z95):
    """95 % interval of a variance from the delta method on its log: ``Var[log s2] ~ (k - 1) / count``."""
    if not variance > 0 or not math.isfinite(variance):
        return (math.nan, math.nan)
    kurtosis = central4 / (central2 * central2)
    half_width = confidence_z * math.sqrt(max(kurtosis - 1.0, 0.0) / count)
    return (variance * math.exp(-half_width), variance * math.exp(half_width))


# --- building results from a moment record ------------------------------------


def estimator_result(estimator, record, layout, context, analytic):
    """EstimatorResult for one estimator from a merged record (internal)."""
    n = int(record[0])
    stats = {key: {} for key in ("mean", "variance", "stderr", "variance_stderr", "third", "fourth")}
    for p in layout.wrt:
        k = 2 + 4 * layout.row(estimator, p)
        mean, m2, m3, m4 = record[k : k + 4]
        variance = m2 / (n - 1) if n > 1 else math.nan
        stats["mean"][p] = float(mean)
        stats["variance"][p] = float(variance)
        stats["stderr"][p] = math.sqrt(variance / n) if n > 1 else math.nan
        stats["third"][p] = float(m3 / n) if n else math.nan
        stats["fourth"][p] = float(m4 / n) if n else math.nan
        central2 = m2 / n if n else math.nan
        spread = m4 / n - central2 * central2 if n else math.nan
        stats["variance_stderr"][p] = math.sqrt(max(spread, 0.0) / n) if n else math.nan
    truth = analytic.get(estimator) if analytic else None
    return EstimatorResult(
        estimator=estimator,
        wrt=layout.wrt,
        n=n,
        n_omitted=int(record[1]),
        mean=stats["mean"],
        variance=stats["variance"],
        stderr=stats["stderr"],
        variance_stderr=stats["variance_stderr"],
        third_moment=stats["third"],
        fourth_moment=stats["fourth"],
        analytic_mean={p: truth[p][0] for p in layout.wrt} if truth else None,
        analytic_variance={p: truth[p][1] for p in layout.wrt} if truth else None,
        **context,
    )


def variance_ratio(record, layout, pair, confidence_z=Z95):
    """(ratio, (low, high)) for pair ``pair`` of the layout (internal)."""
    n = record[0]
    kx = 2 + 4 * layout.pair_x[pair]
    ky = 2 + 4 * layout.pair_y[pair]
    m2s, m4s = record[kx + 1], record[kx + 3]
    m2p, m4p = record[ky + 1], record[ky + 3]
    c22 = record[2 + 4 * layout.n_rows + 4 * pair + 3]
    if m2p == 0.0:
        return math.inf, (math.nan, math.nan)
    ratio = float(m2s / m2p)
    if m2s == 0.0:
        return ratio, (math.nan, math.nan)
    # All central moments divided by n; n * Var[log ratio] is a sample variance, so >= 0 up to rounding.
    s2, p2 = m2s / n, m2p / n
    spread = (m4s / n) / (s2 * s2) + (m4p / n) / (p2 * p2) - 2.0 * (c22 / n) / (s2 * p2)
    half_width = confidence_z * math.sqrt(max(spread, 0.0) / n)
    return ratio, (ratio * math.exp(-half_width), ratio * math.exp(half_width))


# --- text formatting ---------------------------------------------------------------


def _z(value, truth, stderr):
    if stderr == 0 or not math.isfinite(stderr):
        return 0.0 if value == truth else math.inf
    return (value - truth) / stderr


def _fmt(value, digits):
    if value is None or not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}g}"


def _fmt_pm(value, error):
    """``value ± error`` with the error to 2 significant digits and the value to match."""
    if not (math.isfinite(value) and math.isfinite(error)) or error <= 0:
        return f"{_fmt(value, 6)} ± {_fmt(error, 2)}"
    decimals = max(0, 1 - math.floor(math.log10(error)))
    if decimals > 12 or abs(value) >= 1e7 or (value != 0 and abs(value) < 1e-4):
        return f"{value:.6g} ± {error:.2g}"
    return f"{value:.{decimals}f} ± {error:.{decimals}f}"


def _rate(draws_per_second):
    if not math.isfinite(draws_per_second):
        return "-"
    if draws_per_second >= 1e6:
        return f"{draws_per_second / 1e6:.0f} M/s"
    return f"{draws_per_second / 1e3:.0f} k/s"


def _header(title, result):
    omitted = f" ({result.n_omitted:,} omitted: non-finite)" if result.n_omitted else ""
    stopped = ""
    if getattr(result, "interrupted", None):
        stopped = (
            f"INTERRUPTED ({result.interrupted}) after {result.n + result.n_omitted:,} of "
            f"{result.n_requested:,} draws: a partial result\n"
        )
    return (
        stopped + f"{title}: {result.distribution!r}, {result.function.formula}\n"
        f"n = {result.n:,} draws{omitted}, seed {result.seed}, {result.threads} thread"
        f"{'s' if result.threads != 1 else ''}, {result.seconds:.3g} s ({_rate(result.draws_per_second)})"
    )


def _gradient_line(parameter, analytic):
    truth = f"   analytic gradient {_fmt(analytic[parameter], 10)}" if analytic else ""
    return f"d/d{parameter} E[f(x)]{truth}"


def _table(results, parameter):
    rows = [("estimator", "mean ± stderr", "per-draw variance ± stderr", "analytic var", "draws/s")]
    for r in results:
        truth = _fmt(r.analytic_variance[parameter], 8) if r.analytic_variance else "-"
        rows.append(
            (
                r.estimator,
                _fmt_pm(r.mean[parameter], r.stderr[parameter]),
                _fmt_pm(r.variance[parameter], r.variance_stderr[parameter]),
                truth,
                _rate(r.draws_per_second),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


# --- DiagNormal: one value per component ----------------------------------------------------


@dataclass(frozen=True)
class VectorEstimatorResult:
    """One estimator's per-component gradient estimates under a :class:`~fastgrad.DiagNormal`.

    ``mean``, ``variance``, ``stderr``, ``variance_stderr`` and the analytic
    values map each parameter (``"loc"``, ``"scale"``) to a float64 array of
    length ``dim``. ``total_variance`` is their sum over components: the
    trace of the per-draw gradient's covariance matrix.
    """

    estimator: str
    wrt: tuple
    dim: int
    n: int
    mean: dict
    variance: dict
    stderr: dict
    variance_stderr: dict
    total_variance: dict
    analytic_mean: dict
    analytic_variance: dict
    analytic_total_variance: dict
    n_omitted: int = 0
    distribution: object = None
    function: object = None
    seed: int = None
    threads: int = None
    seconds: float = None
    draws_per_second: float = None

    def __str__(self):
        lines = [_vector_header(f"fastgrad.estimate ({self.estimator})", self)]
        shown = min(self.dim, 5)
        for p in self.wrt:
            truth = ""
            if self.analytic_total_variance is not None:
                truth = f"   (analytic {_fmt(self.analytic_total_variance[p], 8)})"
            lines.append("")
            lines.append(f"d/d{p}_i E[f(x)]: total (trace) per-draw variance {_fmt(self.total_variance[p], 6)}{truth}")
            rows = [("i", "mean ± stderr", "per-draw variance ± stderr", "analytic mean", "analytic var")]
            for i in range(shown):
                rows.append(
                    (
                        str(i),
                        _fmt_pm(self.mean[p][i], self.stderr[p][i]),
                        _fmt_pm(self.variance[p][i], self.variance_stderr[p][i]),
                        _fmt(self.analytic_mean[p][i], 8) if self.analytic_mean else "-",
                        _fmt(self.analytic_variance[p][i], 8) if self.analytic_variance else "-",
                    )
                )
            widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
            for row in rows:
                lines.append("    " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        return "\n".join(lines)

    def to_dict(self):
        """JSON-ready dict (lists per component; inf and nan become None)."""

        def lists(mapping):
            if mapping is None:
                return None
            return {p: [_json_float(v) for v in values] for p, values in mapping.items()}

        # a result of its own (estimate) carries its run; inside a comparison the comparison does
        out = _vector_run_dict(self) if self.distribution is not None else {}
        return out | {
            "estimator": self.estimator,
            "mean": lists(self.mean),
            "variance": lists(self.variance),
            "stderr": lists(self.stderr),
            "variance_stderr": lists(self.variance_stderr),
            "total_variance": _json_map(self.total_variance),
            "analytic_mean": lists(self.analytic_mean),
            "analytic_variance": lists(self.analytic_variance),
            "analytic_total_variance": _json_map(self.analytic_total_variance),
        }


@dataclass(frozen=True)
class VectorComparison:
    """Score-function and pathwise estimates for every component of a :class:`~fastgrad.DiagNormal`.

    Attributes
    ----------
    score, pathwise : VectorEstimatorResult
    variance_ratio, variance_ratio_ci : dict
        Per parameter: the per-component ratio of per-draw variances (array)
        and its 95 % interval ``(low array, high array)``, as in :class:`Comparison`.
    total_variance_ratio : dict
        Per parameter: ratio of the total (trace) variances.
    total_variance_ratio_ci : dict
        Per parameter: its 95 % interval by batch means over chunks (chunks
        are independent), NaN with fewer than 10 chunks.
    analytic_total_variance_ratio : dict or None
    distribution, function, wrt, dim, n, n_omitted, seed, threads, seconds, draws_per_second
        As in :class:`Comparison`; ``dim`` is the number of components.
    """

    score: VectorEstimatorResult
    pathwise: VectorEstimatorResult
    variance_ratio: dict
    variance_ratio_ci: dict
    total_variance_ratio: dict
    total_variance_ratio_ci: dict
    analytic_total_variance_ratio: dict
    distribution: object
    function: object
    wrt: tuple
    dim: int
    n: int
    n_omitted: int
    seed: int
    threads: int
    seconds: float
    draws_per_second: float

    def to_dict(self):
        """JSON-ready dict."""
        ci = {
            p: [[_json_float(v) for v in low], [_json_float(v) for v in high]]
            for p, (low, high) in self.variance_ratio_ci.items()
        }
        return _vector_run_dict(self) | {
            "score": self.score.to_dict(),
            "pathwise": self.pathwise.to_dict(),
            "variance_ratio": {p: [_json_float(v) for v in r] for p, r in self.variance_ratio.items()},
            "variance_ratio_ci95": ci,
            "total_variance_ratio": _json_map(self.total_variance_ratio),
            "total_variance_ratio_ci95": {
                p: [_json_float(lo), _json_float(hi)] for p, (lo, hi) in self.total_variance_ratio_ci.items()
            },
            "analytic_total_variance_ratio": _json_map(self.analytic_total_variance_ratio),
        }

    def __str__(self):
        lines = [_vector_header("fastgrad.compare", self)]
        shown = min(self.dim, 5)
        for p in self.wrt:
            lines.append("")
            lines.append(f"d/d{p}_i E[f(x)]: total (trace) per-draw variance over the {self.dim} components")
            for r in (self.score, self.pathwise):
                truth = ""
                if r.analytic_total_variance is not None:
                    truth = f"   (analytic {_fmt(r.analytic_total_variance[p], 8)})"
                lines.append(f"  {r.estimator:<9} {_fmt(r.total_variance[p], 6)}{truth}")
            ratio = f"  total variance ratio score/pathwise: {_fmt(self.total_variance_ratio[p], 5)}"
            low, high = self.total_variance_ratio_ci[p]
            if math.isfinite(low) and math.isfinite(high):
                ratio += f", 95% CI [{_fmt(low, 5)}, {_fmt(high, 5)}]"
            if self.analytic_total_variance_ratio is not None:
                ratio += f"  (analytic {_fmt(self.analytic_total_variance_ratio[p], 6)})"
            lines.append(ratio)
            lines.append(f"  first {shown} component{'s' if shown != 1 else ''}:")
            rows = [("i", "estimator", "mean ± stderr", "per-draw variance ± stderr", "analytic var", "ratio [95% CI]")]
            for i in range(shown):
                for r in (self.score, self.pathwise):
                    ratio_text = ""
                    if r is self.score:
                        low, high = self.variance_ratio_ci[p]
                        ratio_text = f"{_fmt(self.variance_ratio[p][i], 4)} [{_fmt(low[i], 4)}, {_fmt(high[i], 4)}]"
                    rows.append(
                        (
                            str(i) if r is self.score else "",
                            r.estimator,
                            _fmt_pm(r.mean[p][i], r.stderr[p][i]),
                            _fmt_pm(r.variance[p][i], r.variance_stderr[p][i]),
                            _fmt(r.analytic_variance[p][i], 6) if r.analytic_variance else "-",
                            ratio_text,
                        )
                    )
            widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
            for row in rows:
                lines.append("    " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        return "\n".join(lines)


def _vector_header(title, result):
    return (
        f"{title}: {result.distribution!r}, {result.function.formula}\n"
        f"D = {result.dim} components, n = {result.n:,} draws, seed {result.seed}, {result.threads} thread"
        f"{'s' if result.threads != 1 else ''}, {result.seconds:.3g} s ({_rate(result.draws_per_second)})"
    )


def _vector_run_dict(result):
    """Describe the run, for both DiagNormal results' ``to_dict``."""
    return {
        "distribution": result.distribution.to_dict(),
        "function": result.function.to_dict(),
        "wrt": list(result.wrt),
        "dim": result.dim,
        "n": result.n,
        "n_omitted": result.n_omitted,
        "seed": result.seed,
        "threads": result.threads,
        "seconds": result.seconds,
        "draws_per_second": result.draws_per_second,
    }


#: Fewest chunks for a batch-means interval of the trace ratio.
MIN_TRACE_CHUNKS = 10


def _student_quantile(z, df):
    """Student-t quantile from the normal one (Abramowitz & Stegun 26.7.5; 1e-3 accurate for df >= 9)."""
    z3, z5 = z**3, z**5
    return z + (z3 + z) / (4 * df) + (5 * z5 + 16 * z3 + 3 * z) / (96 * df * df)


def trace_ratio_interval(ratio, score_sums, path_sums, confidence_z=Z95):
    """95 % interval of the trace ratio by batch means over chunks (internal).

    ``score_sums[c]``, ``path_sums[c]``: chunk ``c``'s sum over components of
    the score and pathwise ``M2``. Chunks are independent, so the ratio of
    sums has ``Var[R] ~ C / (C - 1) * sum_c (S_c - R P_c)**2 / (sum_c P_c)**2``;
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


def vector_comparison(record, layout, analytic, trace_sums=None, **context):
    """VectorComparison from a merged record of the vector kernel (internal)."""
    dim = layout.dim
    results = {e: _vector_estimator(e, record, layout, analytic) for e in ("score", "pathwise")}
    ratios, intervals = {}, {}
    for k, p in enumerate(layout.wrt):
        values = [variance_ratio(record, layout, k * dim + i) for i in range(dim)]
        ratios[p] = np.array([v for v, _ in values])
        intervals[p] = (np.array([lo for _, (lo, _) in values]), np.array([hi for _, (_, hi) in values]))

    def ratio(a, b):
        if b == 0:
            return math.inf if a > 0 else math.nan
        return a / b

    totals = {p: ratio(results["score"].total_variance[p], results["pathwise"].total_variance[p]) for p in layout.wrt}
    total_intervals = {
        p: trace_ratio_interval(totals[p], trace_sums[:, 0, b], trace_sums[:, 1, b])
        if trace_sums is not None
        else (math.nan, math.nan)
        for b, p in enumerate(layout.wrt)
    }
    analytic_totals = None
    if analytic is not None:
        analytic_totals = {
            p: ratio(results["score"].analytic_total_variance[p], results["pathwise"].analytic_total_variance[p])
            for p in layout.wrt
        }
    return VectorComparison(
        score=results["score"],
        pathwise=results["pathwise"],
        variance_ratio=ratios,
        variance_ratio_ci=intervals,
        total_variance_ratio=totals,
        total_variance_ratio_ci=total_intervals,
        analytic_total_variance_ratio=analytic_totals,
        wrt=layout.wrt,
        dim=dim,
        n=int(record[0]),
        n_omitted=int(record[1]),
        **context,
    )


def _vector_estimator(e, record, layout, analytic, **extra):
    n = int(record[0])
    dim = layout.dim
    stats = {key: {} for key in ("mean", "variance", "stderr", "variance_stderr")}
    for p in layout.wrt:
        base = 2 + 4 * np.array([layout.component_row(e, p, i) for i in range(dim)])
        mean, m2, m4 = record[base], record[base + 1], record[base + 3]
        variance = m2 / (n - 1)
        stats["mean"][p] = mean.copy()
        stats["variance"][p] = variance
        stats["stderr"][p] = np.sqrt(variance / n)
        stats["variance_stderr"][p] = np.sqrt(np.maximum(m4 / n - (m2 / n) ** 2, 0.0) / n)
    truth = analytic.get(e) if analytic else None
    return VectorEstimatorResult(
        estimator=e,
        wrt=layout.wrt,
        dim=dim,
        n=n,
        total_variance={p: float(np.sum(stats["variance"][p])) for p in layout.wrt},
        analytic_mean={p: np.array(truth[p][0]) for p in layout.wrt} if truth else None,
        analytic_variance={p: np.array(truth[p][1]) for p in layout.wrt} if truth else None,
        analytic_total_variance={p: float(np.sum(truth[p][1])) for p in layout.wrt} if truth else None,
        **stats,
        **extra,
    )


def vector_estimator_result(estimator, record, layout, analytic, context):
    """VectorEstimatorResult of a one-estimator DiagNormal run, with its run context (internal)."""
    return _vector_estimator(estimator, record, layout, analytic, n_omitted=int(record[1]), **context)


# --- estimator variants (fastgrad.compare(..., estimators=[...])) ------------------------


@dataclass(frozen=True)
class VariantResult:
    """One estimator variant's estimate in a :class:`VariantComparison`, per parameter.

    Attributes
    ----------
    estimator : str
        Canonical specification, e.g. ``"score+optimal-baseline"``.
    evaluations_per_draw : int
        Evaluations of ``f`` (or ``f'``) per draw of the noise, for one
        parameter: 2 for antithetic pairs and measure-valued estimators, else 1.
    mean, stderr : dict
        The gradient estimate and its standard error.
    variance, variance_stderr : dict
        Variance per draw of the noise: ``n`` times the variance of the
        ``n``-draw estimate (for an antithetic pair, the variance of the pair's
        average; for ``loo(K)``, K times the variance of a group's estimate).
    variance_per_evaluation : dict
        ``variance * evaluations_per_draw``: what an equal budget of function
        evaluations buys. Ratios compare this.
    ratio, ratio_ci : dict
        ``variance_per_evaluation`` over the reference estimator's, with its
        95 % interval (delta method with the co-moments of the two on the same
        draws). The reference's own ratio is 1 with no interval.
    analytic_mean, analytic_variance, analytic_ratio : dict or None
        Exact values for built-in functions (at the baseline or coefficients
        actually used).
    coefficients : dict or None
        Per parameter, the baseline ``b`` (``baseline``, ``optimal-baseline``)
        or the control-variate coefficients on the score vector (``cv``, a list
        over the distribution's parameters) used.
    """

    estimator: str
    evaluations_per_draw: int
    mean: dict
    stderr: dict
    variance: dict
    variance_stderr: dict
    variance_per_evaluation: dict
    ratio: dict
    ratio_ci: dict
    analytic_mean: dict
    analytic_variance: dict
    analytic_ratio: dict
    coefficients: dict

    def to_dict(self):
        """JSON-ready dict (inf and nan become None)."""
        return {
            "estimator": self.estimator,
            "evaluations_per_draw": self.evaluations_per_draw,
            "mean": _json_map(self.mean),
            "stderr": _json_map(self.stderr),
            "variance": _json_map(self.variance),
            "variance_stderr": _json_map(self.variance_stderr),
            "variance_per_evaluation": _json_map(self.variance_per_evaluation),
            "ratio": _json_map(self.ratio),
            "ratio_ci95": {p: [_json_float(v) for v in ci] for p, ci in self.ratio_ci.items()},
            "analytic_mean": _json_map(self.analytic_mean),
            "analytic_variance": _json_map(self.analytic_variance),
            "analytic_ratio": _json_map(self.analytic_ratio),
            "coefficients": self.coefficients,
        }


@dataclass(frozen=True)
class VariantComparison:
    """Several gradient estimators on the same draws, in one table (see :func:`fastgrad.compare`).

    Attributes
    ----------
    results : tuple of VariantResult
        In the order asked for (the reference appended if it was not asked for).
    reference : str
        The estimator ratios are taken against: ``"pathwise"`` when the family
        and function have one, else ``"score"``.
    group : int
        Draws per leave-one-out group (1 without ``loo``); ``n`` is a multiple of it.
    pilot : int
        Draws of the independent pilot stream that estimated the baselines and
        control-variate coefficients (0 when none was needed).
    distribution, function, wrt, n, n_omitted, seed, threads, seconds, draws_per_second
        As in :class:`Comparison`: one fused pass computed every estimator.
    """

    results: tuple
    reference: str
    group: int
    pilot: int
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
    n_requested: int = None

    @property
    def estimators(self):
        """Canonical names of the estimators, in table order."""
        return tuple(r.estimator for r in self.results)

    @property
    def analytic_gradient(self):
        """The true gradient per parameter, or None for user functions."""
        return self.results[0].analytic_mean

    def __getitem__(self, estimator):
        """Return one estimator's result, by its specification (``c["score+cv"]``)."""
        from fastgrad.estimators import parse_estimator

        name = parse_estimator(estimator).name
        for result in self.results:
            if result.estimator == name:
                return result
        raise KeyError(f"{estimator!r} is not in this comparison; it has {list(self.estimators)}")

    def to_dict(self):
        """JSON-ready dict (inf and nan become None)."""
        return {
            "kind": "estimator_comparison",
            "distribution": self.distribution.to_dict(),
            "function": self.function.to_dict(),
            "wrt": list(self.wrt),
            "n": self.n,
            "n_omitted": self.n_omitted,
            "group": self.group,
            "pilot": self.pilot,
            "reference": self.reference,
            "interrupted": self.interrupted,
            "n_requested": self.n_requested,
            "seed": self.seed,
            "threads": self.threads,
            "seconds": self.seconds,
            "draws_per_second": self.draws_per_second,
            "estimators": [r.to_dict() for r in self.results],
        }

    def __str__(self):
        pilot = f"; baselines from an independent pilot of {self.pilot:,} draws" if self.pilot else ""
        group = f"; loo groups of {self.group}" if self.group > 1 else ""
        lines = [
            _header("fastgrad.compare", self) + ", every estimator in one pass over the same draws" + pilot + group
        ]
        for p in self.wrt:
            lines.append("")
            lines.append(_gradient_line(p, self.analytic_gradient))
            head = (
                "estimator", "evals", "mean ± stderr", "variance/draw ± stderr", "analytic",
                "variance/eval", f"ratio to {self.reference} [95% CI]", "analytic", "draws/s",
            )  # fmt: skip
            rows = [head]
            for r in self.results:
                low, high = r.ratio_ci[p]
                interval = f" [{_fmt(low, 4)}, {_fmt(high, 4)}]" if math.isfinite(low) and math.isfinite(high) else ""
                rows.append(
                    (
                        r.estimator,
                        str(r.evaluations_per_draw),
                        _fmt_pm(r.mean[p], r.stderr[p]),
                        _fmt_pm(r.variance[p], r.variance_stderr[p]),
                        _fmt(r.analytic_variance[p], 6) if r.analytic_variance else "-",
                        _fmt(r.variance_per_evaluation[p], 5),
                        _fmt(r.ratio[p], 4) + interval,
                        _fmt(r.analytic_ratio[p], 5) if r.analytic_ratio else "-",
                        _rate(self.draws_per_second),
                    )
                )
            widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
            lines.extend(
                "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
            )
            if any(r.evaluations_per_draw == 2 for r in self.results):
                lines.append(
                    "  (antithetic: a draw is a pair (eps, -eps); measure-valued: a pair of sides; "
                    "ratios compare variance per evaluation)"
                )
            for r in self.results:
                if r.coefficients is not None:
                    value = r.coefficients[p]
                    text = (
                        _fmt(value, 6)
                        if not isinstance(value, list)
                        else "[" + ", ".join(_fmt(v, 6) for v in value) + "]"
                    )
                    lines.append(f"  {r.estimator}: {'coefficients' if isinstance(value, list) else 'baseline'} {text}")
        return "\n".join(lines)


def variant_comparison(record, layout, analytic, coefficients, **context):
    """VariantComparison from a merged record over units (internal)."""
    group = layout.group
    units = int(record[0])
    ref_spec = layout.specs[layout.reference]
    per_eval = {}
    results = []
    truth_ref = analytic[layout.reference]
    for s, spec in enumerate(layout.specs):
        stats = {key: {} for key in ("mean", "se", "var", "var_se", "per_eval", "ratio", "ci")}
        for p in layout.wrt:
            k = 2 + 4 * layout.row(s, p)
            mean, m2, _, m4 = (float(v) for v in record[k : k + 4])
            unit_var = m2 / (units - 1)
            stats["mean"][p] = mean
            stats["se"][p] = math.sqrt(unit_var / units)
            stats["var"][p] = unit_var * group
            central2 = m2 / units
            stats["var_se"][p] = group * math.sqrt(max(m4 / units - central2 * central2, 0.0) / units)
            stats["per_eval"][p] = stats["var"][p] * spec.evaluations
            pair = layout.pair(s, p)
            if pair is None:
                stats["ratio"][p], stats["ci"][p] = 1.0, (math.nan, math.nan)
            else:
                scale = spec.evaluations / ref_spec.evaluations
                ratio, (low, high) = variance_ratio(record, layout, pair)
                stats["ratio"][p], stats["ci"][p] = ratio * scale, (low * scale, high * scale)
        per_eval[s] = stats["per_eval"]
        truth = analytic[s]
        analytic_ratio = None
        if truth is not None and truth_ref is not None:
            analytic_ratio = {
                p: _ratio_or_inf(truth[p][1] * spec.evaluations, truth_ref[p][1] * ref_spec.evaluations)
                for p in layout.wrt
            }
        results.append(
            VariantResult(
                estimator=spec.name,
                evaluations_per_draw=spec.evaluations,
                mean=stats["mean"],
                stderr=stats["se"],
                variance=stats["var"],
                variance_stderr=stats["var_se"],
                variance_per_evaluation=stats["per_eval"],
                ratio=stats["ratio"],
                ratio_ci=stats["ci"],
                analytic_mean={p: truth[p][0] for p in layout.wrt} if truth else None,
                analytic_variance={p: truth[p][1] for p in layout.wrt} if truth else None,
                analytic_ratio=analytic_ratio,
                coefficients=_coefficient_dict(coefficients[s], layout, spec.baseline == "cv"),
            )
        )
    return VariantComparison(
        results=tuple(results),
        reference=ref_spec.name,
        group=group,
        n=units * group,
        n_omitted=int(record[1]) * group,
        wrt=layout.wrt,
        **context,
    )


def _coefficient_dict(matrix, layout, full):
    """Per parameter: the baseline (a number), or with ``full`` the coefficients on every score component."""
    if matrix is None:
        return None
    out = {}
    for p in layout.wrt:
        j = layout.parameters.index(p)
        out[p] = [float(v) for v in matrix[j]] if full else float(matrix[j][j])
    return out


def _ratio_or_inf(a, b):
    if b == 0:
        return math.inf if a > 0 else math.nan
    return a / b


def variant_curve_result(totals, layout, unit_sizes, repeats, analytic, **context):
    """VarianceCurve of estimator variants from per-repeat sums over units (internal).

    ``analytic[s][p] = (mean, per-draw variance)``; the variance of an
    ``n``-draw estimate is per-draw variance / n.
    """
    from fastgrad._reduction import columns_record, record_width

    group = layout.group
    names = tuple(spec.name for spec in layout.specs)
    ref = layout.specs[layout.reference]
    per = {key: {e: {p: [] for p in layout.wrt} for e in names} for key in ("mean", "se", "var", "ci", "ratio", "rci")}
    record = np.empty(record_width(layout.n_rows, len(layout.pair_x)))
    for k, units in enumerate(unit_sizes):
        estimates = np.ascontiguousarray(totals[:, k * repeats : (k + 1) * repeats]) / units
        columns_record(estimates, layout.pair_x, layout.pair_y, record)
        for s, e in enumerate(names):
            for p in layout.wrt:
                base = 2 + 4 * layout.row(s, p)
                mean, m2, _, m4 = (float(v) for v in record[base : base + 4])
                variance = m2 / (repeats - 1)
                per["mean"][e][p].append(mean)
                per["se"][e][p].append(math.sqrt(variance / repeats))
                per["var"][e][p].append(variance)
                per["ci"][e][p].append(_log_interval(variance, m2 / repeats, m4 / repeats, repeats))
                pair = layout.pair(s, p)
                if pair is None:
                    per["ratio"][e][p].append(1.0)
                    per["rci"][e][p].append((math.nan, math.nan))
                else:
                    scale = layout.specs[s].evaluations / ref.evaluations
                    value, (low, high) = variance_ratio(record, layout, pair)
                    per["ratio"][e][p].append(value * scale)
                    per["rci"][e][p].append((low * scale, high * scale))

    def freeze(table):
        return {e: {p: tuple(v) for p, v in by_p.items()} for e, by_p in table.items()}

    sizes = [units * group for units in unit_sizes]
    analytic_variance = analytic_ratio = gradient = None
    if all(a is not None for a in analytic):
        analytic_variance = {e: {p: tuple(analytic[s][p][1] / n for n in sizes) for p in layout.wrt}
                             for s, e in enumerate(names)}  # fmt: skip
        gradient = {p: analytic[0][p][0] for p in layout.wrt}
        truth_ref = analytic[layout.reference]
        analytic_ratio = {
            e: {
                p: _ratio_or_inf(analytic[s][p][1] * layout.specs[s].evaluations, truth_ref[p][1] * ref.evaluations)
                for p in layout.wrt
            }
            for s, e in enumerate(names)
        }
    return VarianceCurve(
        wrt=layout.wrt,
        estimators=names,
        sample_sizes=tuple(sizes),
        repeats=repeats,
        mean=freeze(per["mean"]),
        mean_stderr=freeze(per["se"]),
        variance=freeze(per["var"]),
        variance_ci=freeze(per["ci"]),
        analytic_gradient=gradient,
        analytic_variance=analytic_variance,
        variance_ratio=None,
        variance_ratio_ci=None,
        analytic_variance_ratio=None,
        reference=ref.name,
        ratio_to_reference=freeze(per["ratio"]),
        ratio_to_reference_ci=freeze(per["rci"]),
        analytic_ratio_to_reference=analytic_ratio,
        **context,
    )
