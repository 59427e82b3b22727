"""The gradient estimators and how their per-draw values are laid out in a kernel.

For a draw ``x = T(theta, eps)`` and each parameter ``theta_j``:

============  ================================  =========
estimator     per-draw gradient                 needs
============  ================================  =========
``score``     ``f(x) * d log q(x) / d theta_j``  ``f``
``pathwise``  ``f'(x) * d T(theta, eps) / d theta_j``  ``f'``
============  ================================  =========

Both are unbiased for ``d E[f(x)] / d theta_j``. The factors come from the
distribution's :class:`~fastgrad.distributions.Family`.

Every run is described by one :class:`Plan`, built from (distribution,
function, estimator list, ``wrt``): the specifications, parameters and
components, the record layout (which value rows are kept, which pairs get
mixed moments for the ratios' confidence intervals) and the kernel that
computes them. Every check of a specification against the family and the
function is made there, once, before any work.
"""

from dataclasses import dataclass

import numpy as np

__all__ = ["ESTIMATORS", "EstimatorSpec", "Plan", "parse_estimator", "parse_estimators"]

#: Estimator names, in the order of the kernel's value rows.
ESTIMATORS = ("score", "pathwise")


# --- estimator specifications: the variants of issue 6 -----------------------------
#
# A specification is a base estimator and modifiers joined by "+":
#
#   score[+baseline(B) | +optimal-baseline | +cv | +loo(K)][+antithetic]
#   pathwise[+antithetic]
#   measure-valued[+coupled | +decoupled]
#
# docs/variance-reduction.md defines each one and derives its variance for the seed case.

#: Base estimators a specification may start with.
BASES = ("score", "pathwise", "measure-valued")

#: Group size of ``score+loo`` when none is given.
DEFAULT_LOO_GROUP = 8

_SPEC_HELP = (
    "score[+baseline(B)|+optimal-baseline|+cv|+loo(K)][+antithetic], pathwise[+antithetic], "
    "or measure-valued[+coupled|+decoupled]"
)


@dataclass(frozen=True)
class EstimatorSpec:
    """One estimator variant, parsed from a specification string (see :func:`parse_estimator`).

    Attributes
    ----------
    base : {"score", "pathwise", "measure-valued"}
    baseline : None, float, "optimal", "cv" or "loo"
        Score function only. A float is a constant baseline ``b`` used for every
        parameter; ``"optimal"`` the variance-optimal constant baseline per
        parameter and ``"cv"`` the control variate on the whole score vector,
        both estimated on an independent pilot stream; ``"loo"`` the
        leave-one-out baseline within groups of ``group`` draws.
    group : int
        Draws per leave-one-out group (1 otherwise).
    antithetic : bool
        Evaluate every draw at ``eps`` and at its mirror ``-eps`` and average the two.
    coupled : bool
        Measure-valued only: the two sides share their randomness.
    """

    base: str
    baseline: object = None
    group: int = 1
    antithetic: bool = False
    coupled: bool = True

    @property
    def name(self):
        """Canonical specification string: ``parse_estimator(spec.name) == spec``."""
        parts = [self.base]
        if self.baseline == "optimal":
            parts.append("optimal-baseline")
        elif self.baseline == "cv":
            parts.append("cv")
        elif self.baseline == "loo":
            parts.append(f"loo({self.group})")
        elif self.baseline is not None:
            parts.append(f"baseline({_short(self.baseline)})")
        if self.antithetic:
            parts.append("antithetic")
        if self.base == "measure-valued":
            parts.append("coupled" if self.coupled else "decoupled")
        return "+".join(parts)

    @property
    def evaluations(self):
        """Evaluations of ``f`` or ``f'`` per draw, for one parameter.

        A measure-valued estimate evaluates ``f`` on both sides of the weak
        derivative; an antithetic one at ``x`` and at its mirror.
        """
        if self.base == "measure-valued" or self.antithetic:
            return 2
        return 1

    @property
    def multivariate(self):
        """Whether draws are vectors (a :class:`~fastgrad.DiagNormal`, even at ``dim = 1``): results hold arrays."""
        return hasattr(self.distribution, "dim")

    @property
    def needs_pilot(self):
        """Whether coefficients are estimated on a pilot stream (``optimal-baseline``, ``cv``)."""
        return self.baseline in ("optimal", "cv")

    @property
    def plain(self):
        """``score`` or ``pathwise`` with no modifier."""
        return self.base != "measure-valued" and self.baseline is None and not self.antithetic

    @property
    def kind_row(self):
        """Block of value rows of the plain fillers: score 0, pathwise 1, measure-valued coupled 2, decoupled 3.

        None for the variants only the general fillers compute.
        """
        if self.plain:
            return ESTIMATORS.index(self.base)
        if self.base == "measure-valued":
            return 2 if self.coupled else 3
        return None


def _short(value):
    """Shortest text that reads back as ``value`` (``4.0`` -> ``4``)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def parse_estimator(text):
    """Parse one estimator specification, e.g. ``"score+optimal-baseline"``; return an :class:`EstimatorSpec`.

    >>> parse_estimator("score+loo(16)").name
    'score+loo(16)'
    >>> parse_estimator("pathwise+antithetic").evaluations
    2
    """
    if isinstance(text, EstimatorSpec):
        return text
    if not isinstance(text, str):
        raise TypeError(f"an estimator specification must be a string, {_SPEC_HELP}; got {text!r}")
    parts = [part.strip().lower() for part in _modifiers(text.strip())]
    base = parts[0]
    if base not in BASES:
        raise ValueError(f"estimator {text!r}: must start with one of {list(BASES)}; accepted: {_SPEC_HELP}")
    fields = {"base": base}
    for part in parts[1:]:
        key, argument = _modifier(text, part)
        if key in ("baseline", "optimal-baseline", "cv", "loo"):
            if base != "score":
                raise ValueError(
                    f"estimator {text!r}: {key} applies to the score function only; accepted: {_SPEC_HELP}"
                )
            if "baseline" in fields:
                raise ValueError(f"estimator {text!r}: at most one of baseline(B), optimal-baseline, cv, loo(K)")
            if key == "baseline":
                fields["baseline"] = _baseline_constant(text, argument)
            elif key == "loo":
                fields["baseline"] = "loo"
                fields["group"] = _loo_group(text, argument)
            else:
                fields["baseline"] = "optimal" if key == "optimal-baseline" else "cv"
        elif key == "antithetic":
            if base == "measure-valued":
                raise ValueError(
                    f"estimator {text!r}: antithetic applies to score and pathwise; accepted: {_SPEC_HELP}"
                )
            if fields.get("antithetic"):
                raise ValueError(f"estimator {text!r}: antithetic is given twice")
            fields["antithetic"] = True
        elif key in ("coupled", "decoupled"):
            if base != "measure-valued":
                raise ValueError(f"estimator {text!r}: {key} applies to measure-valued only; accepted: {_SPEC_HELP}")
            if "coupled" in fields:
                raise ValueError(f"estimator {text!r}: give at most one of coupled, decoupled")
            fields["coupled"] = key == "coupled"
        else:
            raise ValueError(f"estimator {text!r}: unknown modifier {part!r}; accepted: {_SPEC_HELP}")
    spec = EstimatorSpec(**fields)
    if spec.baseline == "loo" and spec.antithetic:
        raise ValueError(f"estimator {text!r}: loo(K) and antithetic cannot be combined")
    return spec


def _modifiers(text):
    """Split a specification at its ``+`` signs, except inside parentheses (``baseline(1e+16)``)."""
    parts, depth, start = [], 0, 0
    for i, character in enumerate(text):
        if character == "(":
            depth += 1
        elif character == ")":
            depth = max(0, depth - 1)
        elif character == "+" and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _modifier(text, part):
    if part.endswith(")") and "(" in part:
        key, argument = part[:-1].split("(", 1)
        key = key.strip()
        if key not in ("baseline", "loo"):
            raise ValueError(f"estimator {text!r}: {key!r} takes no argument; accepted: {_SPEC_HELP}")
        return key, argument.strip()
    if part == "baseline":
        raise ValueError(f"estimator {text!r}: baseline needs a constant, e.g. baseline(4); or use optimal-baseline")
    if part in ("control-variate",):
        return "cv", None
    return part, None


def _baseline_constant(text, argument):
    try:
        value = float(argument)
    except ValueError:
        raise ValueError(f"estimator {text!r}: baseline(B) needs a finite number B; got {argument!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"estimator {text!r}: baseline(B) needs a finite number B; got {argument!r}")
    return value


def _loo_group(text, argument):
    if argument is None:
        return DEFAULT_LOO_GROUP
    try:
        group = int(argument)
    except ValueError:
        raise ValueError(f"estimator {text!r}: loo(K) needs an integer group size 2 <= K <= 65536") from None
    if not 2 <= group <= 65536:
        raise ValueError(f"estimator {text!r}: loo(K) needs an integer group size 2 <= K <= 65536; got {group}")
    return group


def parse_estimators(specs):
    """Parse a list of specifications (or one comma-separated string); return a tuple of :class:`EstimatorSpec`.

    Every ``loo(K)`` in one list must use the same ``K`` (the run's draws are
    grouped once), and no specification may appear twice.
    """
    if isinstance(specs, str):
        specs = [s for s in specs.split(",")]
    try:
        items = list(specs)
    except TypeError:
        raise TypeError(f"estimators must be a list of specifications ({_SPEC_HELP}); got {specs!r}") from None
    if not items:
        raise ValueError(f"estimators must name at least one estimator: {_SPEC_HELP}")
    parsed = []
    for position, item in enumerate(items):
        try:
            parsed.append(parse_estimator(item.strip() if isinstance(item, str) else item))
        except (TypeError, ValueError) as error:  # say which argument, and which item of it
            raise type(error)(f"estimators[{position}]: {error}") from None
    parsed = tuple(parsed)
    names = [spec.name for spec in parsed]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"estimators: {name!r} is listed twice")
    groups = {spec.group for spec in parsed if spec.baseline == "loo"}
    if len(groups) > 1:
        raise ValueError(f"estimators: every loo(K) in one run must use the same K; got {sorted(groups)}")
    return parsed


# --- the plan of a run ------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Plan:
    """Everything a run computes, decided once before any work (internal).

    Attributes
    ----------
    distribution, function
        The family (a scalar family is the ``dim = 1`` case) and the resolved function.
    specs : tuple of EstimatorSpec
        In table order; for several, the reference is appended if it was not asked for.
    wrt : tuple of str
        Parameters the gradients are taken with respect to.
    reference : int or None
        Index of the specification ratios are taken against (None: a single one).
    classic : bool
        ``compare``/``estimate`` without ``estimators=``: the classic results and fingerprints.
    dim, group : int
        Components of one draw, and draws per leave-one-out group (1 without ``loo``).
    sizes : tuple of int
        Components of each of the family's parameters, in kernel order:
        ``dim`` each, or the family's own (``parameter_sizes``: a
        MultivariateNormal's ``loc`` has D, its ``scale_tril`` D (D + 1) / 2).
    rows : numpy.ndarray
        Kernel value row of each kept (specification, parameter, component),
        in that order: row ``k * R + o_j + i``, with ``R`` the sum of the
        sizes, ``o_j`` the sum of those before parameter ``j`` (so
        ``(k * P + j) * dim + i`` where every size is ``dim``), and ``k`` the
        specification's index (general filler) or kind (score 0, pathwise 1:
        the plain and vector fillers).
    pair_x, pair_y : numpy.ndarray
        Per pair, positions in ``rows``: every specification against the
        reference, per parameter and component (what the ratios' intervals need).
    """

    distribution: object
    function: object
    specs: tuple
    wrt: tuple
    reference: object
    classic: bool
    dim: int
    group: int
    sizes: tuple
    rows: np.ndarray
    pair_x: np.ndarray
    pair_y: np.ndarray

    @classmethod
    def build(cls, distribution, function, estimators, wrt, *, classic=False, compare=True):
        """Check every specification against the family and the function, and lay the run out.

        ``distribution`` and ``function`` are already validated; ``wrt`` is
        None (every parameter) or names checked by the caller. A ``compare``
        plan takes ratios against its reference estimator (pathwise where
        there is one, else the score function), appended if not listed.
        """
        from fastgrad.distributions import with_natural  # (distributions imports the analytic engine)

        distribution = with_natural(distribution, wrt)  # natural parameters: the extended family's kernels
        specs = list(parse_estimators(estimators))
        family = distribution.family
        name = type(getattr(distribution, "distribution", distribution)).__name__
        dim = getattr(distribution, "dim", 1)
        for spec in specs:
            _check_spec(spec, family, name, function, dim, many=not classic,
                        n_pairs=sum(parameter_sizes(distribution)))  # fmt: skip
        reference = None
        if compare:
            ref = parse_estimator("pathwise" if family.pathwise and function.has_derivative else "score")
            if ref.name not in [spec.name for spec in specs]:
                specs.append(ref)
            reference = [spec.name for spec in specs].index(ref.name)
        groups = [spec.group for spec in specs if spec.baseline == "loo"]
        wrt = tuple(distribution.parameters if wrt is None else wrt)
        _check_weak_parameters(specs, family, name, wrt)
        return cls._laid_out(distribution, function, tuple(specs), wrt, reference, classic, dim,
                             groups[0] if groups else 1)  # fmt: skip

    @classmethod
    def _laid_out(cls, distribution, function, specs, wrt, reference, classic, dim, group, pairs=None):
        parameters = distribution.parameters
        # Value rows: the general fillers number them by specification; the plain and vector fillers
        # by kind (score 0, pathwise 1, measure-valued 2 and 3), so their loops store to rows fixed when
        # they compile.
        by_kind = _filler(distribution, function, specs, dim) in ("plain", "plain-weak", "vector")
        order = [spec.kind_row if by_kind else s for s, spec in enumerate(specs)]
        sizes = parameter_sizes(distribution)
        offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        n_pairs = offsets[-1]
        rows = [order[s] * n_pairs + offsets[parameters.index(p)] + i for s in range(len(specs)) for p in wrt
                for i in range(sizes[parameters.index(p)])]  # fmt: skip
        if pairs is None:
            per_spec = sum(sizes[parameters.index(p)] for p in wrt)
            pairs = [(s * per_spec + k, reference * per_spec + k) for s in range(len(specs))
                     if reference is not None and s != reference for k in range(per_spec)]  # fmt: skip
        return cls(
            distribution=distribution,
            function=function,
            specs=specs,
            wrt=wrt,
            reference=reference,
            classic=classic,
            dim=dim,
            group=group,
            sizes=sizes,
            rows=np.array(rows, np.int64),
            pair_x=np.array([x for x, _ in pairs], np.int64),
            pair_y=np.array([y for _, y in pairs], np.int64),
        )

    @property
    def needs_control_matrix(self):
        """Whether a ``cv`` specification needs the pilot's full score covariance (else baselines only)."""
        return any(not isinstance(spec, str) and spec.baseline == "cv" for spec in self.specs)

    def pilot_plan(self):
        """Lay out the pilot run: rows ``g_r = f s_r`` and ``s_r`` of every (parameter, component) ``r``.

        With ``R`` such pairs (:attr:`n_pairs`), rows ``0 .. R-1`` are ``g`` and
        ``R .. 2R-1`` are ``s``. For a control variate, pairs ``(g_r, s_k)``
        for every ``r, k`` give ``E[f s_r s_k]`` and pairs ``(s_r, s_k)``,
        ``r < k``, the score covariance; for baselines only, the pairs
        ``(g_r, s_r)``.
        """
        n = self.n_pairs
        if self.needs_control_matrix or not self.multivariate:  # (scalar pilots keep their layout and bits)
            pairs = [(j, n + k) for j in range(n) for k in range(n)]
            pairs += [(n + j, n + k) for j in range(n) for k in range(j + 1, n)]
        else:
            pairs = [(j, n + j) for j in range(n)]
        return Plan._laid_out(self.distribution, self.function, (parse_estimator("score"), "control"),
                              self.parameters, None, False, self.dim, 1, pairs)  # fmt: skip

    # -- the record view: where each (specification, parameter, component) is ------------------

    @property
    def parameters(self):
        """The family's parameter names, in kernel order."""
        return self.distribution.parameters

    @property
    def names(self):
        """Canonical names of the specifications, in table order."""
        return tuple(spec if isinstance(spec, str) else spec.name for spec in self.specs)

    @property
    def estimators(self):
        """The same as :attr:`names` (the classic results call them estimators)."""
        return self.names

    @property
    def n_rows(self):
        """Number of kept rows."""
        return len(self.rows)

    @property
    def multivariate(self):
        """Whether draws are vectors (a :class:`~fastgrad.DiagNormal`, even at ``dim = 1``): results hold arrays."""
        return hasattr(self.distribution, "dim")

    @property
    def needs_pilot(self):
        """Whether a pilot run estimates coefficients (``optimal-baseline``, ``cv``)."""
        return any(not isinstance(spec, str) and spec.needs_pilot for spec in self.specs)

    def spec_index(self, spec):
        """Index of a specification given by index, name or :class:`EstimatorSpec`."""
        if isinstance(spec, (int, np.integer)):
            return int(spec)
        name = spec.name if isinstance(spec, EstimatorSpec) else parse_estimator(spec).name
        return self.names.index(name)

    @property
    def n_pairs(self):
        """``R``: (parameter, component) pairs of the family, every parameter's (the kernels' row stride)."""
        return sum(self.sizes)

    def size(self, parameter):
        """Components of ``parameter``."""
        return self.sizes[self.parameters.index(parameter)]

    def offset(self, parameter):
        """Position of ``parameter``'s first component among the family's ``R`` pairs."""
        return sum(self.sizes[: self.parameters.index(parameter)])

    def _wrt_offset(self, parameter):
        """Position of ``parameter``'s first component among one specification's kept rows."""
        return sum(self.size(p) for p in self.wrt[: self.wrt.index(parameter)])

    @property
    def _per_spec(self):
        return sum(self.size(p) for p in self.wrt)

    def row(self, spec, parameter, component=0):
        """Position in :attr:`rows` (and in a record) of ``(spec, parameter, component)``."""
        return self.spec_index(spec) * self._per_spec + self._wrt_offset(parameter) + component

    def component_row(self, spec, parameter, component):
        """:meth:`row` with the component spelled out."""
        return self.row(spec, parameter, component)

    def pair(self, spec, parameter, component=0):
        """Pair index of ``(spec, parameter, component)`` against the reference (None for the reference)."""
        s = self.spec_index(spec)
        if self.reference is None or s == self.reference:
            return None
        index = s if s < self.reference else s - 1
        return index * self._per_spec + self._wrt_offset(parameter) + component

    # -- the kernel ----------------------------------------------------------------------------

    @property
    def filler(self):
        """The kernel's filler (see :mod:`fastgrad._kernels`): plain, plain-weak, general, vector or vector-general."""
        return _filler(self.distribution, self.function, self.specs, self.dim)

    def kernel(self, sink, *, seed, n_units, coefficients=None, stream_base=0):
        """Return the compiled kernel of this plan, with its run-time arguments."""
        from fastgrad._kernels import Kernel, make_run

        parameters = self.parameters
        filler = self.filler
        theta = self.distribution.theta
        weights = None
        if filler == "plain" and self.dim == 1 and not isinstance(theta, tuple):  # DiagNormal at D = 1
            theta = tuple(float(row[0]) for row in theta)
        if filler in ("vector", "vector-general"):
            theta = tuple(np.ascontiguousarray(row, dtype=np.float64) for row in theta)  # one array per parameter
            weights = self.function.weights_for(self.dim) if hasattr(self.function, "weights_for") else None
        run = make_run(theta, self.function.param_vector, self.specs, len(parameters), coefficients,
                       [parameters.index(p) for p in self.wrt], self.rows, seed=seed, n_units=n_units,
                       group=self.group, dim=self.dim, weights=weights, stream_base=stream_base,
                       vector=filler == "vector-general", n_pairs=self.n_pairs)  # fmt: skip
        return Kernel(self.distribution.family.name, self.function, filler, sink, run)

    @property
    def units_per_chunk(self):
        """Units (``group`` draws of ``dim`` components) per chunk."""
        from fastgrad._kernels import units_per_chunk

        return units_per_chunk(self.dim, self.group)


def _weighted(function):
    """Whether ``function`` is separable with weights not all one (the vector filler applies them)."""
    weights = getattr(function, "weights", None)
    return hasattr(function, "weights_for") and (
        function.builtin is None or (weights is not None and any(w != 1.0 for w in weights))
    )


def _filler(distribution, function, specs, dim):
    """Return the filler of a run of ``specs`` (see :mod:`fastgrad._kernels`).

    ``plain-weak`` is the plain filler with measure-valued rows: a scalar
    draw's score, pathwise and measure-valued (coupled, decoupled) values in
    one pass over a block, where the general filler writes per-draw rows
    and copies them (the same operations on the same numbers, so the same
    bits). ``measure-valued,pathwise`` for a Normal with ``square``: 9.58 ->
    8.27 ns a draw on one thread (3 alternating rounds, Zen 4).
    """
    plain = all(not isinstance(spec, str) and spec.plain for spec in specs)
    if distribution.family.joint is not None:  # whole-draw cores: the vector-general filler runs them
        return "vector-general"
    if dim > 1 or _weighted(function):
        return "vector" if plain else "vector-general"
    if plain:
        return "plain"
    if all(not isinstance(spec, str) and spec.kind_row is not None for spec in specs):
        return "plain-weak"
    return "general"


#: Most (parameter, component) pairs a ``score+cv`` run may have: its matrix is ``R x R``, its pilot
#: estimates about ``1.5 R**2`` co-moments and every draw costs ``2 R**2`` more flops.
MAX_CV_PAIRS = 128


def _check_weak_parameters(specs, family, name, wrt):
    """Refuse a measure-valued specification for a parameter the family's weak derivative does not serve."""
    if family.weak_parameters is None or family.weak_derivative is None:
        return
    missing = [p for p in wrt if p not in family.weak_parameters]
    for spec in specs:
        if spec.base == "measure-valued" and missing:
            served = list(family.weak_parameters)
            raise ValueError(
                f"estimators: {spec.name!r}: {name} has a weak derivative for {', '.join(served)} only, not for "
                f"{', '.join(missing)} ({family.weak_note}); pass wrt={served!r}"
            )


def parameter_sizes(distribution):
    """Components of each of a distribution's parameters, in kernel order (``dim`` each unless it says otherwise)."""
    sizes = getattr(distribution, "parameter_sizes", None)
    if sizes is not None:
        return tuple(int(n) for n in sizes)
    return (getattr(distribution, "dim", 1),) * len(distribution.parameters)


def _check_spec(spec, family, name, function, dim, many, n_pairs):
    """Refuse, before any work, a specification the family or the function cannot give."""
    if spec.baseline == "cv" and n_pairs > MAX_CV_PAIRS:
        bound = f" (D <= {MAX_CV_PAIRS // len(family.parameters)} for {name})"
        if n_pairs != len(family.parameters) * dim:  # (parameters of sizes of their own: the pairs are the bound)
            bound = f" ({name} at D = {dim} has {n_pairs})"
        raise ValueError(
            f"estimators: {spec.name!r} at D = {dim}: the control variate on the whole score vector needs a "
            f"{n_pairs} x {n_pairs} coefficient matrix, about {1.5 * n_pairs**2:,.0f} pilot co-moments and "
            f"{2 * n_pairs**2:,} extra flops per draw; it is offered up to {MAX_CV_PAIRS} (parameter, component) "
            f"pairs{bound}; use score+optimal-baseline, one baseline per component, instead"
        )
    if spec.base == "pathwise" and not family.pathwise:
        if not many:
            raise ValueError(
                f"{name} has no pathwise (reparameterisation) estimator: its draws are discrete, so they do not "
                f"move smoothly with {', '.join(family.parameters)}; use fastgrad.estimate(..., estimator='score')"
            )
        raise ValueError(
            f"estimators: {spec.name!r} needs a pathwise estimator, and {name} has none (its draws are "
            f"discrete, so they do not move smoothly with {', '.join(family.parameters)}); use score variants"
        )
    if spec.base == "pathwise" and not function.has_derivative:
        if dim > 1 or hasattr(function, "weights_for"):
            raise ValueError(
                f"the pathwise estimator needs the gradient of {function.name}: pass "
                "fastgrad.VectorFunction(f, grad_f), or use estimator='score'"
            )
        if not many:
            raise ValueError(
                f"the pathwise estimator needs the derivative of {function.name}: pass "
                "fastgrad.Function(f, df) with df an @njit function computing f'(x), or use estimator='score'"
            )
        raise ValueError(
            f"estimators: {spec.name!r} needs the derivative of {function.name}: pass fastgrad.Function(f, df)"
        )
    if spec.antithetic and not family.symmetric:
        raise ValueError(
            f"estimators: {spec.name!r} pairs each draw's noise eps with -eps, which needs noise "
            f"symmetric about 0; {name}'s is not (antithetic pairs are implemented for fastgrad.Normal)"
        )
    if spec.base == "measure-valued" and family.weak_derivative is None:
        why = f" ({family.weak_note})" if family.weak_note else ""
        raise ValueError(
            f"estimators: {spec.name!r}: {name} has no weak derivative in fastgrad{why}; measure-valued gradients are "
            "implemented for Normal, DiagNormal, Laplace, Exponential, Gamma (rate), Bernoulli and Poisson"
        )
