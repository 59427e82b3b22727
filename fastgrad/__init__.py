"""fastgrad: fused, reproducible, parallel Monte Carlo gradient estimators.

Compare the score-function (REINFORCE) and pathwise (reparameterisation)
estimators of ``d/d theta E_{x ~ q_theta}[f(x)]`` over billions of draws,
with flat memory and bit-identical results on any number of threads::

    import fastgrad as fg
    r = fg.compare(fg.Normal(2.0, 1.0), "square", n=10**8, seed=0)
    print(r)
    c = fg.variance_curve(fg.Normal(2.0, 1.0), "square", [10, 100, 1000], repeats=1000, seed=0)
    print(c)

The same from the shell: ``fastgrad compare ...`` and ``fastgrad curve ...``
(``fastgrad --help``).

Modules: :mod:`fastgrad.rng` (random streams), :mod:`fastgrad.distributions`,
:mod:`fastgrad.functions`, :mod:`fastgrad.estimators`, :mod:`fastgrad.results`,
:mod:`fastgrad.math` (elementary functions with the same bits on every machine).
"""

from fastgrad import distributions, estimators, functions, math, rng, schedules
from fastgrad._api import MAX_DRAWS, NonFiniteValuesError, compare, estimate, merge, variance_curve
from fastgrad._checks import FastgradWarning, PrecisionWarning
from fastgrad._jit import CacheWarning
from fastgrad._jobs import CheckpointWarning, Partial, PartialError, UserFunctionError

# Every distribution class, so that adding a family touches distributions.py only.
from fastgrad.distributions import *  # noqa: F403
from fastgrad.functions import Function, VectorFunction
from fastgrad.optimize import OptimizationPartial, OptimizationResult, optimize
from fastgrad.results import Comparison, EstimatorResult, VarianceCurve, VariantComparison, VariantResult

__version__ = "0.1.0"

__all__ = [  # and the distributions, added below
    "MAX_DRAWS",
    "CacheWarning",
    "CheckpointWarning",
    "Comparison",
    "EstimatorResult",
    "FastgradWarning",
    "Function",
    "NonFiniteValuesError",
    "OptimizationPartial",
    "OptimizationResult",
    "Partial",
    "PartialError",
    "PrecisionWarning",
    "UserFunctionError",
    "VarianceCurve",
    "VariantComparison",
    "VariantResult",
    "VectorFunction",
    "__version__",
    "compare",
    "estimate",
    "estimators",
    "functions",
    "math",
    "merge",
    "optimize",
    "rng",
    "schedules",
    "variance_curve",
]
__all__ += [name for name in distributions.__all__ if name != "DISTRIBUTIONS"]

# Families in modules of their own register themselves when imported.
from fastgrad.categorical import Categorical  # noqa: E402
from fastgrad.dirichlet import Beta, Dirichlet  # noqa: E402
from fastgrad.gamma import Gamma  # noqa: E402
from fastgrad.laplace import Laplace  # noqa: E402
from fastgrad.mvn import MultivariateNormal  # noqa: E402
from fastgrad.poisson import Poisson  # noqa: E402

__all__ += ["Beta", "Categorical", "Dirichlet", "Gamma", "Laplace", "MultivariateNormal", "Poisson"]
