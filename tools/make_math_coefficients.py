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
    (mp.mpf("0.45"), mp.mpf("0.75"), "a", mp.mpf("0.5625"), 16),
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
        ends = (low, high) if variable in ("a", "t") else (1 / high, 1 / low)
        assert variable == "t" or (center / 2 <= ends[0] and ends[1] <= 2 * center), (name, low, high)
        if variable in ("a", "t"):
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


def ndtri(p):
    """The normal quantile at the working precision: Newton's method on log Phi(x) = log p."""
    if p > mp.mpf(0.5):
        return -ndtri(1 - p)
    target = mp.log(p)
    x = -mp.sqrt(-2 * target) if p < mp.mpf("0.1") else mp.sqrt(2) * mp.erfinv(2 * p - 1)
    for _ in range(200):
        step = (mp.log(mp.ncdf(x)) - target) * mp.ncdf(x) / mp.npdf(x)
        x -= step
        if abs(step) < mp.mpf(10) ** (5 - mp.mp.dps) * max(1, abs(x)):
            return x
    raise ArithmeticError(f"ndtri({p}) did not converge")


def _ndtri_ratio(z):
    """ndtri(1/2 + q) / q with z = q**2: ndtri(1/2 + q) = q S(z)."""
    return mp.sqrt(2 * mp.pi) if z == 0 else ndtri(mp.mpf(0.5) + mp.sqrt(z)) / mp.sqrt(z)


#: ndtri's central polynomial serves |p - 1/2| up to this (where p - 1/2 is exact).
NDTRI_CENTRAL = mp.mpf("0.25")

POLYNOMIALS["NDTRI"] = (
    _ndtri_ratio,
    (0, NDTRI_CENTRAL**2),
    16,
    "ndtri(1/2 + q) = q * P(z), z = q**2 <= 0.25**2 (P(0) = sqrt(2 pi) in two parts: SQRT_2PI, SQRT_2PI_LOW)",
)

#: ndtri's first guess in the tails, x0(r) = ndtri(exp(-r**2 / 2)) for r = sqrt(-2 log p), p <= 1/4: a
#: polynomial in d = r - center on each piece, about 1e-11 relative (Newton's step and its quadratic term
#: make it exact). The last bound is r at p = 2**-1075, below every double.
NDTRI_PIECES = [
    (mp.sqrt(-2 * mp.log(NDTRI_CENTRAL)), mp.mpf(3), "a", mp.mpf("2.25"), 14),
    (mp.mpf(3), mp.mpf(6), "a", mp.mpf("4.5"), 14),
    (mp.mpf(6), mp.mpf(12), "a", mp.mpf(9), 14),
    (mp.mpf(12), mp.sqrt(-2 * mp.log(mp.mpf(2) ** -1075)) + mp.mpf("0.01"), "a", mp.mpf(24), 16),
]


def _zero_form(function, at, limit):
    """``t -> function(at + t) / t``, with its limit at ``t = 0`` (the function vanishes at ``at``)."""

    def ratio(t):
        if abs(t) < mp.mpf("1e-25"):
            return limit(t)
        with mp.workdps(120):  # (function(at + t) cancels near the zero)
            return function(at + t) / t

    return ratio


# lgamma on x > 0: (x - 1) Q1(x - 1) on [0.5, 1.5] and x Q1(x) - log(x) below; (x - 2) Q2(x - 2) on
# [1.5, 3] (beyond 2.5 too: a polynomial centred further away cancels against the small lgamma there);
# a polynomial in x - center on [3, 4.5] and [4.5, 8]; Stirling's formula beyond, its remainder a
# polynomial in 1/x**2. Negative x by reflection.
LGAMMA_Q1 = [(mp.mpf(-0.5), mp.mpf(0.5), "t", mp.mpf(0), 32)]
LGAMMA_Q2 = [(mp.mpf(-0.5), mp.mpf(1), "t", mp.mpf(0), 28)]
LGAMMA_MID = [(mp.mpf(3), mp.mpf("4.5"), "a", mp.mpf("3.75"), 22), (mp.mpf("4.5"), mp.mpf(8), "a", mp.mpf(6), 24)]


def _stirling_remainder(w):
    """(lgamma(x) - ((x - 1/2) log x - x + log(2 pi) / 2)) x with w = 1/x**2: 1/12 - w/360 + ..."""
    if w < mp.mpf("1e-30"):
        return mp.mpf(1) / 12 - w / 360
    x = 1 / mp.sqrt(w)
    return (mp.loggamma(x) - ((x - mp.mpf(0.5)) * mp.log(x) - x + mp.log(2 * mp.pi) / 2)) * x


POLYNOMIALS["STIRLING"] = (
    _stirling_remainder,
    (0, mp.mpf(1) / 64),
    10,
    "lgamma(x) = (x - 1/2) log(x) - x + log(2 pi)/2 + P(w) / x, w = 1/x**2 <= 1/64",
)

# digamma on x > 0: psi(x + 1) - 1/x on (0, 1] (psi(x + 1) a polynomial in x - 1/2); (x - x0) R(x - x0) on
# [1, 2] around its zero x0; a polynomial in x - center on [2, 4] and [4, 8]; log(x) - 1/(2x) - w P(w)
# beyond, w = 1/x**2. Negative x by reflection.
DIGAMMA_ZERO = mp.findroot(mp.digamma, mp.mpf("1.4616321449683623"))
DIGAMMA_NEAR_ZERO = [(1 - DIGAMMA_ZERO, 2 - DIGAMMA_ZERO, "t", mp.mpf(0), 26)]
DIGAMMA_SMALL = [(mp.mpf(0), mp.mpf(1), "t", mp.mpf(0.5), 26)]
DIGAMMA_MID = [(mp.mpf(2), mp.mpf(4), "a", mp.mpf(3), 26), (mp.mpf(4), mp.mpf(8), "a", mp.mpf(6), 26)]


def _digamma_remainder(w):
    """(log x - 1/(2x) - psi(x)) x**2 with w = 1/x**2: 1/12 - w/120 + ..."""
    if w < mp.mpf("1e-30"):
        return mp.mpf(1) / 12 - w / 120
    x = 1 / mp.sqrt(w)
    return (mp.log(x) - 1 / (2 * x) - mp.digamma(x)) * x * x


POLYNOMIALS["DIGAMMA_ASYMPTOTIC"] = (
    _digamma_remainder,
    (0, mp.mpf(1) / 64),
    10,
    "digamma(x) = log(x) - 1/(2x) - w P(w), w = 1/x**2 <= 1/64",
)


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
    print(f"ERFCX_IN_A = {sum(piece[2] == 'a' for piece in ERFCX_PIECES)}  # the first pieces, in a; then in 1/a")
    _piecewise(
        "NDTRI_TAIL",
        NDTRI_PIECES,
        lambda r: ndtri(mp.exp(-r * r / 2)),
        "ndtri's first guess x0(r) = ndtri(exp(-r**2 / 2)) = HEAD + TAIL + d * P(d), d = r - CENTER",
    )
    _piecewise("LGAMMA_Q1", LGAMMA_Q1, _zero_form(mp.loggamma, 1, lambda t: -mp.euler + mp.zeta(2) / 2 * t),
               "lgamma(1 + t) = t (HEAD + TAIL + t P(t)), |t| <= 1/2")  # fmt: skip
    _piecewise("LGAMMA_Q2", LGAMMA_Q2, _zero_form(mp.loggamma, 2, lambda t: 1 - mp.euler + (mp.zeta(2) - 1) / 2 * t),
               "lgamma(2 + t) = t (HEAD + TAIL + t P(t)), -1/2 <= t <= 1")  # fmt: skip
    _piecewise("LGAMMA_MID", LGAMMA_MID, mp.loggamma, "lgamma(x) = HEAD + TAIL + d P(d), d = x - CENTER")
    zero = DIGAMMA_ZERO
    _piecewise("DIGAMMA_NEAR_ZERO", DIGAMMA_NEAR_ZERO, _zero_form(mp.digamma, zero, lambda t: mp.psi(1, zero)),
               "digamma(x0 + t) = t (HEAD + TAIL + t P(t)), x0 = DIGAMMA_ZERO_HIGH + _LOW, 1 <= x <= 2")  # fmt: skip
    _piecewise("DIGAMMA_SMALL", DIGAMMA_SMALL, lambda x: mp.digamma(x + 1),
               "digamma(x) + 1/x = digamma(x + 1) = HEAD + TAIL + d P(d), d = x - 1/2, 0 < x <= 1")  # fmt: skip
    _piecewise("DIGAMMA_MID", DIGAMMA_MID, mp.digamma, "digamma(x) = HEAD + TAIL + d P(d), d = x - CENTER")
    print()
    print(f"DIGAMMA_ZERO_HIGH, DIGAMMA_ZERO_LOW = {float(zero)!r}, {float(zero - float(zero))!r}")
    print(f"HALF_LOG_2PI, HALF_LOG_2PI_LOW = {float(mp.log(2 * mp.pi) / 2)!r}, "
          f"{float(mp.log(2 * mp.pi) / 2 - float(mp.log(2 * mp.pi) / 2))!r}")  # fmt: skip
    print(f"LOG_PI, LOG_PI_LOW = {float(mp.log(mp.pi))!r}, {float(mp.log(mp.pi) - float(mp.log(mp.pi)))!r}")
    print(f"PI, PI_LOW = {float(mp.pi)!r}, {float(mp.pi - float(mp.pi))!r}")
    head = mp.sqrt(2 * mp.pi)
    print(f"SQRT_2PI, SQRT_2PI_LOW = {float(head)!r}, {float(head - float(head))!r}  # sqrt(2 pi) in two parts")
    print(f"SQRT_HALF_PI = {float(mp.sqrt(mp.pi / 2))!r}")
    print(f"INV_SQRT2, INV_SQRT2_LOW = {float(1 / mp.sqrt(2))!r}, {float(1 / mp.sqrt(2) - float(1 / mp.sqrt(2)))!r}")
    print(f"TWO_OVER_SQRT_PI = {float(2 / mp.sqrt(mp.pi))!r}")
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
