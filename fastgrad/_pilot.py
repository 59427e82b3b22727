"""Pilot runs: the coefficients of optimal baselines and control variates, from an independent stream.

A pilot reads streams ``(seed, PILOT_STREAMS + c)``, independent of the run's,
so a coefficient is independent of the draws it is used on and the estimator
stays unbiased. From the pilot's per-draw ``g_j = f s_j`` and ``s_k``::

    optimal baseline   b_j = E[f s_j**2] / E[s_j**2] = E[g_j s_j] / E[s_j**2]
    control variate    C_j = Cov(s)^-1 Cov(s, g_j)
"""

import numpy as np

from fastgrad._kernels import PILOT_STREAMS, run_records
from fastgrad.estimators import parameter_sizes


def coefficients(plan, pilot, seed):
    """Per specification of ``plan``, its coefficients or None.

    For a scalar family, a ``P x P`` matrix ``B``: ``baseline(b)`` is ``b``
    times the identity. For a multivariate one (``R`` score components,
    :attr:`~fastgrad.estimators.Plan.n_pairs`: ``P * dim`` unless the
    parameters' sizes differ), a vector of ``R`` baselines, or the
    ``R x R`` control-variate matrix. ``optimal-baseline`` and ``cv`` are
    estimated on ``pilot`` draws of the pilot streams (only when one of them
    is in the plan).
    """
    n_pairs = plan.n_pairs
    estimated = None
    if plan.needs_pilot:
        pilot_plan = plan.pilot_plan()
        kernel = pilot_plan.kernel("moments", seed=seed, n_units=pilot, stream_base=PILOT_STREAMS)
        record, _, _ = run_records(kernel, pilot_plan)
        if int(record[1]):
            from fastgrad._api import NonFiniteValuesError

            raise NonFiniteValuesError(
                int(record[1]), pilot, f"{int(record[1]):,} of {pilot:,} pilot draws gave a non-finite f(x) * score: "
                "the optimal baseline and control variate cannot be estimated; check the function"
            )  # fmt: skip
        estimated = solve(record, pilot_plan)
    out = []
    for spec in plan.specs:
        if isinstance(spec, str) or spec.baseline is None or spec.baseline == "loo":
            out.append(None)
        elif spec.baseline == "optimal":
            out.append(estimated[0] if plan.multivariate else np.diag(estimated[0]))
        elif spec.baseline == "cv":
            out.append(estimated[1])
        else:
            out.append(np.full(n_pairs, spec.baseline) if plan.multivariate else np.eye(n_pairs) * spec.baseline)
    return out


def solve(record, pilot_plan):
    """(optimal baselines, control-variate matrix or None) from a pilot record of rows g_r, s_r and their pairs."""
    n = record[0]
    n_pairs = pilot_plan.n_rows // 2
    index = {(int(x), int(y)): p for p, (x, y) in enumerate(zip(pilot_plan.pair_x, pilot_plan.pair_y, strict=True))}
    rows = pilot_plan.n_rows

    def mean(r):
        return record[2 + 4 * r]

    def m2(r):
        return record[3 + 4 * r]

    def c11(x, y):
        return record[2 + 4 * rows + 4 * index[x, y]]

    baselines = np.empty(n_pairs)
    for j in range(n_pairs):
        gs = c11(j, n_pairs + j) / n + mean(j) * mean(n_pairs + j)
        ss = m2(n_pairs + j) / n + mean(n_pairs + j) ** 2
        baselines[j] = gs / ss
    if (0, n_pairs + n_pairs - 1) not in index:  # baselines only
        return baselines, None
    cov_s = np.empty((n_pairs, n_pairs))
    for j in range(n_pairs):
        cov_s[j, j] = m2(n_pairs + j) / (n - 1)
        for k in range(j + 1, n_pairs):
            cov_s[j, k] = cov_s[k, j] = c11(n_pairs + j, n_pairs + k) / (n - 1)
    cov_gs = np.array([[c11(j, n_pairs + k) / (n - 1) for k in range(n_pairs)] for j in range(n_pairs)])
    # Controls: the distribution's own parameters' score components (the first ones: j < P). A natural
    # parameter's score is a multiple of its parameter's (eps**2 - 1 against (eps**2 - 1) / scale): as a control
    # it would add nothing and make the covariance singular.
    base = getattr(pilot_plan.distribution, "distribution", pilot_plan.distribution)
    controls = sum(parameter_sizes(base))
    # A Categorical's scores sum to zero with weights probs (one linear dependency): there the minimum-norm
    # least-squares coefficients give the same control, the projection of g on the scores' span. Elsewhere the plain
    # solve, as before.
    matrix = np.zeros((n_pairs, n_pairs))
    cov, right = cov_s[:controls, :controls], cov_gs[:, :controls].T
    if not np.all(np.isfinite(cov)) or not np.all(np.isfinite(right)):
        raise ValueError("the pilot's score covariance is not finite: the control variate is not defined")
    if np.linalg.cond(cov) < SINGULAR:
        matrix[:, :controls] = np.linalg.solve(cov, right).T
    else:
        matrix[:, :controls] = np.linalg.lstsq(cov, right, rcond=1.0 / SINGULAR)[0].T
    return baselines, matrix


#: Condition number of the pilot's score covariance above which it is taken as singular (a least-squares solve).
SINGULAR = 1e10
