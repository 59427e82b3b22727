"""Exact expectations for the built-in functions: the "truth" every estimate is checked against.

Built-in functions are *exponential polynomials*: finite sums of terms
``c * x**j * exp(i * omega * x)``. The class is closed under products and
derivatives, so ``f``, ``f'``, ``f**2``, ``f'**2`` and anything else an
estimator's variance needs stay in it, and their Gaussian expectations have
closed forms:

    E[z**n * exp(i b z)] = m_n(b),  z ~ N(0, 1),
    m_0 = exp(-b**2 / 2),  m_1 = i b m_0,  m_n = (n - 1) m_{n-2} + i b m_{n-1}

(the last line is Stein's identity E[z g(z)] = E[g'(z)] with
g = z**(n-1) exp(i b z)). With ``x = loc + scale * z``,

    E[x**j exp(i w x) z**k] = exp(i w loc) * sum_l C(j, l) loc**(j-l) scale**l m_{l+k}(w scale).

Purely polynomial terms (``omega = 0``) are evaluated in exact rational
arithmetic (:class:`fractions.Fraction`), so a variance ``E[h**2] - E[h]**2``
of a polynomial loses no digits to cancellation even at ``loc = 1e4``.

Built-ins outside that class (``exp_quadratic``, ``logistic``) are
:class:`Smooth` functions: the same algebra (products, derivatives,
reflections) on their values, with every expectation an adaptive
Gauss-Legendre quadrature to about 1e-14 of the integral of its absolute
value (:func:`integrate`).
"""

import cmath
import functools
from fractions import Fraction
from math import comb, exp, factorial, pi, sqrt

import numpy as np


class ExpPoly:
    """A finite sum of ``c * x**j * exp(i * omega * x)``, keyed by ``(j, omega)``."""

    def __init__(self, terms=None):
        self.terms = {}
        for key, coefficient in (terms or {}).items():
            self._add_term(key, coefficient)

    def _add_term(self, key, coefficient):
        total = self.terms.get(key, 0) + coefficient
        if total == 0:
            self.terms.pop(key, None)
        else:
            self.terms[key] = total

    @classmethod
    def polynomial(cls, coefficients):
        """``sum(c_j * x**j)`` from ``[c_0, c_1, ...]``."""
        return cls({(j, 0.0): _exact(c) for j, c in enumerate(coefficients) if c != 0})

    @classmethod
    def exponential(cls, omega, coefficient=1):
        """``coefficient * exp(i * omega * x)``."""
        return cls({(0, float(omega)): coefficient})

    @classmethod
    def cos(cls, omega):
        """``cos(omega * x)`` as two complex exponentials."""
        return cls.exponential(omega, 0.5) + cls.exponential(-omega, 0.5)

    def __add__(self, other):
        if isinstance(other, Smooth):
            return NotImplemented
        out = ExpPoly(self.terms)
        for key, coefficient in other.terms.items():
            out._add_term(key, coefficient)
        return out

    def __mul__(self, other):
        if isinstance(other, Smooth):
            return NotImplemented
        if not isinstance(other, ExpPoly):
            return ExpPoly({key: c * _exact(other) for key, c in self.terms.items()})
        out = ExpPoly()
        for (j1, w1), c1 in self.terms.items():
            for (j2, w2), c2 in other.terms.items():
                out._add_term((j1 + j2, w1 + w2), c1 * c2)
        return out

    __rmul__ = __mul__

    def derivative(self):
        """d/dx: ``j x**(j-1) e^{iwx} + i w x**j e^{iwx}`` term by term."""
        out = ExpPoly()
        for (j, w), c in self.terms.items():
            if j:
                out._add_term((j - 1, w), c * j)
            if w:
                out._add_term((j, w), c * 1j * w)
        return out

    def reflect(self, center):
        """``x -> self(center - x)``: the function at the mirrored draw of an antithetic pair."""
        center = _exact(center)
        out = ExpPoly()
        for (j, w), c in self.terms.items():
            phase = c if w == 0 else complex(c) * cmath.exp(1j * w * float(center))
            for p in range(j + 1):
                # (center - x)**j = sum_p C(j, p) center**(j-p) (-x)**p
                scale = comb(j, p) * (center if w == 0 else float(center)) ** (j - p) * (-1) ** p
                out._add_term((p, -w), phase * scale)
        return out

    def evaluate(self, x):
        """Evaluate at an array of real ``x`` (quadrature nodes)."""
        import numpy as np

        total = np.zeros(np.shape(x), dtype=complex)
        for (j, w), c in self.terms.items():
            total += complex(c) * np.power(x, j) * np.exp(1j * w * x)
        return total.real

    def __call__(self, x):
        """Evaluate at a real ``x`` (used to check the compiled cores)."""
        total = 0j
        for (j, w), c in self.terms.items():
            total += complex(c) * x**j * cmath.exp(1j * w * x)
        return total.real

    def normal_expectation(self, loc, scale, z_polynomial=(1,)):
        """``E[self(x) * q(z)]`` for ``x = loc + scale * z``, ``z ~ N(0, 1)``.

        ``q(z) = sum(z_polynomial[k] * z**k)``. Exact (a ``Fraction``) when
        every term is polynomial, else a float.
        """
        loc = _exact(loc)
        scale = _exact(scale)
        total = Fraction(0)
        for (j, w), c in self.terms.items():
            for k, q in enumerate(z_polynomial):
                if q == 0:
                    continue
                q = _exact(q)
                if w == 0:
                    moments = _standard_normal_moments(j + k)
                    term = sum(comb(j, p) * loc ** (j - p) * scale**p * moments[p + k] for p in range(j + 1))
                    total = total + c * q * term
                else:
                    b = w * float(scale)
                    moments = _oscillating_moments(j + k, b)
                    term = sum(
                        comb(j, p) * float(loc) ** (j - p) * float(scale) ** p * moments[p + k] for p in range(j + 1)
                    )
                    phase = cmath.exp(1j * w * float(loc))
                    total = total + complex(c) * float(q) * phase * term
        if isinstance(total, complex):
            return total.real
        return total


def exponential_expectation(h, rate, eps_polynomial=(1,)):
    """``E[h(x) * q(eps)]`` for ``x = eps / rate``, ``eps ~ Exp(1)``.

    Term by term, with ``b = omega / rate``::

        E[x**j exp(i omega x) eps**k] = rate**-j E[eps**(j+k) exp(i b eps)] = rate**-j (j+k)! / (1 - i b)**(j+k+1)

    (the Laplace transform of ``eps**n`` at ``1 - i b``). Exact (a
    ``Fraction``) when every term is polynomial.
    """
    if isinstance(h, Smooth):
        return h.exponential_expectation(rate, eps_polynomial)
    rate = _exact(rate)
    total = Fraction(0)
    for (j, w), c in h.terms.items():
        for k, q in enumerate(eps_polynomial):
            if q == 0:
                continue
            n = j + k
            if w == 0:
                total = total + c * _exact(q) * factorial(n) / rate**j
            else:
                b = w / float(rate)
                term = factorial(n) / (1 - 1j * b) ** (n + 1) / float(rate) ** j
                total = total + complex(c) * float(q) * term
    if isinstance(total, complex):
        return total.real
    return total


def bernoulli_expectation(h, p, x_polynomial=(1,)):
    """``E[h(x) * q(x)]`` for ``x ~ Bernoulli(p)``: ``(1 - p) h(0) q(0) + p h(1) q(1)``, exact for polynomials."""
    p = _exact(p)

    def at(x):
        if isinstance(h, Smooth):
            return h(float(x))
        value = Fraction(0)
        for (j, w), c in h.terms.items():
            if w == 0:
                value = value + c * Fraction(x) ** j
            else:
                value = value + complex(c) * x**j * cmath.exp(1j * w * x)
        return value

    def q(x):
        return sum(_exact(c) * Fraction(x) ** k for k, c in enumerate(x_polynomial))

    if isinstance(h, Smooth):
        return float((1 - p) * q(0)) * at(0) + float(p * q(1)) * at(1)
    total = (1 - p) * at(0) * q(0) + p * at(1) * q(1)
    if isinstance(total, complex):
        return total.real
    return total


class Smooth:
    """A real function with no closed-form expectations; every expectation is a quadrature.

    ``values`` maps a float64 array to the function's values (NumPy, no
    overflow warnings expected of it), ``derivative`` returns the derivative
    as another :class:`Smooth`. Products, sums, reflections and affine
    changes of variable compose these lazily, so the estimator formulas
    written for :class:`ExpPoly` apply unchanged. Expectations under the
    Normal, Exponential and Bernoulli laws (and the Laplace, through
    :meth:`affine`) integrate the values by :func:`integrate`.
    """

    def __init__(self, values, derivative):
        self._values = values
        self._derivative = derivative

    @classmethod
    def lift(cls, h):
        """``h`` as a :class:`Smooth` (an :class:`ExpPoly` is evaluated through its terms)."""
        if isinstance(h, Smooth):
            return h
        return cls(h.evaluate, lambda: cls.lift(h.derivative()))

    def __mul__(self, other):
        if isinstance(other, (ExpPoly, Smooth)):
            a, b = self, Smooth.lift(other)
            return Smooth(lambda x: a._values(x) * b._values(x), lambda: a.derivative() * b + a * b.derivative())
        c = float(other)
        return Smooth(lambda x: c * self._values(x), lambda: self.derivative() * c)

    __rmul__ = __mul__

    def __add__(self, other):
        a, b = self, Smooth.lift(other)
        return Smooth(lambda x: a._values(x) + b._values(x), lambda: a.derivative() + b.derivative())

    __radd__ = __add__

    def derivative(self):
        """d/dx, as a :class:`Smooth`."""
        return self._derivative()

    def reflect(self, center):
        """``x -> self(center - x)``."""
        c = float(center)
        return Smooth(lambda x: self._values(c - x), lambda: self.derivative().reflect(c) * -1.0)

    def affine(self, shift, slope):
        """``r -> self(shift + slope * r)``."""
        a, b = float(shift), float(slope)
        return Smooth(lambda r: self._values(a + b * r), lambda: self.derivative().affine(a, b) * b)

    def evaluate(self, x):
        """Values at an array of real ``x``."""
        with np.errstate(over="ignore", under="ignore"):
            return np.asarray(self._values(np.asarray(x, dtype=float)), dtype=float)

    def __call__(self, x):
        return float(self.evaluate(np.array([float(x)]))[0])

    def normal_expectation(self, loc, scale, z_polynomial=(1,)):
        """``E[self(x) q(z)]`` for ``x = loc + scale z``, ``z ~ N(0, 1)``, by quadrature over ``|z| <= 40``."""
        loc, scale, q = float(loc), float(scale), [float(c) for c in z_polynomial]

        def integrand(z):
            return self.evaluate(loc + scale * z) * np.polynomial.polynomial.polyval(z, q) * np.exp(-0.5 * z * z)

        return integrate(integrand, np.linspace(-40.0, 40.0, 33)) / sqrt(2.0 * pi)

    def exponential_expectation(self, rate, eps_polynomial=(1,)):
        """``E[self(x) q(eps)]`` for ``x = eps / rate``, ``eps ~ Exp(1)``, by quadrature over ``eps <= 800``."""
        inverse, q = 1.0 / float(rate), [float(c) for c in eps_polynomial]

        def integrand(eps):
            return self.evaluate(eps * inverse) * np.polynomial.polynomial.polyval(eps, q) * np.exp(-eps)

        return integrate(integrand, np.concatenate([[0.0], 2.0 ** np.arange(-4, 10), [800.0]]))


def affine(h, shift, slope):
    """``h(shift + slope * r)`` as an :class:`ExpPoly` in ``r`` (a :class:`Smooth` stays one)."""
    if isinstance(h, Smooth):
        return h.affine(shift, slope)
    out = ExpPoly()
    for (j, w), c in h.terms.items():
        exact = w == 0
        a, b = (_exact(shift), _exact(slope)) if exact else (float(shift), float(slope))
        phase = c if exact else complex(c) * cmath.exp(1j * w * a)
        for m in range(j + 1):
            out._add_term((m, w * float(b)), phase * comb(j, m) * a ** (j - m) * b**m)
    return out


def exp_quadratic_form(k, polynomial=(1.0,)):
    """``P(x) exp(-k x**2)`` as a :class:`Smooth` (``P`` ascending coefficients); its derivative is the same form."""
    p = np.polynomial.Polynomial(polynomial)
    derivative = p.deriv() - np.polynomial.Polynomial([0.0, 2.0 * k]) * p
    return Smooth(lambda x: p(x) * np.exp(-k * (x * x)), lambda: exp_quadratic_form(k, derivative.coef))


def logistic_form(a, b, polynomial=(0.0, 1.0)):
    """``P(s)`` with ``s = 1 / (1 + exp(-(a x + b)))`` as a :class:`Smooth`; ``ds/dx = a s (1 - s)``.

    ``s`` is computed as ``(1 + tanh(z / 2)) / 2``, which never overflows.
    """
    p = np.polynomial.Polynomial(polynomial)
    derivative = p.deriv() * np.polynomial.Polynomial([0.0, a, -a])

    def values(x):
        return p(0.5 * (1.0 + np.tanh(0.5 * (a * x + b))))

    return Smooth(values, lambda: logistic_form(a, b, derivative.coef))


#: Gauss-Legendre rules of 16 and 32 points on [-1, 1]: an interval is done when they agree.
_RULES = None


def integrate(g, breaks, rtol=1e-14, max_rounds=48):
    """``integral of g`` over ``[breaks[0], breaks[-1]]``, adaptively (``g`` maps an array to an array).

    Each interval is integrated by 16- and 32-point Gauss-Legendre rules; it
    is done when they differ by less than ``rtol`` times the integral of
    ``|g|`` (apportioned by width) or by no more than the rounding of the
    sums themselves (64 ulps of the interval's integral of ``|g|``), and
    halved otherwise. The 32-point sum is kept, whose error is far below
    that difference for a smooth ``g``. At most ``2**16`` intervals are
    refined at once: beyond, the best estimates are returned.
    """
    global _RULES
    if _RULES is None:
        _RULES = [gauss_rule("legendre", count) for count in (16, 32)]
    (x16, w16), (x32, w32) = _RULES
    breaks = np.asarray(breaks, dtype=float)
    lo, hi = breaks[:-1], breaks[1:]
    width = breaks[-1] - breaks[0]
    total, scale = 0.0, None
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        for _ in range(max_rounds):
            middle, half = (lo + hi) / 2, (hi - lo) / 2
            fine = g(middle[:, None] + half[:, None] * x32)
            coarse = g(middle[:, None] + half[:, None] * x16)
            value = half * (fine @ w32)
            error = np.abs(value - half * (coarse @ w16))
            magnitude = half * (np.abs(fine) @ w32)
            if scale is None:
                scale = float(np.sum(magnitude))
            done = (error <= rtol * scale * (hi - lo) / width) | (error <= 64 * 2.0**-52 * magnitude)
            done |= ~np.isfinite(value)
            total += float(np.sum(value[done]))
            if done.all() or np.count_nonzero(~done) > 2**15:
                return total + float(np.sum(value[~done]))
            lo, hi = lo[~done], hi[~done]
            middle = (lo + hi) / 2
            lo, hi = np.concatenate([lo, middle]), np.concatenate([middle, hi])
    return total + float(np.sum(value[~done]))  # (not converged in max_rounds halvings: the best estimate)


def _variance(second, mean):
    """``second - mean**2`` as a float; 0 where quadratures left it a rounding error below 0 (a zero variance)."""
    variance = float(second - mean * mean)
    if variance < 0 and not isinstance(second, Fraction) and -variance <= 2.0**-44 * abs(float(second)):
        return 0.0
    return variance


def _exact(value):
    """Exact rational for real numbers; complex numbers pass through."""
    if isinstance(value, (Fraction, int)):
        return Fraction(value)
    if isinstance(value, complex):
        return value
    return Fraction(float(value))


def _standard_normal_moments(n_max):
    """E[z**n] for n = 0..n_max: 0 for odd n, (n - 1)!! for even n."""
    moments = [Fraction(1), Fraction(0)]
    for n in range(2, n_max + 1):
        moments.append((n - 1) * moments[n - 2])
    return moments[: n_max + 1]


def _oscillating_moments(n_max, b):
    """m_n(b) = E[z**n exp(i b z)] for n = 0..n_max, by Stein's recursion."""
    moments = [complex(exp(-0.5 * b * b)), 0j]
    moments[1] = 1j * b * moments[0]
    for n in range(2, n_max + 1):
        moments.append((n - 1) * moments[n - 2] + 1j * b * moments[n - 1])
    return moments[: n_max + 1]


def _factor_pair(p, q):
    """Return the pair as a family's own noise factors (a plain polynomial lifted), or None for two polynomials.

    A family whose score or path factors are not polynomials in its noise
    (the Laplace's ``sign(eps)``) gives objects with ``*``, ``+``,
    ``scale(c)``, ``reflect()``, iteration over coefficients and a
    ``from_polynomial(coefficients)`` class method; its ``expectation``
    understands them.
    """
    plain = (list, tuple)
    if isinstance(p, plain) and isinstance(q, plain):
        return None
    kind = type(q) if isinstance(p, plain) else type(p)
    lift = kind.from_polynomial
    return (lift(p) if isinstance(p, plain) else p, lift(q) if isinstance(q, plain) else q)


class NoiseTerms:
    """``sum c * m_key``: a family's own noise factors, keyed monomials with coefficients (see :func:`_factor_pair`).

    A subclass says what a monomial is: ``_times(key1, key2)``, the key of
    the product of two, and ``from_polynomial(coefficients)``, a polynomial in
    the noise; sums, products and scalings are the same for every family.
    """

    def __init__(self, terms):
        self.terms = {}
        for key, c in terms.items():
            if c != 0:
                self.terms[key] = self.terms.get(key, 0) + c

    @staticmethod
    def _times(key1, key2):
        raise NotImplementedError

    def __mul__(self, other):
        out = {}
        for key1, c1 in self.terms.items():
            for key2, c2 in other.terms.items():
                key = self._times(key1, key2)
                out[key] = out.get(key, 0) + c1 * c2
        return type(self)(out)

    def __add__(self, other):
        out = dict(self.terms)
        for key, c in other.terms.items():
            out[key] = out.get(key, 0) + c
        return type(self)(out)

    def scale(self, factor):
        return type(self)({key: c * factor for key, c in self.terms.items()})

    def __iter__(self):
        return iter(self.terms.values())


def polynomial_product(p, q):
    """Coefficients of the product of two polynomials in z (or a family's own factors: :func:`_factor_pair`)."""
    pair = _factor_pair(p, q)
    if pair is not None:
        return pair[0] * pair[1]
    out = [0] * (len(p) + len(q) - 1)
    for i, a in enumerate(p):
        for j, b in enumerate(q):
            out[i + j] = out[i + j] + _exact(a) * _exact(b)
    return out


def estimator_moments(distribution, function, estimators, wrt):
    """Exact mean and per-draw variance of each estimator, per parameter.

    Returns ``{estimator: {parameter: (mean, variance)}}``, or None when the
    function has no exact form (user functions) or the family none.

    The exact rational arithmetic takes about half a millisecond, as long as
    the kernel itself needs for a million draws, so the answer is kept for
    the last few (distribution, built-in function, estimators, parameters).
    """
    builtin = getattr(function, "builtin", None)
    try:
        key = (distribution, builtin.name, tuple(function.params), tuple(estimators), tuple(wrt))
        hash(key)
    except (AttributeError, TypeError):  # not a built-in function, or an unhashable distribution: no cache
        return _estimator_moments(distribution, function, estimators, wrt)
    found = _MOMENTS.get(key, _MISSING)
    if found is _MISSING:
        found = _estimator_moments(distribution, function, estimators, wrt)
        if len(_MOMENTS) >= 64:
            _MOMENTS.pop(next(iter(_MOMENTS)))  # the oldest entry
        _MOMENTS[key] = found
    return None if found is None else {e: dict(per) for e, per in found.items()}


_MISSING = object()
#: (distribution, built-in name, its parameters, estimators, wrt) -> exact moments, oldest first.
_MOMENTS = {}


def _estimator_moments(distribution, function, estimators, wrt):
    h = function.exact()
    family = distribution.family
    if h is None or family.analytic_factors is None or family.expectation is None:
        return None
    params = [getattr(distribution, name) for name in family.parameters]
    score_factors, path_factors = family.analytic_factors(params)
    out = {}
    for estimator in estimators:
        if estimator == "pathwise" and path_factors is None:
            continue
        value = h if estimator == "score" else h.derivative()
        factors = score_factors if estimator == "score" else path_factors
        out[estimator] = {}
        for parameter in wrt:
            q = factors[family.parameters.index(parameter)]
            mean = family.expectation(value, params, q)
            second = family.expectation(value * value, params, polynomial_product(q, q))
            out[estimator][parameter] = (float(mean), _variance(second, mean))
    return out


def separable_moments(distribution, function, estimators, wrt):
    """Exact per-component mean and per-draw variance for ``f(x) = sum_j h_j(x_j)`` under a DiagNormal.

    Returns ``{estimator: {parameter: (means, variances)}}`` with lists of
    length D, or None for user functions. With ``A_i = sum_{j != i} h_j``
    (independent of component ``i``) and ``q`` the score factor of
    component ``i`` (a polynomial in ``eps_i``)::

        E[f q]      = E[A_i] E[q] + E[h_i q]
        E[(f q)**2] = E[A_i**2] E[q**2] + 2 E[A_i] E[h_i q**2] + E[h_i**2 q**2]

    where ``E[A_i] = sum_{j != i} E[h_j]`` and ``Var[A_i] = sum_{j != i} Var[h_j]``.
    A pathwise value ``h_i'(x_i) dT/dtheta_i`` depends on component ``i`` only.
    """
    exact = getattr(function, "component_exact", None)
    if exact is None:
        return None
    dim = distribution.dim
    family = distribution.family
    one = ExpPoly.polynomial([1])
    weights = function.weights_for(dim)
    # Components with equal (loc, scale, weight) have equal moments: compute each kind once.
    kinds = {}
    parts = []
    for j in range(dim):
        kind = (distribution.loc[j], distribution.scale[j], float(weights[j]))
        if kind not in kinds:
            h = exact(j, dim)
            params = [kind[0], kind[1]]
            mean = family.expectation(h, params, (1,))
            kinds[kind] = (h, params, mean, family.expectation(h * h, params, (1,)) - mean * mean, {})
        parts.append(kinds[kind])
    total_mean = sum(p[2] for p in parts)
    total_var = sum(p[3] for p in parts)
    out = {}
    for estimator in estimators:
        out[estimator] = {}
        for parameter in wrt:
            k = family.parameters.index(parameter)
            means, variances = [], []
            for h, params, mean_i, var_i, memo in parts:
                done = memo.get(("result", estimator, k))
                if done is not None:  # an equal component already has it
                    means.append(done[0])
                    variances.append(done[1])
                    continue
                score_factors, path_factors = family.analytic_factors(params)
                if estimator == "score":
                    q = score_factors[k]
                    key = ("score", k)
                    if key not in memo:
                        q2 = polynomial_product(q, q)
                        memo[key] = (
                            family.expectation(one, params, q),
                            family.expectation(h, params, q),
                            family.expectation(one, params, q2),
                            family.expectation(h, params, q2),
                            family.expectation(h * h, params, q2),
                        )
                    e_q, e_hq, e_q2, e_hq2, e_h2q2 = memo[key]
                    a_mean = total_mean - mean_i
                    a_second = (total_var - var_i) + a_mean * a_mean
                    first = a_mean * e_q + e_hq
                    second = a_second * e_q2 + 2 * a_mean * e_hq2 + e_h2q2
                else:
                    key = ("pathwise", k)
                    if key not in memo:
                        q = path_factors[k]
                        d = h.derivative()
                        memo[key] = (
                            family.expectation(d, params, q),
                            family.expectation(d * d, params, polynomial_product(q, q)),
                        )
                    first, second = memo[key]
                memo[("result", estimator, k)] = (float(first), float(second - first * first))
                means.append(memo[("result", estimator, k)][0])
                variances.append(memo[("result", estimator, k)][1])
            out[estimator][parameter] = (means, variances)
    return out


# --- estimator variants (issue 6): exact means and per-draw variances -----------------
#
# Every variant but the measure-valued one is a sum of terms ``H_a(x) Q_a(eps)``,
# an exponential polynomial of the draw times a polynomial of the noise, so
# its first two moments are sums of the family's exact expectations:
#
#     E[v] = sum_a E[H_a Q_a],    E[v**2] = sum_a sum_b E[H_a H_b Q_a Q_b].
#
# The antithetic partner is the same draw mirrored, x' = 2 loc - x (Normal):
# ``H.reflect(2 loc)`` and ``Q(-eps)``. The measure-valued sides follow
# Rayleigh and Maxwell laws; their moments are computed by Gauss-Legendre
# quadrature of the exact integrals (to about 1e-13 relative).


def _poly_scale(q, factor):
    if not isinstance(q, (list, tuple)):
        return q.scale(_exact(factor))
    return [_exact(c) * _exact(factor) for c in q]


def _poly_reflect(q):
    """Coefficients of ``q(-eps)``."""
    if not isinstance(q, (list, tuple)):
        return q.reflect()
    return [c if k % 2 == 0 else -c for k, c in enumerate(q)]


def _poly_add(p, q):
    pair = _factor_pair(p, q)
    if pair is not None:
        return pair[0] + pair[1]
    out = [0] * max(len(p), len(q))
    for k, c in enumerate(p):
        out[k] = out[k] + _exact(c)
    for k, c in enumerate(q):
        out[k] = out[k] + _exact(c)
    return out


def _terms_moments(family, params, terms):
    """(mean, variance) of ``sum_a H_a(x) Q_a(eps)`` for terms ``[(H_a, Q_a), ...]``."""
    mean = sum(family.expectation(h, params, q) for h, q in terms)
    second = 0
    for a, (ha, qa) in enumerate(terms):
        for b, (hb, qb) in enumerate(terms):
            if b < a:
                continue
            value = family.expectation(ha * hb, params, polynomial_product(qa, qb))
            second = second + (value if a == b else 2 * value)
    return float(mean), _variance(second, mean)


def _score_terms(h, q, control):
    """Terms of ``h q - control`` (``control`` a polynomial of eps)."""
    terms = [(h, q)]
    if any(c != 0 for c in control):
        terms.append((ExpPoly.polynomial([1]), _poly_scale(control, -1)))
    return terms


def variant_moments(distribution, function, specs, coefficients, wrt):
    """Exact mean and per-draw variance of each specification, per parameter.

    Returns a list (one entry per specification) of ``{parameter: (mean, variance)}``
    or None where there is no exact form (user functions; a family without
    exact expectations). "Per draw" is per unit of one draw of the noise:
    an antithetic pair, a measure-valued pair of sides; a ``loo(K)`` group's
    variance times K.
    """
    h = function.exact()
    family = distribution.family
    if h is None or family.analytic_factors is None or family.expectation is None:
        return [None] * len(specs)
    params = [getattr(distribution, name) for name in family.parameters]
    score_factors, path_factors = family.analytic_factors(params)
    n_params = len(family.parameters)
    out = []
    for s, spec in enumerate(specs):
        result = {}
        for parameter in wrt:
            j = family.parameters.index(parameter)
            if spec.base == "measure-valued":
                result[parameter] = _weak_moments(distribution, h, j, spec.coupled)
                continue
            if spec.base == "pathwise":
                d = h.derivative()
                q = path_factors[j]
                terms = [(d, q)]
                if spec.antithetic:
                    center = 2 * _exact(params[0])
                    terms = [(d * Fraction(1, 2), q), (d.reflect(center) * Fraction(1, 2), _poly_reflect(q))]
                result[parameter] = _terms_moments(family, params, terms)
                continue
            q = score_factors[j]
            if spec.baseline == "loo":
                result[parameter] = _loo_moments(family, params, h, q, spec.group)
                continue
            control = [0]
            if coefficients[s] is not None:
                for k in range(n_params):
                    control = _poly_add(control, _poly_scale(score_factors[k], coefficients[s][j][k]))
            terms = _score_terms(h, q, control)
            if spec.antithetic:
                center = 2 * _exact(params[0])
                half = Fraction(1, 2)
                mirrored = _score_terms(h.reflect(center), _poly_reflect(q), _poly_reflect(control))
                terms = [(a * half, b) for a, b in terms] + [(a * half, b) for a, b in mirrored]
            result[parameter] = _terms_moments(family, params, terms)
        out.append(result)
    return out


def _loo_moments(family, params, h, q, group, extra_variance=0):
    """Mean and K x variance of a leave-one-out group estimate: the within-group covariance of f and s.

    For the unbiased sample covariance of K independent pairs (a, b)::

        Var = mu22 / K - (K - 2) / (K (K - 1)) cov**2 + var_a var_b / (K (K - 1))

    with ``mu22 = E[(a - E a)**2 (b - E b)**2]``; here ``a = f``, ``b = s`` and E[s] = 0.
    """
    one = ExpPoly.polynomial([1])
    q2 = polynomial_product(q, q)
    mean_f = family.expectation(h, params, (1,))
    var_f = family.expectation(h * h, params, (1,)) - mean_f * mean_f
    cov = family.expectation(h, params, q)
    var_s = family.expectation(one, params, q2)
    mu22 = (
        family.expectation(h * h, params, q2) - 2 * mean_f * family.expectation(h, params, q2) + mean_f * mean_f * var_s
    )
    # an independent additive part of f (the other components of a separable f) with this variance:
    var_f = var_f + extra_variance
    mu22 = mu22 + extra_variance * var_s
    return float(cov), float(loo_variance(mu22, cov, var_f, var_s, group))


def chain_rule_moments(view, specs, coefficients, wrt, moments, factor):
    """Exact moments of a joint family's run with natural parameters (a NaturalView), from its parameters' own.

    A natural parameter's value in every estimator is its parameter's times
    ``d theta / d eta`` draw by draw (``alpha`` for a log-concentration; the
    diagonal's entries of a Cholesky factor with a log diagonal), so its mean
    is the parameter's times that and its variance times its square. A
    baseline or control-variate row of a natural parameter, estimated on
    the pilot, is its parameter's times the same factor up to rounding: the
    parameters' own coefficients are used. ``moments(specs, coefficients,
    wrt)`` is the family's engine on the distribution itself; ``factor(name)``
    the natural parameter's factor per component (an array, or a float).
    Returns what the engine does, with the natural parameters' entries.
    """
    import numpy as np

    from fastgrad.estimators import parameter_sizes

    base = view.distribution
    natural = dict(base.family.natural)
    n = sum(parameter_sizes(base))
    base_wrt = tuple(dict.fromkeys(natural.get(p, p) for p in wrt))

    def own(coef):  # the parameters' rows (and, for a control variate's matrix, their columns: the controls)
        return None if coef is None else (np.asarray(coef)[:n] if np.ndim(coef) == 1 else np.asarray(coef)[:n, :n])

    found = moments(specs, None if coefficients is None else [own(c) for c in coefficients], base_wrt)
    out = []
    for entry in found:
        if entry is None:
            out.append(None)
            continue
        row = {}
        for p in wrt:
            mean, variance = entry[natural.get(p, p)]
            if p in natural:
                c = factor(p)
                if np.ndim(mean) == 0:
                    mean, variance = float(mean * c), float(variance * c * c)
                else:
                    mean = (np.asarray(mean) * c).tolist()
                    variance = (np.asarray(variance) * c * c).tolist()
            row[p] = (mean, variance)
        out.append(row)
    return out


def grid_moments(distribution, specs, coefficients, wrt, weights, fx, scores, paths=None, weak=None, mirror=None):
    """Exact mean and per-draw variance of each specification from per-draw values on a weighted grid.

    A joint family's exact engine (Beta, Dirichlet, Categorical): the law of
    a draw's noise as points with probabilities ``weights`` (a quadrature
    rule, or the categories themselves), and at each point ``f`` (``fx``),
    every (parameter, component) ``r``'s score ``scores[r]``, pathwise value
    ``paths[r]`` and measure-valued value ``weak[r]`` (the same law coupled
    or not). A score value is ``f s_r - sum_k B[r, k] s_k`` with the run's
    coefficients ``B`` (a vector of baselines is its diagonal); ``loo(K)``
    comes from the moments of ``(f, s_r)`` (:func:`loo_variance`). For
    symmetric noise, ``mirror[k]`` is the point at the noise of point ``k``
    negated (with the same weight): an antithetic value is the mean of a
    point's value and its mirror's. Returns the list :func:`variant_moments`
    does: floats per parameter, or lists over components for a distribution
    with ``dim``.
    """
    import numpy as np

    from fastgrad.estimators import parameter_sizes

    parameters = distribution.parameters
    sizes = parameter_sizes(distribution)

    def moments(values):
        mean = float(weights @ values)
        return mean, float(weights @ (values - mean) ** 2)

    out = []
    for s, spec in enumerate(specs):
        result = {}
        coef = None if coefficients is None else coefficients[s]
        if coef is not None:
            coef = np.diag(coef) if np.ndim(coef) == 1 else np.asarray(coef)
        for parameter in wrt:
            j = parameters.index(parameter)
            pairs = []
            paired = (lambda v: 0.5 * (v + v[mirror])) if spec.antithetic else (lambda v: v)
            for i in range(sizes[j]):
                r = sum(sizes[:j]) + i
                if spec.base == "pathwise":
                    pairs.append(moments(paired(paths[r])))
                elif spec.base == "measure-valued":
                    pairs.append(moments(weak[r]))
                elif spec.baseline == "loo":
                    mean_f, var_f = moments(fx)
                    cov = float(weights @ (fx * scores[r]))
                    mu22 = float(weights @ ((fx - mean_f) ** 2 * scores[r] ** 2))
                    var_s = float(weights @ scores[r] ** 2)
                    pairs.append((cov, float(loo_variance(mu22, cov, var_f, var_s, spec.group))))
                else:
                    values = fx * scores[r]
                    if coef is not None:
                        width = coef.shape[1]  # (controls: the distribution's own parameters' scores)
                        values = values - coef[r] @ scores[:width]
                    pairs.append(moments(paired(values)))
            vector = hasattr(distribution, "dim")
            result[parameter] = ([p[0] for p in pairs], [p[1] for p in pairs]) if vector else pairs[0]
        out.append(result)
    return out


def loo_variance(mu22, cov, var_f, var_s, group):
    """K x the variance of a leave-one-out group estimate from the moments of ``(f, s)`` (see :func:`_loo_moments`)."""
    k = group
    return mu22 - Fraction(k - 2, k - 1) * cov * cov + var_f * var_s / (k - 1)


def _weak_moments(distribution, h, j, coupled):
    """Mean and variance of one measure-valued draw, by exact expectations or quadrature of exact integrals."""
    import numpy as np

    from fastgrad.distributions import NATURAL_DERIVATIVES

    family = distribution.family
    base = getattr(distribution, "distribution", None)  # a NaturalView: the chain rule on the parameter's moments
    if base is not None and j >= len(base.parameters):
        name = family.parameters[j]
        of = dict(base.family.natural)[name]
        mean, variance = _weak_moments(base, h, base.parameters.index(of), coupled)
        factor = _exact(NATURAL_DERIVATIVES[name](_exact(getattr(base, of))))
        return float(mean * factor), float(variance * factor * factor)
    if family.weak_moments is not None:
        params = [getattr(distribution, name) for name in family.parameters]
        return family.weak_moments(params, h, j, coupled)
    name = family.name.removesuffix("+natural")
    if name == "bernoulli":  # f(1) - f(0): no randomness
        return float(h.evaluate(1.0) - h.evaluate(0.0)), 0.0
    if name == "exponential":
        return _exponential_weak_moments(float(distribution.rate), h, coupled)

    loc, scale = float(distribution.loc), float(distribution.scale)
    nodes, weights = _legendre(0.0, 14.0)
    if j == 0:
        c = 1.0 / (scale * np.sqrt(2.0 * np.pi))
        density = weights * nodes * np.exp(-0.5 * nodes * nodes)  # Rayleigh(1)
        plus = h.evaluate(loc + scale * nodes)
        minus = h.evaluate(loc - scale * nodes)
        mean = c * np.sum(density * (plus - minus))
        if coupled:
            second = c * c * np.sum(density * (plus - minus) ** 2)
            return float(mean), float(second - mean * mean)
        var_plus = np.sum(density * plus**2) - np.sum(density * plus) ** 2
        var_minus = np.sum(density * minus**2) - np.sum(density * minus) ** 2
        return float(mean), float(c * c * (var_plus + var_minus))
    c = 1.0 / scale
    if not coupled:  # Maxwell expectations are E[z**2 g(z)] under N(0, 1): exact
        plus_mean = h.normal_expectation(loc, scale, (0, 0, 1))
        plus_second = (h * h).normal_expectation(loc, scale, (0, 0, 1))
        minus_mean = h.normal_expectation(loc, scale)
        minus_second = (h * h).normal_expectation(loc, scale)
        mean = c * (plus_mean - minus_mean)
        variance = c * c * ((plus_second - plus_mean**2) + (minus_second - minus_mean**2))
        return float(mean), float(variance)
    # (eps, M = sign(eps) rho): joint density rho exp(-rho**2 / 2) / sqrt(2 pi) on |eps| <= rho.
    first = second = 0.0
    inner, inner_weights = _legendre(0.0, 1.0, 64)
    for rho, w in zip(nodes, weights, strict=True):
        outer = w * rho * np.exp(-0.5 * rho * rho) / np.sqrt(2.0 * np.pi)
        for sign in (1.0, -1.0):
            eps = sign * rho * inner
            v = c * (h.evaluate(loc + scale * sign * rho) - h.evaluate(loc + scale * eps))
            first += outer * rho * np.sum(inner_weights * v)
            second += outer * rho * np.sum(inner_weights * v * v)
    return float(first), float(second - first * first)


def _exponential_weak_moments(rate, h, coupled):
    """Mean and variance of ``(h(x) - h(x + y)) / rate``, x, y ~ Exp(rate) (decoupled: x + y independent of x)."""
    import numpy as np

    c = 1.0 / rate
    plus = exponential_expectation(h, rate)
    plus2 = exponential_expectation(h * h, rate)
    minus = exponential_expectation(h, rate, (0, 1))  # Gamma(2, rate): density eps times Exp(1)'s, eps = rate x
    minus2 = exponential_expectation(h * h, rate, (0, 1))
    mean = c * (plus - minus)
    if not coupled:
        return float(mean), float(c * c * ((plus2 - plus * plus) + (minus2 - minus * minus)))
    # E[h(x) h(x + y)] by Gauss-Laguerre in both variables (exact for polynomials of degree < 2 * 120)
    t, w = gauss_rule("laguerre", 120)
    x = t / rate
    cross = float(np.sum(w[:, None] * w[None, :] * h.evaluate(x)[:, None] * h.evaluate(x[:, None] + x[None, :])))
    second = c * c * (plus2 - 2 * cross + minus2)
    return float(mean), float(second - mean * mean)


@functools.cache
def gauss_rule(kind, count):
    """Return the ``count``-point Gauss rule ``kind`` (``legendre``, ``laguerre``, ``hermite_e``): nodes, weights.

    Read-only, computed once per process: NumPy finds them from a symmetric eigenproblem
    (LAPACK), whose OpenBLAS threads then spin on every core for a while. When
    each ``compare`` computed them, that spinning cost the kernels' second
    thread: ``measure-valued,pathwise`` 182-186 against 194-195 M draws/s on 2
    threads with the threads off (``OPENBLAS_NUM_THREADS=1``), two runs each.
    """
    module = getattr(np.polynomial, kind)
    nodes, weights = getattr(module, {"legendre": "leggauss", "laguerre": "laggauss", "hermite_e": "hermegauss"}[kind])(
        count
    )
    nodes.flags.writeable = False
    weights.flags.writeable = False
    return nodes, weights


def _legendre(a, b, count=240):
    """Gauss-Legendre nodes and weights on [a, b]."""
    x, w = gauss_rule("legendre", count)
    return a + (b - a) * (x + 1) / 2, w * (b - a) / 2


# --- estimator variants of a separable function of D independent components ---------------
#
# For f(x) = sum_l h_l(x_l) and the value of (parameter j, component i), every
# variant is a sum of products U_a V_a: V_a a function of component i alone,
# U_a a sum over the other components l != i of functions of component l
# alone (or the constant 1). With independent components
#
#     E[v]    = sum_a E[U_a] E[V_a]
#     E[v**2] = sum_a sum_b E[U_a U_b] E[V_a V_b],
#     E[U_a U_b] = E[U_a] E[U_b] + sum_{l != i} Cov_l(U_a, U_b).
#
# The score value with coefficients B (a baseline per row, or the control
# variate's matrix on all P D score components) is, with A = sum_{l != i} h_l,
# C_l = sum_k B[r, (k, l)] q_k(eps_l) and R = sum_{l != i} C_l,
#
#     v = (h_i q - C_i) * 1  +  q * A  -  1 * R,
#
# and its antithetic form averages it with the same at -eps (every component
# mirrored: A -> A', h_i -> h_i reflected about 2 loc_i, q(eps) -> q(-eps)).
# Pathwise and measure-valued values depend on component i alone: they are
# the scalar family's. A loo(K) value is the within-group covariance of
# f = A + h_i and s: the scalar formula with Var[f] and E[(f - E f)**2 s**2]
# gaining Var[A] and Var[A] E[s**2].


class _Terms:
    """A random variable of one component: ``sum (H(x) Q(eps))`` over ``terms``, with its component's moments."""

    def __init__(self, family, params, terms):
        self.family, self.params, self.terms = family, params, terms

    def mean(self):
        return sum(self.family.expectation(h, self.params, q) for h, q in self.terms)

    def product_mean(self, other):
        return sum(
            self.family.expectation(h1 * h2, self.params, polynomial_product(q1, q2))
            for h1, q1 in self.terms
            for h2, q2 in other.terms
        )


def separable_variant_moments(distribution, function, specs, coefficients, wrt):
    """Exact mean and per-draw variance of each specification, per parameter, under a DiagNormal.

    Returns a list (one entry per specification) of ``{parameter: (means,
    variances)}`` with lists over the D components, or None for every entry
    when ``f`` is not a separable built-in. See the comment above for the
    method; ``coefficients[s]`` is a vector of baselines or the control
    variate's ``(P D, P D)`` matrix, as the kernels take them.
    """
    exact = getattr(function, "component_exact", None)
    if exact is None:
        return [None] * len(specs)
    import numpy as np

    from fastgrad.distributions import Normal

    dim = distribution.dim
    weights = function.weights_for(dim)
    family = distribution.family
    unit = [1]
    comps = []
    for i in range(dim):
        params = [distribution.loc[i], distribution.scale[i]]
        h = exact(i, dim)
        score_factors, path_factors = family.analytic_factors(params)
        comps.append((params, h, h.reflect(2 * _exact(params[0])), score_factors, path_factors))

    def terms(i, pairs):
        return _Terms(family, comps[i][0], pairs)

    # the A and mirrored-A sums over every component, from which component i's share is removed
    parts = []
    for i in range(dim):
        a, ab = terms(i, [(comps[i][1], unit)]), terms(i, [(comps[i][2], unit)])
        mean = a.mean()
        parts.append((mean, a.product_mean(a) - mean * mean, a.product_mean(ab) - mean * mean))
    sum_mean = sum(p[0] for p in parts)
    sum_var = sum(p[1] for p in parts)
    sum_mirror_cov = sum(p[2] for p in parts)

    tables = {}

    def basis_tables(m):
        kind = (comps[m][0][0], comps[m][0][1], float(weights[m]))
        if kind not in tables:
            tables[kind] = _basis_tables(family, comps[m], len(family.parameters))
        return tables[kind]

    out = []
    memo = {}
    for s, spec in enumerate(specs):
        coef = coefficients[s] if coefficients is not None else None
        result = {}
        for parameter in wrt:
            j = family.parameters.index(parameter)
            means, variances = [], []
            for i in range(dim):
                params, h, _, score_factors, path_factors = comps[i]
                r = j * dim + i
                full = coef is not None and np.ndim(coef) == 2
                baseline = None if coef is None or full else float(coef[r])
                key = (spec.name, j, params[0], params[1], float(weights[i]), baseline) if not full else None
                if key is not None and key in memo:
                    found = memo[key]
                elif spec.base == "measure-valued":
                    component = Normal(params[0], params[1])
                    if j >= len(Normal.family.parameters):  # a natural parameter: the component's view
                        from fastgrad.distributions import NaturalView

                        component = NaturalView(component)
                    found = _weak_moments(component, h, j, spec.coupled)
                elif spec.base == "pathwise":
                    d, q = h.derivative(), path_factors[j]
                    pairs = [(d, q)]
                    if spec.antithetic:
                        half = Fraction(1, 2)
                        pairs = [(d * half, q), (d.reflect(2 * _exact(params[0])) * half, _poly_reflect(q))]
                    found = _terms_moments(family, params, pairs)
                elif spec.baseline == "loo":
                    found = _loo_moments(family, params, h, score_factors[j], spec.group,
                                         extra_variance=sum_var - parts[i][1])  # fmt: skip
                else:
                    found = _separable_score(family, comps, parts, i, j, r, spec, coef, full, baseline, terms,
                                             basis_tables, sum_mean, sum_var, sum_mirror_cov, dim)  # fmt: skip
                if key is not None:
                    memo[key] = found
                means.append(float(found[0]))
                variances.append(float(found[1]))
            result[parameter] = (means, variances)
        out.append(result)
    return out


def _basis_tables(family, comp, n_params):
    """One component's expectations over the basis ``b = (q_0 .. q_(P-1), q_0(-eps) .. q_(P-1)(-eps))``.

    Returns ``(T, G)``: ``T[a, b] = E[H_a b]`` for ``H = (1, h, h mirrored)`` and
    ``G[b, b'] = E[b b']``, as floats.
    """
    import numpy as np

    params, h, hb, score_factors, _ = comp
    basis = list(score_factors[:n_params]) + [_poly_reflect(q) for q in score_factors[:n_params]]
    hs = (ExpPoly.polynomial([1]), h, hb)
    table = np.array([[float(family.expectation(x, params, b)) for b in basis] for x in hs])
    gram = np.array([[float(family.expectation(hs[0], params, polynomial_product(a, b))) for b in basis]
                     for a in basis])  # fmt: skip
    return table, gram


def _separable_score(family, comps, parts, i, j, r, spec, coef, full, baseline, terms, basis_tables, sum_mean,
                     sum_var, sum_mirror_cov, dim):  # fmt: skip
    """(mean, variance) of a score value (baseline, control variate, antithetic) of (parameter j, component i)."""
    import numpy as np

    one = ExpPoly.polynomial([1])
    _, h, hb, score_factors, _ = comps[i]
    n_params = len(family.parameters)
    q = score_factors[j]
    if coef is None:
        own = [0]
    elif not full:
        own = _poly_scale(q, baseline)
    else:
        own = [0]
        for k in range(n_params):
            if coef[r][k * dim + i] != 0:
                own = _poly_add(own, _poly_scale(score_factors[k], coef[r][k * dim + i]))
    a_mean = sum_mean - parts[i][0]
    a_var = sum_var - parts[i][1]
    a_mirror = sum_mirror_cov - parts[i][2]
    # U variables "1", "A", "Ab" (A mirrored) and "R" (or "S" = R + R mirrored), each of the other
    # components: R's weights on component m's basis are B[r, (k, m)], S's the same on both halves.
    others = []
    if full:
        for m in range(dim):
            c = np.array([coef[r][k * dim + m] for k in range(n_params)], dtype=float)
            if m != i and np.any(c != 0):
                others.append((m, c))

    def weights(name, c):
        return np.concatenate([c, c if name == "S" else np.zeros_like(c)])

    def u_mean(name):
        if name == "1":
            return 1
        if name in ("A", "Ab"):
            return a_mean
        return sum(float(basis_tables(m)[0][0] @ weights(name, c)) for m, c in others)

    def u_product(x, y):
        if x == "1":
            return u_mean(y)
        if y == "1":
            return u_mean(x)
        if {x, y} <= {"A", "Ab"}:
            return a_mean * a_mean + (a_var if x == y else a_mirror)
        cov = 0.0
        for m, c in others:
            table, gram = basis_tables(m)
            if x in ("A", "Ab") or y in ("A", "Ab"):
                a, other = (x, y) if x in ("A", "Ab") else (y, x)
                w = weights(other, c)
                h_row = 1 if a == "A" else 2
                cov += float(table[h_row] @ w) - parts[m][0] * float(table[0] @ w)
            else:
                wx, wy = weights(x, c), weights(y, c)
                cov += float(wx @ gram @ wy) - float(table[0] @ wx) * float(table[0] @ wy)
        return u_mean(x) * u_mean(y) + cov

    x_terms = [(h, q), (one, _poly_scale(own, -1))]
    if not spec.antithetic:
        pairs = [("1", x_terms), ("A", [(one, q)])]
        if others:
            pairs.append(("R", [(one, [-1])]))
    else:
        half = Fraction(1, 2)
        mirrored = [(hb, _poly_reflect(q)), (one, _poly_scale(_poly_reflect(own), -1))]
        pairs = [
            ("1", [(a * half, b) for a, b in x_terms + mirrored]),
            ("A", [(one * half, q)]),
            ("Ab", [(one * half, _poly_reflect(q))]),
        ]
        if others:
            pairs.append(("S", [(one, [-half])]))
    vs = [terms(i, v) for _, v in pairs]
    mean = sum(u_mean(name) * v.mean() for (name, _), v in zip(pairs, vs, strict=True))
    second = 0
    for a, (name_a, _) in enumerate(pairs):
        for b, (name_b, _) in enumerate(pairs):
            if b < a:
                continue
            value = u_product(name_a, name_b) * vs[a].product_mean(vs[b])
            second = second + (value if a == b else 2 * value)
    return mean, second - mean * mean
