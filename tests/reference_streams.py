"""Pure-Python reference of the stream layout in docs/random-streams.md.

Written from the documentation, independently of fastgrad/rng.py, so the
compiled code can be checked against it bit for bit. Slow, for small n only.
The slow path's ``log`` and ``exp`` are fastgrad.math's, called from Python
(layout 3: no libm in any draw; tests/test_math.py checks those on their own).
"""

from fastgrad import _ziggurat_tables as tables
from fastgrad import math as fm

MASK = (1 << 64) - 1
LANES = 16
SLOW_LANE = 16
LAYOUT_TAG = 0x6661737467726164 + 2  # "fastgrad" + key version 2 (layout 3 kept layout 2's words)
GOLDEN = 0x9E3779B97F4A7C15


def rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & MASK


def mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def lane_key(seed, stream, lane):
    x0, x1, x2, x3 = seed, stream, (lane * GOLDEN) & MASK, LAYOUT_TAG
    for _ in range(2):
        x0 = mix64(x0 ^ x3)
        x1 = mix64((x1 + x0) & MASK)
        x2 = mix64(x2 ^ x1)
        x3 = mix64((x3 + x2) & MASK)
    if x0 == x1 == x2 == x3 == 0:
        x0 = GOLDEN
    return [x0, x1, x2, x3]


def xoshiro_next(s):
    """xoshiro256++ (Blackman & Vigna); advances the list ``s`` in place."""
    result = (rotl((s[0] + s[3]) & MASK, 23) + s[0]) & MASK
    t = (s[1] << 17) & MASK
    s[2] ^= s[0]
    s[3] ^= s[1]
    s[1] ^= s[2]
    s[0] ^= s[3]
    s[2] ^= t
    s[3] = rotl(s[3], 45)
    return result


def words(seed, stream, n):
    """Word i is output i // 16 of lane i % 16."""
    lanes = [lane_key(seed, stream, j) for j in range(LANES)]
    return [xoshiro_next(lanes[i % LANES]) for i in range(n)]


def _signed(word):
    return word - (1 << 64) if word >> 63 else word


def _decode(word):
    idx = word & (tables.N - 1)
    u = (_signed(word) >> 10) | 1
    return idx, u, u * float(tables.W[idx])


def _unit(word):
    return (word >> 11) * 2.0**-53


def _unit_open(word):
    return ((word >> 11) + 1) * 2.0**-53


def _slow(idx, u, x, slow):
    K, F, R = tables.K, tables.F, tables.R
    while True:
        if idx == 0:
            while True:
                xx = -fm.log(_unit_open(xoshiro_next(slow))) / R
                yy = -fm.log(_unit_open(xoshiro_next(slow)))
                if yy + yy > xx * xx:
                    break
            return R + xx if u > 0 else -(R + xx)
        y = float(F[idx]) + _unit(xoshiro_next(slow)) * (float(F[idx - 1]) - float(F[idx]))
        if y < fm.exp(-0.5 * x * x):
            return x
        idx, u, x = _decode(xoshiro_next(slow))
        if abs(u) < int(K[idx]):
            return x


def normals(seed, stream, n):
    """Normal i: the ziggurat on word i; rejected candidates finished by the slow lane, in order."""
    slow = lane_key(seed, stream, SLOW_LANE)
    out = []
    for word in words(seed, stream, n):
        idx, u, x = _decode(word)
        out.append(x if abs(u) < int(tables.K[idx]) else _slow(idx, u, x, slow))
    return out
