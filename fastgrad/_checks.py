"""The one check of a real-valued parameter, for distributions and functions alike."""

import math

import numpy as np


def real(name, value, *, positive=False):
    """Return ``value`` as a finite float64, or raise naming ``name``.

    ``bool`` is refused (``True`` is not a parameter value), and so is an
    integer too large for a float64 (a ``ValueError``, not an ``OverflowError``).
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number; got {value!r} ({type(value).__name__})")
    try:
        value = float(value)
    except OverflowError:  # an int beyond the float64 range
        raise ValueError(f"{name} must be a finite float64 (|{name}| < 1.8e308); got an integer of "
                         f"{len(str(abs(int(value))))} digits") from None  # fmt: skip
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value!r}")
    if positive and not value > 0:
        raise ValueError(f"{name} must be positive; got {value!r}")
    return value


def real_vector(name, values, *, positive=False):
    """Return a non-empty 1-D sequence of reals as a tuple of floats, each checked as :func:`real` (``name[i]``)."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise TypeError(f"{name} must be a sequence of real numbers (a list or 1-D array); got {values!r}")
    array = np.asarray(values, dtype=object)  # (object: True stays a bool, to be refused, not 1)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of real numbers; got shape {array.shape}")
    return tuple(real(f"{name}[{i}]", value, positive=positive) for i, value in enumerate(array.tolist()))
