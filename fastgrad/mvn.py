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
the Dirichlet's (:func:`fastgrad._analytic.grid_moments`); at any D, the
pathwise specifications' for quadratic forms in closed form
(:func:`pathwise_closed_forms`).

Memory: the run's kernel parameters are ``L`` (D^2 numbers), and each thread's
value rows hold ``D (D + 3) / 2`` per specification for a block of at least 8
draws (about 2.6 MB a specification at D = 200).
"""

import functools
from dataclasses import dataclass

import numpy as np

from fastgrad._checks import real_vector as _vector
from fastgrad._jit import inline_core, serial
from fastgrad.distributions import Joint, joint_family, register
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
def _scores(noise, base, xs, theta, q, row):
    scale, inverse = theta[1], theta[2]
    dim = inverse.size
    for a in range(dim - 1, -1, -1):  # w = L^-T eps, by back substitution: the loc scores
        total = noise[base + a]
        for c in range(a + 1, dim):
            total -= scale[c, a] * q[row, c]
        q[row, a] = total * inverse[a]
    k = dim
    for a in range(dim):
        for b in range(a + 1):
            q[row, k] = q[row, a] * noise[base + b]
            k += 1
        q[row, k - 1] -= inverse[a]


@inline_core
def _paths(noise, base, xs, grads, theta, active, dim, q, row):
    for j in active:
        if j == 0:
            for a in range(dim):
                q[row, a] = grads[a]
        else:
            k = dim
            for a in range(dim):
                for b in range(a + 1):
                    q[row, k] = grads[a] * noise[base + b]
                    k += 1


@inline_core
def _mirror_factors(noise, base, xb, gradb, theta, active, dim, scores, paths, q):
    if scores:  # (q[0] holds the draw's own scores: at -eps, w changes sign and w_a eps_b does not)
        for a in range(dim):
            q[1, a] = -q[0, a]
        for k in range(dim, dim + dim * (dim + 1) // 2):
            q[1, k] = q[0, k]
    if paths:
        for j in active:
            if j == 0:
                for a in range(dim):
                    q[3, a] = gradb[a]
            else:
                k = dim
                for a in range(dim):
                    for b in range(a + 1):
                        q[3, k] = gradb[a] * -noise[base + b]
                        k += 1


# --- exact expectations: Gauss-Hermite over eps --------------------------------------------------


@functools.lru_cache(maxsize=4)
def _rule(dim):
    """Tensor Gauss-Hermite nodes ``eps`` (D, N), weights (N) and the index of each node's mirror ``-eps``."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(NODES[dim])
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
    """``(c1, c2)`` per component of ``h_a(x) = c0 + c1 x + c2 x**2``, or None if some ``h_a`` is not of that form."""
    out = []
    for h in hs:
        terms = getattr(h, "terms", None)
        if terms is None or any(omega != 0 or j > 2 for j, omega in terms):
            return None
        out.append((float(terms.get((1, 0.0), 0)), float(terms.get((2, 0.0), 0))))
    return np.array(out).reshape(-1, 2)


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
    c1, c2 = coefficients[:, 0], coefficients[:, 1]
    slope = c1 + 2.0 * c2 * loc
    rows, cols = np.tril_indices(distribution.dim)
    entries = scale[rows, cols]
    spread = 4.0 * c2[rows] ** 2 * (sigma[rows] + entries**2)
    return {
        "loc": (slope, np.zeros_like(slope) if antithetic else 4.0 * c2**2 * sigma),
        "scale_tril": (2.0 * c2[rows] * entries, spread if antithetic else slope[rows] ** 2 + spread),
    }


def exact_moments(distribution, function, specs, coefficients, wrt):
    """Exact mean and per-draw variance of each specification (None where there is none).

    D <= 3: every specification, from the Gauss-Hermite rule. Above, the
    pathwise specifications of a function whose components are polynomials
    of degree at most 2 (``sum_of_squares``, ``quadratic``, ``linear_form``),
    in closed form (:func:`pathwise_closed_forms`).
    """
    from fastgrad._analytic import grid_moments

    dim = distribution.dim
    hs = distribution.component_functions(function)
    if hs is None:
        return [None] * len(specs)
    if dim > MAX_EXACT_DIM:
        quadratic = _quadratic_coefficients(hs)
        if quadratic is None:
            return [None] * len(specs)
        out = []
        for spec in specs:
            if spec.base != "pathwise":
                out.append(None)
                continue
            forms = pathwise_closed_forms(distribution, quadratic, spec.antithetic)
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


_WEAK_NOTE = "fastgrad has no weak derivative for an entry of scale_tril"
MVN = joint_family(
    "mvn",
    ("loc", "scale_tril"),
    Joint(width=(1, 0), draw_size=(1, 0), sample=_normal_rows, draw=_draw, scores=_scores, paths=_paths,
          moments=exact_moments, sizes=_sizes, mirrored=(_mirror_draw, _mirror_factors)),
    symmetric=True,
    weak_note=_WEAK_NOTE,
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
        """Kernel parameters: ``loc``, ``L`` and ``1 / diag(L)``."""
        return _theta(self.loc, self.scale_tril)

    def component_functions(self, function):
        """``f``'s exact form per component (``w_i h``), or None for a user's function."""
        exact = getattr(function, "component_exact", None)
        return None if exact is None else [exact(i, self.dim) for i in range(self.dim)]

    def exact_values_note(self, function):
        """Why a run of ``function`` has no exact values, or only some (None: it has them, or it is a user's)."""
        hs = self.component_functions(function)
        if self.dim <= MAX_EXACT_DIM or hs is None:
            return None
        quadratic = _quadratic_coefficients(hs) is not None
        some = " (above it, the pathwise specifications' of quadratic forms)" if quadratic else ""
        return (f"exact values are computed for D <= {MAX_EXACT_DIM}, a Gauss-Hermite rule over the D normals{some}; "
                f"this distribution has D = {self.dim}")  # fmt: skip

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
    return np.array(loc, dtype=np.float64), scale, 1.0 / np.diag(scale).copy()
