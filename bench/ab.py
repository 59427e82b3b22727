"""Old against new: the same runs from two fastgrad source trees, in alternating fresh processes.

    git worktree add /tmp/fastgrad-old <commit>          # the tree to compare with
    python bench/ab.py --old /tmp/fastgrad-old           # this checkout is "new"
    python bench/ab.py --old /tmp/fastgrad-old --cases classic,pair,diag1 --rounds 7 --threads 1

Each round runs every case once from each tree (old first in even rounds,
new first in odd ones), each in its own process (``PYTHONPATH`` names the tree, so nothing needs installing;
both trees' Numba caches are filled by a warm-up run first). A process
times ``--repeats`` calls of ``n`` draws after one small call and reports
the median; the table shows, per case, the median over rounds of each
tree's draws/s and of the per-round ratio new/old, with its range.

Cases (draws/s counts components for a DiagNormal, so D = 10 and D = 100
read against the Normal's draws/s):

* ``classic``: ``compare(Normal(2, 1), "square")``, the seed case;
* ``pair``: the same with ``estimators=["score", "pathwise"]``;
* ``diag1``, ``diag10``, ``diag100``: ``compare(DiagNormal(D), sum_of_squares)``;
* the non-polynomial cases of ``bench/test_functions.py`` (Normal(1, 1)):
  ``cos`` (``cos(1)``), ``expquad`` (``exp_quadratic(0.5)``), ``logistic``,
  ``userexp`` (a user's ``exp(-x*x/2)`` written with ``fastgrad.math.exp``),
  ``exponential`` (``Exponential(2)`` with ``square``) and ``mv``
  (``estimators=["measure-valued", "pathwise"]``, ``square``). A case the
  old tree lacks is shown as ``-``.

Under the table, the same rounds give each tree's own ratios against its
``classic`` (pair/classic, diagD/classic: the issue's in-run targets).
``--compile`` times instead, per round and tree, a cold first run (the seed
``compare`` with an empty Numba cache: everything compiles) and the compile
of a new kernel (a user ``Function``'s, always compiled, with the rest of
the cache warm).

Not a pytest file: it needs a second tree.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

NEW = Path(__file__).resolve().parent.parent

CASES = ("classic", "pair", "diag1", "diag10", "diag100", "cos", "expquad", "logistic", "userexp", "exponential", "mv")

#: Runs one case in a fresh process and prints its draws/s as JSON (null: the tree lacks the case).
CHILD = """
import json, statistics, sys, time
import numba
import fastgrad as fg
case, n, repeats, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
normal = fg.Normal(1.0, 1.0)
if case in ("classic", "pair"):
    extra = {"estimators": ["score", "pathwise"]} if case == "pair" else {}
    def call(m):
        return fg.compare(fg.Normal(2.0, 1.0), "square", m, seed=0, threads=threads, **extra)
elif case in ("cos", "expquad", "logistic", "userexp", "exponential", "mv"):
    extra, distribution = {}, normal
    if case == "cos":
        function = fg.functions.cos(1.0)
    elif case in ("expquad", "logistic"):
        name = {"expquad": "exp_quadratic", "logistic": "logistic"}[case]
        if not hasattr(fg.functions, name):
            print(json.dumps(None))
            sys.exit(0)
        function = getattr(fg.functions, name)(0.5) if case == "expquad" else fg.functions.logistic(1.0, 0.0)
    elif case == "userexp":
        import fastgrad.math as fm
        @numba.njit
        def bump(x):
            return fm.exp(-0.5 * x * x)
        @numba.njit
        def bump_derivative(x):
            return -x * fm.exp(-0.5 * x * x)
        function = fg.Function(bump, bump_derivative)
    else:
        function = "square"
        if case == "exponential":
            distribution = fg.Exponential(2.0)
        else:
            extra = {"estimators": ["measure-valued", "pathwise"]}
    def call(m):
        return fg.compare(distribution, function, m, seed=0, threads=threads, **extra)
else:
    dim = int(case[4:])
    dist = fg.DiagNormal([2.0] * dim, [1.0] * dim)
    def call(m):
        return fg.compare(dist, fg.functions.sum_of_squares(), max(2, m // dim), seed=0, threads=threads)
call(10**6)
rates = []
for _ in range(repeats):
    started = time.perf_counter()
    call(n)
    rates.append(n / (time.perf_counter() - started))
print(json.dumps(statistics.median(rates)))
"""


#: Times, in a fresh process, a cold first run (empty cache) or a user function's kernel compile.
COMPILE_CHILD = """
import json, sys, time
started = time.perf_counter()
import fastgrad as fg
import numba
if sys.argv[1] == "cold":
    fg.compare(fg.Normal(2.0, 1.0), "square", 100_000, seed=0)
    print(json.dumps(time.perf_counter() - started))
else:
    fg.compare(fg.Normal(2.0, 1.0), "square", 1000, seed=0)  # warm: loads from the cache
    @numba.njit
    def f(x):
        return x * x + 0.5 * x
    @numba.njit
    def df(x):
        return 2.0 * x + 0.5
    started = time.perf_counter()
    fg.compare(fg.Normal(2.0, 1.0), fg.Function(f, df), 1000, seed=0)
    print(json.dumps(time.perf_counter() - started))
"""


def compile_times(tree, what):
    """Seconds of a cold first run (``what="cold"``, empty cache) or of a new kernel's compile, fresh process."""
    import tempfile

    with tempfile.TemporaryDirectory() as cache:
        environment = dict(os.environ, PYTHONPATH=str(tree))
        if what == "cold":
            environment["NUMBA_CACHE_DIR"] = cache
        done = subprocess.run([sys.executable, "-c", COMPILE_CHILD, what], capture_output=True, text=True,
                              env=environment, cwd=tree, timeout=1800, check=False)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{tree}: {what} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cases(text):
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in CASES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"expected cases from {', '.join(CASES)}; got {text!r}")
    return names


def _positive(text):
    try:
        value = int(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1; got {text!r}")
    return value


def _tree(text):
    path = Path(text).resolve()
    if not (path / "fastgrad" / "__init__.py").is_file():
        raise argparse.ArgumentTypeError(f"{text!r} is not a fastgrad source tree (no fastgrad/__init__.py)")
    return path


def measure(tree, case, n, repeats, threads):
    """Draws/s of one case from one tree, in a fresh process."""
    environment = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, case, str(n), str(repeats), str(threads)],
        capture_output=True, text=True, env=environment, cwd=tree, timeout=1800, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{tree}: {case} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=_tree, required=True, help="the fastgrad source tree to compare with")
    parser.add_argument("--new", type=_tree, default=NEW, help="the other tree (default: this checkout)")
    parser.add_argument("--cases", type=_cases, default=list(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument("--n", type=_positive, default=10**8, help="draws (components) per timed call")
    parser.add_argument("--repeats", type=_positive, default=3, help="timed calls per process")
    parser.add_argument("--rounds", type=_positive, default=5, help="alternating rounds")
    parser.add_argument("--threads", type=_positive, default=2)
    parser.add_argument("--compile", action="store_true", help="time compilation instead (see above)")
    args = parser.parse_args(argv)
    if args.compile:
        seconds = {(name, what): [] for name in ("old", "new") for what in ("cold", "kernel")}
        for _ in range(args.rounds):
            for what in ("cold", "kernel"):
                for name, tree in (("old", args.old), ("new", args.new)):
                    seconds[name, what].append(compile_times(tree, what))
        print(f"{args.rounds} rounds, alternating fresh processes\n")
        print("| what | old s (median) | new s (median) | old all | new all |")
        print("|---|---|---|---|---|")
        for what, label in (("cold", "cold first run (empty cache)"), ("kernel", "a new kernel (user Function)")):
            old, new = seconds["old", what], seconds["new", what]
            print(f"| {label} | {statistics.median(old):.2f} | {statistics.median(new):.2f} | "
                  f"{', '.join(f'{v:.1f}' for v in old)} | {', '.join(f'{v:.1f}' for v in new)} |")  # fmt: skip
        return
    for tree in (args.old, args.new):  # fill both Numba caches before anything is timed
        for case in args.cases:
            measure(tree, case, 10**5, 1, args.threads)
    rates = {(tree, case): [] for tree in ("old", "new") for case in args.cases}
    for round_ in range(args.rounds):
        for case in args.cases:
            order = (("old", args.old), ("new", args.new))
            for name, tree in order if round_ % 2 == 0 else order[::-1]:  # ABBA: neither tree always goes first
                rates[name, case].append(measure(tree, case, args.n, args.repeats, args.threads))
    print(f"n = {args.n:g}, {args.threads} thread(s), {args.rounds} rounds x {args.repeats} calls\n")
    print("| case | old M/s | new M/s | new/old (median of rounds) | range |")
    print("|---|---|---|---|---|")
    for case in args.cases:
        old, new = rates["old", case], rates["new", case]
        if None in old:  # the old tree lacks the case
            print(f"| {case} | - | {statistics.median(new) / 1e6:.1f} | - | - |")
            continue
        ratios = [b / a for a, b in zip(old, new, strict=True)]
        print(
            f"| {case} | {statistics.median(old) / 1e6:.1f} | {statistics.median(new) / 1e6:.1f} | "
            f"{statistics.median(ratios):.3f} | {min(ratios):.3f}-{max(ratios):.3f} |"
        )
    if "classic" in args.cases and len(args.cases) > 1:
        print("\n| tree | case/classic, same rounds (median) | range |")
        print("|---|---|---|")
        for name in ("old", "new"):
            for case in args.cases:
                if case == "classic" or None in rates[name, case]:
                    continue
                ratios = [a / b for a, b in zip(rates[name, case], rates[name, "classic"], strict=True)]
                print(f"| {name} {case} | {statistics.median(ratios):.3f} | {min(ratios):.3f}-{max(ratios):.3f} |")


if __name__ == "__main__":
    main()
