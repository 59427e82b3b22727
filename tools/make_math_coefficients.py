"""Generate ``fastgrad/_math_coefficients.py``: the polynomials of :mod:`fastgrad.math`.

Run ``python tools/make_math_coefficients.py > fastgrad/_math_coefficients.py``.
The test suite re-runs this script and checks that the committed module is
exactly what it prints, so no coefficient can drift from its derivation.
(Numba caches ``fastgrad/math.py``'s functions against that file's own
time stamp: after regenerating, ``touch fastgrad/math.py`` before trying
them, or they run with the old coefficients.)

Each polynomial approximates a smooth remainder of an elementary function on
the interval its range reduction leaves (the comments of ``fastgrad/math.py``
give the reductions). The coefficients are those of the Chebyshev
interpolant (``mpmath.chebyfit``, 60 digits), which is within a small factor
of the minimax polynomial of its degree, rounded once to binary64. Each
entry records the interpolant's own maximum error on its interval, so the
degree can be read against the target (the error the polynomial adds to a
result is far below its last bit; ``docs/math.md`` has the measured totals).
"""

import mpmath as mp

mp.mp.dps = 60

HALF_LN2 = mp.log(2) / 2
#: log's reduction: m in [sqrt(1/2), sqrt(2)), f = m - 1, s = f / (2 + f), z = s**2 <= Z_MAX.
Z_MAX = ((mp.sqrt(2) - 1) / (mp.sqrt(2) + 1)) ** 2


TINY = mp.mpf("1e-12")


def _series_or(f, series, threshold=TINY):
    """``f(t)``, or its Taylor series where ``|t|`` is tiny (``f`` cancels there)."""
    return lambda t: series(t) if abs(t) < threshold else f(t)


def _exp_remainder(r):
    """(exp(r) - 1 - r - r**2/2) / r**3: exp(r) = 1 + r + r**2/2 + r**3 * P(r)."""
    return (mp.exp(r) - 1 - r - r**2 / 2) / r**3


def _log_remainder(z):
    """(2 atanh(s) / s - 2) / z with z = s**2: log(1 + f) = 2s + s z P(z)."""
    s = mp.sqrt(z)
    return (2 * mp.atanh(s) / s - 2) / z


def _sin_remainder(z):
    """(sin(r) / r - 1) / z with z = r**2: sin(r) = r + r z P(z)."""
    r = mp.sqrt(z)
    return (mp.sin(r) / r - 1) / z


def _cos_remainder(z):
    """(cos(r) - 1 + z / 2) / z**2 with z = r**2: cos(r) = 1 - z/2 + z**2 P(z)."""
    r = mp.sqrt(z)
    return (mp.cos(r) - 1 + z / 2) / z**2


def _tanh_remainder(z):
    """(tanh(x) / x - 1) / z with z = x**2: tanh(x) = x + x z P(z)."""
    x = mp.sqrt(z)
    return (mp.tanh(x) / x - 1) / z


#: tanh's polynomial serves |x| < TANH_SMALL; beyond, it is (1 - e**-2|x|) / (1 + e**-2|x|).
TANH_SMALL = mp.mpf("0.4")

#: sin and cos reduce to |r| <= pi/4 (and a hair: k is x * 2/pi rounded, in floating point).
TRIG_Z_MAX = (mp.pi / 4) ** 2 * mp.mpf("1.0001")

#: name -> (function, interval, number of coefficients, what it is)
POLYNOMIALS = {
    "EXP": (
        _series_or(_exp_remainder, lambda r: mp.mpf(1) / 6 + r / 24 + r**2 / 120),
        (-HALF_LN2, HALF_LN2),
        10,
        "exp(r) = 1 + r + r**2/2 + r**3 * P(r), |r| <= ln(2)/2",
    ),
    "LOG": (
        _series_or(_log_remainder, lambda z: mp.mpf(2) / 3 + 2 * z / 5),
        (0, Z_MAX),
        7,
        "log(1 + f) = 2s + s * z * P(z), s = f / (2 + f), z = s**2 <= (3 - 2 sqrt(2))**2",
    ),
    "SIN": (
        _series_or(_sin_remainder, lambda z: -mp.mpf(1) / 6 + z / 120, mp.mpf("1e-20")),
        (0, TRIG_Z_MAX),
        7,
        "sin(r) = r + r * z * P(z), z = r**2 <= (pi/4)**2 (1 + 1e-4)",
    ),
    "COS": (
        _series_or(_cos_remainder, lambda z: mp.mpf(1) / 24 - z / 720, mp.mpf("1e-20")),
        (0, TRIG_Z_MAX),
        6,
        "cos(r) = 1 - z/2 + z**2 * P(z), z = r**2 <= (pi/4)**2 (1 + 1e-4)",
    ),
    "TANH": (
        _series_or(_tanh_remainder, lambda z: -mp.mpf(1) / 3 + 2 * z / 15, mp.mpf("1e-20")),
        (0, TANH_SMALL**2 * mp.mpf("1.0001")),
        10,
        "tanh(x) = x + x * z * P(z), z = x**2 <= 0.4**2 (1 + 1e-4)",
    ),
}


def _erf_remainder(z):
    """(erf(x) / x - 1) with z = x**2: erf(x) = x + x P(z)."""
    x = mp.sqrt(z)
    return mp.erf(x) / x - 1


#: erf's polynomial serves |x| below this; erfc's e**(-x**2) erfcx(x) beyond it.
ERF_SMALL = mp.mpf("0.75")

POLYNOMIALS["ERF"] = (
    _series_or(_erf_remainder, lambda z: 2 / mp.sqrt(mp.pi) * (1 - z / 3 + z**2 / 10) - 1, mp.mpf("1e-20")),
    (0, ERF_SMALL**2),
    13,
    "erf(x) = x + x * P(z), z = x**2 <= 0.75**2",
)


def _erfcx(a):
    return mp.exp(a * a) * mp.erfc(a)


#: erfcx(a) = e**(a**2) erfc(a) piecewise on [0.75, 27.3]: (low, high, variable, center, coefficients). The
#: variable v is a itself (the polynomial approximates erfcx(a)) or w = 1/a (it approximates erfcx(a) / w,
#: nearly constant: erfcx(a) is about w / sqrt(pi)); the polynomial is in d = v - center, and center is a
#: short dyadic number within a factor 2 of every v of its interval, so that v - center is exact (Sterbenz).
ERFCX_PIECES = [
    (mp.mpf("0.75"), mp.mpf(1.5), "a", mp.mpf("1.125"), 18),
    (mp.mpf(1.5), mp.mpf(3), "a", mp.mpf("2.25"), 20),
    (mp.mpf(3), mp.mpf(6), "1/a", mp.mpf("0.25"), 18),
    (mp.mpf(6), mp.mpf(12), "1/a", mp.mpf("0.125"), 18),
    (mp.mpf(12), mp.mpf("27.3"), "1/a", mp.mpf("0.0625"), 18),
]


def _piecewise(name, pieces, function, what):
    """Print a piecewise polynomial: bounds, centers, constant terms in two parts, the other coefficients."""
    count = max(piece[4] for piece in pieces)
    heads, tails, rows, notes = [], [], [], []
    for low, high, variable, center, n in pieces:
        ends = (low, high) if variable == "a" else (1 / high, 1 / low)
        assert center / 2 <= ends[0] and ends[1] <= 2 * center, (name, low, high)
        if variable == "a":
            back = lambda d, c=center: function(c + d)  # noqa: E731
        else:
            back = lambda d, c=center: function(1 / (c + d)) / (c + d)  # noqa: E731
        coefficients, error = mp.chebyfit(back, [ends[0] - center, ends[1] - center], n, error=True)
        coefficients = list(reversed(coefficients)) + [mp.mpf(0)] * (count - n)
        head = float(coefficients[0])
        heads.append(head)
        tails.append(float(coefficients[0] - head))
        rows.append([float(c) for c in coefficients[1:]])
        smallest = min(abs(back(ends[0] - center)), abs(back(ends[1] - center)))
        notes.append(
            f"#   [{mp.nstr(low, 6)}, {mp.nstr(high, 6)}] in {variable}: relative error {mp.nstr(error / smallest, 3)}"
        )
    print()
    print(f"# {what}")
    for note in notes:
        print(note)
    for suffix, values in (("BOUNDS", [float(p[1]) for p in pieces]), ("CENTERS", [float(p[3]) for p in pieces]),
                           ("HEADS", heads), ("TAILS", tails)):  # fmt: skip
        print(f"{name}_{suffix} = (")
        for value in values:
            print(f"    {value!r},")
        print(")")
    print(f"{name} = (")
    for row in rows:
        print("    (")
        for c in row:
            print(f"        {c!r},")
        print("    ),")
    print(")")


#: 64-bit words of 2/pi's binary fraction (Payne-Hanek reduction of huge arguments): enough for x up to 2**1024.
TWO_OVER_PI_WORDS = 20


def main():
    print('"""Polynomial coefficients of fastgrad.math, generated by tools/make_math_coefficients.py; do not edit.')
    print()
    print("Each tuple is lowest degree first; the comment says what it approximates and")
    print("the Chebyshev interpolant's maximum error on its interval (before rounding).")
    print('"""')
    for name, (function, (low, high), count, what) in POLYNOMIALS.items():
        coefficients, error = mp.chebyfit(function, [low, high], count, error=True)
        print()
        print(f"# {what}")
        print(f"# on [{mp.nstr(low, 17)}, {mp.nstr(high, 17)}], max error {mp.nstr(error, 3)}")
        print(f"{name} = (")
        for c in reversed(coefficients):  # chebyfit gives the highest degree first
            print(f"    {float(c)!r},")
        print(")")
    _piecewise(
        "ERFCX",
        ERFCX_PIECES,
        _erfcx,
        "erfcx(a) = e**(a**2) erfc(a) = (HEAD + TAIL + d * P(d)) * (1 or w), d = v - CENTER, on each piece",
    )
    mp.mp.prec = 64 * TWO_OVER_PI_WORDS + 64
    fraction = int(mp.floor(2 / mp.pi * mp.mpf(2) ** (64 * TWO_OVER_PI_WORDS)))
    words = [(fraction >> (64 * (TWO_OVER_PI_WORDS - 1 - i))) & (2**64 - 1) for i in range(TWO_OVER_PI_WORDS)]
    half_pi = mp.pi / 2
    pieces = []
    for _ in range(3):
        pieces.append(float(half_pi - sum(pieces, mp.mpf(0))))
    print()
    print("# pi/2 as an unevaluated sum of three floats (each the rounded remainder of the ones before)")
    print(f"HALF_PI = ({pieces[0]!r}, {pieces[1]!r}, {pieces[2]!r})")
    print()
    print("# the binary fraction of 2/pi, 64 bits a word, most significant first")
    print("TWO_OVER_PI = (")
    for w in words:
        print(f"    0x{w:016X},")
    print(")")


if __name__ == "__main__":
    main()
