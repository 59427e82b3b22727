"""Learning-rate schedules for :func:`fastgrad.optimize`.

A schedule gives the learning rate of step ``t = 0, 1, 2, ...``. The kernels
compute it with :mod:`fastgrad.math` (the same bits on every machine).

>>> import fastgrad as fg
>>> fg.schedules.inverse_power(0.1, 100, 0.6)(0)
0.1
"""

import math
from dataclasses import dataclass

__all__ = ["Schedule", "constant", "inverse_power"]


@dataclass(frozen=True)
class Schedule:
    """``a / (1 + t / t0)**power`` at step ``t`` (``power = 0``: the constant ``a``)."""

    a: float
    t0: float
    power: float

    def __call__(self, t):
        """Return the learning rate of step ``t`` (Python floats; the kernels' own is within a few ulps)."""
        return self.a if self.power == 0 else self.a / (1.0 + t / self.t0) ** self.power

    def to_dict(self):
        """JSON-ready description."""
        return {"a": self.a, "t0": self.t0, "power": self.power}

    def __str__(self):
        return f"{self.a:g}" if self.power == 0 else f"{self.a:g} / (1 + t / {self.t0:g})**{self.power:g}"


def _positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
    return float(value)


def constant(rate):
    """Return the schedule of the learning rate ``rate`` at every step."""
    return Schedule(_positive("learning_rate", rate), 1.0, 0.0)


def inverse_power(a, t0, power):
    """Return the schedule ``a / (1 + t / t0)**power``: ``a`` at first, decaying as ``t**-power`` after ``t0`` steps.

    ``power`` in (0.5, 1] meets the Robbins-Monro conditions (the rates sum to
    infinity, their squares do not).
    """
    a, t0 = _positive("a", a), _positive("t0", t0)
    if isinstance(power, bool) or not isinstance(power, (int, float)) or not 0 <= power <= 10:
        raise ValueError(f"power must be a number from 0 to 10; got {power!r}")
    return Schedule(a, t0, float(power))
