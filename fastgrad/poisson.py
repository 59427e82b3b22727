"""Poisson(rate): a discrete family, with the score function and the measure-valued estimator.

The draw is a count ``x`` from :func:`fastgrad.rng.poisson` (inversion below a
rate of 10, Hoermann's transformed rejection from 10 on; exact). From
``log q(x) = x log(rate) - rate - log(x!)`` the score factor is
``x / rate - 1``. There is no pathwise estimator: ``x`` jumps between
integers, so ``dx/drate`` is 0 almost everywhere.

Weak derivative (Mohamed et al. 2020, section 6; Pflug 1996): with
``q(x) = e**-rate rate**x / x!``, ``d q(x) / d rate = q(x - 1) - q(x)``, the
law of ``X + 1`` minus the law of ``X``, so

    d/drate E[f(X)] = E[f(X + 1)] - E[f(X)],        c = 1.

Coupled, both sides use the same draw (``f(x + 1) - f(x)``); decoupled, the
negative side is a second draw from another stream.

Exact reference values: a built-in is a sum of ``c x**j exp(i w x)``, and with
``s = exp(i w)``, ``E[x**j s**x] = sum_r S(j, r) (rate s)**r exp(rate (s - 1))``
(``S`` the Stirling numbers of the second kind: the factorial moments of the
Poisson law are ``rate**r``), exact (a ``Fraction``) for polynomials; other
functions are summed over every count whose probability is above 1e-300 of
the largest.
"""

import cmath
import math
from dataclasses import dataclass
from fractions import Fraction
from functools import cache

import numpy as np

from fastgrad._analytic import ExpPoly, Smooth, _exact, affine
from fastgrad._checks import real as _real
from fastgrad._jit import core, serial
from fastgrad.distributions import Family, rate_theta, register
from fastgrad.rng import _poisson_block, poisson_log_pmf

__all__ = ["Poisson"]

#: The largest rate accepted: counts stay exact integers in float64 far beyond it, but the exact reference values
#: of non-polynomial functions sum about 80 sqrt(rate) terms.
MAX_RATE = 1e9

#: The smallest rate accepted: below it ``exp(-rate)`` rounds to 1 and the sampler, comparing uniforms on a 2**-53
#: grid with it, would never draw a count above 0.
MIN_RATE = 2.0**-53


@serial
def _poisson_noise(state, words, noise, scratch, m, theta):
    _poisson_block(state, theta[0], noise, m)


# Kernel parameter vector: (rate, 1 / rate).


@core
def _poisson_transform(eps, theta):
    return eps


@core
def _poisson_score_factor(j, eps, x, theta):
    if j == 0:
        return x * theta[1] - 1.0
    return x - theta[0]  # log_rate


@core
def _poisson_path_factor(j, eps, x, theta):
    return np.nan  # never called: the family has no pathwise estimator


@core
def _poisson_weak_derivative(j, eps, x, u1, u2, u3, eps2, theta):
    # c = 1; the positive side x + 1; the negative side x itself (coupled) or another draw eps2 (decoupled)
    return 1.0 if j == 0 else theta[0], x + 1.0, x, eps2  # log_rate: c = rate


# --- exact expectations ---------------------------------------------------------------------


@cache
def _stirling2(n):
    """Stirling numbers of the second kind ``S(n, r)``, r = 0 .. n."""
    row = [1]
    for m in range(1, n + 1):
        row = [0] + [r * row[r] + row[r - 1] for r in range(1, m)] + [1] if m > 1 else [0, 1]
    return tuple(row)


def _power_moment(n, rate, s=None):
    """``E[x**n s**x]`` for ``x ~ Poisson(rate)`` (``s = None``: 1, exact for an exact ``rate``)."""
    if s is None:
        return sum(c * rate**r for r, c in enumerate(_stirling2(n)))
    scale = cmath.exp(float(rate) * (s - 1.0))
    return scale * sum(c * (float(rate) * s) ** r for r, c in enumerate(_stirling2(n)))


@serial
def _log_pmfs(counts, rate):
    out = np.empty(counts.size)
    for i in range(counts.size):
        out[i] = poisson_log_pmf(counts[i], rate)
    return out


def _support(rate):
    """Every count whose probability is above about 1e-300 of the largest (at most 80 sqrt(rate) + 1000 of them)."""
    width = 40.0 * math.sqrt(rate) + 500.0
    return np.arange(max(0.0, math.floor(rate - width)), math.ceil(rate + width) + 1.0)


def poisson_expectation(h, rate, x_polynomial=(1,)):
    """``E[h(x) q(x)]`` for ``x ~ Poisson(rate)``: closed forms for an :class:`ExpPoly` ``h``, else a sum."""
    q = [_exact(c) for c in x_polynomial]
    if isinstance(h, Smooth):
        counts = _support(float(rate))
        weights = np.exp(_log_pmfs(counts, float(rate)))
        polynomial = np.polynomial.polynomial.polyval(counts, [float(c) for c in q])
        return float(np.sum(weights * h.evaluate(counts) * polynomial))
    exact_rate = _exact(rate)
    total = Fraction(0)
    for (j, w), c in h.terms.items():
        for k, qk in enumerate(q):
            if qk == 0:
                continue
            if w == 0:
                total = total + c * qk * _power_moment(j + k, exact_rate)
            else:
                total = total + complex(c) * float(qk) * _power_moment(j + k, exact_rate, cmath.exp(1j * w))
    return total.real if isinstance(total, complex) else total


def _expectation(h, theta, q):
    return poisson_expectation(h, theta[0], q)


def _analytic_factors(theta):
    return ([-1, 1 / _exact(theta[0])],), None


def _natural_factors(theta):
    return ([-_exact(theta[0]), 1],), None  # log_rate: x - rate


def _weak_moments(theta, h, j, coupled):
    """Mean and variance of one measure-valued value ``h(x + 1) - h(x')`` (``x' = x`` coupled): exact."""
    rate = theta[0]
    shifted = affine(h, 1, 1)
    mean = poisson_expectation(shifted, rate) - poisson_expectation(h, rate)
    if coupled:
        difference = shifted + h * -1 if isinstance(h, ExpPoly) else shifted + h * -1.0
        second = poisson_expectation(difference * difference, rate)
        return float(mean), float(second - mean * mean)
    variance = sum(poisson_expectation(g * g, rate) - poisson_expectation(g, rate) ** 2 for g in (shifted, h))
    return float(mean), float(variance)


POISSON = Family(
    name="poisson",
    parameters=("rate",),
    sample_noise=_poisson_noise,
    transform=_poisson_transform,
    score_factor=_poisson_score_factor,
    path_factor=_poisson_path_factor,
    analytic_factors=_analytic_factors,
    expectation=_expectation,
    pathwise=False,
    weak_derivative=_poisson_weak_derivative,
    weak_moments=_weak_moments,
    noise_takes_theta=True,
    natural=(("log_rate", "rate"),),
    natural_factors=_natural_factors,
    theta_of=rate_theta,
)


@register
@dataclass(frozen=True)
class Poisson:
    """The Poisson distribution with rate ``rate``: ``P(x = k) = exp(-rate) rate**k / k!``, k = 0, 1, ...

    Estimators: the score function (factor ``x / rate - 1``) and its
    variants, and the measure-valued estimator
    (``E[f(x + 1)] - E[f(x)]``). There is no pathwise estimator: the draw
    is a count, with no derivative with respect to ``rate`` to follow.

    Parameters
    ----------
    rate : float
        Finite, at least 2**-53 (below it ``exp(-rate)`` rounds to 1 and
        no draw would be above 0) and at most 1e9.

    Examples
    --------
    >>> import fastgrad as fg
    >>> r = fg.compare(fg.Poisson(3.0), "square", n=10**5, estimators=["score", "measure-valued"], seed=0)
    >>> mv = r["measure-valued+coupled"]        # f(x + 1) - f(x) = 2 x + 1: variance 4 rate
    >>> r.score.analytic_mean["rate"], mv.analytic_mean["rate"], mv.analytic_variance["rate"]
    (7.0, 7.0, 12.0)
    """

    rate: float = 1.0

    family = POISSON
    name = "poisson"  # the command line's --dist

    def __post_init__(self):
        rate = _real("rate", self.rate, positive=True)
        if not MIN_RATE <= rate <= MAX_RATE:
            raise ValueError(
                f"rate must be between 2**-53 (1.1e-16) and {MAX_RATE:g}; got {rate!r} (below, exp(-rate) rounds to "
                "1 and no draw is above 0; above, the exact reference values sum too many terms)"
            )
        object.__setattr__(self, "rate", rate)

    @property
    def parameters(self):
        """Parameter names: ``("rate",)``."""
        return self.family.parameters

    @property
    def theta(self):
        """Kernel parameter vector ``(rate, 1 / rate)``."""
        return (self.rate, 1.0 / self.rate)

    def to_dict(self):
        """JSON-ready description."""
        return {"family": "Poisson", "rate": self.rate}
