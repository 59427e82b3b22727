"""Gamma(shape, rate): a family whose noise depends on a parameter, with implicit reparameterisation.

The draw is ``x = z / rate`` with ``z`` a unit-rate Gamma(shape) draw from the
stream (:func:`fastgrad.rng.standard_gamma`: Marsaglia and Tsang's exact
method). From ``log q(x) = shape log(rate) + (shape - 1) log x - rate x - lgamma(shape)``:

=========  ==================================  ========================================
parameter  score factor                        path factor
=========  ==================================  ========================================
shape      ``log z - digamma(shape)``          ``g(z, shape) / rate``
rate       ``(shape - z) / rate``              ``-z / rate**2 = -x / rate``
log_rate   ``shape - z``                       ``-x``
log_shape  ``shape (log z - digamma(shape))``  ``shape g(z, shape) / rate``
=========  ==================================  ========================================

``g(z, shape) = dz/dshape`` at a fixed quantile of ``z`` is the implicit
reparameterisation gradient (Figurnov, Mohamed & Mnih 2018),
:func:`fastgrad.math.gamma_sample_grad`, within 1e-13 relative of mpmath.
The noise is not symmetric (no antithetic pairs). The measure-valued
estimator exists for the rate (``shape / rate`` times the difference of
``f`` at the draw and at the draw plus an Exp(rate) draw), not the shape.

Exact reference values: every factor and product of factors is a sum of
``c z**k L**m g**p`` (``L = log z - digamma(shape)``), and every expectation
``E[h(x) q(z)]`` is an adaptive Gauss-Legendre quadrature over ``t = log z``
(:func:`fastgrad._analytic.integrate`, about 1e-14 of the integral of the
absolute value), where the density ``exp(shape t - e**t) / Gamma(shape)`` is
smooth for every shape.
"""

import functools
import math
from dataclasses import dataclass

import numpy as np

from fastgrad import math as fm
from fastgrad._analytic import NoiseTerms, Smooth, gauss_rule, integrate
from fastgrad._checks import check_draw_size
from fastgrad._checks import real as _real
from fastgrad._jit import core, serial
from fastgrad.distributions import Family, register
from fastgrad.rng import _gamma_block

__all__ = ["Gamma"]

#: The largest shape accepted: the implicit gradient needs about 9 sqrt(shape) terms near the bulk (see
#: fastgrad.math.gamma_sample_grad), 0.9 ms a draw here, and stops converging near 10**11.
MAX_SHAPE = 1e10


@serial
def _gamma_noise(state, words, noise, scratch, m, theta):
    _gamma_block(state, theta[0], noise, m)


# Kernel parameter vector: (shape, rate, 1 / rate, digamma(shape), then digamma(shape) and digamma(shape + 1) in two
# parts each for the implicit gradient, then the run's fit of the implicit gradient (fastgrad.math._gamma_grad_fit,
# seven entries ending with its table): per-run constants, not computed per draw).


@functools.lru_cache(maxsize=16)
def _theta(shape, rate):
    """Return the kernel parameter vector (kept for the last few: a fit takes 0.1 to 15 ms)."""
    return (shape, rate, 1.0 / rate, fm.digamma(shape), *fm._gamma_grad_constants(shape), *fm._gamma_grad_fit(shape))


#: The fit of a run whose shape moves (an optimisation): no pieces, every draw takes the series.
_NO_FIT_TABLE = np.zeros((0, fm.GAMMA_FIT_DEGREE + 1))


@core
def _gamma_theta_of(params):
    """Return the kernel parameters of ``(shape, rate)`` inside a kernel (an optimisation's step).

    :func:`_theta`'s, but for the fit of the implicit gradient: none (the shape may move at every step, and a
    fit takes 0.1 to 15 ms), so the shape's path factor takes the series, within 1e-13 of mpmath as the fit is.
    A shape moved past :data:`MAX_SHAPE` is NaN here, so the replicate's draws and parameters are NaN from that
    step on (counted as diverged): beyond it a draw's implicit gradient takes ever more terms, and is NaN past
    about 1e11.
    """
    shape, rate = params[0], params[1]
    if not shape <= MAX_SHAPE:
        shape = np.nan
    ph, pl, qh, ql = fm._gamma_grad_constants(shape)
    # (math._no_fit()'s entries, its table a module constant: no allocation a step)
    return (shape, rate, 1.0 / rate, fm.digamma(shape), ph, pl, qh, ql, False, 1.0, 0.0, 0.0, 1.0, 1.0, _NO_FIT_TABLE)


@core
def _gamma_transform(eps, theta):
    return eps * theta[2]


@core
def _gamma_score_factor(j, eps, x, theta):
    if j == 0:
        return fm.log(eps) - theta[3]
    if j == 1:
        return (theta[0] - eps) * theta[2]
    if j == 2:
        return theta[0] - eps  # log_rate
    return theta[0] * (fm.log(eps) - theta[3])  # log_shape: shape times the shape's (no form that rounds better)


@core
def _gamma_shape_path(eps, theta):
    """``g(z, shape) / rate``: from the run's fit of the implicit gradient (the series outside it)."""
    fit = (theta[8], theta[9], theta[10], theta[11], theta[12], theta[13], theta[14])
    return fm._gamma_grad_from_fit(eps, theta[0], (theta[4], theta[5], theta[6], theta[7]), fit) * theta[2]


@core
def _gamma_path_factor(j, eps, x, theta):
    if j == 0:
        return _gamma_shape_path(eps, theta)
    if j == 1:
        return -x * theta[2]
    if j == 2:
        return -x  # log_rate
    return theta[0] * _gamma_shape_path(eps, theta)  # log_shape


# Weak derivative of Gamma(shape, rate) in rate: d q / d rate = (shape / rate - x) q = (shape / rate) (q - q'), q' the
# density of Gamma(shape + 1, rate) (q'(x) = rate x / shape q(x)), so
#   d/drate E[f] = shape / rate (E[f(x)] - E[f(x + y)]),  y ~ Exp(rate) independent of x
# (Gamma(shape + 1) = Gamma(shape) + Exp(1)). The positive side is the draw itself; coupled, the negative side adds
# y = -log(u1) / rate to it; decoupled, it is a fresh Gamma(shape + 1, rate) draw, (eps2 - log(u2)) / rate with eps2
# the second stream's Gamma(shape) draw.
# The shape's derivative, (log z - digamma(shape)) q, splits into two parts that are no laws fastgrad can draw from
# exactly (no closed form): the shape has no measure-valued estimator.


@core
def _gamma_weak_derivative(j, eps, x, u1, u2, u3, eps2, theta):
    if j == 0:
        return np.nan, np.nan, np.nan, np.nan  # never called: the shape has no weak derivative (weak_parameters)
    c = theta[0] * theta[2] if j == 1 else theta[0]  # log_rate (j = 2): rate * shape / rate
    return c, x, x - fm.log(u1) * theta[2], (eps2 - fm.log(u2)) * theta[2]


@serial
def _sample_grads(z, shape):
    out = np.empty(z.size)
    for i in range(z.size):
        out[i] = fm.gamma_sample_grad(z[i], shape)
    return out


# --- exact expectations ---------------------------------------------------------------------


class GammaTerms(NoiseTerms):
    """``sum c * z**k * L**m * g**p`` over ``(k, m, p)``: ``L = log z - digamma(shape)``, ``g = dz/dshape``.

    The Gamma's factors and their products (what :mod:`fastgrad._analytic`'s
    estimator formulas multiply and add); :func:`_expectation` integrates them.
    """

    @classmethod
    def from_polynomial(cls, coefficients):
        """``sum c_k z**k``."""
        return cls({(k, 0, 0): float(c) for k, c in enumerate(coefficients)})

    @staticmethod
    def _times(key1, key2):
        return key1[0] + key2[0], key1[1] + key2[1], key1[2] + key2[2]

    def reflect(self):
        raise ValueError("the Gamma's noise is not symmetric: it has no antithetic reflection")

    def values(self, t, shape, digamma_shape):
        """Evaluate the sum at ``z = e**t`` for an array of ``t`` (``log z`` exact even where ``z`` underflows)."""
        z = np.exp(t)
        total = np.zeros_like(z)
        logs = t - digamma_shape
        grads = _sample_grads(z.ravel(), shape).reshape(z.shape) if any(p for _, _, p in self.terms) else None
        for (k, m, p), c in self.terms.items():
            term = c * z**k if k else np.full_like(z, c)
            if m:
                term = term * logs**m
            if p:
                term = term * grads**p
            total += term
        return total


def _breaks(shape):
    """Break points in ``t = log z`` for the quadrature: both tails to far below 1e-16 of the peak."""
    peak = math.log(shape)
    low = max(peak - 60.0 / shape - 10.0, -1e5)
    high = math.log(shape + 300.0 + 40.0 * math.sqrt(shape))
    width = 1.0 / math.sqrt(shape + 1.0)
    middle = peak + width * np.linspace(-12.0, 12.0, 49)
    points = np.concatenate([np.linspace(low, peak, 33), middle, np.linspace(peak, high, 33)])
    return np.unique(np.clip(points, low, high))


def _expectation(h, theta, q):
    """``E[h(x) q(z)]`` under Gamma(shape, rate), ``x = z / rate``, by quadrature over ``t = log z``."""
    shape, rate = float(theta[0]), float(theta[1])
    q = q if isinstance(q, GammaTerms) else GammaTerms.from_polynomial(q)
    h = Smooth.lift(h)
    digamma_shape = fm.digamma(shape)
    log_norm = math.lgamma(shape)

    def integrand(t):
        z = np.exp(t)
        return h.evaluate(z / rate) * q.values(t, shape, digamma_shape) * np.exp(shape * t - z - log_norm)

    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        return integrate(integrand, _breaks(shape))


def _coupled_cross(h, theta):
    """``E[h(x) h(x + y)]``, ``x ~ Gamma(shape, rate)``, ``y ~ Exp(rate)`` independent.

    For a built-in (``c x**j exp(i w x)`` terms) in closed form, term by term:
    ``E[x**p e**(i W x)] = (shape)_p (rate - i W)**-p (1 - i W / rate)**-shape``
    and ``E[y**n e**(i w y)] = n! rate / (rate - i w)**(n + 1)``, after
    expanding ``(x + y)**k`` binomially. Otherwise the inner expectation by
    120-node Gauss-Laguerre and the outer one by the quadrature over ``log z``.
    """
    shape, rate = float(theta[0]), float(theta[1])
    if isinstance(h, Smooth):
        t, w = gauss_rule("laguerre", 120)

        def inner(x):
            return np.sum(w * h.evaluate(x[..., None] + t / rate), axis=-1)

        return _expectation(Smooth(lambda x: h.evaluate(x) * inner(x), None), theta, (1.0,))

    def gamma_moment(p, omega):
        rising = math.prod(shape + i for i in range(p))
        return rising * (rate - 1j * omega) ** -p * (1.0 - 1j * omega / rate) ** -shape

    def exponential_moment(n, omega):
        return math.factorial(n) * rate / (rate - 1j * omega) ** (n + 1)

    total = 0j
    for (j, w1), c1 in h.terms.items():
        for (k, w2), c2 in h.terms.items():
            for m in range(k + 1):
                total += (complex(c1) * complex(c2) * math.comb(k, m) * gamma_moment(j + m, w1 + w2)
                          * exponential_moment(k - m, w2))  # fmt: skip
    return total.real


def _weak_moments(theta, h, j, coupled):
    """Mean and variance of one measure-valued value for the rate, ``c (h(x) - h(x'))``: quadrature, exact otherwise."""
    shape, rate = float(theta[0]), float(theta[1])
    c = shape / rate
    longer = GammaTerms({(1, 0, 0): 1.0 / shape})  # E_{shape + 1}[g(x)] = E_shape[g(x) z / shape]
    plus, minus = _expectation(h, theta, (1.0,)), _expectation(h, theta, longer)
    mean = c * (plus - minus)
    if not coupled:
        spread = [_expectation(h * h, theta, (1.0,)) - plus**2, _expectation(h * h, theta, longer) - minus**2]
        return mean, c * c * (spread[0] + spread[1])
    cross = _coupled_cross(h, theta)
    second = c * c * (_expectation(h * h, theta, (1.0,)) - 2.0 * cross + _expectation(h * h, theta, longer))
    return mean, second - mean * mean


def _analytic_factors(theta):
    shape, rate = float(theta[0]), float(theta[1])
    score = (GammaTerms({(0, 1, 0): 1.0}), GammaTerms({(0, 0, 0): shape / rate, (1, 0, 0): -1.0 / rate}))
    path = (GammaTerms({(0, 0, 1): 1.0 / rate}), GammaTerms({(1, 0, 0): -1.0 / rate**2}))
    return score, path


def _natural_factors(theta):
    shape, rate = float(theta[0]), float(theta[1])
    score = (GammaTerms({(0, 0, 0): shape, (1, 0, 0): -1.0}), GammaTerms({(0, 1, 0): shape}))  # log_rate, log_shape
    return score, (GammaTerms({(1, 0, 0): -1.0 / rate}), GammaTerms({(0, 0, 1): shape / rate}))


GAMMA = Family(
    name="gamma",
    parameters=("shape", "rate"),
    sample_noise=_gamma_noise,
    transform=_gamma_transform,
    score_factor=_gamma_score_factor,
    path_factor=_gamma_path_factor,
    analytic_factors=_analytic_factors,
    expectation=_expectation,
    noise_takes_theta=True,
    weak_derivative=_gamma_weak_derivative,
    weak_moments=_weak_moments,
    weak_parameters=("rate",),
    weak_note="the shape's derivative (log z - digamma(shape)) q splits into no two laws with a closed-form sampler",
    natural=(("log_rate", "rate"), ("log_shape", "shape")),  # (log_rate first: its j = 2 from before log_shape)
    natural_factors=_natural_factors,
    theta_of=_gamma_theta_of,
)


@register
@dataclass(frozen=True)
class Gamma:
    """The Gamma distribution with shape ``shape`` and rate ``rate`` (mean ``shape / rate``), as ``x = z / rate``.

    ``z`` is an exact unit-rate Gamma(shape) draw (Marsaglia and Tsang's
    method on fastgrad's streams). The pathwise gradient with respect to
    ``shape`` is the implicit reparameterisation gradient
    (:func:`fastgrad.math.gamma_sample_grad`), with respect to ``rate``
    ``-x / rate``.

    Parameters
    ----------
    shape : float
        Finite and > 0, at most 1e10. Below about 0.03 some draws lie below
        the smallest float64 and are 0: their score for ``shape``
        (``log z``) is then -inf, and ``nan_policy`` applies.
    rate : float
        Finite and > 0.

    Examples
    --------
    >>> import fastgrad as fg
    >>> r = fg.compare(fg.Gamma(2.0, 0.5), "square", n=10**6, seed=0)
    >>> round(r.pathwise.analytic_mean["shape"], 12)      # d/dshape E[x**2] = (2 shape + 1) / rate**2
    20.0
    """

    shape: float = 1.0
    rate: float = 1.0

    family = GAMMA
    name = "gamma"  # the command line's --dist

    def __post_init__(self):
        object.__setattr__(self, "shape", _real("shape", self.shape, positive=True))
        object.__setattr__(self, "rate", _real("rate", self.rate, positive=True))
        if self.shape > MAX_SHAPE:
            raise ValueError(
                f"shape must be at most {MAX_SHAPE:g}; got {self.shape!r} (the implicit gradient of a draw needs "
                "about 9 sqrt(shape) terms)"
            )
        check_draw_size(f"shape = {self.shape!r} and rate = {self.rate!r}", self.shape / self.rate)

    @property
    def parameters(self):
        """Parameter names, in gradient order: ``("shape", "rate")``."""
        return self.family.parameters

    @property
    def theta(self):
        """Kernel parameter vector ``(shape, rate, 1 / rate, digamma(shape), ...)`` (the rest: see above)."""
        return _theta(self.shape, self.rate)

    def to_dict(self):
        """JSON-ready description."""
        return {"family": "Gamma", "shape": self.shape, "rate": self.rate}
