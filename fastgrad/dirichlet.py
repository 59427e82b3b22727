"""Dirichlet(concentration) and Beta(a, b): draws made of Gamma draws, with implicit reparameterisation.

A Dirichlet draw is ``x_i = g_i / S``, ``S = g_1 + ... + g_K``, with ``g_i`` independent
unit-rate Gamma(``alpha_i``) draws (:func:`fastgrad.rng.standard_gamma`'s exact method,
the K draws of one Dirichlet draw in a row of the stream). A Beta(a, b) draw is the first
component of a Dirichlet(a, b) draw. These are *joint* families (``Family.joint``): the
draw reads all K numbers of its noise row at once, which the vector-general filler runs.

From ``log q(x) = sum_i (alpha_i - 1) log x_i + lgamma(alpha_0) - sum_i lgamma(alpha_i)``,
``alpha_0 = sum_i alpha_i``, per concentration ``alpha_k``:

* score  ``log x_k - digamma(alpha_k) + digamma(alpha_0)`` (computed as ``log g_k - log S``
  plus the run's constant ``digamma(alpha_0) - digamma(alpha_k)``);
* path   ``dx_i / dalpha_k = (delta_ik - x_i) g'_k / S`` with ``g'_k = dg_k / dalpha_k`` the
  implicit reparameterisation gradient of the Gamma draw
  (:func:`fastgrad.math.gamma_sample_grad`), so that the pathwise value is the product
  with the gradient of ``f``: ``(g'_k / S) (df/dx_k - sum_i x_i df/dx_i)``.

For the Beta, ``a = alpha_1`` and ``b = alpha_2``, and ``f`` sees ``x = x_1`` only (its
gradient has no second component): ``dx/da = (1 - x) g'_1 / S``, ``dx/db = -x g'_2 / S``.

The noise is not symmetric (no antithetic pairs), and fastgrad has no weak derivative for
a concentration (its score ``log x_k - ...`` splits into no two laws with a closed-form
sampler): score-function variants and the pathwise estimator.

Exact reference values (:func:`noise_moments`): one component at a time
(:func:`component_moments`), a Beta rule in the logit of ``x_k`` and a Gamma rule for the sum
``S``, for every built-in of a Beta (and a Dirichlet of K = 2) and for polynomial functions at
any K up to 1000; within 2e-11 of closed forms in 30-digit arithmetic (moments of the Dirichlet
tilted by monomials) for concentrations from 1e-3 to 1e3. Other functions (``sum_cos``) at
K = 3: a tensor-product Gauss-Legendre rule over the K Gamma draws in ``t_i = log g_i``
(about 1e-6 relative for concentrations of 0.4 and more; docs/families.md).
"""

import functools
import math
from dataclasses import dataclass

import numpy as np

from fastgrad import math as fm
from fastgrad._analytic import gauss_rule
from fastgrad._checks import check_draw_size
from fastgrad._checks import real as _real
from fastgrad._checks import real_vector as _vector
from fastgrad._jit import inline_core, serial
from fastgrad.distributions import Joint, joint_family, register
from fastgrad.gamma import MAX_SHAPE, _sample_grads
from fastgrad.rng import _gamma_rows

__all__ = ["Beta", "Dirichlet", "beta_sample_grad"]

#: Most components whose exact reference values are computed for any built-in (a K-dimensional quadrature).
MAX_EXACT_COMPONENTS = 3
#: Most components whose exact reference values are computed for a polynomial function (sum_of_squares, quadratic,
#: linear_form): two-dimensional integrals per component (:func:`component_moments`, about 20 ms a component).
MAX_EXACT_POLYNOMIAL = 1000
#: Gauss-Legendre nodes per piece of each Gamma draw's rule in the K-dimensional rule (K = 3, for functions that are not
#: polynomials; the rest go one component at a time). Measured (the means and variances of score, pathwise and
#: score+loo(4), sum_of_squares or cos): from 3 to 4 a piece, K = 3 moved by at most 4.2e-4 and from 4 to 6 by at most
#: 1.7e-6 (Dirichlet([0.4, 2, 30])). 4 a piece: 4.4 million points (1.0 s, 0.86 GB) where 6 took 15 million (2.7 s,
#: 2.4 GB; peak resident sizes, in every process that needs it, MPI ranks included).
NODES_PER_PIECE = {3: 4}
#: Smallest concentration the K-dimensional rule is used at: against the component engine on Dirichlet([a, 2, 5])
#: with sum_of_squares (means and variances of score and pathwise) it was 3.5e-2 off at a = 0.05, 9.6e-4 at 0.1,
#: 2.3e-5 at 0.2, 2.1e-6 at 0.3, 7.4e-7 at 0.5 and 3.5e-7 at 1: it does not resolve a small concentration's draws.
MIN_GRID_CONCENTRATION = 0.5


# --- the cores: one row of K Gamma draws ------------------------------------------------
#
# Kernel parameter vector (Dirichlet and Beta alike): alpha, digamma(alpha_0) - digamma(alpha), digamma(alpha) and
# digamma(alpha + 1) in two parts each for the implicit gradient, then each component's fit of it (_theta): arrays of
# K, and the fits' tables in one (K, pieces, 8) array.


@serial
def _rows_noise(state, noise, m, theta):
    _gamma_rows(state, theta[0], noise, m)


@inline_core
def _row_sum(noise, base, width):
    total = noise[base]
    for k in range(1, width):
        total += noise[base + k]
    return total


@inline_core
def _draw(noise, base, theta, xs):
    total = _row_sum(noise, base, theta[0].size)
    for i in range(xs.size):
        xs[i] = noise[base + i] / total


@inline_core
def _scores(noise, base, xs, theta, q, row):
    size = theta[0].size
    log_total = fm.log(_row_sum(noise, base, size))
    natural = q.shape[1] > size  # (the +natural twin: each log-concentration after the concentrations)
    for k in range(size):
        q[row, k] = (fm.log(noise[base + k]) - log_total) + theta[1][k]
        if natural:
            q[row, size + k] = theta[0][k] * q[row, k]


@inline_core
def _paths(noise, base, xs, grads, theta, active, dim, q, row):
    size = theta[0].size
    total = _row_sum(noise, base, size)
    dot = 0.0
    for i in range(xs.size):
        dot += xs[i] * grads[i]
    for j in active:
        for i in range(dim):
            k = j * dim + i
            c = k if k < size else k - size  # (a log-concentration: its concentration's value times it)
            own = grads[c] if c < xs.size else 0.0
            constants = (theta[2][c], theta[3][c], theta[4][c], theta[5][c])
            fit = (theta[6][c] != 0.0, theta[7][c], theta[8][c], theta[9][c], theta[10][c], theta[11][c],
                   theta[13][c, : int(theta[12][c])])  # fmt: skip
            grad = fm._gamma_grad_from_fit(noise[base + c], theta[0][c], constants, fit)
            value = grad / total * (own - dot)
            q[row, k] = value if k < size else theta[0][c] * value


@inline_core
def _theta_into(params, theta):
    """Write the kernel parameters of concentrations ``params`` into ``theta`` (an optimisation's step).

    :func:`_theta`'s numbers but for two: the concentrations' total is summed
    in order (``math.fsum`` there; the same for two), and there is no fit of
    the implicit gradient (the parameters move at every step, and a fit
    takes 0.1 to 15 ms): every draw takes the series, within 1e-13 of
    mpmath as the fit is. A concentration moved past :data:`MAX_SHAPE` is
    NaN here (as the Gamma's shape: the replicate diverges).
    """
    size = theta[0].size
    total = 0.0
    for k in range(size):
        total += params[k]
    digamma_total = fm.digamma(total)
    for k in range(size):
        a = params[k] if params[k] <= MAX_SHAPE else np.nan
        theta[0][k] = a
        theta[1][k] = digamma_total - fm.digamma(a)
        theta[2][k], theta[3][k], theta[4][k], theta[5][k] = fm._gamma_grad_constants(a)
        # (math._no_fit()'s scalars, and no pieces)
        theta[6][k], theta[7][k], theta[8][k], theta[9][k], theta[10][k], theta[11][k] = 0.0, 1.0, 0.0, 0.0, 1.0, 1.0
        theta[12][k] = 0.0


@functools.lru_cache(maxsize=16)
def _theta(alphas):
    """Return the kernel parameter vector of concentrations ``alphas`` (a tuple of floats; kept for the last few).

    Six arrays of K: ``alpha``, ``digamma(alpha_0) - digamma(alpha)`` and the
    implicit gradient's digamma constants (four); then each component's fit
    of the implicit gradient (:func:`fastgrad.math._gamma_grad_fit`, as the
    Gamma family's): six arrays of K of its scalars, its piece count, and
    the tables stacked into one (K, pieces, 8) array.
    """
    total = math.fsum(alphas)
    digamma_total = fm.digamma(total)
    constants = np.array([fm._gamma_grad_constants(a) for a in alphas]).T
    fits = [fm._gamma_grad_fit(a) for a in alphas]
    pieces = np.array([fit[6].shape[0] for fit in fits], dtype=np.float64)
    tables = np.zeros((len(alphas), max(1, int(pieces.max())), fm.GAMMA_FIT_DEGREE + 1))
    for k, fit in enumerate(fits):
        tables[k, : fit[6].shape[0]] = fit[6]
    scalars = np.array([[float(v) for v in fit[:6]] for fit in fits]).T
    return (
        np.array(alphas, dtype=np.float64),
        np.array([digamma_total - fm.digamma(a) for a in alphas]),
        *(np.ascontiguousarray(row) for row in constants),
        *(np.ascontiguousarray(row) for row in scalars),
        pieces,
        tables,
    )


# --- exact expectations: quadrature over the K Gamma draws -------------------------------


@functools.lru_cache(maxsize=64)
def gamma_nodes(alpha, per_piece, resolve=None):
    """Nodes ``t`` (``log g``), weights (with the Gamma(``alpha``) density) and ``g'`` of a Gauss-Legendre rule.

    Composite: 40 pieces over ``t`` from where the density in ``t``,
    ``exp(alpha t - e**t) / Gamma(alpha)``, is ``e**-46`` of its peak below it
    to the same above it (the peak and its width ``sqrt(trigamma(alpha))``
    resolved by 24 of them), ``per_piece`` nodes each; with ``resolve`` a
    width ``w``, also pieces at most ``w`` wide over ``-40 <= t <= 8`` (where
    a function of ``g`` near its scale changes, if the density is spread over
    far more: a small ``alpha``). Returns numpy arrays ``(t, weights, g,
    dg)``, ``dg = dg/dalpha`` at each node.
    """
    peak = math.log(alpha)
    top = alpha * peak - alpha

    def drop(t):
        return top - (alpha * t - math.exp(t)) - 46.0

    def solve(lo, hi):  # drop(lo) and drop(hi) of opposite signs
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if (drop(mid) > 0) == (drop(lo) > 0):
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)

    low = solve(peak - (50.0 + alpha) / alpha - 10.0, peak)
    high = solve(peak, peak + 10.0 + math.log1p(46.0 / alpha + 1.0) + 46.0 / max(alpha, 1.0))
    width = math.sqrt(float(_trigamma(alpha)))
    inner = np.linspace(max(low, peak - 6 * width), min(high, peak + 6 * width), 25)
    edges = np.unique(np.concatenate([np.linspace(low, inner[0], 9), inner, np.linspace(inner[-1], high, 9)]))
    if resolve is not None:
        edges = np.unique(np.concatenate([edges, np.arange(max(low, -40.0), min(high, 8.0), resolve)]))
    x, w = gauss_rule("legendre", per_piece)
    half = 0.5 * np.diff(edges)
    t = (edges[:-1, None] + half[:, None] * (x[None, :] + 1.0)).ravel()
    weights = (half[:, None] * w[None, :]).ravel() * np.exp(alpha * t - np.exp(t) - math.lgamma(alpha))
    g = np.exp(t)
    return t, weights, g, _sample_grads(g, alpha)


def beta_sample_grad(x, a, b, per_piece=16):
    """``dx/da`` of Beta(``a``, ``b``) draws ``x`` with ``b`` held: the implicit gradient ``-(dI_x(a, b)/da) / q(x)``.

    The one reparameterisation gradient of a Beta draw through its own CDF
    (``I_x`` the regularised incomplete beta function, ``q`` the density);
    ``dx/db`` is ``-beta_sample_grad(1 - x, b, a)``. A Dirichlet(alpha)
    component's, through its Beta(alpha_k, alpha_0 - alpha_k) marginal, is
    ``beta_sample_grad(x_k, alpha_k, alpha_0 - alpha_k)`` (what PyTorch's
    ``Dirichlet.rsample`` differentiates; fastgrad's own Dirichlet draws are
    Gamma draws normalised, another coupling with the same expectations).

    Computed without the incomplete beta function: writing ``x = g_a/S``,
    ``S = g_a + g_b`` (independent Gamma draws, ``S`` independent of
    ``x``), this gradient is the conditional mean, given ``x``, of the
    Gamma composition's ``dx/da = (1 - x) g'_a / S``::

        dx/da = (1 - x) E[gamma_sample_grad(x S, a) / S],   S ~ Gamma(a + b),

    a one-dimensional integral, taken by :func:`gamma_nodes`' rule (640
    points at the default). Checked against mpmath (numerical derivatives
    of ``betainc`` at 40 digits) in ``tests/test_dirichlet.py``. A Python
    function on arrays (numpy), for reference values, not for kernels.

    Examples
    --------
    >>> from fastgrad.dirichlet import beta_sample_grad
    >>> round(beta_sample_grad(0.5, 1.0, 1.0), 12)   # I_x(a, 1) = x**a: dx/da = -x log(x) / a
    0.34657359028
    """
    scalar = np.ndim(x) == 0
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    _, weights, total, _ = gamma_nodes(float(a) + float(b), per_piece)
    out = np.empty(x.size)
    step = max(1, 2**22 // total.size)  # (a block of draws x nodes at a time: 32 MB)
    for lo in range(0, x.size, step):
        part = x[lo : lo + step]
        z = np.multiply.outer(part, total)
        grads = _sample_grads(z.ravel(), float(a)).reshape(z.shape)
        out[lo : lo + step] = (1.0 - part) * ((grads / total) @ weights)
    return float(out[0]) if scalar else out


#: Bernoulli numbers B_2k, k = 1 .. 9, of the asymptotic series of digamma and trigamma.
_BERNOULLI = (1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730, 7 / 6, -3617 / 510, 43867 / 798)


def _trigamma(a):
    """``trigamma(a)``, ``a > 0`` (float): the recurrence up to 20, then the asymptotic series (about 1e-16)."""
    a = float(a)
    total = 0.0
    while a < 20.0:
        total += 1.0 / (a * a)
        a += 1.0
    series = 1.0 / a + 1.0 / (2.0 * a * a) + sum(b / a ** (2 * k + 1) for k, b in enumerate(_BERNOULLI, 1))
    return total + series


def digamma_difference(a, b):
    """``digamma(a + b) - digamma(a)`` for ``a, b > 0`` without the cancellation of two digammas when ``b << a``.

    The recurrence moves ``a`` to at least 20 (each step adds ``1/(a + j) -
    1/(a + b + j) = b / ((a + j)(a + b + j))``), then the asymptotic series term
    by term: ``log1p(b / a)``, ``1/(2a) - 1/(2(a + b))`` and
    ``B_2k/(2k) (a^-2k - (a + b)^-2k)`` with the brackets from ``expm1``.
    """
    a, b = float(a), float(b)
    total = 0.0
    while a < 20.0:
        total += b / (a * (a + b))
        a += 1.0
    ratio = math.log1p(b / a)
    total += ratio + b / (2.0 * a * (a + b))
    for k, bernoulli in enumerate(_BERNOULLI, 1):
        total += bernoulli / (2 * k) * a ** (-2 * k) * -math.expm1(-2 * k * ratio)
    return total


def _function_key(function):
    """Return what identifies a built-in function's exact form (None for a user's function: no exact values)."""
    builtin = getattr(function, "builtin", None)
    if builtin is None:
        return None
    return (
        type(function).__name__,
        function.name,
        builtin.name,
        tuple(function.params),
        getattr(function, "weights", None),
    )


#: Function key -> a function with that exact form (what :func:`_grid`, cached by key, evaluates).
_GRID_FUNCTIONS = {}


@functools.lru_cache(maxsize=2)  # (K = 3: 4.4 million points, 0.25 GB of values a grid)
def _grid(distribution, key, per_piece):
    """Return the quadrature's weights and, at its points, ``f``, the scores and the pathwise values (kept)."""
    function = _GRID_FUNCTIONS[key]
    alphas = distribution.concentration
    rules = [gamma_nodes(a, per_piece) for a in alphas]
    mesh = [np.meshgrid(*[rule[i] for rule in rules], indexing="ij") for i in range(4)]
    t, weights, g, dg = (np.array([m.ravel() for m in part]) for part in mesh)
    weights = np.prod(weights, axis=0)
    size = distribution.draw_size
    total = g.sum(axis=0)
    x = g / total
    log_total = np.log(total)
    digamma_total = fm.digamma(math.fsum(alphas))
    scores = np.array([t[k] - log_total + (digamma_total - fm.digamma(a)) for k, a in enumerate(alphas)])
    hs = distribution.component_functions(function)
    fx = sum(h.evaluate(x[i]) for i, h in enumerate(hs))
    grads = np.array([h.derivative().evaluate(x[i]) for i, h in enumerate(hs)])
    dot = np.sum(x[:size] * grads, axis=0)
    paths = np.array([dg[k] / total * ((grads[k] if k < size else 0.0) - dot) for k in range(len(alphas))])
    return weights, fx, scores, paths


# --- exact expectations one component at a time: a Beta rule in the logit, any K ---------------------
#
# For parameter k, write x_k = g_k / S, S = sum_i g_i: x_k ~ Beta(alpha_k, alpha_0 - alpha_k) and
# S ~ Gamma(alpha_0) are independent (the Beta-Gamma algebra), and the other components are
# x_i = u y_i, u = 1 - x_k, y ~ Dirichlet(alpha_{-k}) independent of both. For
# f = sum_i h_i(x_i) with polynomial h_i, given x_k: f = h_k(x_k) + sum_p u**p F_p and the pathwise
# bracket df/dx_k - sum_i x_i df/dx_i = u h_k'(x_k) - sum_p p u**p F_p, F_p = sum_{i != k} c_ip y_i**p,
# whose first two moments over y are closed forms (Dirichlet moments). (For K = 2 there is no y:
# f = h_k(x_k) + h_o(u) for any built-in.) The score log x_k - digamma(alpha_k) + digamma(alpha_0)
# is a function of x_k, so every score specification's moments are one-dimensional integrals over
# x_k; the pathwise value (g_k' / S) times the bracket needs E[g_k' / S] and E[(g_k' / S)**2] over
# S at g_k = x_k S, a second dimension. The x_k rule is composite Gauss-Legendre in r = logit x_k
# (:func:`logit_beta_nodes`): in r a small concentration's mass is spread over thousands of units
# (its density ~ e^(alpha r)) while f and the bracket change within |r| < 40, which a rule in
# log g_k and log T alone does not resolve (Beta(0.01, 2): 1 % off). The control variate also
# needs E[f s_k s_l] over every pair: closed forms of the moments of log x under the Dirichlet
# tilted by each monomial (:func:`_score_products`).


@functools.lru_cache(maxsize=64)
def logit_beta_nodes(a, b, per_piece=16):
    """Nodes ``r`` (``logit x``) and weights (with the Beta(``a``, ``b``) density in ``r``) of a composite rule.

    The density of ``r`` is ``exp(a log x + b log(1 - x)) / B(a, b)``: its
    tails fall as ``e^(a r)`` and ``e^(-b r)``. Pieces: from where it is
    ``e**-46`` of its peak below the mode to the same above it, 25 edges
    over the mode plus or minus 6 standard deviations
    (``sqrt(trigamma(a) + trigamma(b))``), pieces at most 1 wide over
    ``|r| <= 40`` (where a polynomial in ``x`` changes: ``x**8``, a quartic's
    square, grows as ``e^(8 r)`` for ``r < 0``), 8 pieces in each tail; then
    every piece over which the density changes by more than a factor
    ``e**4`` is halved until none does (a large concentration's steep side).
    """
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)

    def log_density(r):
        return -a * np.logaddexp(0.0, -r) - b * np.logaddexp(0.0, r) - log_beta

    mode = math.log(a / b)
    top = float(log_density(mode))

    def solve(lo, hi):  # the point between lo and hi where the density is e**-46 of its peak
        above = float(log_density(lo)) > top - 46.0
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if (float(log_density(mid)) > top - 46.0) == above:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)

    low = solve(mode - 60.0 / a - 60.0, mode)
    high = solve(mode, mode + 60.0 / b + 60.0)
    width = math.sqrt(float(_trigamma(a) + _trigamma(b)))
    inner = np.linspace(max(low, mode - 6 * width), min(high, mode + 6 * width), 25)
    central = np.arange(max(low, -40.0), min(high, 40.0), 1.0)
    edges = np.unique(np.concatenate([np.linspace(low, inner[0], 9), inner, np.linspace(inner[-1], high, 9), central,
                                      [min(max(mode, low), high)]]))  # fmt: skip
    for _ in range(60):  # halve every piece over which the density changes by more than e**4 (a steep tail)
        steep = np.abs(np.diff(log_density(edges))) > 4.0
        if not steep.any():
            break
        edges = np.sort(np.concatenate([edges, 0.5 * (edges[:-1] + edges[1:])[steep]]))
    x, w = gauss_rule("legendre", per_piece)
    half = 0.5 * np.diff(edges)
    r = (edges[:-1, None] + half[:, None] * (x[None, :] + 1.0)).ravel()
    return r, (half[:, None] * w[None, :]).ravel() * np.exp(log_density(r))


def _sigmoid(r):
    """``1 / (1 + e^-r)`` without overflow."""
    return np.exp(-np.logaddexp(0.0, -r))


def _polynomial_coefficients(hs):
    """``c[i, p]``: ``h_i(x) = sum_p c[i, p] x**p`` (a K x (degree + 1) array), or None if some ``h_i`` is not."""
    rows = []
    for h in hs:
        terms = getattr(h, "terms", None)
        if terms is None or any(omega != 0 for _, omega in terms):
            return None
        degree = max((j for j, _ in terms), default=0)
        rows.append([float(terms.get((j, 0.0), 0)) for j in range(degree + 1)])
    width = max(len(row) for row in rows)
    return np.array([row + [0.0] * (width - len(row)) for row in rows])


def _rising(a, n):
    """Return the rising factorial ``(a)_n = a (a + 1) ... (a + n - 1)``, elementwise."""
    out = np.ones_like(np.asarray(a, dtype=float))
    for t in range(n):
        out = out * (a + t)
    return out


def _score_products(alphas, c):
    """``(E[f s s^T], E[s s^T])`` over the K scores ``s_k = log x_k - digamma(alpha_k) + digamma(alpha_0)``.

    Under Dirichlet(alpha) tilted by ``x_i**p`` (a Dirichlet(alpha + p e_i),
    ``E[x_i**p] = (alpha_i)_p / (alpha_0)_p``), ``log x`` has mean
    ``digamma(alpha') - digamma(alpha'_0)`` and covariance ``diag(trigamma(alpha'))
    - trigamma(alpha'_0)``: so ``E[x_i**p s s^T] = E[x_i**p] (d d^T + diag(trigamma(alpha')) -
    trigamma(alpha'_0))``, ``d`` the shift of the mean, ``-D_0`` everywhere plus ``D_i`` at ``i``.
    """
    total = math.fsum(alphas)
    dim, width = c.shape
    trigamma = np.array([float(_trigamma(a)) for a in alphas])
    outer = np.zeros((dim, dim))
    for p in range(width):
        moment = c[:, p] * _rising(alphas, p) / _rising(total, p)  # c_ip E[x_i**p], per i
        shift_total = sum(1.0 / (total + t) for t in range(p))  # digamma(alpha_0 + p) - digamma(alpha_0)
        shift = sum(1.0 / (alphas + t) for t in range(p)) if p else np.zeros(dim)
        trigamma_shift = -sum(1.0 / (alphas + t) ** 2 for t in range(p)) if p else np.zeros(dim)
        trigamma_total = float(_trigamma(total + p))
        weight = moment.sum()
        outer += weight * (shift_total**2 - trigamma_total) + np.diag(weight * trigamma)
        lines = moment * shift * shift_total  # the cross terms -D_0 D_i (1 e_i^T + e_i 1^T)
        outer -= lines[None, :] + lines[:, None]
        outer += np.diag(moment * (shift**2 + trigamma_shift))
    return outer, np.diag(trigamma) - float(_trigamma(total))


@serial
def _gradient_moments(xs, log_xs, totals, log_totals, weights, theta, k, out):
    """``out[:, i]``: ``E[g' / S]`` and ``E[(g' / S)**2]`` over the rule ``(totals, weights)`` of S, at ``g = xs[i] S``.

    Below ``g = 1e-290`` (a small concentration puts mass there), from the
    series' first term: ``g' = -g (log g - digamma(alpha + 1)) / alpha``, its
    relative error ``O(g)``, in logarithms (``g`` itself may underflow).
    """
    alpha = theta[0][k]
    constants = (theta[2][k], theta[3][k], theta[4][k], theta[5][k])
    fit = (theta[6][k] != 0.0, theta[7][k], theta[8][k], theta[9][k], theta[10][k], theta[11][k],
           theta[13][k, : int(theta[12][k])])  # fmt: skip
    digamma_next = fm.digamma(alpha + 1.0)
    for i in range(xs.size):
        first = second = 0.0
        for j in range(totals.size):
            log_g = log_xs[i] + log_totals[j]
            if log_g < -667.0:
                grad = -xs[i] * (log_g - digamma_next) / alpha
            else:
                grad = fm._gamma_grad_from_fit(xs[i] * totals[j], alpha, constants, fit) / totals[j]
            first += weights[j] * grad
            second += weights[j] * grad * grad
        out[0, i] = first
        out[1, i] = second


def _conditional_values(k, hs, c, alphas, x, u):
    """Given ``x_k`` (and ``u = 1 - x_k``): the means of ``f``, ``f**2``, the bracket and its square over the rest."""
    if len(alphas) == 2:  # no other components but u itself: any built-in
        h, other = hs[k], hs[1 - k]
        f = h.evaluate(x) + other.evaluate(u)
        bracket = u * (h.derivative().evaluate(x) - other.derivative().evaluate(u))
        return f, f * f, bracket, bracket * bracket
    width = c.shape[1]
    powers = np.arange(width)
    terms = c.T * np.array([_rising(alphas, p) for p in powers])  # c_ip (alpha_i)_p
    others = terms.sum(axis=1) - terms[:, k]  # sum_{i != k} c_ip (alpha_i)_p
    rises = np.array([_rising(math.fsum(alphas) - alphas[k], n) for n in range(2 * width - 1)])
    first = others / rises[:width]  # E[F_p] under Dirichlet(alpha_{-k})
    pair = np.array([[c[:, p] * c[:, q] * (_rising(alphas, p + q) - _rising(alphas, p) * _rising(alphas, q))
                      for q in powers] for p in powers])  # fmt: skip
    second = (np.outer(others, others) + pair.sum(axis=2) - pair[:, :, k]) / rises[powers[:, None] + powers]
    by_degree = np.zeros((2, 2 * width - 1))  # sum_{p + q = n} E[F_p F_q] and p q E[F_p F_q], by n
    for p in powers:
        by_degree[0, p : p + width] += second[p]
        by_degree[1, p : p + width] += p * powers * second[p]
    polyval = np.polynomial.polynomial.polyval
    h = polyval(x, c[k])
    slope = u * polyval(x, np.polynomial.polynomial.polyder(c[k]))
    linear, tilted = polyval(u, first), polyval(u, first * powers)
    f = h + linear
    bracket = slope - tilted
    return (f, h * h + 2.0 * h * linear + polyval(u, by_degree[0]), bracket,
            slope * slope - 2.0 * slope * tilted + polyval(u, by_degree[1]))  # fmt: skip


def _two_score_products(alphas, hs, per_piece):
    """:func:`_score_products` for K = 2 and any ``h``: ``s_0`` and ``s_1`` are functions of ``x_0``, one integral."""
    a, b = (float(v) for v in alphas)
    r, weights = logit_beta_nodes(a, b, per_piece)
    x, u = _sigmoid(r), _sigmoid(-r)
    f = hs[0].evaluate(x) + hs[1].evaluate(u)
    s = np.array([-np.logaddexp(0.0, -r) + digamma_difference(a, b), -np.logaddexp(0.0, r) + digamma_difference(b, a)])
    return (s * weights * f) @ s.T, (s * weights) @ s.T


def component_moments(distribution, hs, specs, coefficients, wrt, per_piece=16):
    """Exact mean and per-draw variance of each specification, one component at a time (see above).

    ``hs``: ``f``'s form per component (for K > 2, polynomials). Lists over
    the components for a Dirichlet; floats per parameter for a Beta.
    """
    from fastgrad._analytic import loo_variance

    beta = isinstance(distribution, Beta)
    alphas = np.array(distribution.concentration)
    if beta:
        hs = [hs[0], hs[0] * 0]
    c = _polynomial_coefficients(hs) if len(alphas) > 2 else None
    total = math.fsum(alphas)
    theta = _theta(tuple(float(a) for a in alphas))
    log_totals, total_weights, totals, _ = gamma_nodes(total, per_piece, 2.0)
    pathwise = any(spec.base == "pathwise" for spec in specs)
    rows = []
    for k in range(len(alphas)):
        r, weights = logit_beta_nodes(float(alphas[k]), float(total - alphas[k]), per_piece)
        x, u = _sigmoid(r), _sigmoid(-r)
        f1, f2, b1, b2 = _conditional_values(k, hs, c, alphas, x, u)
        score = -np.logaddexp(0.0, -r) + digamma_difference(float(alphas[k]), total - float(alphas[k]))
        row = {name: float(weights @ value) for name, value in (
            ("f", f1), ("f2", f2), ("fs", f1 * score), ("fs2", f1 * score**2), ("f2s2", f2 * score**2),
            ("s2", score**2))}  # fmt: skip
        if pathwise:
            grads = np.empty((2, x.size))
            _gradient_moments(x, -np.logaddexp(0.0, -r), totals, log_totals, total_weights, theta, k, grads)
            row["v"], row["v2"] = float(weights @ (grads[0] * b1)), float(weights @ (grads[1] * b2))
        rows.append(row)
    products = None
    if any(coef is not None and np.ndim(coef) == 2 for coef in (coefficients or ())):
        products = _score_products(alphas, c) if c is not None else _two_score_products(alphas, hs, per_piece)
    out = []
    for s, spec in enumerate(specs):
        coef = None if coefficients is None else coefficients[s]
        if coef is not None and beta:
            coef = np.diag(coef) if np.ndim(coef) == 2 and not np.any(coef - np.diag(np.diag(coef))) else coef
        means, variances = [], []
        for k, m in enumerate(rows):
            if spec.base == "pathwise":
                mean, second_moment = m["v"], m["v2"]
            elif spec.baseline == "loo":
                mu22 = m["f2s2"] - 2.0 * m["f"] * m["fs2"] + m["f"] ** 2 * m["s2"]
                means.append(m["fs"])
                variances.append(float(loo_variance(mu22, m["fs"], m["f2"] - m["f"] ** 2, m["s2"], spec.group)))
                continue
            else:
                mean, second_moment = m["fs"], m["f2s2"]
                if coef is not None and np.ndim(coef) == 1:
                    b = float(coef[k])
                    second_moment += -2.0 * b * m["fs2"] + b * b * m["s2"]
                elif coef is not None:
                    row = np.asarray(coef)[k]
                    second_moment += -2.0 * row @ products[0][k] + row @ products[1] @ row
            means.append(mean)
            variances.append(second_moment - mean * mean)
        if beta:
            out.append({p: (means[j], variances[j]) for j, p in enumerate(distribution.parameters) if p in wrt})
        else:
            out.append({p: (means, variances) for p in wrt})
    return out


def noise_moments(distribution, function, specs, coefficients, wrt, per_piece=None):
    """Exact mean and per-draw variance of each specification, per parameter (and component).

    A list (one entry per specification) of ``{parameter: (mean, variance)}``,
    floats for a Beta and lists over components for a Dirichlet; None where
    there is no exact form (a user's function, more than
    :data:`MAX_EXACT_COMPONENTS` components). The integrals over the K Gamma
    draws are a tensor product of :func:`gamma_nodes` rules; for a score
    value ``f s_r - sum_k B[r, k] s_k`` with the run's coefficients ``B``
    (a vector of baselines is its diagonal), for ``score+loo(K)`` from the
    moments of ``(f, s_r)`` (:func:`fastgrad._analytic.loo_variance`).
    """
    from fastgrad._analytic import grid_moments

    if hasattr(distribution, "natural_value"):  # (a NaturalView: log-concentrations asked for)
        return _natural_moments(distribution, function, specs, coefficients, wrt)
    alphas = distribution.concentration
    key = _function_key(function)
    if key is None:
        return [None] * len(specs)
    hs = distribution.component_functions(function)
    polynomial = len(alphas) <= MAX_EXACT_POLYNOMIAL and _polynomial_coefficients(hs) is not None
    by_component = len(alphas) == 2 or polynomial
    if not by_component and (len(alphas) > MAX_EXACT_COMPONENTS or min(alphas) < MIN_GRID_CONCENTRATION):
        return [None] * len(specs)
    _GRID_FUNCTIONS.setdefault(key, function)
    per_piece = per_piece or (16 if by_component else NODES_PER_PIECE[len(alphas)])
    coefficient_bytes = tuple(None if c is None else np.asarray(c).tobytes() for c in (coefficients or ()))
    remembered = (distribution, key, tuple(spec.name for spec in specs), coefficient_bytes, tuple(wrt), per_piece)
    found = _MOMENTS.get(remembered)
    if found is None:
        if by_component:
            found = component_moments(distribution, hs, specs, coefficients, wrt, per_piece)
        else:  # (K = 3: about a second of dot products over the grid's 4.4 million points)
            weights, fx, scores, paths = _grid(distribution, key, per_piece)
            found = grid_moments(distribution, specs, coefficients, wrt, weights, fx, scores, paths)
        if len(_MOMENTS) >= 32:
            _MOMENTS.pop(next(iter(_MOMENTS)))
        _MOMENTS[remembered] = found
    return [None if entry is None else {p: v for p, v in entry.items()} for entry in found]


#: (distribution, function, specifications, coefficients, wrt, nodes) -> exact moments, oldest first.
_MOMENTS = {}


def _natural_moments(view, function, specs, coefficients, wrt):
    """:func:`noise_moments` of a run with log-concentrations: their concentrations' times ``alpha`` (the chain rule).

    ``d/dlog(alpha_k) = alpha_k d/dalpha_k`` draw by draw: the kernels' factors are ``alpha_k`` times the
    concentration's (:func:`fastgrad._analytic.chain_rule_moments`).
    """
    from fastgrad._analytic import chain_rule_moments

    base = view.distribution
    natural = dict(base.family.natural)
    return chain_rule_moments(view, specs, coefficients, wrt,
                              lambda *args: noise_moments(base, function, *args),
                              lambda name: np.asarray(getattr(base, natural[name]), dtype=float))  # fmt: skip


JOINT = Joint(width=(1, 0), draw_size=(1, 0), sample=_rows_noise, draw=_draw, scores=_scores, paths=_paths,
              moments=noise_moments, theta_into=_theta_into)  # fmt: skip


_WEAK_NOTE = (
    "a concentration's score, log x_k - digamma(alpha_k) + digamma(alpha_0), splits into no two laws with a "
    "closed-form sampler"
)
DIRICHLET = joint_family("dirichlet", ("concentration",), JOINT, weak_note=_WEAK_NOTE,
                         natural=(("log_concentration", "concentration"),))  # fmt: skip
BETA = joint_family(
    "beta",
    ("a", "b"),
    Joint(width=(0, 2), draw_size=(0, 1), sample=_rows_noise, draw=_draw, scores=_scores, paths=_paths,
          moments=noise_moments, theta_into=_theta_into),
    weak_note=_WEAK_NOTE,
    natural=(("log_a", "a"), ("log_b", "b")),
)  # fmt: skip


def _check_concentrations(names, values):
    for name, value in zip(names, values, strict=True):
        if value > MAX_SHAPE:
            raise ValueError(
                f"{name} must be at most {MAX_SHAPE:g}; got {value!r} (the implicit gradient of its Gamma draw "
                "needs about 9 sqrt(shape) terms)"
            )


class _GammaRows:
    """What Dirichlet and Beta share: their kernel parameters come from the concentrations of a row of Gamma draws."""

    @property
    def parameters(self):
        """Parameter names, in gradient order."""
        return self.family.parameters

    @property
    def theta(self):
        """Kernel parameters (the comment above ``_rows_noise``): arrays of one value per concentration."""
        return _theta(self.concentration)


@register
@dataclass(frozen=True, eq=False)
class Dirichlet(_GammaRows):
    """The Dirichlet distribution on the simplex: ``x_i = g_i / sum(g)``, ``g_i ~ Gamma(concentration_i)``.

    Gradients are taken with respect to every ``concentration_i``: score
    function (and its variants) and pathwise, through the implicit
    reparameterisation gradients of the Gamma draws. Results hold one value
    per component (arrays). ``f`` is a function of the whole draw:
    ``fastgrad.functions.sum_of_squares()``, ``quadratic(diag)``,
    ``linear_form(weights)``, ``sum_cos(omega)`` or a
    :class:`~fastgrad.VectorFunction`.

    Parameters
    ----------
    concentration : sequence of float, length K >= 2
        Finite, > 0 and at most 1e10 each. Below about 0.03 some Gamma draws
        are below the smallest float64 and are 0: their score is then -inf (and
        a draw whose K Gamma draws are all 0 is NaN); ``nan_policy`` applies.

    Examples
    --------
    >>> import fastgrad as fg
    >>> fg.Dirichlet([1.0, 2.0, 3.0])
    Dirichlet(concentration=[1.0, 2.0, 3.0])
    """

    concentration: tuple

    family = DIRICHLET
    name = "dirichlet"  # the command line's --dist

    def __post_init__(self):
        values = _vector("concentration", self.concentration, positive=True)
        if len(values) < 2:
            raise ValueError(f"concentration must have at least 2 components (K >= 2); got {len(values)}")
        _check_concentrations([f"concentration[{i}]" for i in range(len(values))], values)
        object.__setattr__(self, "concentration", values)

    @property
    def dim(self):
        """Number of components K."""
        return len(self.concentration)

    draw_size = dim  # (the components f takes)

    def component_functions(self, function):
        """``f``'s exact form per component (``w_i h``), or None for a user's function."""
        exact = getattr(function, "component_exact", None)
        return None if exact is None else [exact(i, self.dim) for i in range(self.dim)]

    def exact_values_note(self, function):
        """Why a run of ``function`` has no exact values (None: it has them, or it is a user's function)."""
        hs = self.component_functions(function)
        polynomial = _polynomial_coefficients(hs) is not None if hs is not None else False
        if hs is None or self.dim == 2 or (polynomial and self.dim <= MAX_EXACT_POLYNOMIAL):
            return None
        if self.dim <= MAX_EXACT_COMPONENTS and min(self.concentration) < MIN_GRID_CONCENTRATION:
            return (f"exact values of functions other than polynomials are computed for K = 3 with every "
                    f"concentration >= {MIN_GRID_CONCENTRATION} (a quadrature over the K Gamma draws, which does not "
                    f"resolve smaller ones); this distribution has {min(self.concentration)!r}")  # fmt: skip
        if self.dim <= MAX_EXACT_COMPONENTS:
            return None
        if not polynomial:
            return (f"exact values are computed for K <= {MAX_EXACT_COMPONENTS} (a quadrature over the K Gamma "
                    f"draws), above it for polynomial functions only; this distribution has K = "
                    f"{self.dim}")  # fmt: skip
        if self.dim > MAX_EXACT_POLYNOMIAL:
            return (f"exact values are computed for K <= {MAX_EXACT_POLYNOMIAL} (two-dimensional integrals per "
                    f"component); this distribution has K = {self.dim}")  # fmt: skip
        return None

    def to_dict(self):
        """JSON-ready description."""
        return {"family": "Dirichlet", "concentration": list(self.concentration)}

    def __eq__(self, other):
        return isinstance(other, Dirichlet) and self.concentration == other.concentration

    def __hash__(self):
        return hash(("Dirichlet", self.concentration))

    def __repr__(self):
        values = self.concentration
        if len(values) <= 6:
            return "Dirichlet(concentration=[" + ", ".join(repr(v) for v in values) + "])"
        return f"Dirichlet(concentration=[{values[0]!r}, {values[1]!r}, {values[2]!r}, ... ({len(values)} values)])"


@register
@dataclass(frozen=True)
class Beta(_GammaRows):
    """The Beta distribution on (0, 1): ``x = g_1 / (g_1 + g_2)``, ``g_1 ~ Gamma(a)``, ``g_2 ~ Gamma(b)``.

    Score function (and its variants) and pathwise gradients with respect to
    ``a`` and ``b``, the latter through the implicit reparameterisation
    gradients of the two Gamma draws: ``dx/da = (1 - x) g_1' / (g_1 + g_2)``,
    ``dx/db = -x g_2' / (g_1 + g_2)``.

    Parameters
    ----------
    a, b : float
        Finite, > 0 and at most 1e10.

    Examples
    --------
    >>> import fastgrad as fg
    >>> r = fg.compare(fg.Beta(2.0, 3.0), "square", n=10**5, seed=0)
    >>> round(r.pathwise.analytic_mean["a"], 12)    # d/da E[x**2] = d/da a (a + 1) / ((a + b) (a + b + 1))
    0.093333333333
    """

    a: float = 1.0
    b: float = 1.0

    family = BETA
    name = "beta"  # the command line's --dist

    draw_size = 1

    def __post_init__(self):
        object.__setattr__(self, "a", _real("a", self.a, positive=True))
        object.__setattr__(self, "b", _real("b", self.b, positive=True))
        _check_concentrations(["a", "b"], [self.a, self.b])
        check_draw_size(f"a = {self.a!r} and b = {self.b!r}", self.a / (self.a + self.b))

    @property
    def concentration(self):
        """``(a, b)``: the Dirichlet whose first component the draw is."""
        return (self.a, self.b)

    def component_functions(self, function):
        """``[h]``: ``f``'s exact form, or None for a user's function."""
        exact = function.exact() if hasattr(function, "exact") else None
        return None if exact is None else [exact]

    def to_dict(self):
        """JSON-ready description."""
        return {"family": "Beta", "a": self.a, "b": self.b}
