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

__all__ = ["ESTIMATORS"]

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
