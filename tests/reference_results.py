"""A fixed table of runs whose every float is kept in ``tests/data/reference_results.json``.

The file was written by the code *before* the one-pipeline refactor
(``python tools/make_reference_results.py``); ``tests/test_reference_results.py``
reruns every case and requires each float to match bit for bit. Stream
layout 3 (fastgrad.math in the draws) rewrote it: of its 2,081 figures, 108
of two cases with ``cos`` changed by an ulp or so (``curve-variants-cos``,
``diag-estimate-sum-cos-70``); every other figure kept its bits. A case is
data: (what to call, its arguments). The extractor reads results through
their public attributes only, so it survives internal rewrites.
"""

import math

import numpy as np

import fastgrad as fg

from user_functions import nan_above_one, nan_above_one_derivative, square, square_derivative

VARIANTS = [
    "score",
    "score+baseline(4)",
    "score+optimal-baseline",
    "score+cv",
    "score+loo(8)",
    "score+antithetic",
    "score+cv+antithetic",
    "pathwise",
    "pathwise+antithetic",
    "measure-valued",
    "measure-valued+decoupled",
]


def _user_vector():
    import numba

    @numba.njit
    def f(x):
        total = 0.0
        for i in range(x.size):
            total += x[i] * x[i] * (i + 1.0)
        return total

    @numba.njit
    def grad(x, out):
        for i in range(x.size):
            out[i] = 2.0 * x[i] * (i + 1.0)

    return fg.VectorFunction(f, grad, name="weighted_squares")


def cases():
    """Name -> (api function, positional args, keyword args)."""
    return {
        "compare-normal-square": (fg.compare, (fg.Normal(2.0, 1.0), "square", 300_000), {"seed": 0}),
        "compare-normal-cos-scale": (
            fg.compare, (fg.Normal(0.5, 1.5), fg.functions.cos(omega=2.0), 200_001), {"seed": 1, "wrt": "scale"},
        ),
        "estimate-normal-quartic-pathwise": (
            fg.estimate, (fg.Normal(-1.0, 0.5), "quartic", 150_000), {"seed": 2, "estimator": "pathwise"},
        ),
        "compare-exponential-shifted": (
            fg.compare, (fg.Exponential(2.0), fg.functions.shifted_square(k=0.3), 200_000), {"seed": 3},
        ),
        "estimate-bernoulli-linear": (
            fg.estimate, (fg.Bernoulli(0.3), "linear", 200_000), {"seed": 4, "estimator": "score"},
        ),
        "compare-user-omit": (
            fg.compare, (fg.Normal(0.0, 1.0), fg.Function(nan_above_one, nan_above_one_derivative), 100_000),
            {"seed": 5, "nan_policy": "omit"},
        ),
        "variants-normal-square": (
            fg.compare, (fg.Normal(2.0, 1.0), "square", 262_144), {"seed": 6, "estimators": VARIANTS, "pilot": 20_000},
        ),
        "variants-exponential": (
            fg.compare, (fg.Exponential(1.5), "quartic", 200_000),
            {"seed": 7, "pilot": 10_000, "estimators": [
                "score", "score+baseline(0.5)", "score+optimal-baseline", "score+cv", "score+loo(4)", "pathwise"]},
        ),
        "variants-bernoulli-loo5": (
            fg.compare, (fg.Bernoulli(0.4), "cos", 100_000),
            {"seed": 8, "pilot": 10_000, "estimators": ["score", "score+optimal-baseline", "score+loo(5)"]},
        ),
        "variants-user-scale": (
            fg.compare, (fg.Normal(1.0, 2.0), fg.Function(square, square_derivative), 131_072),
            {"seed": 9, "wrt": "scale", "pilot": 10_000,
             "estimators": ["score+optimal-baseline", "pathwise", "measure-valued+decoupled"]},
        ),
        "curve-normal-square": (
            fg.variance_curve, (fg.Normal(2.0, 1.0), "square", [10, 100, 1000]), {"repeats": 500, "seed": 10},
        ),
        "curve-variants-cos": (
            fg.variance_curve, (fg.Normal(1.0, 2.0), fg.functions.cos(omega=1.0), [8, 64, 512]),
            {"repeats": 300, "seed": 11, "pilot": 10_000,
             "estimators": ["score", "score+cv", "score+loo(4)", "pathwise+antithetic", "measure-valued"]},
        ),
        "diag-compare-quadratic": (
            fg.compare, (fg.DiagNormal([2.0, -0.5, 0.3], [1.0, 0.7, 1.6]), fg.functions.quadratic([0.5, 2.0, -1.0]),
                         100_000), {"seed": 12},
        ),
        "diag-estimate-sum-cos-70": (
            fg.estimate, (fg.DiagNormal(np.linspace(-1, 1, 70).tolist(), np.linspace(0.5, 1.5, 70).tolist()),
                          fg.functions.sum_cos(0.7), 20_000), {"seed": 13, "estimator": "score"},
        ),
        "diag-compare-user": (
            fg.compare, (fg.DiagNormal([0.0, 1.0, -1.0, 0.5], [1.0, 0.5, 2.0, 1.0]), _user_vector(), 50_000),
            {"seed": 14},
        ),
    }  # fmt: skip


# --- reading every float a result shows, through its public attributes ----------------


def _put(out, path, value):
    if value is None:
        out[path] = None
    elif isinstance(value, dict):
        for key, item in value.items():
            _put(out, f"{path}.{key}", item)
    elif isinstance(value, (tuple, list, np.ndarray)):
        for i, item in enumerate(np.asarray(value, dtype=object).ravel().tolist() if isinstance(value, np.ndarray)
                                 else value):  # fmt: skip
            _put(out, f"{path}[{i}]", item)
    elif isinstance(value, (bool, np.bool_)):
        out[path] = bool(value)
    elif isinstance(value, (int, np.integer)):
        out[path] = int(value)
    else:
        out[path] = float(value).hex()


ESTIMATOR_FIELDS = ("n", "n_omitted", "mean", "variance", "stderr", "variance_stderr", "analytic_mean",
                    "analytic_variance")  # fmt: skip
SCALAR_EXTRA = ("third_moment", "fourth_moment")
VECTOR_EXTRA = ("total_variance", "analytic_total_variance")
VARIANT_FIELDS = ("mean", "stderr", "variance", "variance_stderr", "variance_per_evaluation", "ratio", "ratio_ci",
                  "analytic_mean", "analytic_variance", "analytic_ratio", "coefficients")  # fmt: skip
CURVE_FIELDS = ("sample_sizes", "mean", "mean_stderr", "variance", "variance_ci", "analytic_gradient",
                "analytic_variance", "variance_ratio", "variance_ratio_ci", "analytic_variance_ratio",
                "ratio_to_reference", "ratio_to_reference_ci", "analytic_ratio_to_reference")  # fmt: skip


def figures(name, result):
    """Every number of a result, as ``{path: float.hex() | int | None}``."""
    out = {}
    if name.startswith("curve"):
        for field in CURVE_FIELDS:
            _put(out, field, getattr(result, field))
        return out
    if name.startswith("variants"):
        _put(out, "n", result.n)
        _put(out, "n_omitted", result.n_omitted)
        for estimator in result.estimators:
            for field in VARIANT_FIELDS:
                _put(out, f"{estimator}.{field}", getattr(result[estimator], field))
        return out
    rows = [("", result)] if name.startswith("estimate") or name.startswith("diag-estimate") else [
        ("score.", result.score), ("pathwise.", result.pathwise)]  # fmt: skip
    vector = name.startswith("diag")
    for prefix, row in rows:
        for field in ESTIMATOR_FIELDS + (VECTOR_EXTRA if vector else SCALAR_EXTRA):
            _put(out, prefix + field, getattr(row, field))
    if len(rows) == 2:
        for field in ("variance_ratio", "variance_ratio_ci"):
            _put(out, field, getattr(result, field))
        if vector:
            for field in ("total_variance_ratio", "total_variance_ratio_ci", "analytic_total_variance_ratio"):
                _put(out, field, getattr(result, field))
        else:
            _put(out, "analytic_variance_ratio", result.analytic_variance_ratio)
    return out


def run_case(name, threads=2):
    function, args, kwargs = cases()[name]
    return figures(name, function(*args, threads=threads, **kwargs))


def is_nan_hex(value):
    return isinstance(value, str) and math.isnan(float.fromhex(value))
