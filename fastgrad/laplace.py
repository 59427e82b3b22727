"""Laplace(loc, scale): a family in one file (the worked example of ``docs/families.md``).

The draw is ``x = loc + scale * eps`` with ``eps ~ Laplace(0, 1)``, drawn exactly
as ``eps = s E``: ``E = -log(u)`` with ``u`` uniform on (0, 1] from a word's top
53 bits (an Exp(1) draw, as the Exponential family's), ``s = +-1`` from the
same word's lowest bit, which ``u`` does not use. From
``log q(x) = -log(2 scale) - |x - loc| / scale``:

=========  ==========================  ==============
parameter  score factor                path factor
=========  ==========================  ==============
loc        ``sign(eps) / scale``       ``1``
scale      ``(|eps| - 1) / scale``     ``eps``
=========  ==========================  ==============

The noise is symmetric, so antithetic pairs apply. Weak derivatives
(measure-valued gradients): ``d q / d loc = (q_+ - q_-) / (2 scale)`` with
``q_+-`` the laws of ``loc +- scale E``; ``d q / d scale = (p_2 - q) / scale``
with ``p_2`` the law of ``loc + s scale G``, ``G ~ Gamma(2)`` (``E + E'``).

Exact reference values: every factor is a polynomial in ``s`` and ``|eps|``
on each half ``s = +-1`` of the law, and ``|eps|`` is Exp(1), so
``E[h(x) q]`` is the Exponential family's exact expectation on each half.
"""

import math
from dataclasses import dataclass

import numpy as np

from fastgrad import math as fm
from fastgrad._analytic import NoiseTerms, _exact, affine, exponential_expectation, gauss_rule
from fastgrad._jit import core, serial
from fastgrad.distributions import (
    Family,
    LocationScale,
    location_scale_path_factor,
    location_scale_theta,
    location_scale_transform,
    register,
)
from fastgrad.rng import take_words, unit_open_closed

__all__ = ["Laplace"]


@serial
def _laplace_noise(state, words, noise, scratch, m):
    take_words(state, words, m)
    for i in range(m):
        magnitude = -fm._log_normal(unit_open_closed(words[i]))
        noise[i] = magnitude if words[i] & np.uint64(1) else -magnitude


# Kernel parameter vector: (loc, scale, 1 / scale); the transform and path factors are the location-scale ones.


@core
def _laplace_score_factor(j, eps, x, theta):
    if j == 0:
        return math.copysign(theta[2], eps)
    if j == 1:
        return (abs(eps) - 1.0) * theta[2]
    return abs(eps) - 1.0  # log_scale


@core
def _laplace_weak_derivative(j, eps, x, u1, u2, u3, eps2, theta):
    magnitude = abs(eps)
    if j == 0:  # loc +- scale E: coupled, the same E; decoupled, a fresh one
        return 0.5 * theta[2], theta[0] + theta[1] * magnitude, theta[0] - theta[1] * magnitude, \
            theta[0] + theta[1] * fm.log(u2)  # fmt: skip
    # scale: loc + s scale (E + E') against the draw itself (coupled) or a fresh Laplace draw (decoupled)
    sign = math.copysign(1.0, eps)
    fresh = -fm.log(u2) if u3 <= 0.5 else fm.log(u2)
    c = theta[2] if j == 1 else 1.0  # log_scale: the same sides, c = scale / scale
    return c, theta[0] + theta[1] * sign * (magnitude - fm.log(u1)), x, theta[0] + theta[1] * fresh


# --- exact expectations ---------------------------------------------------------------------


class SignTerms(NoiseTerms):
    """``sum c * s**a * r**k`` over ``(a, k)`` with ``s = sign(eps)`` (``s**2 = 1``) and ``r = |eps|``."""

    @classmethod
    def from_polynomial(cls, coefficients):
        """``sum c_k eps**k``, with ``eps**k = s**k r**k``."""
        return cls({(k % 2, k): _exact(c) for k, c in enumerate(coefficients)})

    @staticmethod
    def _times(key1, key2):
        return (key1[0] + key2[0]) % 2, key1[1] + key2[1]

    def reflect(self):
        """Return the same at ``-eps`` (``s -> -s``)."""
        return SignTerms({(a, k): -c if a else c for (a, k), c in self.terms.items()})

    def on_half(self, sign):
        """Coefficients of the polynomial in ``r`` this is where ``s = sign``."""
        degree = max((k for _, k in self.terms), default=0)
        out = [0] * (degree + 1)
        for (a, k), c in self.terms.items():
            out[k] += -c if a and sign < 0 else c
        return out


def _expectation(h, theta, q):
    """``E[h(x) q]`` under Laplace(loc, scale): the mean of the two halves ``eps = +-r``, ``r ~ Exp(1)``."""
    loc, scale = theta[0], theta[1]
    q = q if isinstance(q, SignTerms) else SignTerms.from_polynomial(q)
    halves = [exponential_expectation(affine(h, loc, sign * _exact(scale)), 1, q.on_half(sign)) for sign in (1, -1)]
    return (halves[0] + halves[1]) / 2


def _analytic_factors(theta):
    inverse = 1 / _exact(theta[1])
    score = (SignTerms({(1, 0): inverse}), SignTerms({(0, 1): inverse, (0, 0): -inverse}))
    return score, ([1], [0, 1])


def _natural_factors(theta):
    return (SignTerms({(0, 1): 1, (0, 0): -1}),), ([0, _exact(theta[1])],)  # log_scale: |eps| - 1, scale eps


def _weak_moments(theta, h, j, coupled):
    """Mean and variance of one measure-valued value (exact, but the coupled scale side: Gauss-Laguerre)."""
    loc, scale = _exact(theta[0]), _exact(theta[1])
    sides = [(affine(h, loc, scale), (1,)), (affine(h, loc, -scale), (1,))]  # loc +- scale r
    if j == 1:  # loc + s scale G (G ~ Gamma(2): density r times Exp(1)'s) against a Laplace draw, halves averaged
        c = 1 / scale
        plus = [(affine(h, loc, sign * scale), (0, 1)) for sign in (1, -1)]
        minus = [(affine(h, loc, sign * scale), (1,)) for sign in (1, -1)]
    else:
        c = 1 / (2 * scale)
        plus, minus = [sides[0]], [sides[1]]

    def moment(parts, power):
        return sum(exponential_expectation(g if power == 1 else g * g, 1, q) for g, q in parts) / len(parts)

    mean = c * (moment(plus, 1) - moment(minus, 1))
    if not coupled:
        variance = c * c * (moment(plus, 2) - moment(plus, 1) ** 2 + moment(minus, 2) - moment(minus, 1) ** 2)
        return float(mean), float(variance)
    if j == 0:  # one r for both sides: (h(loc + scale r) - h(loc - scale r)) is one ExpPoly in r
        difference = sides[0][0] + sides[1][0] * -1
        second = c * c * exponential_expectation(difference * difference, 1)
        return float(mean), float(second - mean * mean)
    # coupled scale side: c (h(loc + s scale (r + r')) - h(loc + s scale r)), r, r' ~ Exp(1)
    t, w = gauss_rule("laguerre", 120)
    second = 0.0
    for sign in (1, -1):
        g = (
            h.evaluate(float(loc) + sign * float(scale) * (t[:, None] + t[None, :]))
            - h.evaluate(float(loc) + sign * float(scale) * t)[:, None]
        )
        second += 0.5 * float(np.sum(w[:, None] * w[None, :] * g * g))
    mean = float(mean)
    return mean, float(c) ** 2 * second - mean * mean


LAPLACE = Family(
    name="laplace",
    parameters=("loc", "scale"),
    sample_noise=_laplace_noise,
    transform=location_scale_transform,
    score_factor=_laplace_score_factor,
    path_factor=location_scale_path_factor,
    analytic_factors=_analytic_factors,
    expectation=_expectation,
    symmetric=True,
    weak_derivative=_laplace_weak_derivative,
    weak_moments=_weak_moments,
    natural=(("log_scale", "scale"),),
    natural_factors=_natural_factors,
    theta_of=location_scale_theta,
)


@register
@dataclass(frozen=True)
class Laplace(LocationScale):
    """The Laplace distribution, density ``exp(-|x - loc| / scale) / (2 scale)``, as ``x = loc + scale * eps``.

    Parameters
    ----------
    loc : float
        Location (the mean and median); any finite real number.
    scale : float
        Scale; finite and > 0. The variance is ``2 scale**2``.

    Examples
    --------
    >>> import fastgrad as fg
    >>> r = fg.compare(fg.Laplace(1.0, 2.0), "square", n=10**6, seed=0)
    >>> r.score.analytic_mean["scale"], r.pathwise.analytic_variance["loc"]    # 4 scale, Var[2x] = 8 scale**2
    (8.0, 32.0)
    """

    family = LAPLACE
    name = "laplace"  # the command line's --dist
