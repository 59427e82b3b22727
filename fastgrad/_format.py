"""Printed tables of results: what ``str(result)`` shows.

One module renders every result: a single estimate, a comparison of any
number of estimators (the classic score/pathwise table, the table of
estimator variants, the per-component table of a multivariate family) and
a variance curve. Numbers are shown with their uncertainty and, where one
is known, the exact value beside them.
"""

import math


def fmt(value, digits):
    """``value`` to ``digits`` significant digits; ``inf``, ``nan`` and ``None`` as words."""
    if value is None or not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}g}"


def fmt_pm(value, error):
    """``value ± error`` with the error to 2 significant digits and the value to match."""
    if not (math.isfinite(value) and math.isfinite(error)) or error <= 0:
        return f"{fmt(value, 6)} ± {fmt(error, 2)}"
    decimals = max(0, 1 - math.floor(math.log10(error)))
    if decimals > 12 or abs(value) >= 1e7 or (value != 0 and abs(value) < 1e-4):
        return f"{value:.6g} ± {error:.2g}"
    return f"{value:.{decimals}f} ± {error:.{decimals}f}"


def rate(draws_per_second):
    """Draws per second as ``"628 M/s"``."""
    if not math.isfinite(draws_per_second):
        return "-"
    if draws_per_second >= 1e6:
        return f"{draws_per_second / 1e6:.0f} M/s"
    return f"{draws_per_second / 1e3:.0f} k/s"


def _plural(count, word):
    return f"{count} {word}{'s' if count != 1 else ''}"


def header(title, result):
    """Title, what was differentiated, and the run: draws, seed, threads, time (and an interruption)."""
    omitted = f" ({result.n_omitted:,} omitted: non-finite)" if result.n_omitted else ""
    stopped = ""
    if getattr(result, "interrupted", None):
        stopped = (
            f"INTERRUPTED ({result.interrupted}) after {result.n + result.n_omitted:,} of "
            f"{result.n_requested:,} draws: a partial result\n"
        )
    components = f"D = {result.dim} components, " if result.vector else ""
    if getattr(result, "analytic_note", None):
        stopped += _exact_values_line(getattr(result, "results", None) or [result], result.analytic_note)
    from fastgrad.results import MIN_INTERVAL_SAMPLES

    units = result.n // max(1, result.group)
    if units < MIN_INTERVAL_SAMPLES:
        stopped += (f"no intervals on variances or their ratios: they need at least {MIN_INTERVAL_SAMPLES} "
                    f"{'groups' if result.group > 1 else 'draws'}; this run has {units}\n")  # fmt: skip
    return (
        stopped + f"{title}: {result.distribution!r}, {result.function.formula}\n"
        f"{components}n = {result.n:,} draws{omitted}, seed {result.seed}, {_plural(result.threads, 'thread')}, "
        f"{result.seconds:.3g} s ({rate(result.draws_per_second)})"
    )


def _exact_values_line(results, note):
    """Return the header line that says why exact values are missing: all of them, or some estimators'."""
    some = any(getattr(r, "analytic_variance", None) is not None for r in results)
    return f"{'exact values for some estimators only' if some else 'no exact values'}: {note}\n"


def gradient_line(parameter, analytic):
    truth = f"   analytic gradient {fmt(analytic[parameter], 10)}" if analytic else ""
    return f"d/d{parameter} E[f(x)]{truth}"


def _columns(rows, indent="  "):
    rows = [row + ("",) * (len(rows[0]) - len(row)) for row in rows]
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def _estimator_rows(results, parameter):
    rows = [("estimator", "mean ± stderr", "per-draw variance ± stderr", "analytic var", "draws/s")]
    for r in results:
        truth = fmt(r.analytic_variance[parameter], 8) if r.analytic_variance else "-"
        rows.append(
            (
                r.estimator,
                fmt_pm(r.mean[parameter], r.stderr[parameter]),
                fmt_pm(r.variance[parameter], r.variance_stderr[parameter]),
                truth,
                rate(r.draws_per_second),
            )
        )
    return _columns(rows)


# --- one estimate ------------------------------------------------------------------------------


def estimate_text(r):
    """``str()`` of an :class:`~fastgrad.EstimatorResult`."""
    if r.vector:
        return _vector_estimate_text(r)
    lines = [header(f"fastgrad.estimate ({r.estimator})", r)]
    for p in r.wrt:
        lines.append("")
        lines.append(gradient_line(p, r.analytic_mean))
        lines.extend(_estimator_rows([r], p))
    return "\n".join(lines)


def _vector_estimate_text(r):
    lines = [header(f"fastgrad.estimate ({r.estimator})", r)]
    for p in r.wrt:
        shown = min(len(r.mean[p]), 5)
        truth = ""
        if r.analytic_total_variance is not None:
            truth = f"   (analytic {fmt(r.analytic_total_variance[p], 8)})"
        lines.append("")
        lines.append(f"d/d{p}_i E[f(x)]: total (trace) per-draw variance {fmt(r.total_variance[p], 6)}{truth}")
        rows = [("i", "mean ± stderr", "per-draw variance ± stderr", "analytic mean", "analytic var")]
        for i in range(shown):
            rows.append(
                (
                    str(i),
                    fmt_pm(r.mean[p][i], r.stderr[p][i]),
                    fmt_pm(r.variance[p][i], r.variance_stderr[p][i]),
                    fmt(r.analytic_mean[p][i], 8) if r.analytic_mean else "-",
                    fmt(r.analytic_variance[p][i], 8) if r.analytic_variance else "-",
                )
            )
        lines.extend(_columns(rows, "    "))
    return "\n".join(lines)


# --- comparisons -------------------------------------------------------------------------------


def comparison_text(c):
    """``str()`` of a :class:`~fastgrad.Comparison`: the classic, variant or per-component table."""
    if c.vector:
        return _vector_comparison_text(c)
    if c.classic:
        return _classic_text(c)
    return _variants_text(c)


def _classic_text(c):
    lines = [header("fastgrad.compare", c) + ", both estimators in one pass over the same draws"]
    for p in c.wrt:
        lines.append("")
        lines.append(gradient_line(p, c.analytic_gradient))
        lines.extend(_estimator_rows([c.score, c.pathwise], p))
        low, high = c.variance_ratio_ci[p]
        text = f"  variance ratio score/pathwise: {fmt(c.variance_ratio[p], 5)}"
        if math.isfinite(low) and math.isfinite(high):
            text += f", 95% CI [{fmt(low, 5)}, {fmt(high, 5)}]"
        if c.analytic_variance_ratio is not None:
            text += f"  (analytic {fmt(c.analytic_variance_ratio[p], 6)})"
        lines.append(text)
    return "\n".join(lines)


def _variants_text(c):
    pilot = f"; baselines from an independent pilot of {c.pilot:,} draws" if c.pilot else ""
    group = f"; loo groups of {c.group}" if c.group > 1 else ""
    lines = [header("fastgrad.compare", c) + ", every estimator in one pass over the same draws" + pilot + group]
    for p in c.wrt:
        lines.append("")
        lines.append(gradient_line(p, c.analytic_gradient))
        rows = [(
            "estimator", "evals", "mean ± stderr", "variance/draw ± stderr", "analytic",
            "variance/eval", f"ratio to {c.reference} [95% CI]", "analytic", "draws/s",
        )]  # fmt: skip
        for r in c.results:
            low, high = r.ratio_ci[p]
            interval = f" [{fmt(low, 4)}, {fmt(high, 4)}]" if math.isfinite(low) and math.isfinite(high) else ""
            rows.append(
                (
                    r.estimator,
                    str(r.evaluations_per_draw),
                    fmt_pm(r.mean[p], r.stderr[p]),
                    fmt_pm(r.variance[p], r.variance_stderr[p]),
                    fmt(r.analytic_variance[p], 6) if r.analytic_variance else "-",
                    fmt(r.variance_per_evaluation[p], 5),
                    fmt(r.ratio[p], 4) + interval,
                    fmt(r.analytic_ratio[p], 5) if r.analytic_ratio else "-",
                    rate(c.draws_per_second),
                )
            )
        lines.extend(_columns(rows))
        if any(r.evaluations_per_draw == 2 for r in c.results):
            lines.append(
                "  (antithetic: a draw is a pair (eps, -eps); measure-valued: a pair of sides; "
                "ratios compare variance per evaluation)"
            )
        for r in c.results:
            if r.coefficients is not None:
                value = r.coefficients[p]
                text = fmt(value, 6) if not isinstance(value, list) else "[" + ", ".join(fmt(v, 6) for v in value) + "]"
                lines.append(f"  {r.estimator}: {'coefficients' if isinstance(value, list) else 'baseline'} {text}")
    return "\n".join(lines)


def _vector_comparison_text(c):
    lines = [header("fastgrad.compare", c)]
    reference = c.results[c.reference_index]
    for p in c.wrt:
        size = len(reference.mean[p])
        shown = min(size, 5)
        lines.append("")
        lines.append(f"d/d{p}_i E[f(x)]: total (trace) per-draw variance over the {size} components")
        for r in c.results:
            truth = ""
            if r.analytic_total_variance is not None:
                truth = f"   (analytic {fmt(r.analytic_total_variance[p], 8)})"
            lines.append(f"  {r.estimator:<9} {fmt(r.total_variance[p], 6)}{truth}")
        for r in c.results:
            if r is reference:
                continue
            name = "score/pathwise" if c.classic else f"{r.estimator}/{reference.estimator} per evaluation"
            ratio = f"  total variance ratio {name}: {fmt(r.total_ratio[p], 5)}"
            low, high = r.total_ratio_ci[p]
            if math.isfinite(low) and math.isfinite(high):
                ratio += f", 95% CI [{fmt(low, 5)}, {fmt(high, 5)}]"
            if r.analytic_total_ratio is not None:
                ratio += f"  (analytic {fmt(r.analytic_total_ratio[p], 6)})"
            lines.append(ratio)
        lines.append(f"  first {shown} component{'s' if shown != 1 else ''}:")
        rows = [("i", "estimator", "mean ± stderr", "per-draw variance ± stderr", "analytic var", "ratio [95% CI]")]
        for i in range(shown):
            for k, r in enumerate(c.results):
                ratio_text = ""
                if r is not reference:
                    low, high = r.ratio_ci[p]
                    ratio_text = f"{fmt(r.ratio[p][i], 4)} [{fmt(low[i], 4)}, {fmt(high[i], 4)}]"
                rows.append(
                    (
                        str(i) if k == 0 else "",
                        r.estimator,
                        fmt_pm(r.mean[p][i], r.stderr[p][i]),
                        fmt_pm(r.variance[p][i], r.variance_stderr[p][i]),
                        fmt(r.analytic_variance[p][i], 6) if r.analytic_variance else "-",
                        ratio_text,
                    )
                )
        lines.extend(_columns(rows, "    "))
    return "\n".join(lines)


# --- variance curves ---------------------------------------------------------------------------


def curve_text(c):
    """``str()`` of a :class:`~fastgrad.VarianceCurve`."""
    sizes = ", ".join(f"{n:,}" for n in c.sample_sizes) or "none"
    stopped = ""
    if c.interrupted:
        stopped = (
            f"INTERRUPTED ({c.interrupted}): {len(c.sample_sizes)} of {len(c.sample_sizes_requested)} "
            "sample sizes finished; the others are left out\n"
        )
    if c.analytic_note:
        stopped += _exact_values_line([c], c.analytic_note)
    from fastgrad.results import MIN_INTERVAL_SAMPLES

    if c.repeats < MIN_INTERVAL_SAMPLES:
        stopped += (f"no intervals on variances or their ratios: they need at least {MIN_INTERVAL_SAMPLES} repeats; "
                    f"this curve has {c.repeats}\n")  # fmt: skip
    vector = c.dim is not None
    omitted = ""
    if c.n_omitted and any(c.n_omitted):
        omitted = "\nomitted (non-finite estimates) per n: " + ", ".join(f"{k:,}" for k in c.n_omitted)
    lines = [
        stopped + f"fastgrad.variance_curve: {c.distribution!r}, {c.function.formula}\n"
        + (f"D = {c.dim} components: variances are traces (summed over components), ratios ratios of traces\n"
           if vector else "")
        + f"n = {sizes}; {c.repeats:,} estimates per n, seed {c.seed}, {_plural(c.threads, 'thread')}, "
        f"{c.draws:,} draws in {c.seconds:.3g} s ({rate(c.draws_per_second)})" + omitted
    ]  # fmt: skip
    for p in c.wrt:
        lines.append("")
        lines.append(f"d/d{p} E[f(x)]" if vector else gradient_line(p, c.analytic_gradient))
        mean_title = "mean ± stderr" + (" (component 0)" if vector else "")
        rows = [("n", "estimator", mean_title, "trace [95% CI]" if vector else "variance [95% CI]", "analytic",
                 "n × variance")]  # fmt: skip
        if c.reference is not None:
            rows[0] += (f"ratio to {c.reference} per eval [95% CI]", "analytic")
        for i, n in enumerate(c.sample_sizes):
            for e in c.estimators:
                lo, hi = c.variance_ci[e][p][i]
                v = c.variance[e][p][i]
                truth = fmt(c.analytic_variance[e][p][i], 6) if c.analytic_variance else "-"
                row = (
                    f"{n:,}" if e == c.estimators[0] else "",
                    e,
                    fmt_pm(
                        *(
                            (c.mean[e][p][i][0], c.mean_stderr[e][p][i][0])
                            if vector
                            else (c.mean[e][p][i], c.mean_stderr[e][p][i])
                        )
                    ),
                    f"{fmt(v, 4)} [{fmt(lo, 4)}, {fmt(hi, 4)}]",
                    truth,
                    fmt(n * v, 4),
                )
                if c.reference is not None:
                    r_lo, r_hi = c.ratio_to_reference_ci[e][p][i]
                    interval = f" [{fmt(r_lo, 4)}, {fmt(r_hi, 4)}]" if math.isfinite(r_lo) else ""
                    analytic = c.analytic_ratio_to_reference
                    row += (
                        fmt(c.ratio_to_reference[e][p][i], 4) + interval,
                        fmt(analytic[e][p], 5) if analytic and analytic[e] else "-",
                    )
                rows.append(row)
            if c.reference is not None:
                continue
            lo, hi = c.variance_ratio_ci[p][i]
            truth = fmt(c.analytic_variance_ratio[p], 6) if c.analytic_variance_ratio else "-"
            rows.append(("", "ratio", "", f"{fmt(c.variance_ratio[p][i], 4)} [{fmt(lo, 4)}, {fmt(hi, 4)}]", truth, ""))
        rows = [row + ("",) * (len(rows[0]) - len(row)) for row in rows]
        widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
        for row in rows:
            cells = [row[0].rjust(widths[0])] + [cell.ljust(w) for cell, w in zip(row[1:], widths[1:], strict=True)]
            lines.append("  " + "  ".join(cells).rstrip())
    return "\n".join(lines)
