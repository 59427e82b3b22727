"""Pictures of results, with matplotlib (the optional ``fastgrad[plot]`` extra).

matplotlib is imported only when a plot is asked for, so the package itself
needs nothing beyond numba and numpy. Figures are drawn on a bare
:class:`matplotlib.figure.Figure` with the Agg canvas: no pyplot, no
display, no global state, safe in batch jobs and threads.
"""

import math
from pathlib import Path

__all__ = ["PlottingUnavailableError", "plot_curve"]

#: Colour per estimator (matplotlib's default cycle, fixed so plots agree).
_COLOURS = {"score": "#d62728", "pathwise": "#1f77b4"}


class PlottingUnavailableError(ImportError):
    """matplotlib is not installed."""


def require_matplotlib():
    """Import matplotlib's Figure, or raise :class:`PlottingUnavailableError` saying which extra to install."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise PlottingUnavailableError(
            "plotting needs matplotlib, which is not installed: pip install 'fastgrad[plot]' (or matplotlib)"
        ) from error
    return Figure


def plot_curve(curve, path, *, dpi=150):
    """Write the log-log plot of a :class:`~fastgrad.results.VarianceCurve` to ``path`` (PNG); return the path."""
    figure_class = require_matplotlib()
    path = Path(path)
    sizes = curve.sample_sizes
    panels = len(curve.wrt)
    figure = figure_class(figsize=(5.2 * panels, 4.2), layout="constrained")
    axes = figure.subplots(1, panels, squeeze=False)[0]
    for ax, parameter in zip(axes, curve.wrt, strict=True):
        for estimator in curve.estimators:
            colour = _COLOURS.get(estimator)
            variance = curve.variance[estimator][parameter]
            intervals = curve.variance_ci[estimator][parameter]
            low = [v - lo if math.isfinite(lo) else 0.0 for v, (lo, _) in zip(variance, intervals, strict=True)]
            high = [hi - v if math.isfinite(hi) else 0.0 for v, (_, hi) in zip(variance, intervals, strict=True)]
            ax.errorbar(
                sizes,
                variance,
                yerr=[low, high],
                fmt="o",
                color=colour,
                capsize=3,
                label=f"{estimator}: variance of {curve.repeats:,} estimates (95% CI)",
            )
            if curve.analytic_variance is not None:
                per_draw = curve.analytic_variance[estimator][parameter][0] * sizes[0]
                ax.plot(
                    sizes,
                    curve.analytic_variance[estimator][parameter],
                    "--",
                    color=colour,
                    alpha=0.7,
                    label=f"{estimator}: analytic {per_draw:.4g} / n",
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("draws per estimate, n")
        ax.set_ylabel(f"variance of the d/d{parameter} estimate")
        ax.set_title(f"d/d{parameter} E[f(x)]", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle(f"{curve.function.formula} under {curve.distribution!r}, seed {curve.seed}", fontsize=10)
    figure.savefig(path, dpi=dpi, format="png")
    return path
