"""Categorical(probs): K categories, the score function and the measure-valued gradient, with logits.

A draw is the category ``x`` in ``0 .. K-1`` with ``P(x = k) = probs[k]``, by
inversion: ``x`` is the first ``k`` with ``u < c_k``, ``c_k = probs[0] + ... +
probs[k]`` (the last taken as 1), ``u`` uniform on [0, 1) with 53 random bits
(so each probability is its cumulative sums' difference on the 2**-53 grid,
as the Bernoulli's). ``f`` is a function of the category, a number.

The family is the normalised one, ``q(x) = probs[x] / sum(probs)``, at
``sum(probs) = 1`` (as PyTorch's ``Categorical(probs=...)``): per
probability ``probs[k]``,

* score  ``1[x = k] / probs[k] - 1``, with mean 0;
* weak derivative ``d E[f] / d probs[k] = f(k) - E[f]``: ``c = 1``, the
  positive side the point ``k``, the negative side the law itself (coupled:
  the draw; decoupled: another draw);

and per logit (``logits[k] = log probs[k]`` up to a constant; ``probs`` its
softmax), ``d/dlogits[k] = probs[k] d/dprobs[k]``: score ``1[x = k] -
probs[k]``, weak ``c = probs[k]``. No pathwise estimator: ``x`` jumps.

Exact reference values: sums over the K categories (:func:`exact_moments`).
"""

import math
from dataclasses import dataclass

import numpy as np

from fastgrad._analytic import grid_moments
from fastgrad._checks import real_vector as _vector
from fastgrad._jit import core, inline_core, serial
from fastgrad.distributions import Joint, joint_family, register
from fastgrad.rng import take_words, unit_closed_open

__all__ = ["Categorical"]

#: Most categories with exact reference values (each of the K rows sums over the K categories).
MAX_EXACT_CATEGORIES = 1024


# Kernel parameter vector: (probs, cumulative sums (the last 1.0), 1 / probs): three arrays of K.


@core
def _category(u, cumulative):
    """Return the first ``k`` with ``u < cumulative[k]`` (binary search; ``cumulative[-1] = 1 > u``)."""
    lo, hi = 0, cumulative.size - 1
    while lo < hi:
        mid = (lo + hi) >> 1
        if u < cumulative[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


@serial
def _categorical_noise(state, noise, m, theta):
    """Fill ``noise[:m]`` with the categories of ``m`` draws (as floats), from the stream's next ``m`` words."""
    words = np.empty(m, np.uint64)
    take_words(state, words, m)
    cumulative = theta[1]
    for i in range(m):
        noise[i] = _category(unit_closed_open(words[i]), cumulative)


@inline_core
def _draw(noise, base, theta, xs):
    xs[0] = noise[base]


@inline_core
def _scores(noise, base, xs, theta, q, row):
    x = int(xs[0])
    size = theta[0].size
    natural = q.shape[1] > size  # (the +natural twin: logits after probs)
    for k in range(size):
        q[row, k] = -1.0
        if natural:
            q[row, size + k] = -theta[0][k]
    q[row, x] = theta[2][x] - 1.0
    if natural:
        q[row, size + x] = 1.0 - theta[0][x]


@inline_core
def _paths(noise, base, xs, grads, theta, active, dim, q, row):  # never called: no pathwise estimator
    for r in range(q.shape[1]):
        q[row, r] = np.nan


@inline_core
def _weak_points(j, i, noise, base, xs, u1, u2, u3, theta):
    """``(c, x_plus, x_coupled, x_decoupled)`` of probability (``j = 0``) or logit (``j = 1``) ``i``."""
    c = 1.0 if j == 0 else theta[0][i]
    return c, float(i), xs[0], float(_category(1.0 - u2, theta[1]))  # (1 - u2: uniform on [0, 1), 2**-53 grid)


@inline_core
def _theta_into(params, theta):
    """Write the kernel parameters of probabilities ``params`` into ``theta``: :attr:`Categorical.theta`'s numbers."""
    probs, cumulative, inverse = theta[0], theta[1], theta[2]
    total = 0.0
    for k in range(probs.size):  # (np.cumsum's order: one addition after another)
        probs[k] = params[k]
        total += params[k]
        cumulative[k] = total
        inverse[k] = 1.0 / params[k]
    cumulative[probs.size - 1] = 1.0


def _moments(distribution, function, specs, coefficients, wrt):
    """Exact mean and per-draw variance of every specification: sums over the K categories."""
    probs = np.array(distribution.probs)
    size = probs.size
    exact = function.exact() if hasattr(function, "exact") else None
    if exact is None or size > MAX_EXACT_CATEGORIES:
        return [None] * len(specs)
    categories = np.arange(size, dtype=np.float64)
    fx = exact.evaluate(categories)
    indicator = np.eye(size)
    scores = indicator / probs[:, None] - 1.0
    weak = fx[:, None] - fx[None, :]  # [i, x]: f(i) - f(x), coupled or not (f(i) is no draw)
    natural = len(distribution.parameters) > 1
    if natural:
        scores = np.concatenate([scores, indicator - probs[:, None]])
        weak = np.concatenate([weak, probs[:, None] * weak])
    return grid_moments(distribution, specs, coefficients, wrt, probs, fx, scores, None, weak)


JOINT = Joint(width=(0, 1), draw_size=(0, 1), sample=_categorical_noise, draw=_draw, scores=_scores, paths=_paths,
              moments=_moments, weak=_weak_points, theta_into=_theta_into)  # fmt: skip


CATEGORICAL = joint_family("categorical", ("probs",), JOINT, pathwise=False, natural=(("logits", "probs"),))

#: Largest |sum(probs) - 1| accepted.
SUM_TOLERANCE = 1e-9


@register
@dataclass(frozen=True, eq=False)
class Categorical:
    """The categorical distribution on ``0 .. K-1``: ``x = k`` with probability ``probs[k]``.

    Only the score function (and its variants) and the measure-valued
    estimator exist: the draw jumps between categories, so it has no
    derivative to follow. Gradients are those of the normalised family
    ``probs[x] / sum(probs)`` at ``sum(probs) = 1``, per probability (so the
    score ``1[x = k] / probs[k] - 1`` has mean 0 and ``d E[f] / d probs[k] =
    f(k) - E[f]``); ``wrt=["logits"]`` gives them per logit (``probs`` the
    softmax of ``logits``), ``probs[k]`` times those. ``f`` is a function of
    the category (a number): ``"square"`` is ``E[x**2]``.

    Parameters
    ----------
    probs : sequence of float, length K >= 2
        Each at least 2**-53 (the sampler compares uniforms on a 2**-53 grid
        with the cumulative sums), summing to 1 within 1e-9.

    Examples
    --------
    >>> import fastgrad as fg
    >>> r = fg.compare(fg.Categorical([0.2, 0.3, 0.5]), "square", n=10**5, seed=0,
    ...                estimators=["score", "measure-valued"], wrt=["probs", "logits"])
    >>> [round(float(g), 12) for g in r["score"].analytic_mean["probs"]]   # k**2 - E[x**2], E[x**2] = 2.3
    [-2.3, -1.3, 1.7]
    >>> [round(float(g), 12) for g in r["score"].analytic_mean["logits"]]  # probs[k] times those
    [-0.46, -0.39, 0.85]
    """

    probs: tuple

    family = CATEGORICAL
    name = "categorical"  # the command line's --dist

    def __post_init__(self):
        probs = _vector("probs", self.probs, positive=True)
        if len(probs) < 2:
            raise ValueError(f"probs must have at least 2 categories (K >= 2); got {len(probs)}")
        small = [i for i, p in enumerate(probs) if p < 2.0**-53]
        if small:
            raise ValueError(
                f"probs[{small[0]}] must be at least 2**-53 (1.1e-16); got {probs[small[0]]!r}: the sampler compares "
                "uniforms on a 2**-53 grid with the cumulative sums"
            )
        total = math.fsum(probs)
        if abs(total - 1.0) > SUM_TOLERANCE:
            raise ValueError(f"probs must sum to 1 (within {SUM_TOLERANCE:g}); they sum to {total!r}")
        object.__setattr__(self, "probs", probs)

    @property
    def dim(self):
        """Number of categories K (the components of the gradient, not of the draw)."""
        return len(self.probs)

    @property
    def parameters(self):
        """Parameter names: ``("probs",)``, a vector of K components."""
        return self.family.parameters

    @property
    def theta(self):
        """Kernel parameters: probs, their cumulative sums (the last 1.0) and reciprocals, three arrays of K."""
        probs = np.array(self.probs)
        cumulative = np.cumsum(probs)
        cumulative[-1] = 1.0
        return (probs, cumulative, 1.0 / probs)

    def natural_value(self, name):
        """``logits``: ``log(probs)`` (the logits whose softmax is ``probs``)."""
        return tuple(math.log(p) for p in self.probs)

    def to_dict(self):
        """JSON-ready description."""
        return {"family": "Categorical", "probs": list(self.probs)}

    def __eq__(self, other):
        return isinstance(other, Categorical) and self.probs == other.probs

    def __hash__(self):
        return hash(("Categorical", self.probs))

    def __repr__(self):
        values = self.probs
        if len(values) <= 6:
            return "Categorical(probs=[" + ", ".join(repr(v) for v in values) + "])"
        return f"Categorical(probs=[{values[0]!r}, {values[1]!r}, {values[2]!r}, ... ({len(values)} values)])"
