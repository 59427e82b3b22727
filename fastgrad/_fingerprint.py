"""A run's fingerprint, and the plan read back from one.

The fingerprint is everything that determines a run's numbers; checkpoints
and partial results carry it, so a file from another run is refused, and
:func:`fastgrad.merge` rebuilds the run's plan from it alone.
"""

from fastgrad.distributions import DISTRIBUTIONS, DiagNormal
from fastgrad.estimators import Plan
from fastgrad.functions import resolve


def fingerprint(plan, kind, n, seed, pilot, **extra):
    """Return the fingerprint of a run of ``plan`` (``kind``: compare, estimate or curve)."""
    from fastgrad import __version__
    from fastgrad._jobs import RECORD_LAYOUT_VERSION
    from fastgrad.rng import CHUNK_SIZE, STREAM_LAYOUT_VERSION

    if not plan.classic:
        extra["pilot"] = pilot  # estimator variants: their fingerprints have always named the pilot
    return {
        "kind": kind,
        "distribution": plan.distribution.to_dict(),
        "function": plan.function.to_dict(),
        "n": n,
        "seed": seed,
        "wrt": list(plan.wrt),
        "estimators": list(plan.names),
        **extra,
        "fastgrad": __version__,
        "stream_layout": STREAM_LAYOUT_VERSION,
        "record_layout": RECORD_LAYOUT_VERSION,
        "chunk_size": CHUNK_SIZE,
    }


def plan_from(fingerprint):
    """Rebuild the :class:`~fastgrad.estimators.Plan` a fingerprint was made from."""
    distribution = distribution_from(fingerprint["distribution"])
    function = function_from(fingerprint["function"])
    classic = "pilot" not in fingerprint
    return Plan.build(distribution, function, fingerprint["estimators"], tuple(fingerprint["wrt"]),
                      classic=classic, compare=fingerprint["kind"] != "estimate")  # fmt: skip


def distribution_from(data):
    """Rebuild the distribution a ``to_dict()`` describes."""
    classes = {cls.__name__: cls for cls in (*DISTRIBUTIONS, DiagNormal)}
    data = dict(data)
    name = data.pop("family", None)
    if name not in classes:
        from fastgrad._jobs import PartialError

        raise PartialError(f"partial result for an unknown distribution family {name!r}")
    return classes[name](**data)


class RecordedFunction:
    """A user's function as a partial result records it: its name, not its code (no exact values)."""

    builtin = None
    params = ()
    param_vector = (0.0,)

    def __init__(self, data):
        self.name = data["name"]
        self.has_derivative = bool(data.get("has_derivative"))
        self._data = dict(data)

    @property
    def formula(self):
        return f"user function {self.name}"

    def exact(self):
        return None

    def to_dict(self):
        return dict(self._data)

    def __repr__(self):
        return f"<user function {self.name} (from a partial result)>"


def function_from(data):
    """Rebuild the function a ``to_dict()`` describes (a :class:`RecordedFunction` for a user's)."""
    from fastgrad import functions

    if not data.get("builtin"):
        return RecordedFunction(data)
    if "component" in data:  # a separable function of a vector
        name, weights = data["name"], data.get("weights")
        if name == "sum_cos":
            return functions.sum_cos(**data["component"].get("parameters", {}))
        return getattr(functions, name)(weights) if weights is not None else getattr(functions, name)()
    return resolve(getattr(functions, data["name"])(**data.get("parameters", {})))
