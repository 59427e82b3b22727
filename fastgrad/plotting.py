"""Pictures of results, with matplotlib (the optional ``fastgrad[plot]`` extra).

matplotlib is imported only when a plot is asked for, so the package itself
needs nothing beyond numba and numpy. Figures are drawn on a bare
:class:`matplotlib.figure.Figure` with the Agg canvas: no pyplot, no
display, no global state, safe in batch jobs and threads.
"""

import math
from pathlib import Path

__all__ = ["PlottingUnavailableError", "plot_curve", "plot_optimization"]

#: Colour per estimator (matplotlib's default cycle, fixed so plots agree); other estimators take
#: the rest of the cycle in order.
_COLOURS = {"score": "#d62728", "pathwise": "#1f77b4"}
_OTHERS = ("#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


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
    many = len(curve.estimators) > 2  # one legend entry per estimator, and one for the dashed lines
    rows_of_legend = math.ceil((len(curve.estimators) + 1) / 4) if many else 0
    figure = figure_class(figsize=(5.2 * panels, 4.2 + 0.25 * rows_of_legend), layout="constrained")
    axes = figure.subplots(1, panels, squeeze=False)[0]
    for ax, parameter in zip(axes, curve.wrt, strict=True):
        others = iter(_OTHERS * (1 + len(curve.estimators) // len(_OTHERS)))
        for estimator in curve.estimators:
            colour = _COLOURS.get(estimator) or next(others)
            # a zero variance (an estimator exact for this function) has no place on a log axis
            variance = [v if v > 0 else math.nan for v in curve.variance[estimator][parameter]]
            intervals = curve.variance_ci[estimator][parameter]
            if all(math.isnan(v) for v in variance):
                ax.plot([], [], " ", label=f"{estimator}: variance 0 (not drawn)")
                continue
            low = [v - lo if math.isfinite(lo) else 0.0 for v, (lo, _) in zip(variance, intervals, strict=True)]
            high = [hi - v if math.isfinite(hi) else 0.0 for v, (_, hi) in zip(variance, intervals, strict=True)]
            ax.errorbar(
                sizes,
                variance,
                yerr=[low, high],
                fmt="o",
                color=colour,
                capsize=3,
                label=estimator if many else f"{estimator}: variance of {curve.repeats:,} estimates (95% CI)",
            )
            if curve.analytic_variance is not None:
                per_draw = curve.analytic_variance[estimator][parameter][0] * sizes[0]
                ax.plot(
                    sizes,
                    curve.analytic_variance[estimator][parameter],
                    "--",
                    color=colour,
                    alpha=0.7,
                    label=None if many else f"{estimator}: analytic {per_draw:.4g} / n",
                )
        if many:
            ax.plot([], [], "k--", alpha=0.7, label="analytic: per-draw variance / n")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("draws per estimate, n")
        ax.set_ylabel(f"variance of the d/d{parameter} estimate")
        ax.set_title(f"d/d{parameter} E[f(x)]", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        if not many:
            ax.legend(fontsize=8)
    if many:  # one legend for all panels, below them
        entries = {}
        for ax in axes:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                if label.endswith("(not drawn)") and label.split(":")[0] in {k.split(":")[0] for k in entries}:
                    continue
                entries.setdefault(label, handle)
        drawn = {label.split(":")[0] for label in entries if not label.endswith("(not drawn)")}
        entries = {k: v for k, v in entries.items() if not (k.endswith("(not drawn)") and k.split(":")[0] in drawn)}
        figure.legend(list(entries.values()), list(entries), loc="outside lower center", ncols=4, fontsize=8)
    figure.suptitle(f"{curve.function.formula} under {curve.distribution!r}, seed {curve.seed}", fontsize=10)
    figure.savefig(path, dpi=dpi, format="png")
    return path


def _optimization_quantity(result):
    """Return what :func:`plot_optimization` draws: label, {estimator: median, 10 %, 90 % per step}, log scale."""
    trajectories = result.trajectories
    if result.optimum_objective is not None:
        label = "excess objective E_q[f] - E_q*[f] (exact)"
        gap = {name: t.objective[:, [2, 1, 3]] - result.optimum_objective for name, t in trajectories.items()}
        return label, gap, True
    if all(t.objective is not None for t in trajectories.values()):
        return "objective E_q[f] (exact)", {n: t.objective[:, [2, 1, 3]] for n, t in trajectories.items()}, True
    if result.optimum:
        label = "distance to the optimum (largest over the optimised parameters)"
        return label, {n: t.distance[:, [2, 1, 3]] for n, t in trajectories.items()}, True
    first = result.optimized[0]
    return first, {n: t.parameters[first][:, [2, 1, 3]] for n, t in trajectories.items()}, False


def plot_optimization(result, path, *, dpi=150):
    """Write an :class:`~fastgrad.optimize.OptimizationResult`'s plot to ``path`` (PNG); return the path.

    Two panels, against steps and against function evaluations: per
    estimator the median over replicates (line) and the 10-90 % band
    (shaded) of the excess exact objective where the optimum and the
    function's exact expectation are known (log scale), else of the exact
    objective, of the distance to the optimum, or of the first optimised
    parameter (linear scale). Values <= 0 on a log scale (an estimator exact
    to rounding) are left out.
    """
    figure_class = require_matplotlib()
    path = Path(path)
    label, quantity, log = _optimization_quantity(result)
    figure = figure_class(figsize=(11.0, 4.4), layout="constrained")
    by_steps, by_evaluations = figure.subplots(1, 2, sharey=True)
    others = iter(_OTHERS * (1 + len(quantity) // len(_OTHERS)))
    steps = result.steps.astype(float)
    for name, values in quantity.items():
        colour = _COLOURS.get(name) or next(others)
        shown = values.copy()
        if log:
            shown[shown <= 0] = math.nan
        evaluations = steps * result.trajectories[name].evaluations_per_step
        for ax, x in ((by_steps, steps), (by_evaluations, evaluations)):
            ax.plot(x, shown[:, 0], color=colour, label=name)
            ax.fill_between(x, shown[:, 1], shown[:, 2], color=colour, alpha=0.2, linewidth=0)
    for ax, xlabel in ((by_steps, "steps"), (by_evaluations, "function evaluations (f or f')")):
        ax.set_xlabel(xlabel)
        if log:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    by_steps.set_ylabel(label)
    by_steps.legend(fontsize="small")
    figure.suptitle(
        f"{result.optimizer.upper()} on {result.function} under {result.distribution!r}\n"
        f"median over {result.replicates:,} replicates, 10-90 % shaded",
        fontsize="medium",
    )
    figure.savefig(path, dpi=dpi)
    return path
