"""The estimator-variant kernel: baselines, control variates, leave-one-out, antithetic and measure-valued.

One fused kernel computes any list of estimator specifications
(:class:`fastgrad.estimators.EstimatorSpec`) on the same draws, without
storing them. The per-draw quantities every variant is built from are
computed once per draw: ``f(x)``, the score factors ``s_j``, ``f'(x)`` and
the path factors ``p_j``; at the mirrored draw ``-eps`` when a variant is
antithetic; and the weak-derivative sides when one is measure-valued. Each
specification then turns them into one value per parameter:

=====================  =====================================================
kind                   value of one draw, parameter ``j``
=====================  =====================================================
score (+ coefficients) ``f s_j - sum_k B_jk s_k``  (``B`` = 0, ``diag(b)`` or the
                       control-variate matrix; antithetic: the mean of this at
                       ``eps`` and at ``-eps``)
pathwise               ``f' p_j`` (antithetic: mean at ``eps`` and ``-eps``)
loo (groups of K)      ``(K sum f s_j - sum f sum s_j) / (K (K - 1))`` per group:
                       the within-group sample covariance of ``f`` and ``s_j``
measure-valued         ``c_j (f(x+) - f(x-))``, the two sides of the weak derivative
control (pilot only)   ``s_j``
=====================  =====================================================

**Units.** Moments are taken over *units* of ``group`` consecutive draws
(``group`` = K of a ``loo(K)`` in the list, else 1): a unit's value is the mean
of its draws' values (a loo group's value is its covariance). Chunk ``c``
holds ``CHUNK_SIZE // group`` units and reads stream ``(seed, base + c)``; at
``group = 1`` (and whenever K divides 65 536) its draws are exactly those of
:func:`fastgrad.compare`, and a plain ``score`` or ``pathwise`` row is
bit-identical to compare's.

**Streams.** The measure-valued sides need randomness beyond ``eps``: three
uniforms and one normal per draw, from the auxiliary stream
``(seed, base + AUX_STREAMS + c)``. A pilot (for ``optimal-baseline`` and
``cv``) reads streams ``(seed, PILOT_STREAMS + c)``. Run chunks use stream
numbers below 2**37, so the three families of streams never meet
(``docs/random-streams.md``).
"""

from dataclasses import dataclass

import numpy as np

from fastgrad._kernels import AUX_NORMAL_STREAMS, AUX_STREAMS, PILOT_STREAMS, Kernel, curve_batches, make_run, run_records

__all__ = ["AUX_NORMAL_STREAMS", "AUX_STREAMS", "PILOT_STREAMS", "VariantLayout", "variant_curve_run", "variant_run"]


# --- the Python side ----------------------------------------------------------------


@dataclass(frozen=True)
class VariantLayout:
    """Rows and pairs of a variant run (internal; duck-types :class:`fastgrad.estimators.Layout`).

    Row ``s * P + j`` of the kernel is specification ``s``, parameter ``j``;
    ``rows`` keeps those of the parameters in ``wrt``, specification-major.
    Pair ``q`` pairs a kept row with the reference specification's row of the
    same parameter (for the ratio's confidence interval).
    """

    specs: tuple
    parameters: tuple
    wrt: tuple
    reference: int
    rows: np.ndarray
    pair_x: np.ndarray
    pair_y: np.ndarray
    group: int

    @property
    def n_rows(self):
        return len(self.rows)

    def row(self, s, parameter):
        """Position in :attr:`rows` of specification ``s``, ``parameter``."""
        return s * len(self.wrt) + self.wrt.index(parameter)

    def pair(self, s, parameter):
        """Pair index of specification ``s`` against the reference (None for the reference itself)."""
        if s == self.reference:
            return None
        index = s if s < self.reference else s - 1
        return index * len(self.wrt) + self.wrt.index(parameter)

    @classmethod
    def build(cls, specs, parameters, wrt, reference):
        n_params = len(parameters)
        rows = [s * n_params + parameters.index(p) for s in range(len(specs)) for p in wrt]
        pair_x, pair_y = [], []
        for s in range(len(specs)):
            if s == reference:
                continue
            for j in range(len(wrt)):
                pair_x.append(s * len(wrt) + j)
                pair_y.append(reference * len(wrt) + j)
        groups = [spec.group for spec in specs if spec.baseline == "loo"]
        return cls(
            specs=tuple(specs),
            parameters=tuple(parameters),
            wrt=tuple(wrt),
            reference=reference,
            rows=np.array(rows, np.int64),
            pair_x=np.array(pair_x, np.int64),
            pair_y=np.array(pair_y, np.int64),
            group=groups[0] if groups else 1,
        )


def _kernel(distribution, function, layout, specs, coefficients, n_units, seed, sink, stream_base=0):
    parameters = layout.parameters
    active = [parameters.index(p) for p in layout.wrt]
    run = make_run(distribution.theta, function.param_vector, specs, len(parameters), coefficients, active,
                   layout.rows, seed=seed, n_units=n_units, group=layout.group, stream_base=stream_base)  # fmt: skip
    return Kernel(distribution.family.name, function, "general", sink, run)


def variant_run(distribution, function, layout, specs, coefficients, n_units, seed, stream_base=0, job=None):
    """Run the general filler over ``n_units`` units; return (record over units, seconds).

    With a ``job`` (:class:`fastgrad._jobs.Job`): return (tree, seconds) of the job's chunks.
    """
    kernel = _kernel(distribution, function, layout, specs, coefficients, n_units, seed, "moments", stream_base)
    record, seconds, _ = run_records(kernel, layout, job)
    return record, seconds


def variant_curve_run(distribution, function, layout, specs, coefficients, unit_sizes, repeats, seed, job=None):
    """Per-repeat sums of the kept rows over units; return (sums, seconds, chunks done). Sizes are in units."""
    n_units = int(np.sum(np.asarray(unit_sizes, dtype=np.int64) * repeats))
    kernel = _kernel(distribution, function, layout, specs, coefficients, n_units, seed, "curve")
    return curve_batches(kernel, unit_sizes, repeats, layout.n_rows, job)
