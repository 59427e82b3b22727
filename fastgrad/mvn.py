"""MultivariateNormal(loc, scale_tril): a full-covariance Gaussian, ``x = loc + L eps``.

``L`` (``scale_tril``) is lower-triangular with a positive diagonal, ``eps`` a
vector of D independent standard normals from the run's stream (D in a row per
draw), and the covariance ``L L^T``. The gradients are taken with respect to
every component of ``loc`` (D) and every entry ``L_ab``, ``b <= a``, of the
lower triangle (D (D + 1) / 2, numbered row by row: ``L_00, L_10, L_11, L_20,
...``, entry ``(a, b)`` at ``a (a + 1) / 2 + b``).

With ``w = L^-T eps`` (``Sigma^-1 (x - loc)``, one triangular solve a draw):

* score   ``d log q / d loc_a = w_a`` and ``d log q / d L_ab = w_a eps_b - delta_ab / L_aa``;
* path    ``dx / d loc_a = e_a`` and ``dx / d L_ab = eps_b e_a``: the pathwise values are
  ``df/dx_a`` and ``df/dx_a eps_b``.

The noise is symmetric, so antithetic pairs (``eps``, ``-eps``) are draws too: at
``-eps`` the ``loc`` scores change sign and the ``scale_tril`` ones do not (``w``
is linear in ``eps``). A MultivariateNormal's draws with a diagonal ``L`` are,
value for value, a DiagNormal's with ``scale`` that diagonal (the same normals,
``loc_a + L_aa eps_a``; the zeros of the row add nothing).

Exact reference values: for D <= 3 every specification's mean and per-draw
variance by a tensor Gauss-Hermite rule over ``eps`` (exact for the
polynomial built-ins, whose per-draw values are polynomials in ``eps`` of
degree at most 8; about 1e-13 for ``sum_cos``), through the same engine as
the Dirichlet's (:func:`fastgrad._analytic.grid_moments`); at any D, every
specification's for quadratic forms in closed form
(:func:`pathwise_closed_forms`, :func:`score_closed_forms`).

Memory: the run's kernel parameters are ``L`` (D^2 numbers), and each thread's
value rows hold ``D (D + 3) / 2`` per specification for a block of at least 8
draws (about 2.6 MB a specification at D = 200).
"""

import functools
import math
from dataclasses import dataclass
from math import sqrt

import numpy as np

from fastgrad import math as fm
from fastgrad._checks import real_vector as _vector
from fastgrad._jit import inline_core, serial
from fastgrad.distributions import Joint, NaturalView, joint_family, register
from fastgrad.rng import normals_from_words, take_words

__all__ = ["MultivariateNormal"]

#: Most components a MultivariateNormal may have: a thread's value rows grow as D**2 (25 MB a specification here).
MAX_DIM = 1000
#: Most components whose exact reference values are computed (a D-dimensional quadrature).
MAX_EXACT_DIM = 3
#: Gauss-Hermite nodes per component of the exact values' rule, by D (64, 2 304 and 13 824 points).
NODES = {1: 64, 2: 48, 3: 24}


# --- the cores ---------------------------------------------------------------------------------
#
# Kernel parameter vector: loc (D), L (D x D, zeros above the diagonal) and 1 / diag(L) (D).


@serial
def _normal_rows(state, noise, m, theta):
    n = m * theta[0].size  # (the DiagNormal's normals: words in a block, then the rare slow ones in order)
    words = np.empty(n, np.uint64)
    rejected = np.empty(n, np.int64)
    take_words(state, words, n)
    normals_from_words(state, words, noise, rejected, n)


@inline_core
def _sizes(j, dim):
    return dim if j == 0 else dim * (dim + 1) // 2


@inline_core
def _affine(noise, base, theta, xs, sign):
    loc, scale = theta[0], theta[1]
    for a in range(loc.size):
        total = loc[a]
        for b in range(a + 1):
            total += scale[a, b] * (sign * noise[base + b])  # (sign is 1 or -1: exact)
        xs[a] = total


@inline_core
def _draw(noise, base, theta, xs):
    _affine(noise, base, theta, xs, 1.0)


@inline_core
def _mirror_draw(noise, base, theta, xs):
    _affine(noise, base, theta, xs, -1.0)


@inline_core
def _solve(noise, base, theta, w):
    """``w = L^-T eps`` (``Sigma^-1 (x - loc)``) into ``w[:D]``, by back substitution."""
    scale, inverse = theta[1], theta[2]
    for a in range(inverse.size - 1, -1, -1):
        total = noise[base + a]
        for c in range(a + 1, inverse.size):
            total -= scale[c, a] * w[c]
        w[a] = total * inverse[a]


@inline_core
def _scores(noise, base, xs, theta, q, row):
    inverse = theta[2]
    dim = inverse.size
    _solve(noise, base, theta, q[row])  # the loc scores
    k = dim
    for a in range(dim):
        for b in range(a + 1):
            q[row, k] = q[row, a] * noise[base + b]
            k += 1
        q[row, k - 1] -= inverse[a]
    if q.shape[1] > k:  # (the +natural twin: scale_tril with its diagonal's logarithms, after scale_tril)
        _log_diagonal_scores(noise, base, theta, q, row, dim)


@inline_core
def _log_diagonal_scores(noise, base, theta, q, row, dim):
    """Write the scores of ``log_diag_scale_tril``: ``w_a eps_b`` below the diagonal, ``L_aa w_a eps_a - 1`` on it."""
    scale = theta[1]
    n = dim * (dim + 1) // 2
    k = dim + n
    for a in range(dim):
        for _ in range(a):
            q[row, k] = q[row, k - n]
            k += 1
        q[row, k] = scale[a, a] * (q[row, a] * noise[base + a]) - 1.0
        k += 1


@inline_core
def _triangle_paths(noise, base, grads, theta, dim, q, row, j, sign):
    """Write the pathwise values of ``scale_tril`` (``j = 1``) or ``log_diag_scale_tril`` (``j = 2``).

    ``df/dx_a eps_b``, on the diagonal of ``log_diag_scale_tril`` ``L_aa`` times it, at the noise times ``sign``
    (1, or -1 for the antithetic draw: exact).
    """
    scale = theta[1]
    k = dim + (j - 1) * (dim * (dim + 1) // 2)
    for a in range(dim):
        for b in range(a + 1):
            value = grads[a] * (sign * noise[base + b])  # (1.0 * e is e, -1.0 * e is -e: the same bits)
            q[row, k] = scale[a, a] * value if j == 2 and b == a else value
            k += 1


@inline_core
def _paths(noise, base, xs, grads, theta, active, dim, q, row):
    for j in active:
        if j == 0:
            for a in range(dim):
                q[row, a] = grads[a]
        else:
            _triangle_paths(noise, base, grads, theta, dim, q, row, j, 1.0)


@inline_core
def _mirror_factors(noise, base, xb, gradb, theta, active, dim, scores, paths, q):
    if scores:  # (q[0] holds the draw's own scores: at -eps, w changes sign and w_a eps_b does not)
        for a in range(dim):
            q[1, a] = -q[0, a]
        for k in range(dim, q.shape[1]):
            q[1, k] = q[0, k]
    if paths:
        for j in active:
            if j == 0:
                for a in range(dim):
                    q[3, a] = gradb[a]
            else:
                _triangle_paths(noise, base, gradb, theta, dim, q, 3, j, -1.0)


# The weak derivative for loc_a (Pflug 1996 in the conditional law): with every other component
# fixed, x_a is normal around its conditional mean m_a = x_a - w_a / kappa_a**2 with spread
# 1 / kappa_a, kappa_a**2 = (Sigma^-1)_aa, and loc_a only shifts that law (the other components'
# marginal law does not involve loc_a). So the Normal's weak derivative applies to x_a given the rest:
#   d/dloc_a E[f] = kappa_a / sqrt(2 pi) (E[f(x; x_a = m_a + R / kappa_a)] - E[f(x; x_a = m_a - R' / kappa_a)]),
# R, R' ~ Rayleigh(1), the same R when coupled. Kernel parameter theta[3] holds kappa / sqrt(2 pi),
# 1 / kappa and 1 / kappa**2 per component.


@inline_core
def _weak_prepare(noise, base, xs, theta, w):
    _solve(noise, base, theta, w)


@inline_core
def _weak_sides(j, i, noise, base, xs, u1, u2, u3, theta, w):
    if j != 0:  # (never called: measure-valued is refused for scale_tril)
        return np.nan, np.nan, np.nan, np.nan
    spread = theta[3]
    conditional = xs[i] - w[i] * spread[2, i]
    r1 = sqrt(-2.0 * fm.log(u1))
    r2 = sqrt(-2.0 * fm.log(u2))
    side = spread[1, i]
    return spread[0, i], conditional + side * r1, conditional - side * r1, conditional - side * r2


@inline_core
def _theta_into(params, theta):
    """Write the kernel parameters of ``params`` (``loc``, then ``scale_tril``'s triangle row by row) into ``theta``.

    :func:`_theta`'s numbers, but for ``kappa`` (the column norms of ``L^-1``): from the triangular solves
    ``L y = e_c`` here, LAPACK's inverse there (within a few ulps: it serves the measure-valued estimator's
    spread only).
    """
    loc, scale, inverse, spread = theta[0], theta[1], theta[2], theta[3]
    dim = loc.size
    for a in range(dim):
        loc[a] = params[a]
    k = dim
    for a in range(dim):
        for b in range(a + 1):
            scale[a, b] = params[k]
            k += 1
        inverse[a] = 1.0 / scale[a, a]
    column = np.empty(dim)
    for c in range(dim):
        total = 0.0
        for a in range(c, dim):
            value = 1.0 if a == c else 0.0
            for b in range(c, a):
                value -= scale[a, b] * column[b]
            column[a] = value / scale[a, a]
            total += column[a] * column[a]
        kappa = sqrt(total)
        spread[0, c] = kappa / sqrt(2.0 * np.pi)
        spread[1, c] = 1.0 / kappa
        spread[2, c] = 1.0 / (kappa * kappa)


# --- exact expectations: Gauss-Hermite over eps --------------------------------------------------


@functools.lru_cache(maxsize=4)
def _rule(dim):
    """Tensor Gauss-Hermite nodes ``eps`` (D, N), weights (N) and the index of each node's mirror ``-eps``."""
    from fastgrad._analytic import gauss_rule

    nodes, weights = gauss_rule("hermite_e", NODES[dim])
    weights = weights / np.sqrt(2.0 * np.pi)
    grid = np.meshgrid(*([nodes] * dim), indexing="ij")
    eps = np.array([g.ravel() for g in grid])
    w = np.ones(eps.shape[1])
    for g in np.meshgrid(*([weights] * dim), indexing="ij"):
        w = w * g.ravel()
    index = np.arange(eps.shape[1]).reshape((NODES[dim],) * dim)
    mirror = index[(slice(None, None, -1),) * dim].ravel()
    return eps, w, mirror


def _quadratic_coefficients(hs):
    """``(c0, c1, c2)`` per component of ``h_a(x) = c0 + c1 x + c2 x**2``, or None if some ``h_a`` is not so."""
    out = []
    for h in hs:
        terms = getattr(h, "terms", None)
        if terms is None or any(omega != 0 or j > 2 for j, omega in terms):
            return None
        out.append([float(terms.get((j, 0.0), 0)) for j in range(3)])
    return np.array(out).reshape(-1, 3)


def pathwise_closed_forms(distribution, coefficients, antithetic):
    """Mean and per-draw variance of the pathwise values of ``f = sum_a h_a(x_a)``, ``h_a`` quadratic, any D.

    With ``h_a'(x) = c1 + 2 c2 x``, ``m_a = c1 + 2 c2 loc_a`` and ``S_a = Sigma_aa``:
    ``loc_a``: mean ``m_a``, variance ``4 c2**2 S_a``; ``L_ab``: the value
    ``h_a'(x_a) eps_b`` has mean ``2 c2 L_ab`` and variance
    ``m_a**2 + 4 c2**2 (S_a + L_ab**2)`` (Isserlis: ``E[(L eps)_a**2 eps_b**2] = S_a + 2 L_ab**2``). An
    antithetic pair's mean value is ``m_a`` (variance 0) and ``2 c2 eps_b (L eps)_a`` (variance
    ``4 c2**2 (S_a + L_ab**2)``). Returns ``{parameter: (means, variances)}`` over components.
    """
    loc, scale = np.array(distribution.loc), np.array(distribution.scale_tril)
    sigma = np.sum(scale * scale, axis=1)
    c1, c2 = coefficients[:, 1], coefficients[:, 2]
    slope = c1 + 2.0 * c2 * loc
    rows, cols = np.tril_indices(distribution.dim)
    entries = scale[rows, cols]
    spread = 4.0 * c2[rows] ** 2 * (sigma[rows] + entries**2)
    return {
        "loc": (slope, np.zeros_like(slope) if antithetic else 4.0 * c2**2 * sigma),
        "scale_tril": (2.0 * c2[rows] * entries, spread if antithetic else slope[rows] ** 2 + spread),
    }


# --- exact expectations above D = 3: Gaussian moments of quadratic forms ------------------------
#
# For f = sum_a h_a(x_a) with every h_a quadratic, f is a quadratic in the noise,
# ``f = alpha + beta . eps + eps^T A eps``, and every score is a product of at most two
# linear forms of eps (``w_a = u_a . eps``, ``u_a`` row a of L^-T, and ``eps_b = e_b . eps``)
# less a constant. So every moment a score specification needs (``E[f s]``, ``E[f**2 s**2]``,
# ``E[f s_r s_k]``, ...) is a sum of ``E[g(eps) prod_i (v_i . eps)]`` with g = 1, f or f**2 and
# at most four v_i. Gaussian integration by parts (Stein's lemma, once per linear factor)
# gives each as a sum over the partial matchings M of the v_i:
#
#     E[g prod_i (v_i . eps)] = sum_M  prod_{(i, k) in M} (v_i . v_k)  E[d g / d(the unmatched v_i)],
#
# and the expected derivatives of f and f**2 (polynomials of degree 4 at most) are closed forms
# in alpha, beta and A (below). Every quantity is a D x D matrix product computed once, indexed
# per (parameter, component) pair: O(D**3) in all, about a second at D = 1000.


def _matchings(items):
    """Every partial matching of ``items``: ``(pairs, unmatched)``."""
    if not items:
        yield [], []
        return
    first, rest = items[0], items[1:]
    for pairs, unmatched in _matchings(rest):
        yield pairs, [first, *unmatched]
    for k, other in enumerate(rest):
        for pairs, unmatched in _matchings(rest[:k] + rest[k + 1 :]):
            yield [(first, other), *pairs], unmatched


class _GaussianQuadratic:
    """``E[g(eps) prod_i (v_i . eps)]``, ``eps ~ N(0, I)``, ``g = f**power``, ``f = alpha + beta.eps + eps^T A eps``.

    A direction ``(V, index)`` is row ``index[n]`` of the matrix ``V`` for
    item ``n`` (``V`` None: the identity's); every result is an array over
    the items.
    """

    def __init__(self, alpha, beta, quad):
        self.beta, self.quad = beta, quad
        self.mean = alpha + np.trace(quad)  # E f
        self.second = self.mean**2 + beta @ beta + 2.0 * np.sum(quad * quad)  # E f**2: Var(eps^T A eps) = 2 tr A**2
        # E[d^2 f**2 / dv dv'] = v^T H v': 2 E[(v.grad f)(v'.grad f) + f v^T (2A) v']
        self.hessian = 2.0 * (np.outer(beta, beta) + 4.0 * quad @ quad + 2.0 * self.mean * quad)
        self._products = {}

    def _form(self, middle, d1, d2):
        """``v1^T M v2`` per item (``M`` None: the identity)."""
        key = (id(middle), id(d1[0]), id(d2[0]))
        if key not in self._products:
            (v1, _), (v2, _) = d1, d2
            out = middle if v1 is None else (v1 if middle is None else v1 @ middle)
            if v2 is not None:
                out = v2.T if out is None else out @ v2.T
            self._products[key] = out
        matrix = self._products[key]
        if matrix is None:
            return (d1[1] == d2[1]).astype(float)
        return matrix[d1[1], d2[1]]

    def _linear(self, vector, d):
        """``v . b`` per item."""
        v, index = d
        return (vector if v is None else v @ vector)[index]

    def _derivative(self, power, dirs):
        """``E[d^m f**power / dv_1 ... dv_m]`` (``m = len(dirs)``)."""
        m = len(dirs)
        if power == 0:
            return 1.0 if m == 0 else 0.0
        if power == 1:
            if m == 0:
                return self.mean
            if m == 1:
                return self._linear(self.beta, dirs[0])
            return 2.0 * self._form(self.quad, *dirs) if m == 2 else 0.0
        if m == 0:
            return self.second
        if m == 1:  # 2 E[f v.grad f]
            d = dirs[0]
            return 2.0 * (self.mean * self._linear(self.beta, d) + 2.0 * self._linear(self.quad @ self.beta, d))
        if m == 2:
            return self._form(self.hessian, *dirs)
        if m == 3:  # sum over which v takes the first derivative of one factor f, the other two the second of the other
            a, b, c = dirs
            return 4.0 * (self._linear(self.beta, a) * self._form(self.quad, b, c)
                          + self._linear(self.beta, b) * self._form(self.quad, a, c)
                          + self._linear(self.beta, c) * self._form(self.quad, a, b))  # fmt: skip
        if m == 4:  # each factor f takes two of the four derivatives: the three pairings, twice each
            a, b, c, d = dirs
            return 8.0 * (self._form(self.quad, a, b) * self._form(self.quad, c, d)
                          + self._form(self.quad, a, c) * self._form(self.quad, b, d)
                          + self._form(self.quad, a, d) * self._form(self.quad, b, c))  # fmt: skip
        return 0.0

    def expect(self, power, terms):
        """``E[f**power p(eps)]`` per item for a polynomial ``p``: terms ``(coefficients, directions)``."""
        total = np.zeros(len(terms[0][0]))
        for coefficients, dirs in terms:
            for pairs, unmatched in _matchings(list(dirs)):
                if len(unmatched) > 2 * power:
                    continue
                value = self._derivative(power, unmatched)
                for d1, d2 in pairs:
                    value = value * self._form(None, d1, d2)
                total = total + coefficients * value
        return total


def _times(p, q, ip, iq):
    """Return the polynomial ``p[ip] q[iq]`` per item (its terms' products; ``ip``, ``iq`` index the factors' items)."""
    return [(cp[ip] * cq[iq], [(v, index[ip]) for v, index in dp] + [(v, index[iq]) for v, index in dq])
            for cp, dp in p for cq, dq in q]  # fmt: skip


def score_closed_forms(distribution, coefficients, spec, coef, wrt):
    """Mean and per-draw variance of a score specification's values for ``f = sum_a h_a(x_a)``, ``h_a`` quadratic.

    ``coefficients`` are ``(c0, c1, c2)`` per component; ``coef`` the run's
    baselines (a vector over the pairs) or control-variate matrix, or None.
    An antithetic pair's mean value is ``s f_odd`` for an odd score (``loc``'s,
    ``f_odd = beta . eps``) and ``s f_even`` for an even one (``scale_tril``'s,
    ``f_even = alpha + eps^T A eps``), less the even scores' controls (an odd
    score's control cancels in the pair). Returns ``{parameter: (means, variances)}``.
    """
    from fastgrad._analytic import loo_variance

    dim = distribution.dim
    loc, scale = np.array(distribution.loc), np.array(distribution.scale_tril)
    c0, c1, c2 = coefficients.T
    alpha = np.sum(c0 + c1 * loc + c2 * loc * loc)
    beta = scale.T @ (c1 + 2.0 * c2 * loc)
    quad = scale.T @ (c2[:, None] * scale)
    full = _GaussianQuadratic(alpha, beta, quad)
    zero = np.zeros(dim)
    odd, even = _GaussianQuadratic(0.0, beta, np.zeros((dim, dim))), _GaussianQuadratic(alpha, zero, quad)
    u = np.linalg.inv(scale).T  # w = L^-T eps: row a is u_a
    rows, cols = np.tril_indices(dim)
    diagonal = np.where(rows == cols, 1.0 / scale[rows, rows], 0.0)
    scores = [
        [(np.ones(dim), [(u, np.arange(dim))])],  # loc: w_a
        [(np.ones(rows.size), [(u, rows), (None, cols)]), (-diagonal, [])],  # L_ab: w_a eps_b - delta_ab / L_aa
    ]
    sizes = [dim, rows.size]
    offsets = [0, dim]
    if coef is not None and np.ndim(coef) == 2 and spec.antithetic:  # (a loc score's control cancels in a pair)
        coef = np.array(coef, dtype=float)
        coef[:, :dim] = 0.0
    out = {}
    for parameter in wrt:
        j = distribution.parameters.index(parameter)
        g = (odd if j == 0 else even) if spec.antithetic else full
        s = scores[j]
        items = np.arange(sizes[j])
        square = _times(s, s, items, items)
        mean = g.expect(1, s) * np.ones(sizes[j])
        if spec.baseline == "loo":
            f_s2, s2 = g.expect(1, square), g.expect(0, square)
            mu22 = g.expect(2, square) - 2.0 * g.mean * f_s2 + g.mean**2 * s2
            var_f = g.second - g.mean**2
            variance = [float(loo_variance(m, c, var_f, v, spec.group)) for m, c, v in zip(mu22, mean, s2, strict=True)]
            out[parameter] = (mean, np.array(variance))
            continue
        second = g.expect(2, square) * np.ones(sizes[j])
        if coef is not None and np.ndim(coef) == 1:
            if j == 1 or not spec.antithetic:
                b = np.asarray(coef)[offsets[j] : offsets[j] + sizes[j]]
                second = second - 2.0 * b * g.expect(1, square) + b * b * g.expect(0, square)
        elif coef is not None:
            block = np.asarray(coef)[offsets[j] : offsets[j] + sizes[j]]
            for k in range(2):
                other = np.arange(sizes[k])
                ir, ik = np.repeat(items, other.size), np.tile(other, items.size)
                cross = g.expect(1, _times(s, scores[k], ir, ik)).reshape(items.size, other.size)
                second = second - 2.0 * np.sum(block[:, offsets[k] : offsets[k] + sizes[k]] * cross, axis=1)
            whole = [np.arange(n) for n in sizes]
            for k in range(2):
                for m in range(2):
                    ik, im = np.repeat(whole[k], sizes[m]), np.tile(whole[m], sizes[k])
                    gram = full.expect(0, _times(scores[k], scores[m], ik, im)).reshape(sizes[k], sizes[m])
                    left = block[:, offsets[k] : offsets[k] + sizes[k]]
                    right = block[:, offsets[m] : offsets[m] + sizes[m]]
                    second = second + np.einsum("rk,km,rm->r", left, gram, right)
        out[parameter] = (mean, second - mean * mean)
    return out


def weak_moments(distribution, hs, coupled):
    """Mean and per-draw variance of the measure-valued values of ``loc``, for ``f = sum_a h_a(x_a)``, any D.

    Only component ``a`` differs between the sides, so the value is
    ``c (h_a(m + s R) - h_a(m - s R'))`` with ``c = kappa_a / sqrt(2 pi)``,
    ``s = 1 / kappa_a`` and the conditional mean ``m ~ N(loc_a, Sigma_aa -
    s**2)`` independent of the Rayleigh ``R``, ``R'`` (``R' = R`` coupled): a
    Gauss-Hermite rule over ``m`` (64 nodes) times the Normal's Gauss-Legendre
    rule over ``R`` (240 nodes on [0, 14]); exact for polynomial ``h_a``.
    """
    from fastgrad._analytic import _legendre, gauss_rule

    loc, scale = np.array(distribution.loc), np.array(distribution.scale_tril)
    spread = distribution.theta[3]
    sigma = np.sum(scale * scale, axis=1)
    nodes, weights = gauss_rule("hermite_e", 64)
    weights = weights / np.sqrt(2.0 * np.pi)
    rho, rho_weights = _legendre(0.0, 14.0)
    density = rho_weights * rho * np.exp(-0.5 * rho * rho)  # Rayleigh(1)
    means, variances = [], []
    for a, h in enumerate(hs):
        c, s = spread[0, a], spread[1, a]
        m = loc[a] + np.sqrt(max(sigma[a] - s * s, 0.0)) * nodes  # (0 for independent components, up to rounding)
        plus = h.evaluate(m[:, None] + s * rho[None, :])
        minus = h.evaluate(m[:, None] - s * rho[None, :])
        if coupled:
            first = c * (plus - minus) @ density
            second = c * c * ((plus - minus) ** 2 @ density)
        else:
            p, q = plus @ density, minus @ density
            first = c * (p - q)
            second = c * c * (plus**2 @ density - 2.0 * p * q + minus**2 @ density)
        mean = float(weights @ first)
        means.append(mean)
        variances.append(float(weights @ second) - mean * mean)
    return means, variances


def exact_moments(distribution, function, specs, coefficients, wrt):
    """Exact mean and per-draw variance of each specification (None where there is none).

    D <= 3: every specification, from the Gauss-Hermite rule. Above, those
    of a function whose components are polynomials of degree at most 2
    (``sum_of_squares``, ``quadratic``, ``linear_form``), in closed form
    (:func:`pathwise_closed_forms`, :func:`score_closed_forms`).
    """
    from fastgrad._analytic import chain_rule_moments, grid_moments

    if isinstance(distribution, NaturalView):  # log_diag_scale_tril: scale_tril's, times L_aa on the diagonal
        base = distribution.distribution
        return chain_rule_moments(
            distribution,
            specs,
            coefficients,
            wrt,
            lambda *args: exact_moments(base, function, *args),
            lambda name: np.where(base.diagonal_entries, base.flat("scale_tril"), 1.0),
        )
    dim = distribution.dim
    hs = distribution.component_functions(function)
    if hs is None:
        return [None] * len(specs)
    weak = [spec.base == "measure-valued" for spec in specs]
    if any(weak):  # (any D: one component's conditional law; loc only)
        rest = [spec for spec, w in zip(specs, weak, strict=True) if not w]
        kept = None if coefficients is None else [c for c, w in zip(coefficients, weak, strict=True) if not w]
        others = iter(exact_moments(distribution, function, rest, kept, wrt) if rest else [])
        return [({"loc": weak_moments(distribution, hs, spec.coupled)} if set(wrt) == {"loc"} else None) if w
                else next(others) for spec, w in zip(specs, weak, strict=True)]  # fmt: skip
    if dim > MAX_EXACT_DIM:
        quadratic = _quadratic_coefficients(hs)
        if quadratic is None:
            return [None] * len(specs)
        out = []
        for s, spec in enumerate(specs):
            if spec.base == "pathwise":
                forms = pathwise_closed_forms(distribution, quadratic, spec.antithetic)
            elif spec.base == "score":
                coef = None if coefficients is None else coefficients[s]
                forms = score_closed_forms(distribution, quadratic, spec, coef, wrt)
            else:
                out.append(None)
                continue
            out.append({p: tuple(np.asarray(v).tolist() for v in forms[p]) for p in wrt})
        return out
    eps, weights, mirror = _rule(dim)
    loc, scale = np.array(distribution.loc), np.array(distribution.scale_tril)
    x = loc[:, None] + scale @ eps
    fx = sum(h.evaluate(x[i]) for i, h in enumerate(hs))
    grads = np.array([h.derivative().evaluate(x[i]) for i, h in enumerate(hs)])
    w = np.linalg.solve(scale.T, eps)
    lower = [(a, b) for a in range(dim) for b in range(a + 1)]
    scores = np.concatenate([w, [w[a] * eps[b] - (1.0 / scale[a, a] if a == b else 0.0) for a, b in lower]])
    paths = np.concatenate([grads, [grads[a] * eps[b] for a, b in lower]])
    return grid_moments(distribution, specs, coefficients, wrt, weights, fx, scores, paths, mirror=mirror)


_WEAK_NOTE = "the weak derivative of an entry of scale_tril is not derived here"
MVN = joint_family(
    "mvn",
    ("loc", "scale_tril"),
    Joint(width=(1, 0), draw_size=(1, 0), sample=_normal_rows, draw=_draw, scores=_scores, paths=_paths,
          moments=exact_moments, sizes=_sizes, mirrored=(_mirror_draw, _mirror_factors), weak=_weak_sides,
          weak_prepare=_weak_prepare, noise_follows_theta=False, theta_into=_theta_into),
    symmetric=True,
    weak_parameters=("loc",),
    weak_note=_WEAK_NOTE,
    natural=(("log_diag_scale_tril", "scale_tril"),),
)  # fmt: skip


def _scale_tril(values, dim):
    """Check ``scale_tril`` (D x D, lower-triangular, finite, positive diagonal); return it as a tuple of rows."""
    rows = values.tolist() if isinstance(values, np.ndarray) else values
    if not isinstance(rows, (list, tuple)) or not all(isinstance(row, (list, tuple, np.ndarray)) for row in rows):
        raise TypeError(f"scale_tril must be a D x D matrix (a list of rows); got {type(values).__name__}")
    if len(rows) != dim or any(len(row) != dim for row in rows):
        shape = f"{len(rows)} rows of lengths {sorted({len(row) for row in rows})}"
        raise ValueError(f"scale_tril must be {dim} x {dim} (loc has {dim} components); got {shape}")
    out = []
    for a, row in enumerate(rows):
        checked = _vector(f"scale_tril[{a}]", row)
        for b, value in enumerate(checked):
            if b > a and value != 0.0:
                raise ValueError(f"scale_tril[{a}][{b}] must be 0 (above the diagonal); got {value!r}")
            if b == a and not value > 0.0:
                raise ValueError(f"scale_tril[{a}][{a}] must be > 0 (a diagonal entry); got {value!r}")
        out.append(checked)
    return tuple(out)


@register
@dataclass(frozen=True, eq=False)
class MultivariateNormal:
    """The multivariate normal ``N(loc, L L^T)`` with ``L = scale_tril``: ``x = loc + L eps``.

    Score function (and every variant) and pathwise gradients, antithetic
    pairs included, with respect to every component of ``loc`` and every
    entry of ``scale_tril``'s lower triangle. Results hold ``loc``'s as an
    array of D values and ``scale_tril``'s as an array of D (D + 1) / 2, the
    lower triangle row by row (entry ``(a, b)``, ``b <= a``, at
    ``a (a + 1) / 2 + b``). ``f`` is a function of the whole draw:
    ``fastgrad.functions.sum_of_squares()``, ``quadratic(diag)``,
    ``linear_form(weights)``, ``sum_cos(omega)`` or a
    :class:`~fastgrad.VectorFunction`.

    Parameters
    ----------
    loc : sequence of float, length D (1 <= D <= 1000)
    scale_tril : D x D matrix (a list of rows or a 2-D array)
        Lower-triangular: finite, zero above the diagonal, > 0 on it.

    Examples
    --------
    >>> import fastgrad as fg
    >>> fg.MultivariateNormal([1.0, 2.0], [[1.0, 0.0], [0.5, 2.0]])
    MultivariateNormal(loc=[1.0, 2.0], scale_tril=[[1.0, 0.0], [0.5, 2.0]])
    """

    loc: tuple
    scale_tril: tuple

    family = MVN
    name = "mvn"  # the command line's --dist

    def __post_init__(self):
        loc = _vector("loc", self.loc)
        if not 1 <= len(loc) <= MAX_DIM:
            raise ValueError(f"loc must have 1 to {MAX_DIM} components; got {len(loc)}")
        object.__setattr__(self, "loc", loc)
        object.__setattr__(self, "scale_tril", _scale_tril(self.scale_tril, len(loc)))

    @property
    def dim(self):
        """Number of components D."""
        return len(self.loc)

    draw_size = dim  # (the components f takes)

    @property
    def parameters(self):
        """Parameter names, in gradient order."""
        return self.family.parameters

    @property
    def parameter_sizes(self):
        """Components of each parameter: D for ``loc``, D (D + 1) / 2 for ``scale_tril``."""
        return (self.dim, self.dim * (self.dim + 1) // 2)

    @property
    def theta(self):
        """Kernel parameters: ``loc``, ``L``, ``1 / diag(L)`` and the weak derivative's ``kappa`` terms (3 x D)."""
        return _theta(self.loc, self.scale_tril)

    @property
    def diagonal_entries(self):
        """Per entry of ``scale_tril``'s lower triangle (row by row): whether it is on the diagonal."""
        return tuple(b == a for a in range(self.dim) for b in range(a + 1))

    def flat(self, name):
        """Return a parameter's values as the gradient's components (``scale_tril``'s lower triangle row by row)."""
        if name == "loc":
            return self.loc
        return tuple(self.scale_tril[a][b] for a in range(self.dim) for b in range(a + 1))

    def natural_value(self, name):
        """``log_diag_scale_tril``: ``scale_tril``'s lower triangle (row by row) with the diagonal's logarithms."""
        return tuple(math.log(v) if d else v for v, d in zip(self.flat("scale_tril"), self.diagonal_entries,
                                                              strict=True))  # fmt: skip

    def component_functions(self, function):
        """``f``'s exact form per component (``w_i h``), or None for a user's function."""
        exact = getattr(function, "component_exact", None)
        return None if exact is None else [exact(i, self.dim) for i in range(self.dim)]

    def exact_values_note(self, function):
        """Why a run of ``function`` has no exact values, or only some (None: it has them, or it is a user's)."""
        hs = self.component_functions(function)
        if self.dim <= MAX_EXACT_DIM or hs is None or _quadratic_coefficients(hs) is not None:
            return None
        return (f"exact values are computed for D <= {MAX_EXACT_DIM}, a Gauss-Hermite rule over the D normals "
                f"(above it, for quadratic forms, and the measure-valued estimator's for any built-in); this "
                f"distribution has D = {self.dim}")  # fmt: skip

    def to_dict(self):
        """JSON-ready description."""
        return {"family": "MultivariateNormal", "loc": list(self.loc), "scale_tril": [list(r) for r in self.scale_tril]}

    def __eq__(self, other):
        return isinstance(other, MultivariateNormal) and (self.loc, self.scale_tril) == (other.loc, other.scale_tril)

    def __hash__(self):
        return hash(("MultivariateNormal", self.loc, self.scale_tril))

    def __repr__(self):
        if self.dim <= 4:
            rows = ", ".join("[" + ", ".join(repr(v) for v in row) + "]" for row in self.scale_tril)
            return f"MultivariateNormal(loc=[{', '.join(repr(v) for v in self.loc)}], scale_tril=[{rows}])"
        return f"MultivariateNormal(loc=[{self.loc[0]!r}, {self.loc[1]!r}, ... ({self.dim} values)], scale_tril=...)"


@functools.lru_cache(maxsize=8)
def _theta(loc, scale_tril):
    scale = np.array(scale_tril, dtype=np.float64)
    kappa = np.sqrt(np.sum(np.linalg.inv(scale) ** 2, axis=0))  # sqrt((Sigma^-1)_aa): column norms of L^-1
    spread = np.array([kappa / np.sqrt(2.0 * np.pi), 1.0 / kappa, 1.0 / kappa**2])
    return np.array(loc, dtype=np.float64), scale, 1.0 / np.diag(scale).copy(), spread
