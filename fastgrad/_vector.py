"""The fused kernel for a diagonal multivariate Normal: one draw is a vector of ``D`` normals.

Layout (a generalisation of the scalar kernel that reduces to it at ``D = 1``):

* chunk ``c`` holds ``V = max(1, CHUNK_SIZE // D)`` draws (vectors) and reads
  stream ``(seed, c)``; draw ``v`` of the chunk takes the ``D`` normals from
  ``v * D`` on, component ``i`` the ``i``-th of them;
* value rows, estimator-major, then parameter, then component: row
  ``e * 2D + p * D + i`` (score = 0, pathwise = 1; loc = 0, scale = 1);
* blocks of ``B = clamp(2**17 // (4 D), 8, 512)`` draws, reduced with the
  same block reduction and merges as the scalar kernel.

At ``D = 1`` all three are the scalar kernel's (``V = 65 536``, ``B = 512``,
rows score-loc, score-scale, path-loc, path-scale), and a built-in
function's value is computed with the same operations, so
``DiagNormal([m], [s])`` gives bit for bit the numbers of ``Normal(m, s)``.
"""

from dataclasses import dataclass

import numpy as np

from fastgrad._kernels import MAX_BATCH_VALUES, Kernel, make_run, run_records, units_per_block, units_per_chunk
from fastgrad._reduction import record_width
from fastgrad.estimators import Layout, parse_estimators


def draws_per_chunk(dim):
    """Vectors per chunk: ``max(1, CHUNK_SIZE // dim)``."""
    return units_per_chunk(dim, 1)


def block_size(dim):
    """Draws per block: ``clamp(2**17 // (4 dim), 8, 512)``."""
    return units_per_block(dim, 1)


def vector_layout_rows(dim, estimators, wrt):
    """Rows (estimator, parameter, component) kept, and the score/pathwise pairs (positions in rows)."""
    from fastgrad.estimators import ESTIMATORS

    params = ("loc", "scale")
    rows = [
        ESTIMATORS.index(e) * 2 * dim + params.index(p) * dim + i for e in estimators for p in wrt for i in range(dim)
    ]
    pair_x, pair_y = [], []
    if "score" in estimators and "pathwise" in estimators:
        per_estimator = len(wrt) * dim
        for k in range(per_estimator):
            pair_x.append(estimators.index("score") * per_estimator + k)
            pair_y.append(estimators.index("pathwise") * per_estimator + k)
    return np.array(rows, np.int64), np.array(pair_x, np.int64), np.array(pair_y, np.int64)


def vector_run(distribution, function, layout, n, seed, job=None):
    """Run the vector filler over ``n`` draws; return (record, run seconds, per-chunk trace sums).

    With a ``job`` (:class:`fastgrad._jobs.Job`): return (tree, seconds, None);
    the job keeps the trace sums, flattened per chunk (``job.extra_values()``).

    The trace sums (see :func:`chunk_trace_sums`) give the total-variance
    ratio its interval by batch means over chunks.
    """
    dim = distribution.dim
    specs = parse_estimators(layout.estimators)
    theta = tuple(np.ascontiguousarray(row) for row in distribution.theta)
    run = make_run(theta, function.param_vector, specs, 2, None, [("loc", "scale").index(p) for p in layout.wrt],
                   layout_rows(dim, layout), seed=seed, n_units=n, dim=dim, weights=function.weights_for(dim))  # fmt: skip
    kernel = Kernel(distribution.family.name, function, "vector", "moments", run)
    per_batch = max(1, min(1024, MAX_BATCH_VALUES // record_width(layout.n_rows, len(layout.pair_x))))
    if job is not None:
        tree, seconds, _ = run_records(
            kernel, layout, job, per_batch, extra=lambda r: chunk_trace_sums(r, layout).reshape(len(r), -1)
        )
        return tree, seconds, None
    return run_records(kernel, layout, None, per_batch, extra=lambda r: chunk_trace_sums(r, layout))


def layout_rows(dim, layout):
    """Value rows of the kept (estimator, parameter, component), in the kernel's numbering."""
    params = ("loc", "scale")
    return np.array(
        [(s * 2 + params.index(p)) * dim + i for s in range(len(layout.estimators)) for p in layout.wrt
         for i in range(dim)], np.int64,
    )  # fmt: skip


def chunk_trace_sums(records, layout):
    """Per chunk, estimator and parameter: the sum over components of M2, ``(chunks, estimators, parameters)``."""
    out = np.zeros((len(records), len(layout.estimators), len(layout.wrt)))
    for a, e in enumerate(layout.estimators):
        for b, p in enumerate(layout.wrt):
            columns = 2 + 4 * np.array([layout.component_row(e, p, i) for i in range(layout.dim)]) + 1
            out[:, a, b] = records[:, columns].sum(axis=1)
    return out


@dataclass(frozen=True)
class VectorLayout(Layout):
    """Rows and pairs of a DiagNormal run (internal): a :class:`~fastgrad.estimators.Layout` per component."""

    dim: int = 1

    @classmethod
    def build(cls, dim, estimators, wrt):
        rows, pair_x, pair_y = vector_layout_rows(dim, tuple(estimators), tuple(wrt))
        return cls(tuple(estimators), tuple(wrt), rows, pair_x, pair_y, dim)

    def component_row(self, estimator, parameter, component):
        """Position in :attr:`rows` of ``(estimator, parameter, component)``."""
        return self.row(estimator, parameter) * self.dim + component
