"""The one check of a real-valued parameter, for distributions and functions alike, and fastgrad's warnings."""

import math
import sys
import warnings

import numpy as np

#: Draws ``x = loc + scale * eps`` are quantised in steps of ``ulp(loc)``; a warning is given when a step is more
#: than this fraction of ``scale`` (``loc = 1e16, scale = 1``: steps of 2 scales, and cos(x) is far off).
QUANTISATION_FRACTION = 2.0**-10

#: The smallest scale accepted: the smallest normal float64. Below it (subnormal) scale * eps loses precision.
MIN_SCALE = sys.float_info.min


class FastgradWarning(UserWarning):
    """Base class of fastgrad's own warnings (the command line prints each as one ``warning:`` line)."""


class PrecisionWarning(FastgradWarning):
    """Parameters the float64 arithmetic of the draws represents only coarsely: results may be biased."""


#: Modules whose frames a warning passes through to reach the user's call (numpy, contextlib: decorators' frames).
_PASSED_THROUGH = ("fastgrad", "numpy", "contextlib")


def warn_from_caller(warning):
    """Issue ``warning`` as if from the first frame outside fastgrad: the user's own call, however deep inside."""
    frame, level = sys._getframe(1), 2  # (stacklevel 2: the caller of this function)
    while frame is not None and str(frame.f_globals.get("__name__")).split(".")[0] in _PASSED_THROUGH:
        frame, level = frame.f_back, level + 1
    warnings.warn(warning, stacklevel=level)


#: Draws smaller than this (2**-511, about 1.5e-154) have squares below the smallest normal float64.
TINY_DRAWS = 2.0**-511


def check_draw_size(names, size):
    """Warn when the draws are of size ``size`` below :data:`TINY_DRAWS`: their squares, and most f, underflow.

    ``names`` states the parameters that make them so (``"rate = 1e+300"``).
    """
    if size < TINY_DRAWS:
        warn_from_caller(
            PrecisionWarning(
                f"{names}: the draws are about {size:.3g} in size, below {TINY_DRAWS:.3g}, and their squares underflow "
                "float64 (below the smallest normal number), so the values of most functions of them, and the "
                "variances, lose precision or become 0; rescale the problem so that the draws are nearer 1"
            )
        )


def check_location_scale(loc_name, loc, scale_name, scale, warn=True):
    """Refuse a subnormal scale; warn when draws around ``loc`` are quantised coarser than the scale allows."""
    if scale < MIN_SCALE:
        raise ValueError(
            f"{scale_name} must be at least {MIN_SCALE:.17g} (the smallest normal float64); got {scale!r}: "
            f"below it the draws lose precision and the score 1/{scale_name} overflows"
        )
    step = math.ulp(loc)
    if warn and step > scale * QUANTISATION_FRACTION:
        warnings.warn(
            PrecisionWarning(
                f"{loc_name} = {loc!r} is so large against {scale_name} = {scale!r} that the draws "
                f"{loc_name} + {scale_name} * eps are quantised in steps of {step:.3g} ({step / scale:.3g} "
                f"{scale_name}s; warned above {QUANTISATION_FRACTION:.3g}): estimates of non-polynomial functions "
                "may be biased; shift the function so that the location is small"
            ),
            stacklevel=4,
        )


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
