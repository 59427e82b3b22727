"""Distributions ``q_theta`` whose parameters the gradients are taken with respect to.

A distribution family is described once, as a :class:`Family`: how to draw
its base noise from a random stream, how the noise maps to a draw
(``x = T(theta, eps)``), and, per parameter ``theta_j``, the two per-draw
factors the estimators multiply by:

* score factor   ``d log q_theta(x) / d theta_j``     (score function: ``f(x) * factor``)
* path factor    ``d T(theta, eps) / d theta_j``      (pathwise: ``f'(x) * factor``)

The compiled kernels are assembled from these scalar cores, so adding a
family means writing one :class:`Family` and the user-facing class around it.

For ``Normal(loc, scale)``, ``x = loc + scale * eps`` with ``eps ~ N(0, 1)``:

=========  =======================  ==============
parameter  score factor             path factor
=========  =======================  ==============
loc        ``eps / scale``          ``1``
scale      ``(eps**2 - 1) / scale`` ``eps``
=========  =======================  ==============
"""

import math
from dataclasses import dataclass, field, replace
from fractions import Fraction

import numpy as np

from fastgrad import math as fm
from fastgrad._analytic import bernoulli_expectation, exponential_expectation
from fastgrad._checks import check_draw_size, check_location_scale
from fastgrad._checks import real as _real
from fastgrad._checks import real_vector as _vector
from fastgrad._jit import core, serial
from fastgrad._simd import copysign, like, sqrt
from fastgrad.rng import normals_from_words, take_words, unit_closed_open, unit_open_closed

__all__ = ["DISTRIBUTIONS", "Bernoulli", "DiagNormal", "Exponential", "Normal"]


@dataclass(frozen=True)
class Family:
    """How a distribution family plugs into the kernels (internal).

    Attributes
    ----------
    name : str
        Registry key; part of every compiled kernel's cache key.
    parameters : tuple of str
        Parameter names, in the order of the parameter vector.
    sample_noise : compiled function ``(state, words, noise, scratch, m)``
        Fill ``noise[:m]`` with base noise from a stream. Called once per
        block of up to 512 draws; compiled once and shared by every kernel.
        With ``noise_takes_theta``, ``(state, words, noise, scratch, m, theta)``:
        noise whose law depends on the parameters (the Gamma's shape).
    transform : njit core ``(eps, theta) -> x``
    score_factor : njit core ``(j, eps, x, theta) -> d log q / d theta_j``
        ``theta`` here is the distribution's *kernel parameter vector*: the
        parameters in order, optionally followed by derived constants the
        cores need (computed once per run rather than once per draw).
    path_factor : njit core ``(j, eps, x, theta) -> d x / d theta_j``
    analytic_factors : callable ``theta -> (score, path)``, optional
        The two factors as polynomials (coefficient lists), one per
        parameter, for the exact reference values in :mod:`fastgrad._analytic`.
        The polynomials are in whichever variable the family's
        ``expectation`` understands: the noise ``eps`` for continuous
        families, the draw ``x`` for Bernoulli.
    expectation : callable ``(h, theta, q) -> E[h(x) q(.)]``, optional
        Exact expectation of an :class:`~fastgrad._analytic.ExpPoly` ``h`` of
        the draw times a polynomial ``q`` (see ``analytic_factors``).
    pathwise : bool
        Whether the pathwise estimator exists. ``False`` for discrete
        families, whose draws do not move smoothly with the parameters;
        ``path_factor`` is then never called.
    symmetric : bool
        Whether the noise law is symmetric (``-eps`` has the law of ``eps``), so
        that antithetic pairs ``(eps, -eps)`` are draws of ``q_theta``.
    weak_moments : callable ``(theta, h, j, coupled) -> (mean, variance)``, optional
        Exact mean and variance of one measure-valued value for an
        :class:`~fastgrad._analytic.ExpPoly` ``h`` (the built-in families'
        are in :mod:`fastgrad._analytic`).
    weak_derivative : njit core, optional
        ``(j, eps, x, u1, u2, u3, eps2, theta) -> (c, x_plus, x_coupled, x_decoupled)``:
        the measure-valued gradient ``d E[f] / d theta_j = c (E[f(x+)] - E[f(x-)])``
        from one draw's noise ``eps`` (and ``x``), three uniforms on (0, 1] and
        one more normal ``eps2``: the positive side, and the negative side
        coupled to it and independent of it. ``u2`` and ``eps2`` may serve
        only the independent side: runs without it give ``u2 = 1`` and
        ``eps2 = 0``. None: not implemented.
    weak_uniform : njit core ``u -> number``, optional
        What ``weak_derivative`` receives in place of each of its three
        uniforms ``u``: the Normal's and the Exponential's read only their
        logarithms, so they take ``fastgrad.math``'s log here and get ``log(u)``.
        The kernels compute it for a whole block in one loop (three words a
        draw, side by side), which LLVM vectorises: the logarithms cost a third
        of what they did inside the four-draw weak derivative (same operations,
        same bits). None: ``u`` itself.
    simd : bool
        Whether ``transform``, ``score_factor``, ``path_factor`` and
        ``weak_derivative`` are lane-generic: ``+ - * /``, :mod:`fastgrad.math`
        and :mod:`fastgrad._simd`'s primitives (``sqrt``, ``copysign``,
        ``where``; branches on ``j`` only), so that the kernels can run them on
        four draws at once (:mod:`fastgrad._simd` vectors), with the same
        operations, and so the same bits, as one draw at a time.
    noise_takes_theta : bool
        Whether ``sample_noise`` takes the kernel parameter vector as well.
    weak_parameters : tuple of str, optional
        The parameters ``weak_derivative`` serves, when not all of them (the
        Gamma's rate but not its shape); ``weak_note`` says why the others
        have none.
    natural : tuple of (str, str)
        Natural parameters ``(name, base)``: ``log_scale`` of ``scale``,
        ``log_rate`` of ``rate``, ``logits`` of ``p``. Their factors are the
        cores' own at ``j = len(parameters) + k`` (``eps**2 - 1``, not ``scale``
        times ``(eps**2 - 1) / scale``, which rounds differently), and
        ``natural_factors`` gives them for the exact references as
        ``analytic_factors`` does the parameters'. A run that asks for one
        uses the family's :func:`extended` twin (its own kernels), so runs
        that do not pay nothing for them.
    theta_of : njit core ``(params) -> theta``, optional
        The kernel parameter vector from the parameters' values (an array, in
        ``parameters`` order), the same numbers ``theta`` gives (the Gamma's
        without its per-run fit of the implicit gradient: the series instead):
        what lets an optimisation (:func:`fastgrad.optimize`) move the
        parameters inside a kernel. None: the family cannot be optimised yet.
    joint : :class:`Joint`, optional
        For a family whose draw reads several noise numbers at once and whose
        factors need all of them (Beta, Dirichlet): its whole-draw cores,
        which the vector-general filler runs in place of the per-component
        ones above (then unused).
    """

    name: str
    parameters: tuple
    sample_noise: object
    transform: object
    score_factor: object
    path_factor: object
    analytic_factors: object = field(default=None, compare=False)
    expectation: object = field(default=None, compare=False)
    pathwise: bool = True
    symmetric: bool = False
    weak_derivative: object = field(default=None, compare=False)
    weak_uniform: object = field(default=None, compare=False)
    simd: bool = False
    weak_moments: object = field(default=None, compare=False)
    noise_takes_theta: bool = False
    weak_parameters: tuple = None
    weak_note: str = ""
    natural: tuple = ()
    natural_factors: object = field(default=None, compare=False)
    theta_of: object = field(default=None, compare=False)
    joint: object = field(default=None, compare=False)


@dataclass(frozen=True)
class Joint:
    """How a family whose draw reads several noise numbers at once plugs into the kernels (internal).

    Attributes
    ----------
    width : (int, int)
        Noise numbers per draw, ``a * dim + b`` for ``(a, b)``.
    draw_size : (int, int)
        Components of a draw (what ``f`` takes), the same way; ``(0, 1)`` is a
        scalar draw, for which ``f`` is a function of a number.
    sample : compiled ``(state, noise, m, theta)``
        Fill the noise of ``m`` draws, a row of ``width`` numbers each.
    draw : core ``(noise, base, theta, xs)``
        The draw whose row starts at ``noise[base]``, into ``xs``.
    scores : core ``(noise, base, xs, theta, q, row)``
        ``q[row, r]``: the score of every (parameter, component) ``r = j * dim + i``.
    paths : core ``(noise, base, xs, grads, theta, active, dim, q, row)``
        ``q[row, r]`` for the parameters ``j`` in ``active``: the pathwise
        value, the gradient of ``f`` (``grads``) times ``dx / dtheta_r``.
    moments : callable ``(distribution, function, specs, coefficients, wrt)``
        Exact mean and per-draw variance of every specification (see
        :func:`fastgrad._analytic.variant_moments` for the form), or None.
    weak : core ``(j, i, noise, base, xs, u1, u2, u3, theta)``, optional
        For a scalar draw: ``(c, x_plus, x_coupled, x_decoupled)`` of the
        measure-valued gradient of (parameter ``j``, component ``i``), from
        the draw and three uniforms on (0, 1] (the Categorical's). With
        ``weak_prepare``, for a vector draw whose sides differ from it in
        component ``i`` only: the core takes one more argument, the prepared
        vector, and returns that component's values on the sides (the
        MultivariateNormal's ``loc``).
    weak_prepare : core ``(noise, base, xs, theta, out)``, optional
        What a vector draw's sides share, written into ``out`` (D numbers)
        once a draw before ``weak`` is called for its components.
    sizes : core ``(j, dim)``, optional
        Components of parameter ``j`` where they differ from ``dim`` (the
        MultivariateNormal's ``scale_tril`` has ``dim (dim + 1) / 2``): the
        pairs ``r`` above are then numbered ``o_j + i``, ``o_j`` the sizes of
        the parameters before ``j`` summed.
    mirrored : (core, core), optional
        For noise symmetric about 0, the antithetic draw (noise ``-eps``):
        ``(noise, base, theta, xb)`` writes it into ``xb``;
        ``(noise, base, xb, gradb, theta, active, dim, scores, paths, q)``
        its scores into ``q[1]`` (where ``scores``) and its pathwise values
        into ``q[3]`` (where ``paths``; ``gradb`` its gradient of ``f``).
    noise_follows_theta : bool
        Whether the noise's law depends on the parameters (the Categorical's
        categories, the Dirichlet's Gamma draws; not the MultivariateNormal's
        normals): an optimisation then draws each step's noise at the step's
        parameters, not a block's at once.
    theta_into : core ``(params, theta)``, optional
        Write the kernel parameters of the parameters' values ``params`` (the
        ``R`` (parameter, component) pairs in order) into ``theta``'s arrays,
        in place: the same numbers ``theta`` gives (the implicit gradient's
        series for a fit), what lets an optimisation move the parameters
        inside a kernel. None: the family cannot be optimised yet.
    """

    width: tuple
    draw_size: tuple
    sample: object
    draw: object
    scores: object
    paths: object
    moments: object = None
    weak: object = None
    sizes: object = None
    mirrored: object = None
    weak_prepare: object = None
    noise_follows_theta: bool = True
    theta_into: object = None


@serial
def _unused_noise(state, words, noise, scratch, m, theta):  # (the scalar fillers' hook: a joint family has none)
    noise[:m] = np.nan


@core
def _unused_factor(j, eps, x, theta):  # (the per-component hooks: a joint family's draw has none)
    return np.nan


@core
def _unused_transform(eps, theta):
    return np.nan


def joint_family(name, parameters, joint, **options):
    """Return the :class:`Family` of a joint family: its whole-draw cores, and no per-component ones."""
    return Family(name=name, parameters=parameters, sample_noise=_unused_noise, transform=_unused_transform,
                  score_factor=_unused_factor, path_factor=_unused_factor, noise_takes_theta=True, joint=joint,
                  weak_derivative=joint.weak, **options)  # fmt: skip


@serial  # compiled once and cached: it does not depend on the function (see _kernels)
def _normal_noise(state, words, noise, scratch, m):
    take_words(state, words, m)
    normals_from_words(state, words, noise, scratch, m)


# Kernel parameter vector of Normal: [loc, scale, 1 / scale]. The reciprocal
# is computed once per run: a division per draw costs more than the rest of
# the per-draw arithmetic.


@core
def location_scale_transform(eps, theta):
    """``x = loc + scale * eps`` (``theta = (loc, scale, ...)``): every location-scale family's transform."""
    return theta[0] + theta[1] * eps


@core
def _normal_score_factor(j, eps, x, theta):
    if j == 0:
        return eps * theta[2]
    if j == 1:
        return (eps * eps - 1.0) * theta[2]
    return eps * eps - 1.0  # log_scale


@core
def location_scale_path_factor(j, eps, x, theta):
    """``dx/dloc = 1``, ``dx/dscale = eps``, ``dx/dlog_scale = scale eps``: every location-scale family's."""
    if j == 0:
        return like(1.0, eps)  # 1.0, or four of it when the kernel runs four draws at once
    if j == 1:
        return eps
    return theta[1] * eps


# Weak derivatives of N(loc, scale**2) (Pflug 1996; Mohamed et al. 2020, section 6):
#   d/dloc   E[f] = 1 / (scale sqrt(2 pi)) (E[f(loc + scale R)] - E[f(loc - scale R')]),  R, R' ~ Rayleigh(1)
#   d/dscale E[f] = 1 / scale (E[f(loc + scale M)] - E[f(loc + scale eps)]),  M ~ double-sided Maxwell
# R = sqrt(-2 log u) (inversion). M = sign(eps) sqrt(eps**2 - 2 log u): |M| is chi with 3 degrees of
# freedom (chi2_1 + chi2_2), its sign independent of |M|, so M has density z**2 phi(z). Coupled, the
# loc sides share R and the scale sides share eps; decoupled, the negative sides use u2 and eps2.
# The cores receive log(u1), log(u2), log(u3) (weak_uniform), computed by the kernels a block at a time.

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@core
def _normal_weak_derivative(j, eps, x, log_u1, log_u2, log_u3, eps2, theta):
    if j == 0:
        r1 = sqrt(-2.0 * log_u1)
        r2 = sqrt(-2.0 * log_u2)
        return theta[2] * _INV_SQRT_2PI, theta[0] + theta[1] * r1, theta[0] - theta[1] * r1, theta[0] - theta[1] * r2
    maxwell = copysign(sqrt(eps * eps - 2.0 * log_u3), eps)
    c = theta[2] if j == 1 else 1.0  # d/dlog_scale = scale d/dscale: the same sides, c = scale / scale
    return c, theta[0] + theta[1] * maxwell, x, theta[0] + theta[1] * eps2


@core
def location_scale_theta(params):
    """``(loc, scale, 1 / scale)``: every location-scale family's kernel parameters."""
    return params[0], params[1], 1.0 / params[1]


def _normal_analytic_factors(theta):
    scale = theta[1]
    score = ([0.0, 1.0 / scale], [-1.0 / scale, 0.0, 1.0 / scale])
    path = ([1.0], [0.0, 1.0])
    return score, path


def location_scale_natural_factors(theta):
    """``log_scale``: score ``eps**2 - 1`` (Normal; a Laplace's is its own), path ``scale eps``."""
    return ([-1, 0, 1],), ([0, theta[1]],)


NORMAL = Family(
    name="normal",
    parameters=("loc", "scale"),
    sample_noise=_normal_noise,
    transform=location_scale_transform,
    score_factor=_normal_score_factor,
    path_factor=location_scale_path_factor,
    analytic_factors=_normal_analytic_factors,
    expectation=lambda h, theta, q: h.normal_expectation(theta[0], theta[1], q),
    symmetric=True,
    weak_derivative=_normal_weak_derivative,
    weak_uniform=fm._log_normal,
    simd=True,
    natural=(("log_scale", "scale"),),
    natural_factors=location_scale_natural_factors,
    theta_of=location_scale_theta,
)

# --- Exponential(rate): x = eps / rate, eps ~ Exp(1) ------------------------------
#
# Kernel parameter vector: (rate, 1 / rate).
#   log q(x) = log(rate) - rate x:   d/drate = 1/rate - x = (1 - eps) / rate
#   x = eps / rate:                   dx/drate = -eps / rate**2 = -x / rate


@serial
def _exponential_noise(state, words, noise, scratch, m):
    """Exp(1) by inversion: ``-log(u)`` with ``u`` uniform on (0, 1] (53 bits; at most 36.7)."""
    take_words(state, words, m)
    for i in range(m):
        noise[i] = -fm._log_normal(unit_open_closed(words[i]))


@core
def _exponential_transform(eps, theta):
    return eps * theta[1]


@core
def _exponential_score_factor(j, eps, x, theta):
    if j == 0:
        return (1.0 - eps) * theta[1]
    return 1.0 - eps  # log_rate


@core
def _exponential_path_factor(j, eps, x, theta):
    if j == 0:
        return -x * theta[1]
    return -x  # log_rate


# Weak derivative of Exp(rate): d q / d rate = (1 / rate) (Exp(rate) density - Gamma(2, rate) density), so
#   d/drate E[f] = 1 / rate (E[f(x)] - E[f(x + y)]),  x, y ~ Exp(rate) independent (their sum is Gamma(2, rate)).
# The positive side is the draw itself; coupled, the negative side adds y = -log(u1) / rate to it;
# decoupled, it is a fresh Gamma(2, rate) draw, (-log(u2) - log(u3)) / rate. The core receives the
# logarithms (weak_uniform), as the Normal's does.


@core
def _exponential_weak_derivative(j, eps, x, log_u1, log_u2, log_u3, eps2, theta):
    coupled = x + -log_u1 * theta[1]
    decoupled = (-log_u2 - log_u3) * theta[1]
    return theta[1] if j == 0 else 1.0, x, coupled, decoupled


@core
def rate_theta(params):
    """``(rate, 1 / rate)``: the Exponential's and the Poisson's kernel parameters."""
    return params[0], 1.0 / params[0]


def _exponential_analytic_factors(theta):
    rate = theta[0]
    return ([1 / rate, -1 / rate],), ([0.0, -1 / rate**2],)


def _exponential_natural_factors(theta):
    return ([1, -1],), ([0.0, -1 / theta[0]],)  # log_rate: 1 - eps, and -x = -eps / rate


EXPONENTIAL = Family(
    name="exponential",
    parameters=("rate",),
    sample_noise=_exponential_noise,
    transform=_exponential_transform,
    score_factor=_exponential_score_factor,
    path_factor=_exponential_path_factor,
    analytic_factors=_exponential_analytic_factors,
    expectation=lambda h, theta, q: exponential_expectation(h, theta[0], q),
    weak_derivative=_exponential_weak_derivative,
    weak_uniform=fm._log_normal,
    simd=True,
    natural=(("log_rate", "rate"),),
    natural_factors=_exponential_natural_factors,
    theta_of=rate_theta,
)


# --- Bernoulli(p): x = 1 if u < p else 0, u uniform on [0, 1) -----------------------
#
# Kernel parameter vector: (p, 1 / p, 1 / (1 - p)).
#   log q(x) = x log p + (1 - x) log(1 - p):   d/dp = x / p - (1 - x) / (1 - p)
# No pathwise estimator: x jumps between 0 and 1, dx/dp is 0 almost everywhere.


@serial
def _bernoulli_noise(state, words, noise, scratch, m):
    """Uniforms on [0, 1) (53 bits): ``P(u < p)`` is ``p`` rounded up to a multiple of 2**-53."""
    take_words(state, words, m)
    for i in range(m):
        noise[i] = unit_closed_open(words[i])


@core
def _bernoulli_transform(eps, theta):
    return 1.0 if eps < theta[0] else 0.0


@core
def _bernoulli_score_factor(j, eps, x, theta):
    if j == 0:
        return x * theta[1] - (1.0 - x) * theta[2]
    return x - theta[0]  # logits: d/dlogits log q = x - p


@core
def _bernoulli_path_factor(j, eps, x, theta):
    return np.nan  # never called: the family has no pathwise estimator


# Weak derivative of Bernoulli(p): d/dp E[f] = f(1) - f(0), two point masses: c = 1, x+ = 1, x- = 0
# (coupled and decoupled alike: neither side is random).


@core
def _bernoulli_weak_derivative(j, eps, x, u1, u2, u3, eps2, theta):
    return 1.0 if j == 0 else theta[0] * (1.0 - theta[0]), 1.0, 0.0, 0.0  # logits: dp/dlogits = p (1 - p)


@core
def _bernoulli_theta(params):
    return params[0], 1.0 / params[0], 1.0 / (1.0 - params[0])


def _bernoulli_analytic_factors(theta):
    p = Fraction(theta[0])
    return ([-1 / (1 - p), 1 / p + 1 / (1 - p)],), None


def _bernoulli_natural_factors(theta):
    return ([-Fraction(theta[0]), 1],), None  # logits: x - p


BERNOULLI = Family(
    name="bernoulli",
    parameters=("p",),
    sample_noise=_bernoulli_noise,
    transform=_bernoulli_transform,
    score_factor=_bernoulli_score_factor,
    path_factor=_bernoulli_path_factor,
    analytic_factors=_bernoulli_analytic_factors,
    expectation=lambda h, theta, q: bernoulli_expectation(h, theta[0], q),
    pathwise=False,
    weak_derivative=_bernoulli_weak_derivative,
    natural=(("logits", "p"),),
    natural_factors=_bernoulli_natural_factors,
    theta_of=_bernoulli_theta,
)


def extended(family):
    """Return the family with its natural parameters after its own (``loc, scale, log_scale``), as ``name+natural``.

    The same cores: the kernels call them with ``j`` up to the longer list.
    """
    names = tuple(name for name, _ in family.natural)
    base = family.analytic_factors

    def analytic_factors(theta):
        score, path = base(theta)
        natural_score, natural_path = family.natural_factors(theta)
        return tuple(score) + tuple(natural_score), None if path is None else tuple(path) + tuple(natural_path)

    weak = family.weak_parameters
    if weak is not None:
        weak = weak + tuple(name for name, of in family.natural if of in weak)
    return replace(
        family,
        name=family.name + "+natural",
        parameters=family.parameters + names,
        analytic_factors=analytic_factors,
        weak_parameters=weak,
        natural=(),
    )


#: Every family the kernels know, by name (with the ``+natural`` twins).
FAMILIES = {f.name: f for family in (NORMAL, EXPONENTIAL, BERNOULLI) for f in (family, extended(family))}


#: dtheta / d(natural parameter), from the parameter's value: the chain rule of the exact references.
NATURAL_DERIVATIVES = {
    "log_scale": lambda v: v,
    "log_rate": lambda v: v,
    "log_shape": lambda v: v,
    "log_concentration": lambda v: v,
    "log_a": lambda v: v,
    "log_b": lambda v: v,
    "logits": lambda p: p * (1 - p),
}


class NaturalView:
    """A distribution seen with its natural parameters too (internal): the same draws, the extended family.

    What :class:`~fastgrad.estimators.Plan` runs when ``wrt`` names a
    natural parameter; it forwards everything else (``to_dict``, ``theta``,
    ``loc``, ...) to the distribution, so fingerprints, checkpoints and
    printed tables are the distribution's own.
    """

    def __init__(self, distribution):
        self.distribution = distribution
        self.family = FAMILIES[distribution.family.name + "+natural"]

    @property
    def parameters(self):
        """The distribution's parameters, then the natural ones."""
        return self.family.parameters

    @property
    def parameter_sizes(self):
        """Components of each parameter, the natural ones' those of their parameters (where the family says)."""
        sizes = getattr(self.distribution, "parameter_sizes", None)
        if sizes is None:
            raise AttributeError("parameter_sizes")
        base = self.distribution.family
        return tuple(sizes) + tuple(sizes[base.parameters.index(of)] for _, of in base.natural)

    def natural_value(self, name):
        """Return a natural parameter's value (a float, or a tuple per component): ``log(scale)``, ``logit(p)``."""
        if hasattr(self.distribution, "natural_value"):  # (the Categorical's logits: log(probs))
            return self.distribution.natural_value(name)
        of = dict(self.distribution.family.natural)[name]
        value = getattr(self.distribution, of)

        def one(v):
            return math.log(v / (1.0 - v)) if name == "logits" else math.log(v)

        return tuple(one(v) for v in value) if isinstance(value, tuple) else one(value)

    def __getattr__(self, name):
        if name in ("distribution", "family"):  # (not set yet: unpickling)
            raise AttributeError(name)
        if name in dict(self.distribution.family.natural):
            return self.natural_value(name)
        return getattr(self.distribution, name)

    def __eq__(self, other):
        return isinstance(other, NaturalView) and other.distribution == self.distribution

    def __hash__(self):
        return hash((NaturalView, self.distribution))

    def __repr__(self):
        return repr(self.distribution)


def draws_vectors(distribution):
    """Whether ``f`` takes a vector (DiagNormal, Dirichlet) rather than a number (a Categorical's draw is one)."""
    joint = distribution.family.joint
    if joint is not None:
        return joint.draw_size != (0, 1)
    return hasattr(distribution, "dim")


def natural_names(distribution):
    """Return the natural parameters ``wrt`` may name for ``distribution`` (``("log_scale",)`` for a Normal)."""
    return tuple(name for name, _ in distribution.family.natural)


def with_natural(distribution, wrt):
    """``distribution``, or its :class:`NaturalView` when ``wrt`` names a natural parameter."""
    if isinstance(distribution, NaturalView) or not wrt:
        return distribution
    if any(name in natural_names(distribution) for name in wrt):
        return NaturalView(distribution)
    return distribution


@dataclass(frozen=True)
class LocationScale:
    """What every location-scale family's class shares (``x = loc + scale * eps``): fields, checks, ``theta``.

    A subclass sets ``family`` and ``name`` (its ``--dist``) and a docstring.
    """

    loc: float = 0.0
    scale: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "loc", _real("loc", self.loc))
        object.__setattr__(self, "scale", _real("scale", self.scale, positive=True))
        check_location_scale("loc", self.loc, "scale", self.scale)
        check_draw_size(f"loc = {self.loc!r} and scale = {self.scale!r}", max(abs(self.loc), self.scale))

    @property
    def parameters(self):
        """Parameter names, in gradient order: ``("loc", "scale")``."""
        return self.family.parameters

    @property
    def theta(self):
        """Kernel parameter vector ``(loc, scale, 1 / scale)``.

        A tuple, not an array: passed by value, it stays in registers, while
        LLVM must reload an array's elements inside loops that store to other
        arrays (it cannot prove they do not alias). Measured: 20 % faster
        seed comparison, same bits.
        """
        return (self.loc, self.scale, 1.0 / self.scale)

    def to_dict(self):
        """JSON-ready description."""
        return {"family": type(self).__name__, "loc": self.loc, "scale": self.scale}


@dataclass(frozen=True)
class Normal(LocationScale):
    """The normal distribution ``N(loc, scale**2)``, reparameterised as ``x = loc + scale * eps``.

    Parameters
    ----------
    loc : float
        Mean; any finite real number.
    scale : float
        Standard deviation; finite and > 0.

    Examples
    --------
    >>> import fastgrad as fg
    >>> fg.Normal(2.0, 1.0)
    Normal(loc=2.0, scale=1.0)
    >>> fg.Normal(0.0, -1.0)
    Traceback (most recent call last):
    ...
    ValueError: scale must be positive; got -1.0
    """

    family = NORMAL
    name = "normal"  # the command line's --dist


@dataclass(frozen=True)
class Exponential:
    """The exponential distribution with rate ``rate`` (mean ``1 / rate``), as ``x = eps / rate``.

    ``eps ~ Exp(1)`` is drawn by inversion, ``-log(u)`` with ``u`` uniform on
    (0, 1] with 53 random bits (so no draw exceeds 36.7 / rate; the
    probability beyond is 1e-16).

    Parameters
    ----------
    rate : float
        Finite and > 0.

    Examples
    --------
    >>> import fastgrad as fg
    >>> fg.Exponential(2.0)
    Exponential(rate=2.0)
    """

    rate: float = 1.0

    family = EXPONENTIAL
    name = "exponential"  # the command line's --dist

    def __post_init__(self):
        object.__setattr__(self, "rate", _real("rate", self.rate, positive=True))
        check_draw_size(f"rate = {self.rate!r}", 1.0 / self.rate)

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
        return {"family": "Exponential", "rate": self.rate}


@dataclass(frozen=True)
class Bernoulli:
    """The Bernoulli distribution: ``x = 1`` with probability ``p``, else ``0``.

    Only the score-function estimator exists: the draw jumps between 0 and
    1, so it has no derivative with respect to ``p`` to follow (asking for
    the pathwise estimator is an error that says so).

    Parameters
    ----------
    p : float
        Strictly between 0 and 1 (the score ``x/p - (1-x)/(1-p)`` is
        undefined at the ends).

    Examples
    --------
    >>> import fastgrad as fg
    >>> g = fg.estimate(fg.Bernoulli(0.3), "square", n=10**6, estimator="score", seed=0)
    >>> abs(g.mean["p"] - 1.0) < 5 * g.stderr["p"]   # d/dp E[x**2] = d/dp p = 1
    True
    """

    p: float = 0.5

    family = BERNOULLI
    name = "bernoulli"  # the command line's --dist

    def __post_init__(self):
        value = _real("p", self.p)
        if not 0.0 < value < 1.0:
            raise ValueError(f"p must be strictly between 0 and 1; got {value!r}")
        if value < 2.0**-53:  # (above, every float below 1 is on the grid's scale: 1 - 2**-53 is the largest)
            raise ValueError(
                f"p must be at least 2**-53 (1.1e-16); got {value!r}: the sampler compares p with uniforms on a "
                "2**-53 grid, so P(x = 1) is p rounded up to that grid, off by up to 2**-53 / p relative"
            )
        object.__setattr__(self, "p", value)

    @property
    def parameters(self):
        """Parameter names: ``("p",)``."""
        return self.family.parameters

    @property
    def theta(self):
        """Kernel parameter vector ``(p, 1 / p, 1 / (1 - p))``."""
        return (self.p, 1.0 / self.p, 1.0 / (1.0 - self.p))

    def to_dict(self):
        """JSON-ready description."""
        return {"family": "Bernoulli", "p": self.p}


@dataclass(frozen=True, eq=False)
class DiagNormal:
    """A multivariate normal with independent components: ``x_i = loc_i + scale_i * eps_i``.

    Gradients are taken with respect to every ``loc_i`` and ``scale_i``; results
    hold one value per component (arrays), and the totals over components.

    Parameters
    ----------
    loc, scale : sequences of float, the same length D >= 1
        Finite means, and finite standard deviations > 0.

    Examples
    --------
    >>> import fastgrad as fg
    >>> fg.DiagNormal([0.0, 1.0], [1.0, 2.0])
    DiagNormal(loc=[0.0, 1.0], scale=[1.0, 2.0])
    """

    loc: tuple
    scale: tuple

    family = NORMAL  # per component: a Normal's math, used for every component
    name = "diagnormal"

    def __post_init__(self):
        loc = _vector("loc", self.loc)
        scale = _vector("scale", self.scale, positive=True)
        if len(loc) != len(scale):
            raise ValueError(f"loc and scale must have the same length; got {len(loc)} and {len(scale)}")
        worst = max(range(len(loc)), key=lambda i: math.ulp(loc[i]) / scale[i])  # (one warning: the worst component)
        for i in range(len(loc)):
            check_location_scale(f"loc[{i}]", loc[i], f"scale[{i}]", scale[i], warn=i == worst)
        size = [max(abs(a), b) for a, b in zip(loc, scale, strict=True)]
        k = size.index(min(size))  # (one warning: the smallest component)
        check_draw_size(f"loc[{k}] = {loc[k]!r} and scale[{k}] = {scale[k]!r}", size[k])
        object.__setattr__(self, "loc", loc)
        object.__setattr__(self, "scale", scale)

    @property
    def dim(self):
        """Number of components D."""
        return len(self.loc)

    @property
    def parameters(self):
        """Parameter names: ``("loc", "scale")``, each a vector of D components."""
        return self.family.parameters

    @property
    def theta(self):
        """Kernel parameters: a (3, D) array of loc, scale and 1 / scale."""
        loc = np.array(self.loc)
        scale = np.array(self.scale)
        return np.ascontiguousarray(np.stack([loc, scale, 1.0 / scale]))

    def component(self, i):
        """Component ``i`` as a :class:`Normal`."""
        return Normal(self.loc[i], self.scale[i])

    def to_dict(self):
        """JSON-ready description."""
        return {"family": "DiagNormal", "loc": list(self.loc), "scale": list(self.scale)}

    def __eq__(self, other):
        return isinstance(other, DiagNormal) and (self.loc, self.scale) == (other.loc, other.scale)

    def __hash__(self):
        return hash((self.loc, self.scale))

    def __repr__(self):
        def short(values):
            if len(values) <= 6:
                return "[" + ", ".join(repr(v) for v in values) + "]"
            return "[" + ", ".join(repr(v) for v in values[:3]) + f", ... ({len(values)} values)]"

        return f"DiagNormal(loc={short(self.loc)}, scale={short(self.scale)})"


#: The user-facing distribution classes, one per scalar family (the API and the CLI read this).
DISTRIBUTIONS = [Normal, Exponential, Bernoulli]


def register(cls):
    """Add a scalar distribution class and its :class:`Family` to the registry; return the class.

    What a new family's module calls (see ``docs/families.md``): the kernels
    find its cores by ``cls.family.name``, the command line offers
    ``--dist cls.name`` with an option per parameter, and ``merge`` and
    checkpoints rebuild it from ``to_dict()`` by class name.
    """
    if cls.family.name in FAMILIES or cls in DISTRIBUTIONS:
        raise ValueError(f"a family named {cls.family.name!r} is already registered")
    FAMILIES[cls.family.name] = cls.family
    if cls.family.natural:
        FAMILIES[cls.family.name + "+natural"] = extended(cls.family)
    DISTRIBUTIONS.append(cls)
    return cls
