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

Exact reference values: every per-draw value is a function of the K Gamma draws, so its
mean and variance are integrals against K independent Gamma densities; they are computed
by a tensor-product Gauss-Legendre rule in ``t_i = log g_i`` (:func:`noise_moments`), for
K <= 3 (about 1e-11 relative at the default nodes; docs/families.md has the measured
convergence). The means are checked in the tests against closed forms (moments of the
Dirichlet and their derivatives, in exact rational arithmetic).
"""

import functools
import math
from dataclasses import dataclass

import numpy as np

from fastgrad import math as fm
from fastgrad._checks import check_draw_size
from fastgrad._checks import real as _real
from fastgrad._checks import real_vector as _vector
from fastgrad._jit import inline_core, serial
from fastgrad.distributions import Joint, joint_family, register
from fastgrad.gamma import MAX_SHAPE, _sample_grads
from fastgrad.rng import _gamma_rows

__all__ = ["Beta", "Dirichlet", "beta_sample_grad"]

#: Most components whose exact reference values are computed (a K-dimensional quadrature).
MAX_EXACT_COMPONENTS = 3
#: Gauss-Legendre nodes per piece of each Gamma draw's rule, by K (about 650 and 165 a draw). Measured (the means and
#: variances of score, pathwise and score+loo(4), sum_of_squares or square or cos): from 12 to 16 a piece, K = 2 moved
#: by at most 2.2e-14 relative (Beta(0.3, 5) with cos); from 3 to 4, K = 3 by at most 4.2e-4 and from 4 to 6 by at
#: most 1.7e-6 (Dirichlet([0.4, 2, 30])). K = 3 takes 4 a piece: 4.4 million points (1.0 s, 0.86 GB) where 6 took 15
#: million (2.7 s, 2.4 GB; peak resident sizes, in every process that needs it, MPI ranks included).
NODES_PER_PIECE = {2: 16, 3: 4}


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
    log_total = fm.log(_row_sum(noise, base, theta[0].size))
    for k in range(theta[0].size):
        q[row, k] = (fm.log(noise[base + k]) - log_total) + theta[1][k]


@inline_core
def _paths(noise, base, xs, grads, theta, active, dim, q, row):
    total = _row_sum(noise, base, theta[0].size)
    dot = 0.0
    for i in range(xs.size):
        dot += xs[i] * grads[i]
    for j in active:
        for i in range(dim):
            k = j * dim + i
            own = grads[k] if k < xs.size else 0.0
            constants = (theta[2][k], theta[3][k], theta[4][k], theta[5][k])
            fit = (theta[6][k] != 0.0, theta[7][k], theta[8][k], theta[9][k], theta[10][k], theta[11][k],
                   theta[13][k, : int(theta[12][k])])  # fmt: skip
            grad = fm._gamma_grad_from_fit(noise[base + k], theta[0][k], constants, fit)
            q[row, k] = grad / total * (own - dot)


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
def gamma_nodes(alpha, per_piece):
    """Nodes ``t`` (``log g``), weights (with the Gamma(``alpha``) density) and ``g'`` of a Gauss-Legendre rule.

    Composite: 40 pieces over ``t`` from where the density in ``t``,
    ``exp(alpha t - e**t) / Gamma(alpha)``, is ``e**-46`` of its peak below it
    to the same above it (the peak and its width ``sqrt(trigamma(alpha))``
    resolved by 24 of them), ``per_piece`` nodes each. Returns numpy arrays
    ``(t, weights, g, dg)``, ``dg = dg/dalpha`` at each node.
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
    x, w = np.polynomial.legendre.leggauss(per_piece)
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


def _trigamma(a):
    import mpmath

    return mpmath.psi(1, a)


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

    alphas = distribution.concentration
    key = _function_key(function)
    if len(alphas) > MAX_EXACT_COMPONENTS or key is None:
        return [None] * len(specs)
    _GRID_FUNCTIONS.setdefault(key, function)
    per_piece = per_piece or NODES_PER_PIECE[len(alphas)]
    coefficient_bytes = tuple(None if c is None else np.asarray(c).tobytes() for c in (coefficients or ()))
    remembered = (distribution, key, tuple(spec.name for spec in specs), coefficient_bytes, tuple(wrt), per_piece)
    found = _MOMENTS.get(remembered)
    if found is None:  # (K = 3: about a second of dot products over the grid's 15 million points, per run otherwise)
        weights, fx, scores, paths = _grid(distribution, key, per_piece)
        found = grid_moments(distribution, specs, coefficients, wrt, weights, fx, scores, paths)
        if len(_MOMENTS) >= 32:
            _MOMENTS.pop(next(iter(_MOMENTS)))
        _MOMENTS[remembered] = found
    return [None if entry is None else {p: v for p, v in entry.items()} for entry in found]


#: (distribution, function, specifications, coefficients, wrt, nodes) -> exact moments, oldest first.
_MOMENTS = {}


JOINT = Joint(width=(1, 0), draw_size=(1, 0), sample=_rows_noise, draw=_draw, scores=_scores, paths=_paths,
              moments=noise_moments)  # fmt: skip


_WEAK_NOTE = (
    "a concentration's score, log x_k - digamma(alpha_k) + digamma(alpha_0), splits into no two laws with a "
    "closed-form sampler"
)
DIRICHLET = joint_family("dirichlet", ("concentration",), JOINT, weak_note=_WEAK_NOTE)
BETA = joint_family(
    "beta",
    ("a", "b"),
    Joint(width=(0, 2), draw_size=(0, 1), sample=_rows_noise, draw=_draw, scores=_scores, paths=_paths,
          moments=noise_moments),
    weak_note=_WEAK_NOTE,
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
        if self.dim > MAX_EXACT_COMPONENTS and self.component_functions(function) is not None:
            return (f"exact values are computed for K <= {MAX_EXACT_COMPONENTS} (a quadrature over the K Gamma "
                    f"draws); this distribution has K = {self.dim}")  # fmt: skip
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
