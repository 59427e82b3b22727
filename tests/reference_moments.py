"""Scalar reference of the block reductions: the summation order the SIMD code must reproduce.

Lane ``j`` of four accumulators takes elements ``i = j (mod 4)``; the last
``m % 4`` elements go to lane 0; lanes combine as ``(l0 + l1) + (l2 + l3)``.
"""

import numba


@numba.njit(error_model="numpy")
def block_sum(v, m):
    """Sum of ``v[:m]`` in a fixed order (four interleaved partial sums)."""
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    m4 = m - m % 4
    for i in range(0, m4, 4):
        s0 += v[i]
        s1 += v[i + 1]
        s2 += v[i + 2]
        s3 += v[i + 3]
    for i in range(m4, m):
        s0 += v[i]
    return (s0 + s1) + (s2 + s3)


@numba.njit(error_model="numpy")
def block_central(v, m, mean):
    """Central power sums (M2, M3, M4) of ``v[:m]`` about ``mean``."""
    a0 = a1 = a2 = a3 = 0.0
    b0 = b1 = b2 = b3 = 0.0
    c0 = c1 = c2 = c3 = 0.0
    m4 = m - m % 4
    for i in range(0, m4, 4):
        d0 = v[i] - mean
        d1 = v[i + 1] - mean
        d2 = v[i + 2] - mean
        d3 = v[i + 3] - mean
        q0 = d0 * d0
        q1 = d1 * d1
        q2 = d2 * d2
        q3 = d3 * d3
        a0 += q0
        a1 += q1
        a2 += q2
        a3 += q3
        b0 += q0 * d0
        b1 += q1 * d1
        b2 += q2 * d2
        b3 += q3 * d3
        c0 += q0 * q0
        c1 += q1 * q1
        c2 += q2 * q2
        c3 += q3 * q3
    for i in range(m4, m):
        d0 = v[i] - mean
        q0 = d0 * d0
        a0 += q0
        b0 += q0 * d0
        c0 += q0 * q0
    return (a0 + a1) + (a2 + a3), (b0 + b1) + (b2 + b3), (c0 + c1) + (c2 + c3)


@numba.njit(error_model="numpy")
def block_comoments(x, y, mean_x, mean_y, m):
    """Mixed central power sums (C11, C21, C12, C22) of ``x[:m]``, ``y[:m]``."""
    a0 = a1 = a2 = a3 = 0.0
    b0 = b1 = b2 = b3 = 0.0
    c0 = c1 = c2 = c3 = 0.0
    e0 = e1 = e2 = e3 = 0.0
    m4 = m - m % 4
    for i in range(0, m4, 4):
        dx0 = x[i] - mean_x
        dx1 = x[i + 1] - mean_x
        dx2 = x[i + 2] - mean_x
        dx3 = x[i + 3] - mean_x
        dy0 = y[i] - mean_y
        dy1 = y[i + 1] - mean_y
        dy2 = y[i + 2] - mean_y
        dy3 = y[i + 3] - mean_y
        p0 = dx0 * dy0
        p1 = dx1 * dy1
        p2 = dx2 * dy2
        p3 = dx3 * dy3
        a0 += p0
        a1 += p1
        a2 += p2
        a3 += p3
        b0 += p0 * dx0
        b1 += p1 * dx1
        b2 += p2 * dx2
        b3 += p3 * dx3
        c0 += p0 * dy0
        c1 += p1 * dy1
        c2 += p2 * dy2
        c3 += p3 * dy3
        e0 += p0 * p0
        e1 += p1 * p1
        e2 += p2 * p2
        e3 += p3 * p3
    for i in range(m4, m):
        dx0 = x[i] - mean_x
        dy0 = y[i] - mean_y
        p0 = dx0 * dy0
        a0 += p0
        b0 += p0 * dx0
        c0 += p0 * dy0
        e0 += p0 * p0
    return (
        (a0 + a1) + (a2 + a3),
        (b0 + b1) + (b2 + b3),
        (c0 + c1) + (c2 + c3),
        (e0 + e1) + (e2 + e3),
    )
