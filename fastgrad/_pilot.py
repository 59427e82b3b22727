"""Pilot runs: the coefficients of optimal baselines and control variates, from an independent stream.

A pilot reads streams ``(seed, PILOT_STREAMS + c)``, independent of the run's,
so a coefficient is independent of the draws it is used on and the estimator
stays unbiased. From the pilot's per-draw ``g_j = f s_j`` and ``s_k``::

    optimal baseline   b_j = E[f s_j**2] / E[s_j**2] = E[g_j s_j] / E[s_j**2]
    control variate    C_j = Cov(s)^-1 Cov(s, g_j)
"""

import numpy as np

from fastgrad._kernels import PILOT_STREAMS, run_records


def coefficients(plan, pilot, seed):
    """Per specification of ``plan``, its coefficient matrix ``B`` (P x P) or None.

    ``baseline(b)`` is ``b`` times the identity; ``optimal-baseline`` and
    ``cv`` are estimated on ``pilot`` draws of the pilot streams (only when
    one of them is in the plan).
    """
    n_params = len(plan.parameters)
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
        estimated = solve(record, n_params)
    out = []
    for spec in plan.specs:
        if isinstance(spec, str) or spec.baseline is None or spec.baseline == "loo":
            out.append(None)
        elif spec.baseline == "optimal":
            out.append(np.diag(estimated[0]))
        elif spec.baseline == "cv":
            out.append(estimated[1])
        else:
            out.append(np.eye(n_params) * spec.baseline)
    return out


def solve(record, n_params):
    """(optimal baselines, control-variate matrix) from a pilot record of rows g_j, s_k and their pairs."""
    n = record[0]
    rows = 2 * n_params

    def mean(r):
        return record[2 + 4 * r]

    def m2(r):
        return record[3 + 4 * r]

    def c11(p):
        return record[2 + 4 * rows + 4 * p]

    baselines = np.empty(n_params)
    for j in range(n_params):
        gs = c11(j * n_params + j) / n + mean(j) * mean(n_params + j)
        ss = m2(n_params + j) / n + mean(n_params + j) ** 2
        baselines[j] = gs / ss
    cov_s = np.empty((n_params, n_params))
    p = n_params * n_params
    for j in range(n_params):
        cov_s[j, j] = m2(n_params + j) / (n - 1)
        for k in range(j + 1, n_params):
            cov_s[j, k] = cov_s[k, j] = c11(p) / (n - 1)
            p += 1
    cov_gs = np.array([[c11(j * n_params + k) / (n - 1) for k in range(n_params)] for j in range(n_params)])
    try:
        matrix = np.linalg.solve(cov_s, cov_gs.T).T
    except np.linalg.LinAlgError:
        raise ValueError("the pilot's score covariance is singular: the control variate is not defined") from None
    return baselines, matrix
