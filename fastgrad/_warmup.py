"""``fastgrad warmup``: compile every built-in kernel into Numba's on-disk cache, ahead of any run.

What it is for: a container image or a read-only software tree on a
cluster. Run ``fastgrad warmup`` once where the package is installed (while
building the image, or as the tree's administrator); every later process,
even one that cannot write there, loads the kernels instead of compiling
them (``docs/hpc.md``, "Read-only installs").

The table of kernels is made by the public API itself: one tiny run per
kernel key (family, built-in function, filler, sink), so the cache holds
exactly the signatures real runs ask for. Kernels of users' own functions
cannot be cached (``fastgrad._jit``) and are not part of it.
"""

import time
import warnings
from collections.abc import Callable
from typing import NamedTuple


class Case(NamedTuple):
    """One kernel to compile: its distribution (a ``--dist`` name), function, filler and sink, and a run."""

    family: str
    function: str
    filler: str
    sink: str
    run: Callable[[], object]


#: Estimators that take the ``general`` filler, valid for every family (n a multiple of the group, 8).
GENERAL = ["score", "score+loo"]


def cases():
    """Every built-in kernel, as :class:`Case` rows (in a fixed order)."""
    import fastgrad as fg
    from fastgrad import _kernels, functions
    from fastgrad.distributions import DISTRIBUTIONS

    rows = []

    def runs(family, function_name, distribution, function, default, vector):
        fillers = ("vector", "vector-general") if vector else ("plain", "general")
        pairs = [(filler, estimators, None) for filler, estimators in zip(fillers, (default, GENERAL), strict=True)]
        kind = distribution.family
        if not vector and kind.weak_derivative is not None:  # measure-valued beside nothing else: plain-weak
            pairs.append(("plain-weak", ["measure-valued"], kind.weak_parameters))
        if kind.joint is not None:  # (Beta, Dirichlet: every run takes the vector-general filler)
            pairs = [("vector-general", GENERAL, None)]
        for filler, estimators, wrt in pairs:
            rows.append(Case(family, function_name, filler, "moments", lambda e=estimators, w=wrt: fg.compare(
                distribution, function, 128, seed=0, estimators=e, wrt=w, threads=1)))  # fmt: skip
            rows.append(Case(family, function_name, filler, "curve", lambda e=estimators, w=wrt: fg.variance_curve(
                distribution, function, [8], repeats=2, seed=0, estimators=e, wrt=w, threads=1)))  # fmt: skip

    for cls in DISTRIBUTIONS:
        if cls in (fg.Dirichlet, fg.MultivariateNormal):  # (functions of a vector: below)
            continue
        distribution = fg.Categorical([0.5, 0.5]) if cls is fg.Categorical else cls()
        default = ["score"] if cls.__name__ == "Bernoulli" else None
        for name in functions.BUILTINS:
            runs(cls.name, name, distribution, name, default, vector=False)
    diag = fg.DiagNormal([0.0, 0.0], [1.0, 1.0])
    for function in (functions.linear_form([1.0, 1.0]), functions.sum_of_squares(), functions.sum_cos()):
        runs("diagnormal", function.builtin.name, diag, function, None, vector=True)
        runs("dirichlet", function.builtin.name, fg.Dirichlet([1.0, 1.0]), function, None, vector=True)
        runs("mvn", function.builtin.name, fg.MultivariateNormal([0.0, 0.0], [[1.0, 0.0], [0.5, 1.0]]), function,
             None, vector=True)  # fmt: skip
    rows.append(Case("normal", "linear", "noise", "sum", lambda: _kernels.normal_sum(1, 0)))
    return rows


def select(rows, families=None, functions=None):
    """Keep the rows whose family and function are in the given lists (None: all); refuse unknown names."""
    for option, names, field in (("--families", families, "family"), ("--functions", functions, "function")):
        known = sorted({getattr(row, field) for row in rows})
        unknown = [name for name in names or () if name not in known]
        if unknown:
            raise ValueError(f"argument {option}: unknown {field} {', '.join(unknown)}; known: {', '.join(known)}")
    return [
        row
        for row in rows
        if (families is None or row.family in families) and (functions is None or row.function in functions)
    ]


def warmup(rows, report=print):
    """Compile (or load) each row's kernel; report one line per kernel; return the seconds taken."""
    started = time.perf_counter()
    for number, row in enumerate(rows, 1):
        clock = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tiny runs: interval and precision notes are not the point here
            row.run()
        report(
            f"{number:3d}/{len(rows)}  {row.family:<12} {row.function:<15} {row.filler:<15} {row.sink:<8}"
            f"{time.perf_counter() - clock:6.2f} s"
        )
    return time.perf_counter() - started
