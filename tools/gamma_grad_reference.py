"""Exact references for ``fastgrad.math.gamma_sample_grad``: the table the tests read, and the docs' accuracy screen.

    python tools/gamma_grad_reference.py --write          # tests/data/gamma_sample_grad.csv
    python tools/gamma_grad_reference.py --screen 20000   # max errors per decade of alpha (docs/math.md)

The reference of ``dx/da = -(dP(a, x)/da) / p(x; a)`` is computed by mpmath
at 50 significant digits: ``mpmath.diff`` of the regularised incomplete gamma
function in ``a`` (its lower form ``P`` for ``x <= a``, its upper form
``Q = 1 - P`` beyond, so that neither is a difference from 1), over the
density, both in mpmath's unbounded exponent range (nothing underflows).

The table's points (``points()``): 61 shapes from 10**-3 to 10**4 (eight per
decade, and 1/2, 1, 2, 2.5) and for each the quantiles 10**-12 ...
1 - 10**-12 of ``Gamma(a)``, the two sides of the branch switch (``x = a``,
``x = 2.5``), and the extremes ``x`` = smallest subnormal, 10**-300,
10**3 max(a, 1), 10**300. The screen adds random shapes (log-uniform) with
random quantiles (uniform on a logit scale: both tails as dense as the
bulk), and prints the largest relative error per decade of ``a``.
"""

import argparse
import math
import multiprocessing
import os
import sys
from pathlib import Path

import mpmath
import numpy as np
from scipy.special import gammaincinv

TABLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "gamma_sample_grad.csv"
QUANTILES = (1e-12, 1e-6, 1e-3, 0.01, 0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 0.99, 0.999, 1 - 1e-6, 1 - 1e-12)


def reference(x, a):
    """``dx/da`` of a unit-rate Gamma(a) draw ``x``, exact to far below a double's precision (an mpmath number)."""
    with mpmath.workdps(50):
        x, a = mpmath.mpf(x), mpmath.mpf(a)
        if x == 0:
            return mpmath.mpf(0)
        log_density = (a - 1) * mpmath.log(x) - x - mpmath.loggamma(a)
        if x <= a:
            return -mpmath.diff(lambda s: mpmath.gammainc(s, 0, x, regularized=True), a) / mpmath.exp(log_density)
        if x < 100 * max(a, 1):
            return mpmath.diff(lambda s: mpmath.gammainc(s, x, mpmath.inf, regularized=True), a) / mpmath.exp(
                log_density
            )
        return _far_tail(x, a)


def _far_tail(x, a):
    """The same far above the bulk, where mpmath's difference quotient of ``Q`` fails: by quadrature.

    ``Q = x**a e**-x / Gamma(a) F`` with ``x F = int_0^inf e**-v (1 + v/x)**(a-1) dv``
    (``t = x + v``), so ``dx/da = x F (log x - digamma(a)) + x dF/da``, and
    ``x dF/da`` is the same integral with the factor ``log(1 + v/x)``.
    """
    kernel = lambda v: mpmath.exp(-v) * (1 + v / x) ** (a - 1)  # noqa: E731
    g = mpmath.quad(kernel, [0, 1, 10, 100, mpmath.inf])
    dg = mpmath.quad(lambda v: kernel(v) * mpmath.log1p(v / x), [0, 1, 10, 100, mpmath.inf])
    return g * (mpmath.log(x) - mpmath.digamma(a)) + dg


def _nudge(x, steps):
    for _ in range(abs(steps)):
        x = math.nextafter(x, math.inf if steps > 0 else -math.inf)
    return x


def points():
    """The table's ``(alpha, x)`` pairs."""
    shapes = sorted({float(s) for s in np.logspace(-3, 4, 57)} | {0.5, 1.0, 2.0, 2.5})
    out = []
    for a in shapes:
        xs = {float(gammaincinv(a, q)) for q in QUANTILES}
        xs |= {a, _nudge(a, 1), 2.5, _nudge(2.5, 1), 5e-324, 1e-300, 1e3 * max(a, 1.0), 1e300}
        out += [(a, x) for x in sorted(xs) if x > 0.0]
    return out


def _row(pair):
    a, x = pair
    return a, x, mpmath.nstr(reference(x, a), 25, min_fixed=0, max_fixed=0)


def write():
    with multiprocessing.Pool(os.cpu_count()) as pool:
        rows = pool.map(_row, points(), chunksize=8)
    TABLE.parent.mkdir(exist_ok=True)
    with open(TABLE, "w") as out:
        out.write("# alpha, x, dx/dalpha (mpmath, 50 digits, rounded to 25): tools/gamma_grad_reference.py --write\n")
        for a, x, value in rows:
            out.write(f"{a!r},{x!r},{value}\n")
    print(f"{len(rows)} rows written to {TABLE.relative_to(Path.cwd()) if TABLE.is_relative_to(Path.cwd()) else TABLE}")


def read():
    """The table as three float arrays (alpha, x, reference) and the references as strings."""
    alpha, x, text = [], [], []
    with open(TABLE) as table:
        for line in table:
            if not line.startswith("#"):
                a, b, c = line.strip().split(",")
                alpha.append(float(a))
                x.append(float(b))
                text.append(c)
    return np.array(alpha), np.array(x), np.array([float(t) for t in text]), text


def relative_error(value, exact):
    """``|value / exact - 1|`` in mpmath (0 where both are 0), and whether ``exact`` is below 10**-300."""
    exact = mpmath.mpf(exact)
    if exact == 0:
        return (0.0 if value == 0.0 else math.inf), True
    return float(abs(mpmath.mpf(value) / exact - 1)), abs(exact) < 1e-300


def _screen_chunk(args):
    seed, count = args
    import fastgrad.math as fm

    rng = np.random.default_rng(seed)
    worst = {}
    for _ in range(count):
        a = float(10.0 ** rng.uniform(-3, 4))
        q = 1.0 / (1.0 + math.exp(-rng.uniform(-27.6, 27.6)))  # logit-uniform quantile: 1e-12 .. 1 - 1e-12
        x = float(gammaincinv(a, q))
        if not x > 0.0:
            continue
        error, tiny = relative_error(fm.gamma_sample_grad(x, a), reference(x, a))
        if tiny:
            continue
        decade = math.floor(math.log10(a))
        if error > worst.get(decade, (0.0,))[0]:
            worst[decade] = (error, a, x)
    return worst


def screen(count):
    workers = os.cpu_count()
    chunks = [(seed, count // (8 * workers) + 1) for seed in range(8 * workers)]
    worst = {}
    with multiprocessing.Pool(workers) as pool:
        for part in pool.imap_unordered(_screen_chunk, chunks):
            for decade, item in part.items():
                if item[0] > worst.get(decade, (0.0,))[0]:
                    worst[decade] = item
    print(f"{sum(c for _, c in chunks)} random points; largest relative error per decade of alpha:")
    print("| alpha | max relative error | at alpha, x |")
    print("|---|---|---|")
    for decade in sorted(worst):
        error, a, x = worst[decade]
        print(f"| [1e{decade}, 1e{decade + 1}) | {error:.2e} | {a!r}, {x!r} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the tests' reference table")
    parser.add_argument("--screen", type=int, metavar="N", help="N random points: max error per decade of alpha")
    args = parser.parse_args(argv)
    if not args.write and not args.screen:
        parser.error("give --write and/or --screen N")
    if args.write:
        write()
    if args.screen:
        screen(args.screen)


if __name__ == "__main__":
    sys.exit(main())
