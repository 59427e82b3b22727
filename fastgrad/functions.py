"""Functions ``f`` whose expectation ``E_q[f(x)]`` is differentiated.

Two kinds:

* **built-ins** with exact Gaussian expectations, gradients and per-draw
  variances, so every result can be printed beside the truth::

      linear()              f(x) = x
      square()              f(x) = x**2                 (the seed example)
      shifted_square(k=0)   f(x) = (x - k)**2
      cos(omega=1)          f(x) = cos(omega * x)
      quartic()             f(x) = x**4
      exp_quadratic(k=1)    f(x) = exp(-k x**2)             (k >= 0)
      logistic(a=1, b=0)    f(x) = 1 / (1 + exp(-(a x + b)))

  The last two have no closed-form expectations: their exact values are
  quadratures (``fastgrad._analytic.Smooth``). ``cos``, ``exp_quadratic`` and
  ``logistic`` are computed with :mod:`fastgrad.math`, so they vectorise
  and give the same bits on every machine.

  Their parameters are arguments of the compiled code, not constants in it,
  so ``cos(omega=2)`` and ``cos(omega=3)`` share one compiled kernel. A name
  string (``"square"``) means the built-in with its default parameters.

* **your own** ``@numba.njit`` functions, wrapped in :class:`Function`:
  ``f(x) -> float`` and, for the pathwise estimator, its derivative
  ``df(x) -> float``. The score-function estimator needs only ``f``.
"""

from dataclasses import dataclass

import numba
import numpy as np
from numba.extending import is_jitted

from fastgrad import math as fm
from fastgrad._analytic import ExpPoly, exp_quadratic_form, logistic_form
from fastgrad._checks import real, real_vector
from fastgrad._jit import core
from fastgrad._simd import fabs

__all__ = [
    "Function",
    "SeparableFunction",
    "VectorFunction",
    "cos",
    "exp_quadratic",
    "linear",
    "linear_form",
    "logistic",
    "quadratic",
    "quartic",
    "shifted_square",
    "square",
    "sum_cos",
    "sum_of_squares",
]


@dataclass(frozen=True)
class Builtin:
    """A built-in function family (internal): compiled cores plus exact form."""

    name: str
    formula: str
    value: object  # njit core (x, params) -> f(x)
    derivative: object  # njit core (x, params) -> f'(x)
    parameters: tuple = ()
    defaults: tuple = ()
    exact: object = None  # params -> ExpPoly
    # njit core (x, params) -> (f(x), f'(x)) with the bits of value and derivative, sharing their work
    # (cos: one reduction for both); None: the two cores are called
    value_and_derivative: object = None
    # value and derivative are lane-generic (+ - * /, fastgrad.math, fastgrad._simd's primitives): kernels
    # may run them on 4-lane vectors, with the bits of one draw at a time
    simd: bool = False


@core
def _linear(x, p):
    return x


@core
def _linear_derivative(x, p):
    return 1.0


@core
def _square(x, p):
    return x * x


@core
def _square_derivative(x, p):
    return 2.0 * x


@core
def _shifted_square(x, p):
    d = x - p[0]
    return d * d


@core
def _shifted_square_derivative(x, p):
    return 2.0 * (x - p[0])


@core
def _cos(x, p):
    return fm.cos(p[0] * x)


@core
def _cos_derivative(x, p):
    return -p[0] * fm.sin(p[0] * x)


@core
def _cos_both(x, p):
    sine, cosine = fm._sincos_inline(p[0] * x)
    return cosine, -p[0] * sine


@core
def _exp_quadratic(x, p):
    return fm.exp(-p[0] * (x * x))


@core
def _exp_quadratic_derivative(x, p):
    return -2.0 * p[0] * x * fm.exp(-p[0] * (x * x))


@core
def _exp_quadratic_both(x, p):
    e = fm.exp(-p[0] * (x * x))
    return e, -2.0 * p[0] * x * e


@core
def _logistic(x, p):
    return fm.sigmoid(p[0] * x + p[1])


@core
def _logistic_derivative(x, p):
    # a s(z) s(-z) = a e / (1 + e)**2 with e = exp(-|z|): accurate in both tails, where s (1 - s) is not
    e = fm.exp(-fabs(p[0] * x + p[1]))
    one_plus = 1.0 + e
    return p[0] * (e / (one_plus * one_plus))


@core
def _logistic_both(x, p):
    return _logistic(x, p), _logistic_derivative(x, p)


@core
def _quartic(x, p):
    x2 = x * x
    return x2 * x2


@core
def _quartic_derivative(x, p):
    return 4.0 * x * x * x


BUILTINS = {
    b.name: b
    for b in (
        Builtin("linear", "x", _linear, _linear_derivative, exact=lambda p: ExpPoly.polynomial([0, 1]), simd=True),
        Builtin(
            "square", "x**2", _square, _square_derivative, exact=lambda p: ExpPoly.polynomial([0, 0, 1]), simd=True
        ),
        Builtin(
            "shifted_square",
            "(x - k)**2",
            _shifted_square,
            _shifted_square_derivative,
            parameters=("k",),
            defaults=(0.0,),
            exact=lambda p: ExpPoly.polynomial([p[0] * p[0], -2 * p[0], 1]),
            simd=True,
        ),
        Builtin(
            "cos",
            "cos(omega*x)",
            _cos,
            _cos_derivative,
            parameters=("omega",),
            defaults=(1.0,),
            exact=lambda p: ExpPoly.cos(p[0]),
            simd=True,
            value_and_derivative=_cos_both,
        ),
        Builtin(
            "quartic",
            "x**4",
            _quartic,
            _quartic_derivative,
            exact=lambda p: ExpPoly.polynomial([0, 0, 0, 0, 1]),
            simd=True,
        ),
        Builtin(
            "exp_quadratic",
            "exp(-k*x**2)",
            _exp_quadratic,
            _exp_quadratic_derivative,
            parameters=("k",),
            defaults=(1.0,),
            exact=lambda p: exp_quadratic_form(p[0]),
            simd=True,
            value_and_derivative=_exp_quadratic_both,
        ),
        Builtin(
            "logistic",
            "1/(1 + exp(-(a*x + b)))",
            _logistic,
            _logistic_derivative,
            parameters=("a", "b"),
            defaults=(1.0, 0.0),
            exact=lambda p: logistic_form(p[0], p[1]),
            simd=True,
            value_and_derivative=_logistic_both,
        ),
    )
}


class Function:
    """A function ``f`` (and optionally its derivative) to estimate gradients of ``E[f(x)]``.

    Parameters
    ----------
    f : numba.njit function
        ``f(x) -> float`` for a float64 ``x``.
    df : numba.njit function, optional
        ``f'(x) -> float``. Required by the pathwise estimator; the
        score-function estimator uses only ``f``.
    name : str, optional
        Label used in printed results; defaults to ``f.__name__``.

    Notes
    -----
    Kernels compiled for a user's function are kept for the life of the
    process (a second call does not recompile) but not written to Numba's
    on-disk cache: Numba cannot give them a cache key that is stable across
    processes. Each new process compiles them once.

    Examples
    --------
    >>> import numba
    >>> import fastgrad as fg
    >>> @numba.njit
    ... def f(x):
    ...     return x**3
    >>> @numba.njit
    ... def df(x):
    ...     return 3 * x**2
    >>> fg.Function(f, df)
    Function(f, df=df)
    """

    def __init__(self, f, df=None, *, name=None):
        _check_user_function("f", f)
        if df is not None:
            _check_user_function("df", df)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a string; got {name!r}")
        self.f = f
        self.df = df
        self.name = name or f.__name__
        self.builtin = None
        self.params = ()

    @classmethod
    def _from_builtin(cls, builtin, params):
        self = object.__new__(cls)
        self.f = builtin.value
        self.df = builtin.derivative
        self.name = builtin.name
        self.builtin = builtin
        self.params = tuple(params)
        return self

    @property
    def has_derivative(self):
        """Whether ``f'`` is available (needed by the pathwise estimator)."""
        return self.df is not None

    @property
    def param_vector(self):
        """The built-in's parameters as the kernels read them: a tuple of floats, ``(0.0,)`` when there are none."""
        return tuple(self.params) if self.params else (0.0,)

    @property
    def formula(self):
        """Human-readable definition, e.g. ``"(x - k)**2 with k=1.0"``."""
        if self.builtin is None:
            return f"user function {self.name}"
        text = f"f(x) = {self.builtin.formula}"
        if self.params:
            text += " with " + ", ".join(
                f"{n}={v:g}" for n, v in zip(self.builtin.parameters, self.params, strict=True)
            )
        return text

    def exact(self):
        """Return the function as an :class:`~fastgrad._analytic.ExpPoly`, or None for user functions."""
        if self.builtin is None:
            return None
        return self.builtin.exact(self.params)

    def __eq__(self, other):
        if not isinstance(other, Function):
            return NotImplemented
        return (self.f, self.df, self.params) == (other.f, other.df, other.params)

    def __hash__(self):
        return hash((self.f, self.df, self.params))

    def __repr__(self):
        if self.builtin is not None:
            if not self.params:
                return f"{self.name}()"
            args = ", ".join(f"{n}={v!r}" for n, v in zip(self.builtin.parameters, self.params, strict=True))
            return f"{self.name}({args})"
        df = f", df={self.df.__name__}" if self.df is not None else ""
        return f"Function({self.f.__name__}{df})"

    def to_dict(self):
        """JSON-ready description."""
        out = {"name": self.name, "builtin": self.builtin is not None}
        if self.builtin is not None:
            out["formula"] = self.builtin.formula
            out["parameters"] = dict(zip(self.builtin.parameters, self.params, strict=True))
        else:
            out["has_derivative"] = self.has_derivative
        return out


def _check_user_function(argument, func):
    """Check that a user function is an njit function taking one float64 and returning a real."""
    _check_jitted(argument, func, (numba.float64,), "(x) with x a float64", returns_real=True)


def _check_jitted(argument, func, signature, takes, returns_real):
    """Compile a user's ``@njit`` function for ``signature`` now, when the run is prepared; check what it returns.

    ``takes`` says the call (for the messages). With ``returns_real`` the
    function must return a real number (not an array, a tuple or nothing);
    otherwise its return value is not used.
    """
    if not is_jitted(func):
        raise TypeError(f"{argument} must be a Numba @njit function taking {takes}; got {func!r}. "
                        "Decorate it with @numba.njit.")  # fmt: skip
    try:
        func.compile(signature)
    except Exception as error:  # Numba raises several error types while typing
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TypeError(f"{argument} must accept {takes}; compiling it failed: {first_line}") from None
    if not returns_real:
        return
    for compiled in func.nopython_signatures:
        if compiled.args == tuple(signature):
            returned = compiled.return_type
            if not isinstance(returned, (numba.types.Float, numba.types.Integer)) or isinstance(
                returned, numba.types.Boolean
            ):
                raise TypeError(f"{argument} must return a real number (a float), called as {argument}{takes}; "
                                f"{getattr(func, '__name__', func)!r} returns {returned}")  # fmt: skip
            return
    raise TypeError(f"{argument} could not be compiled for {argument}{takes}")  # pragma: no cover


def _builtin(name, **params):
    builtin = BUILTINS[name]
    values = []
    for parameter, default in zip(builtin.parameters, builtin.defaults, strict=True):
        values.append(real(parameter, params.pop(parameter, default)))
    return Function._from_builtin(builtin, values)


def linear():
    """``f(x) = x``. Pathwise variance wrt ``loc`` is exactly 0."""
    return _builtin("linear")


def square():
    """``f(x) = x**2``, the seed example."""
    return _builtin("square")


def shifted_square(k=0.0):
    """``f(x) = (x - k)**2`` for a finite real ``k``."""
    return _builtin("shifted_square", k=k)


def cos(omega=1.0):
    """``f(x) = cos(omega * x)`` for a finite real ``omega``."""
    return _builtin("cos", omega=omega)


def quartic():
    """``f(x) = x**4``: heavy-tailed per-draw gradients (score variance needs E[eps**10])."""
    return _builtin("quartic")


def exp_quadratic(k=1.0):
    """``f(x) = exp(-k x**2)``, a Gaussian bump, for a finite real ``k >= 0``.

    Its expectations have no closed form for every family: the exact values
    printed beside a run are quadratures (about 1e-14 relative). Under
    ``Normal(loc, scale)``, ``E[f] = exp(-k loc**2 / (1 + 2 k scale**2)) / sqrt(1 + 2 k scale**2)``.
    """
    function = _builtin("exp_quadratic", k=k)
    if not function.params[0] >= 0.0:
        raise ValueError(f"k must be >= 0 (exp(-k x**2) with k < 0 outgrows a Normal's tails); got {k!r}")
    return function


def logistic(a=1.0, b=0.0):
    """``f(x) = 1 / (1 + exp(-(a x + b)))``, the logistic sigmoid of an affine map, for finite reals ``a``, ``b``.

    The exact values printed beside a run are quadratures (about 1e-14 relative).
    """
    return _builtin("logistic", a=a, b=b)


def resolve(function):
    """Turn what a user passed as ``function`` into a :class:`Function`."""
    if isinstance(function, Function):
        return function
    if isinstance(function, str):
        if function not in BUILTINS:
            raise ValueError(
                f"function must be one of {sorted(BUILTINS)}, a fastgrad.Function or an @njit function; "
                f"got {function!r}"
            )
        return _builtin(function)
    if is_jitted(function):
        return Function(function)
    raise TypeError(
        "function must be a built-in name "
        f"({', '.join(sorted(BUILTINS))}), a fastgrad.Function or a Numba @njit function; got {function!r}"
    )


# --- functions of a vector (for DiagNormal) ---------------------------------------------


class SeparableFunction:
    """``f(x) = sum_i w_i h(x_i)``: a built-in ``h`` applied to every component, with weights.

    Made by :func:`sum_of_squares`, :func:`quadratic`, :func:`linear_form` and
    :func:`sum_cos`. Exact expectations come from ``h``'s, component by
    component.
    """

    def __init__(self, name, component, weights, formula):
        self.name = name
        self.component = component  # a built-in Function of one variable
        self.weights = weights  # tuple of floats, or None for all ones
        self.builtin = component.builtin
        self.f = component.f
        self.df = component.df
        self.params = component.params
        self._formula = formula

    has_derivative = True

    @property
    def param_vector(self):
        """Parameters of ``h``, as the kernels read them."""
        return self.component.param_vector

    @property
    def formula(self):
        """Human-readable definition."""
        return f"f(x) = {self._formula}"

    def weights_for(self, dim):
        """Return the weights as a float64 array of length ``dim`` (checked against it)."""
        if self.weights is None:
            return np.ones(dim)
        if len(self.weights) != dim:
            raise ValueError(f"{self.name} has {len(self.weights)} weights but the distribution has {dim} components")
        return np.array(self.weights, dtype=np.float64)

    def component_exact(self, i, dim):
        """``w_i h`` as an :class:`~fastgrad._analytic.ExpPoly`."""
        return self.component.exact() * float(self.weights_for(dim)[i])

    def to_dict(self):
        """JSON-ready description."""
        return {
            "name": self.name,
            "builtin": True,
            "formula": self._formula,
            "component": self.component.to_dict(),
            "weights": None if self.weights is None else list(self.weights),
        }

    def __repr__(self):
        return f"{self.name}()" if self.weights is None else f"{self.name}(<{len(self.weights)} weights>)"


def _weights(name, values):
    return real_vector(name, values)


def sum_of_squares():
    """``f(x) = sum_i x_i**2``."""
    return SeparableFunction("sum_of_squares", square(), None, "sum_i x_i**2")


def quadratic(diag):
    """``f(x) = sum_i diag_i x_i**2``: a quadratic form with a diagonal matrix."""
    return SeparableFunction("quadratic", square(), _weights("diag", diag), "sum_i diag_i x_i**2")


def linear_form(weights):
    """``f(x) = sum_i weights_i x_i``."""
    return SeparableFunction("linear_form", linear(), _weights("weights", weights), "sum_i weights_i x_i")


def sum_cos(omega=1.0):
    """``f(x) = sum_i cos(omega x_i)``: non-polynomial, with a closed-form Gaussian expectation."""
    component = cos(omega)
    return SeparableFunction("sum_cos", component, None, f"sum_i cos({component.params[0]:g} x_i)")


class VectorFunction:
    """Your own function of a vector, for :class:`~fastgrad.DiagNormal`.

    Parameters
    ----------
    f : numba.njit function
        ``f(x) -> float`` for a 1-D float64 array ``x`` (do not modify ``x``).
    grad_f : numba.njit function, optional
        ``grad_f(x, out)`` writes the gradient of ``f`` at ``x`` into the
        preallocated float64 array ``out`` (no allocation per draw). Needed
        by the pathwise estimator.
    name : str, optional
    """

    def __init__(self, f, grad_f=None, *, name=None):
        _check_vector_function("f", f, (numba.float64[::1],))
        if grad_f is not None:
            _check_vector_function("grad_f", grad_f, (numba.float64[::1], numba.float64[::1]))
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a string; got {name!r}")
        self.f = f
        self.df = grad_f
        self.name = name or f.__name__
        self.builtin = None
        self.params = ()

    @property
    def has_derivative(self):
        """Whether ``grad_f`` is available (needed by the pathwise estimator)."""
        return self.df is not None

    param_vector = (0.0,)

    @property
    def formula(self):
        """Human-readable label."""
        return f"user function {self.name}"

    def weights_for(self, dim):
        """Return ones: user functions have no weights (the kernel ignores them)."""
        return np.ones(dim)

    def to_dict(self):
        """JSON-ready description."""
        return {"name": self.name, "builtin": False, "has_derivative": self.has_derivative}

    def __repr__(self):
        grad = f", grad_f={self.df.__name__}" if self.df is not None else ""
        return f"VectorFunction({self.f.__name__}{grad})"


def _check_vector_function(argument, func, signature):
    takes = "(x) with x a 1-D float64 array" if len(signature) == 1 else "(x, out) with x, out 1-D float64 arrays"
    _check_jitted(argument, func, signature, takes, returns_real=len(signature) == 1)
