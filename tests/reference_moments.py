"""Plain-Python restatement of the block reductions: the exact order the SIMD code must follow.

Floats are IEEE doubles in Python too; ``fma`` is computed exactly with
fractions and rounded once, which is what ``llvm.fma`` specifies.
"""

from fractions import Fraction


def fma(a, b, c):
    return float(Fraction(a) * Fraction(b) + Fraction(c))


def combine(lanes, first):
    return (first + lanes[1]) + (lanes[2] + lanes[3])


def block_sum(v, m):
    a = [[0.0] * 4 for _ in range(4)]  # a[q][k]: vector q, lane k
    m16 = m - m % 16
    for i in range(0, m16, 16):
        for q in range(4):
            for k in range(4):
                a[q][k] += v[i + 4 * q + k]
    t = [(a[0][k] + a[1][k]) + (a[2][k] + a[3][k]) for k in range(4)]
    s0 = t[0]
    for i in range(m16, m):
        s0 += v[i]
    return (s0 + t[1]) + (t[2] + t[3])


def block_central(v, m, mean):
    a, b, c = [0.0] * 4, [0.0] * 4, [0.0] * 4
    m4 = m - m % 4
    for i in range(m):
        k = i % 4 if i < m4 else 0
        d = v[i] - mean
        q = d * d
        a[k] += q
        b[k] = fma(q, d, b[k])
        c[k] = fma(q, q, c[k])
    return combine(a, a[0]), combine(b, b[0]), combine(c, c[0])


def block_pair(x, y, mean_x, mean_y, m):
    names = ("ax", "bx", "ex", "ay", "by", "ey", "c11", "c21", "c12", "c22")
    acc = {name: [0.0] * 4 for name in names}
    m4 = m - m % 4
    for i in range(m):
        k = i % 4 if i < m4 else 0
        dx = x[i] - mean_x
        dy = y[i] - mean_y
        qx, qy, p = dx * dx, dy * dy, dx * dy
        acc["ax"][k] += qx
        acc["bx"][k] = fma(qx, dx, acc["bx"][k])
        acc["ex"][k] = fma(qx, qx, acc["ex"][k])
        acc["ay"][k] += qy
        acc["by"][k] = fma(qy, dy, acc["by"][k])
        acc["ey"][k] = fma(qy, qy, acc["ey"][k])
        acc["c11"][k] += p
        acc["c21"][k] = fma(qx, dy, acc["c21"][k])
        acc["c12"][k] = fma(p, dy, acc["c12"][k])
        acc["c22"][k] = fma(qx, qy, acc["c22"][k])
    return tuple(combine(acc[name], acc[name][0]) for name in names)
