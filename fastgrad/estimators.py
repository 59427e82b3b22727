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

A kernel computes *value rows*: row ``j`` is the score estimate for
parameter ``j``, row ``P + j`` the pathwise one (``P`` parameters). A
:class:`Layout` says which rows a run keeps (the requested estimators and
parameters) and which pairs of rows get mixed moments (score and pathwise of
the same parameter, for the variance-ratio confidence interval).
"""

from dataclasses import dataclass

import numpy as np

__all__ = ["ESTIMATORS", "EstimatorSpec", "parse_estimator", "parse_estimators"]

#: Estimator names, in the order of the kernel's value rows.
ESTIMATORS = ("score", "pathwise")


@dataclass(frozen=True)
class Layout:
    """Rows and pairs of one run (internal)."""

    estimators: tuple
    wrt: tuple
    rows: np.ndarray  # value-row index of each kept (estimator, parameter), estimator-major
    pair_x: np.ndarray  # per pair: position in ``rows`` of the score row
    pair_y: np.ndarray  # per pair: position in ``rows`` of the pathwise row

    @property
    def n_rows(self):
        return len(self.rows)

    @property
    def need_f(self):
        return "score" in self.estimators

    @property
    def need_df(self):
        return "pathwise" in self.estimators

    def row(self, estimator, parameter):
        """Position in :attr:`rows` of ``(estimator, parameter)``."""
        return self.estimators.index(estimator) * len(self.wrt) + self.wrt.index(parameter)


def layout(parameters, estimators, wrt):
    """Build the :class:`Layout` for a family's ``parameters``."""
    rows = [
        ESTIMATORS.index(estimator) * len(parameters) + parameters.index(parameter)
        for estimator in estimators
        for parameter in wrt
    ]
    pair_x, pair_y = [], []
    if "score" in estimators and "pathwise" in estimators:
        for j in range(len(wrt)):
            pair_x.append(estimators.index("score") * len(wrt) + j)
            pair_y.append(estimators.index("pathwise") * len(wrt) + j)
    return Layout(
        estimators=tuple(estimators),
        wrt=tuple(wrt),
        rows=np.array(rows, dtype=np.int64),
        pair_x=np.array(pair_x, dtype=np.int64),
        pair_y=np.array(pair_y, dtype=np.int64),
    )


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
    def needs_pilot(self):
        """Whether coefficients are estimated on a pilot stream (``optimal-baseline``, ``cv``)."""
        return self.baseline in ("optimal", "cv")

    @property
    def plain(self):
        """``score`` or ``pathwise`` with no modifier."""
        return self.base != "measure-valued" and self.baseline is None and not self.antithetic


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
    parts = [part.strip().lower() for part in text.strip().split("+")]
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
    parsed = tuple(parse_estimator(s.strip() if isinstance(s, str) else s) for s in items)
    names = [spec.name for spec in parsed]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"estimators: {name!r} is listed twice")
    groups = {spec.group for spec in parsed if spec.baseline == "loo"}
    if len(groups) > 1:
        raise ValueError(f"estimators: every loo(K) in one run must use the same K; got {sorted(groups)}")
    return parsed
