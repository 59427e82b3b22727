"""The ``fastgrad`` command line: ``compare``, ``estimate``, ``curve``, ``merge`` and ``warmup``.

Built on the standard library's :mod:`argparse` (no extra dependency). Every
argument is checked before any draw is made; a bad one exits with status 2
and a one-line reason. Exit status 1 means the run itself failed (non-finite
gradients); 130, that it was interrupted (Ctrl-C).

``python -m fastgrad`` runs the same program.
"""

import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import os
import platform
import re
import sys
import threading
import time
import warnings
from pathlib import Path

EXAMPLES = {
    "compare": """\
examples:
  fastgrad compare --loc 2 --scale 1 --f square -n 1e8 --seed 0
  fastgrad compare --loc 2 --f square -n 1e8 --seed 0 --wrt loc,scale --threads 2 --json out.json
  fastgrad compare --loc 0.5 --scale 2 --f "cos(omega=1.5)" -n 10**7 --json -   # JSON to stdout
  fastgrad compare --dist exponential --rate 2 --f square -n 1e7 --seed 0
  fastgrad compare --dist diagnormal --loc 2,1,0 --scale 1,1,2 --f sum_of_squares -n 1e7 --seed 0
  fastgrad compare --dist diagnormal --loc 0 --dim 100 --f quadratic --weights 1,2,... -n 1e6
  fastgrad compare --loc 2 --f square -n 1e7 --seed 0 --wrt loc \
                   --estimators score,score+optimal-baseline,pathwise,pathwise+antithetic,measure-valued
""",
    "optimize": """\
examples:
  fastgrad optimize --loc 2 --f square --estimators score,score+optimal-baseline,pathwise --steps 2000 \\
                    --batch 1 --lr 0.01 --replicates 10000 --seed 1 --plot opt.png --json opt.json
  fastgrad optimize --loc 2 --f square --estimators score,pathwise,pathwise+antithetic,measure-valued \\
                    --steps 2000 --batch 2 --equal-cost --lr 0.01 --optimum loc=0 --tolerance 0.05 --seed 1
  fastgrad optimize --loc 1 --scale 2 --f "cos(omega=2)" --wrt loc,scale --optimizer adam --lr 0.05 \\
                    --lr-decay 100,0.5 --steps 500 --batch 8 --seed 0
  fastgrad optimize --dist categorical --probs 0.2,0.3,0.5 --f square --estimators score,measure-valued \\
                    --steps 500 --lr 0.1 --optimum probs=1,0,0 --tolerance 0.05 --seed 1
""",
    "curve": """\
examples:
  fastgrad curve --loc 2 --f square --sizes 10,100,1000,10000,100000 --repeats 1000 --seed 0
  fastgrad curve --loc 2 --f square --sizes 10,100,1000,10000,100000 --repeats 1000 --seed 0 \\
                 --wrt loc --plot curve.png --json curve.json
  fastgrad curve --loc 2 --f square --sizes 16,160,1600 --seed 0 --wrt loc \
                 --estimators score,score+loo(8),pathwise,measure-valued --plot variants.png
""",
}

DESCRIPTION = """\
Compare the score-function (REINFORCE) and pathwise (reparameterisation)
Monte Carlo estimators of d/dtheta E[f(x)], x ~ Normal(loc, scale),
Exponential(rate) or Bernoulli(p) (score function only).

functions (--f): linear, square, shifted_square(k=K), cos(omega=W), quartic,
exp_quadratic(k=K), logistic(a=A,b=B),
or your own @numba.njit function: --f mymodule:f --df mymodule:df (or file.py:f)
"""


COMMANDS = ("compare", "estimate", "curve", "optimize", "merge", "warmup")


class UsageError(Exception):
    """A bad argument: exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``prog: error: reason (see 'prog --help')``."""

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _count(text, what="a whole number"):
    """Parse ``100000000``, ``1_000_000``, ``1e8`` or ``10**8`` as an int."""
    text = text.strip()
    match = re.fullmatch(r"(\d+)\s*\*\*\s*(\d+)", text)
    try:
        if match:
            base, exponent = int(match[1]), int(match[2])
            if exponent > 64:
                raise ValueError
            return base**exponent
        if re.fullmatch(r"[+-]?[\d_]+", text):
            return int(text)
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not value.is_integer() or abs(value) > 2**53:
        raise argparse.ArgumentTypeError(f"expected {what} like 100000000, 1e8 or 10**8; got {text!r}")
    return int(value)


def _counts(text):
    """Comma-separated counts: ``10,100,1e3``."""
    parts = [part for part in text.split(",") if part.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"expected comma-separated sample sizes like 10,100,1000; got {text!r}")
    return [_count(part, "comma-separated whole numbers") for part in parts]


def _real(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a real number; got {text!r}") from None
    return value


def _reals(text):
    """One real number, or a comma-separated list of them (for DiagNormal)."""
    parts = [part.strip() for part in text.split(",")]
    try:
        values = [float(part) for part in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a real number or comma-separated reals; got {text!r}") from None
    return values if len(values) > 1 else values[0]


def _matrix(text):
    """Read a matrix: rows separated by ';', entries by ',' (for MultivariateNormal's --scale-tril)."""
    try:
        rows = [[float(part) for part in row.split(",")] for row in text.split(";")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a matrix, rows separated by ';' and entries by ',' (e.g. '1,0;0.5,2'); got {text!r}"
        ) from None
    return rows


def _seed(text):
    digits = text.strip().replace("_", "")
    try:  # decimal (leading zeros allowed: 007 is 7), or 0x / 0o / 0b
        value = int(digits, 10) if digits.isdigit() else int(digits, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**64); got {text!r}") from None
    return value


def _names(text):
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _load_user_object(option, spec):
    """``module:name`` or ``path/to/file.py:name`` -> the object (the current directory is importable)."""
    import importlib
    import importlib.util

    source, _, name = spec.rpartition(":")
    try:
        if source.endswith(".py"):
            path = Path(source)
            if not path.is_file():
                raise UsageError(f"argument {option}: no such file {source!r}")
            module_spec = importlib.util.spec_from_file_location(f"_fastgrad_user_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(source)
    except UsageError:
        raise
    except Exception as error:  # any import-time failure of the user's module
        raise UsageError(f"argument {option}: cannot import {source!r}: {type(error).__name__}: {error}") from None
    if not hasattr(module, name):
        raise UsageError(f"argument {option}: {source!r} has no {name!r}")
    return getattr(module, name)


def _vector_function(match, text, weights):
    from fastgrad import functions

    names = ("sum_of_squares", "quadratic", "linear_form", "sum_cos")
    if not match or match[1] not in names:
        raise UsageError(
            f"argument --f: with --dist diagnormal or dirichlet, expected one of {', '.join(names)} (or module:name); "
            f"got {text!r}"
        )
    name, inside = match[1], (match[2] or "").strip()
    if name in ("quadratic", "linear_form"):
        if weights is None or inside:
            raise UsageError(f"argument --f: {name} takes its weights from --weights w1,w2,...; got {text!r}")
        return getattr(functions, name)(weights if isinstance(weights, list) else [weights])
    if weights is not None:
        raise UsageError(f"argument --weights: {name} takes no weights")
    if name == "sum_cos":
        key, _, value = inside.partition("=")
        if inside and (key.strip() != "omega" or not value.strip()):
            raise UsageError(f"argument --f: sum_cos takes omega=<real>; got {text!r}")
        try:
            return functions.sum_cos(float(value) if inside else 1.0)
        except ValueError as error:
            raise UsageError(f"argument --f: omega must be a finite real number; {error}") from None
    if inside:
        raise UsageError(f"argument --f: {name} takes no parameters; got {text!r}")
    return functions.sum_of_squares()


def parse_function(text, derivative=None, *, vector=False, weights=None):
    """Resolve ``--f`` (and ``--df``) to a :class:`~fastgrad.functions.Function`.

    ``"square"`` or ``"cos(omega=2)"``: a built-in. ``module:name`` or
    ``file.py:name``: your own ``@numba.njit`` function, with ``--df`` its
    derivative (needed by the pathwise estimator).
    """
    from fastgrad import functions

    if ":" in text:
        f = _load_user_object("--f", text)
        df = _load_user_object("--df", derivative) if derivative else None
        try:
            if vector:
                return functions.VectorFunction(f, df, name=text.rpartition(":")[2])
            return functions.Function(f, df, name=text.rpartition(":")[2])
        except (TypeError, ValueError) as error:
            raise UsageError(f"argument --f/--df: {error}") from None
    if derivative:
        raise UsageError("argument --df: only with your own function (--f module:name); built-ins know theirs")
    match = re.fullmatch(r"\s*(\w+)\s*(?:\((.*)\))?\s*", text)
    if vector:
        return _vector_function(match, text, weights)
    if weights is not None:
        raise UsageError(
            "argument --weights: only with --dist diagnormal or dirichlet and --f quadratic or linear_form"
        )
    names = sorted(functions.BUILTINS)
    if not match or match[1] not in functions.BUILTINS:
        raise UsageError(f"argument --f: expected one of {', '.join(names)} (e.g. 'cos(omega=2)'); got {text!r}")
    builtin = functions.BUILTINS[match[1]]
    params = {}
    for item in (match[2] or "").split(","):
        if not item.strip():
            continue
        key, _, value = item.partition("=")
        key = key.strip()
        if key in params:
            raise UsageError(f"argument --f: {key} is given twice in {text!r}")
        if key not in builtin.parameters or not value.strip():
            accepted = ", ".join(f"{p}=<real>" for p in builtin.parameters) or "no parameters"
            raise UsageError(f"argument --f: {builtin.name} takes {accepted}; got {text!r}")
        try:
            params[key] = float(value)
        except ValueError:
            raise UsageError(f"argument --f: {key} must be a real number; got {value.strip()!r}") from None
    try:
        return getattr(functions, builtin.name)(**params)
    except (TypeError, ValueError) as error:
        raise UsageError(f"argument --f: {error}") from None


def _common(parser):
    group = parser.add_argument_group("distribution and function")
    families = _families()
    group.add_argument("--dist", default="normal", choices=list(families), help="family (default: normal)")
    added = set()
    for name, cls in families.items():
        for parameter in cls.family.parameters:
            if parameter in added:
                continue
            added.add(parameter)
            users = [other for other, c in families.items() if parameter in c.family.parameters]
            default = cls.__dataclass_fields__[parameter].default
            default = "required" if isinstance(default, type(dataclasses.MISSING)) else f"default: {default:g}"
            if parameter in MATRIX_PARAMETERS:
                group.add_argument(f"--{parameter.replace('_', '-')}", dest=parameter, type=_matrix, default=None,
                                   help=f"{name}: {parameter}, a matrix: rows separated by ';', entries by ',' "
                                   f"(e.g. '1,0;0.5,2'; {default})")  # fmt: skip
                continue
            group.add_argument(
                f"--{parameter}",
                type=_reals,
                default=None,
                help=f"{', '.join(users)}: {parameter} ({default}); comma-separated, one per component, or one number "
                "for all (with --dim)"
                if _is_vector(cls)
                else f"{name}: {parameter} ({default})",
            )
    group.add_argument(
        "--dim",
        type=int,
        default=None,
        help="diagnormal, dirichlet, categorical, mvn: number of components, when --loc/--scale/--concentration/"
        "--probs are one number",
    )
    group.add_argument(
        "--f",
        required=True,
        metavar="FUNCTION",
        help="built-in (square, cos(omega=2), ...) or your @njit function as module:name or file.py:name (required)",
    )
    group.add_argument(
        "--weights",
        type=_reals,
        default=None,
        metavar="W[,W...]",
        help="diagnormal or dirichlet with --f quadratic or linear_form: the weights, one per component",
    )
    group.add_argument(
        "--df",
        default=None,
        metavar="DERIVATIVE",
        help="with --f module:name: its derivative, module:name or file.py:name",
    )
    group.add_argument(
        "--wrt", type=_names, default=None, metavar="P[,P]", help="parameters: loc, scale or loc,scale (default: all)"
    )
    run = parser.add_argument_group("run")
    run.add_argument("--seed", type=_seed, default=None, help="integer in [0, 2**64) (default: random, reported)")
    run.add_argument("--threads", type=int, default=None, help="threads (default: NUMBA_NUM_THREADS, else all cores)")
    run.add_argument(
        "--json", default=None, metavar="PATH", help="write the result and run metadata as JSON to PATH ('-': stdout)"
    )


def _draws(parser):
    """Options of the commands that run ``n`` draws once (compare, estimate)."""
    parser.add_argument("-n", type=_count, required=True, help="number of draws, e.g. 1e8 or 10**8 (required)")
    _nan_policy(parser, "leave those draws out (omit)")


def _nan_policy(parser, omit):
    parser.add_argument(
        "--nan-policy",
        choices=["raise", "omit"],
        default="raise",
        help=f"non-finite per-draw gradients: fail (raise, the default) or {omit}",
    )


def _shard(text):
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not int(match[1]) < int(match[2]):
        raise argparse.ArgumentTypeError(
            f"expected I/K with 0 <= I < K, e.g. 0/4 (shards are numbered from 0); got {text!r}"
        )
    return int(match[1]), int(match[2])


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0; got {text!r}")
    return value


def _long_run_options(parser, cluster=True):
    """Options of long runs: progress and checkpoints; with ``cluster``, shards and MPI (compare, estimate)."""
    group = parser.add_argument_group("long runs and clusters (docs/hpc.md)")
    group.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="draws done, draws/s and time left on stderr (default: when stderr is a terminal)",
    )
    group.add_argument(
        "--checkpoint",
        default=None,
        metavar="FILE",
        help="save partial moments to FILE (atomically, on Ctrl-C and SIGTERM too); rerunning the same "
        "command resumes from it, bit-identically",
    )
    group.add_argument(
        "--checkpoint-every",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="seconds between checkpoint writes (default: 60)",
    )
    if not cluster:
        return
    group.add_argument(
        "--shard",
        type=_shard,
        default=None,
        metavar="I/K",
        help="run only shard I of K (0-based) and write a partial result to --json; combine with 'fastgrad merge'",
    )
    group.add_argument(
        "--mpi",
        action="store_true",
        help="split the chunks across MPI ranks (mpiexec -n P ...; needs fastgrad[mpi]); rank 0 writes the output",
    )


def _estimator(text):
    from fastgrad.estimators import parse_estimator

    try:
        return parse_estimator(text).name
    except (TypeError, ValueError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _estimator_list(text):
    from fastgrad.estimators import parse_estimators

    try:
        return [spec.name for spec in parse_estimators(text)]
    except (TypeError, ValueError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _variant_options(parser):
    """Options of the commands that take estimator variants (compare, curve)."""
    group = parser.add_argument_group("estimator variants (docs/variance-reduction.md)")
    group.add_argument(
        "--estimators",
        type=_estimator_list,
        default=None,
        metavar="E[,E...]",
        help="estimators to compare on the same draws, in one table: score[+baseline(B)|+optimal-baseline|+cv|"
        "+loo(K)][+antithetic], pathwise[+antithetic], measure-valued[+coupled|+decoupled] "
        "(default: score,pathwise)",
    )
    _pilot_option(group)


def _pilot_option(parser):
    parser.add_argument(
        "--pilot",
        type=_count,
        default=None,
        metavar="N",
        help="draws of the independent pilot stream for optimal-baseline and cv (default: 100000)",
    )


def _optimum(text):
    """``loc=0,scale=1`` -> ``{"loc": 0.0, "scale": 1.0}``; ``probs=1,0,0`` -> ``{"probs": [1.0, 0.0, 0.0]}``.

    An item without ``=`` is one more component of the parameter before it (a vector parameter's values).
    """
    out = {}
    name = None
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            name = key.strip()
            out[name] = [_real(value.strip())]
        elif not sep and name is not None:
            out[name].append(_real(item.strip()))
        else:
            raise argparse.ArgumentTypeError(f"expected P=V[,V...][,P=V...] (e.g. loc=0, probs=1,0,0); got {text!r}")
    return {key: values[0] if len(values) == 1 else values for key, values in out.items()}


def _decay(text):
    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected T0,P (the rate lr / (1 + t / T0)**P); got {text!r}")
    return tuple(_real(part.strip()) for part in parts)


def _optimize_options(parser):
    group = parser.add_argument_group("optimisation (docs/optimisation.md)")
    group.add_argument("--estimators", type=_estimator_list, default=None, metavar="E[,E...]",
                       help="estimators, each with its own replicates (default: score,pathwise)")  # fmt: skip
    group.add_argument("--steps", type=_count, required=True, help="steps per replicate (required)")
    group.add_argument("--batch", type=_count, default=1,
                       help="draws per step (with --equal-cost: evaluations of f per step); default: 1")  # fmt: skip
    group.add_argument("--equal-cost", action="store_true",
                       help="--batch counts function evaluations: antithetic and measure-valued draw half")  # fmt: skip
    group.add_argument("--lr", type=_real, required=True, help="learning rate (required)")
    group.add_argument("--lr-decay", type=_decay, default=None, metavar="T0,P",
                       help="decay the rate: lr / (1 + t / T0)**P (fastgrad.schedules.inverse_power)")  # fmt: skip
    group.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd", help="default: sgd")
    group.add_argument("--replicates", type=_count, default=1000, help="runs per estimator (default: 1000)")
    group.add_argument("--log-every", type=_count, default=None, metavar="K",
                       help="steps between logged statistics (default: about 100 logged)")  # fmt: skip
    group.add_argument("--optimum", type=_optimum, default=None, metavar="P=V[,V...][,P=V...]",
                       help="the known optimum of the --wrt parameters (default --wrt: these), one value or one per "
                       "component (probs=1,0,0), with --tolerance: steps to reach it")  # fmt: skip
    group.add_argument("--tolerance", type=_real, default=None, help="distance to --optimum that counts as reached")
    group.add_argument("--plot", default=None, metavar="PNG",
                       help="write the objective (log scale) against steps and evaluations to this PNG")  # fmt: skip
    _pilot_option(group)


def _optimize(args, prog, argv):
    """``fastgrad optimize``: run, print, write the JSON and the plot; return the exit status."""
    import fastgrad as fg
    from fastgrad.schedules import constant, inverse_power

    vector = _draws_vectors(_families()[args.dist])
    function = parse_function(args.f, args.df, vector=vector, weights=args.weights)
    json_path = _output_path("--json", args.json)
    plot_path = _output_path("--plot", args.plot)
    if plot_path is not None:
        from fastgrad.plotting import PlottingUnavailableError, require_matplotlib

        try:
            require_matplotlib()
        except PlottingUnavailableError as error:
            raise UsageError(f"argument --plot: {error}") from None
    if args.shard is not None and (args.json is None or args.json == "-"):
        raise UsageError("argument --shard: a shard writes a partial result: give --json PATH for it")
    comm = _mpi_world() if args.mpi else None
    from fastgrad._jobs import holding_stops

    # Ctrl-C and SIGTERM are held from here to the last line written (as for compare): one that comes while the
    # kernels compile stops the run before its first segment, with the start logged
    with holding_stops() as stops, _fastgrad_warnings(prog) as checkpoint_failed:
        distribution = _distribution(args)
        started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        clock = time.perf_counter()
        try:
            rate = constant(args.lr) if args.lr_decay is None else inverse_power(args.lr, *args.lr_decay)
            wrt = args.wrt if args.wrt is not None or args.optimum is None else list(args.optimum)
            result = fg.optimize(
                distribution, function, wrt, estimators=args.estimators or ("score", "pathwise"), steps=args.steps,
                learning_rate=rate, batch=args.batch, optimizer=args.optimizer, replicates=args.replicates,
                seed=args.seed, log_every=args.log_every, optimum=args.optimum, tolerance=args.tolerance,
                pilot=args.pilot, threads=args.threads, equal_cost=args.equal_cost, progress=args.progress,
                checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every, shard=args.shard, comm=comm,
            )  # fmt: skip
        except fg.PartialError as error:
            raise UsageError(f"argument --checkpoint: {error}") from None
        except (TypeError, ValueError) as error:  # argument checks run before any draw
            raise UsageError(_with_option(str(error))) from None
        if result is None:  # an MPI rank other than 0: rank 0 writes everything
            return 0
        if isinstance(result, fg.OptimizationPartial):
            _write_atomically(json_path, result.dumps())
            (i, k), (lo, hi) = result.shard, result.replicates
            print(f"shard {i}/{k}: replicates [{lo}, {hi}), step {result.steps_done:,} of "
                  f"{result.fingerprint['steps']:,}; wrote {json_path}")  # fmt: skip
            if result.interrupted:
                print(f"{prog}: interrupted ({result.interrupted}); rerun to finish the shard", file=sys.stderr)
                return 143 if result.interrupted == "SIGTERM" else 130
            return 0
        if plot_path is not None:
            result.plot(plot_path)
        threads_source = "--threads" if args.threads is not None else _threads_source()
        ranks = comm.Get_size() if comm is not None else 1
        metadata = _metadata(prog, argv, result, started, time.perf_counter() - clock, threads_source, ranks)
        status = _emit(result, metadata, args.json, json_path, plot_path, prog)
        if status == 0 and stops:
            print(f"{prog}: {stops[-1]} received with no steps left to stop: the result is complete", file=sys.stderr)
    return CHECKPOINT_FAILED if status == 0 and checkpoint_failed else status


def build_parser(prog="fastgrad"):
    """Build the argument parser (exposed for documentation and tests)."""
    from fastgrad import __version__

    parser = _Parser(prog=prog, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"fastgrad {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}", parser_class=_Parser)

    compare = commands.add_parser(
        "compare",
        help="both estimators on the same n draws: estimates, per-draw variances, their ratio with a 95%% CI",
        description="Score-function and pathwise gradient estimates from one pass over the same n draws.",
        epilog=EXAMPLES["compare"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(compare)
    _draws(compare)
    _variant_options(compare)
    _long_run_options(compare)

    estimate = commands.add_parser(
        "estimate",
        help="one estimator on n draws (the only choice for Bernoulli: --estimator score)",
        description="One estimator's gradient estimate and per-draw variance from n draws.",
        epilog="examples:\n  fastgrad estimate --dist bernoulli --p 0.3 --f square -n 1e7 --estimator score --seed 0\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(estimate)
    _draws(estimate)
    _long_run_options(estimate)
    estimate.add_argument(
        "--estimator",
        required=True,
        type=_estimator,
        metavar="E",
        help="which estimator: score, pathwise, or any variant --estimators takes (e.g. score+cv, "
        "pathwise+antithetic, measure-valued)",
    )
    _pilot_option(estimate)

    curve = commands.add_parser(
        "curve",
        help="variance of n-draw estimates against n, for both estimators, with an optional plot",
        description="Variance of n-draw gradient estimates across repeats, for each n, against the analytic value.",
        epilog=EXAMPLES["curve"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(curve)
    curve.add_argument(
        "--sizes",
        type=_counts,
        default=[10, 100, 1000, 10000, 100000],
        metavar="N[,N...]",
        help="draws per estimate (default: 10,100,1000,10000,100000)",
    )
    curve.add_argument("--repeats", type=_count, default=1000, help="estimates per size (default: 1000)")
    curve.add_argument("--plot", default=None, metavar="PNG", help="write a log-log plot to this PNG file")
    _nan_policy(curve, "leave the non-finite estimates out and count them per size (omit)")
    _variant_options(curve)
    _long_run_options(curve)

    optimize = commands.add_parser(
        "optimize",
        help="many SGD or Adam runs per estimator from the same start, in parallel: steps and evaluations to "
        "tolerance, the exact objective's spread (docs/optimisation.md)",
        description="Stochastic-gradient descent on E[f(x)] with each estimator's gradients: --replicates "
        "independent runs per estimator, their parameters and exact objective logged over the steps.",
        epilog=EXAMPLES["optimize"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(optimize)
    _optimize_options(optimize)
    _long_run_options(optimize)

    merge = commands.add_parser(
        "merge",
        help="combine the partial results of --shard runs into the full result (bit-identical to one run)",
        description="Combine the partial results written by 'fastgrad compare/estimate --shard I/K --json PART' "
        "into the result of the whole run, bit-identical to a single process with the same seed.",
        epilog="examples:\n  fastgrad merge part-*.json\n  fastgrad merge part-*.json --json result.json\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    merge.add_argument("parts", nargs="+", metavar="PART", help="partial results (JSON) of every shard of one run")
    merge.add_argument(
        "--json", default=None, metavar="PATH", help="write the result and run metadata as JSON to PATH ('-': stdout)"
    )

    warmup = commands.add_parser(
        "warmup",
        help="compile every built-in kernel into Numba's cache (e.g. while building a container image)",
        description="Compile every built-in kernel (each distribution, built-in function, estimator filler and "
        "sink) into Numba's on-disk cache, so that later processes load them, even where they cannot write "
        "(a read-only install). Kernels of your own @njit functions are compiled per process and are not "
        "included. See docs/hpc.md, 'Read-only installs'.",
        epilog="examples:\n  fastgrad warmup\n  fastgrad warmup --families normal,diagnormal --functions square\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    warmup.add_argument("--families", type=_names, default=None, metavar="D[,D...]",
                        help="only these distributions (--dist names; default: all)")  # fmt: skip
    warmup.add_argument("--functions", type=_names, default=None, metavar="F[,F...]",
                        help="only these built-in functions (default: all)")  # fmt: skip
    warmup.add_argument("--list", action="store_true", help="list the kernels and compile nothing")
    return parser


def _warmup(args, prog):
    """``fastgrad warmup``: compile the selected built-in kernels into the cache; return the exit status."""
    from fastgrad import _jit, _warmup

    try:
        rows = _warmup.select(_warmup.cases(), args.families, args.functions)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if args.list:
        for row in rows:
            print(f"{row.family:<12} {row.function:<15} {row.filler:<15} {row.sink}")
        return 0
    where = _jit.cache_directory()
    if where is None or not _jit.cache_is_writable():
        reason = "Numba finds no writable cache directory" if where is None else f"the cache in {where} is read-only"
        print(f"{prog} warmup: error: nothing to warm up: {reason}; run it where fastgrad is installed, as "
              "the owner of that directory, or with NUMBA_CACHE_DIR naming a writable directory",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"compiling {len(rows)} kernels into {where}")
    seconds = _warmup.warmup(rows)
    print(f"{len(rows)} kernels cached in {seconds:.1f} s")
    return 0


#: Parameters given as matrices on the command line (``--scale-tril '1,0;0.5,2'``).
MATRIX_PARAMETERS = ("scale_tril",)


def _families():
    """``--dist`` name -> distribution class, from the package's registry (plus DiagNormal)."""
    from fastgrad.distributions import DISTRIBUTIONS, DiagNormal

    return {cls.name: cls for cls in (*DISTRIBUTIONS, DiagNormal)}


def _distribution(args):
    """Build the distribution named by --dist from its own parameter options only."""
    families = _families()
    cls = families[args.dist]
    for name, other in families.items():
        for option in other.family.parameters:
            if option not in cls.family.parameters and getattr(args, option) is not None:
                raise UsageError(f"argument --{option}: applies to --dist {name}, not --dist {args.dist}")
    values = {option: getattr(args, option) for option in cls.family.parameters if getattr(args, option) is not None}
    if args.dist == "diagnormal":
        values = _diag_values(values, args.dim)
    elif args.dist == "mvn":
        values = _mvn_values(values, args.dim)
    elif args.dist in ("dirichlet", "categorical"):
        values = _vector_parameter(cls.family.parameters[0], args.dist, values, args.dim)
    else:
        if args.dim is not None:
            raise UsageError(f"argument --dim: applies to a vector --dist (diagnormal, ...), not --dist {args.dist}")
        for option, value in values.items():
            if isinstance(value, list):
                raise UsageError(f"argument --{option}: --dist {args.dist} takes one number; got {len(value)}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise UsageError(f"argument --{str(error).split()[0].split('[')[0].replace('_', '-')}: {error}") from None


def _is_vector(cls):
    """Whether the family's parameters are vectors (``--dim``; comma-separated values)."""
    return isinstance(getattr(cls, "dim", None), property)


def _draws_vectors(cls):
    """Whether the family's draws are vectors (its ``--f`` is a function of a vector)."""
    joint = cls.family.joint
    return joint.draw_size != (0, 1) if joint is not None else _is_vector(cls)


def _vector_parameter(name, dist, values, dim):
    """Return a vector family's one parameter (--concentration, --probs) as a list (one number: ``--dim`` times)."""
    value = values.get(name)
    if value is None:
        raise UsageError(f"argument --{name}: required with --dist {dist} (K >= 2 numbers, or one with --dim)")
    if isinstance(value, list):
        if dim is not None and dim != len(value):
            raise UsageError(f"arguments --{name}/--dim: lengths differ: {sorted({dim, len(value)})}")
        return {name: value}
    if dim is None:
        raise UsageError(f"argument --{name}: one number needs --dim K (the number of components)")
    return {name: [value] * dim}


def _mvn_values(values, dim):
    """MultivariateNormal's loc (a list, or a number repeated to D) and scale_tril (required): D from either."""
    if values.get("scale_tril") is None:
        raise UsageError("argument --scale-tril: required with --dist mvn (a D x D lower-triangular matrix)")
    size = len(values["scale_tril"])
    if dim is not None and dim != size:
        raise UsageError(f"arguments --scale-tril/--dim: sizes differ: {sorted({dim, size})}")
    loc = values.get("loc", 0.0)
    return {"loc": loc if isinstance(loc, list) else [loc] * size, "scale_tril": values["scale_tril"]}


def _diag_values(values, dim):
    """Make loc and scale lists of one length: given as lists, or numbers repeated ``--dim`` times."""
    lengths = {len(v) for v in values.values() if isinstance(v, list)}
    if dim is not None:
        if dim < 1:
            raise UsageError(f"argument --dim: expected a number of components >= 1; got {dim}")
        lengths.add(dim)
    if len(lengths) > 1:
        raise UsageError(f"arguments --loc/--scale/--dim: lengths differ: {sorted(lengths)}")
    size = lengths.pop() if lengths else 1
    out = {"loc": [0.0] * size, "scale": [1.0] * size}
    for option, value in values.items():
        out[option] = value if isinstance(value, list) else [value] * size
    return out


def _output_path(option, value):
    """Check before any work that ``value`` can be written; return it as a Path (None for stdout/absent)."""
    if value is None or value == "-":
        return None
    from fastgrad._jobs import output_target

    path = Path(value)
    try:
        output_target(path, f"argument {option}")
    except ValueError as error:
        raise UsageError(str(error)) from None
    return path


def _write_atomically(path, text):
    """Write ``text`` to ``path`` through a temporary file and a rename: never a half-written file."""
    from fastgrad._jobs import write_atomically

    write_atomically(path, text)


#: API argument names and the options that set them, for error messages.
_OPTIONS = {"the pathwise estimator needs the derivative": "--df",
            "n": "-n", "sample_sizes": "--sizes", "repeats": "--repeats", "seed": "--seed", "wrt": "--wrt",
            "threads": "--threads", "repeats * sum(sample_sizes)": "--repeats/--sizes", "estimators:": "--estimators",
            "pilot": "--pilot", "checkpoint:": "--checkpoint", "repeats * len(sample_sizes)": "--repeats",
            "steps": "--steps", "batch": "--batch", "replicates": "--replicates", "log_every": "--log-every",
            "learning_rate": "--lr", "optimum": "--optimum", "tolerance": "--tolerance"}  # fmt: skip


def _with_option(message):
    """Prefix an API error with the option it is about: ``argument -n: n must be ...``."""
    if "weights but the distribution has" in message:
        return f"argument --weights: {message}"
    for name in sorted(_OPTIONS, key=len, reverse=True):
        if message.startswith(name + " "):
            text = message[len(name) + 1 :] if name.endswith(":") else message
            return f"argument {_OPTIONS[name]}: {text}"
    return message


def _metadata(prog, argv, result, started, wall_seconds, threads_source="argument", ranks=1):
    import numba
    import numpy as np

    from fastgrad import __version__

    return {
        "fastgrad": __version__,
        "numba": numba.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "threads": result.threads,
        "threads_source": threads_source,
        "mpi_ranks": ranks,
        "seed": result.seed,
        "wall_seconds": wall_seconds,
        "started_utc": started,
        "command": [prog, *argv],
    }


def _run(args, prog, argv):
    """Run a command; return its exit status (0, or 130/143 for a run stopped by SIGINT/SIGTERM)."""
    import fastgrad as fg

    if args.command == "merge":
        return _merge(args, prog, argv)
    if args.command == "warmup":
        return _warmup(args, prog)
    if args.command == "optimize":
        return _optimize(args, prog, argv)
    comm = None
    if getattr(args, "mpi", False):
        comm = _mpi_world()
    if getattr(args, "shard", None) is not None and (args.json is None or args.json == "-"):
        raise UsageError("argument --shard: a shard writes a partial result: give --json PATH for it")
    vector = _draws_vectors(_families()[args.dist])
    function = parse_function(args.f, args.df, vector=vector, weights=args.weights)
    json_path = _output_path("--json", args.json)
    plot_path = _output_path("--plot", getattr(args, "plot", None))
    if plot_path is not None:
        from fastgrad.plotting import PlottingUnavailableError, require_matplotlib

        try:
            require_matplotlib()
        except PlottingUnavailableError as error:
            raise UsageError(f"argument --plot: {error}") from None
    from fastgrad._jobs import holding_stops

    # Ctrl-C and SIGTERM are held from here to the last line written: one that comes while the kernels
    # compile stops the run before its first batch; one that comes after the last batch (SLURM's early
    # signal, say) no longer kills a finished run on its way out.
    with holding_stops() as stops, _fastgrad_warnings(prog) as checkpoint_failed:
        distribution = _distribution(args)
        started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        clock = time.perf_counter()
        common = {"seed": args.seed, "wrt": args.wrt, "threads": args.threads, **_job_arguments(args, comm)}
        status = _run_and_emit(args, prog, argv, fg, distribution, function, common, comm, json_path, plot_path,
                               started, clock)  # fmt: skip
        if status == 0 and stops and (comm is None or comm.Get_rank() == 0):
            print(f"{prog}: {stops[-1]} received with no draws left to stop: the result is complete", file=sys.stderr)
    return CHECKPOINT_FAILED if status == 0 and checkpoint_failed else status


@contextlib.contextmanager
def _fastgrad_warnings(prog):
    """Print each of fastgrad's warnings as one line (``prog: warning: ...``); the list holds failed checkpoints."""
    from fastgrad._checks import FastgradWarning
    from fastgrad._jobs import CheckpointWarning

    failed, others = [], []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FastgradWarning)
            try:
                yield failed
            finally:
                for warning in caught:
                    if issubclass(warning.category, FastgradWarning):
                        print(f"{prog}: warning: {warning.message}", file=sys.stderr)
                        if issubclass(warning.category, CheckpointWarning):
                            failed.append(warning)
                    else:
                        others.append(warning)
    finally:
        # shown once the recording has stopped: shown inside it, each would be recorded again, without end
        for warning in others:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)


def _run_and_emit(args, prog, argv, fg, distribution, function, common, comm, json_path, plot_path, started, clock):
    try:
        if args.command == "compare":
            result = fg.compare(
                distribution, function, args.n, nan_policy=args.nan_policy, estimators=args.estimators,
                pilot=args.pilot, **common,
            )  # fmt: skip
        elif args.command == "estimate":
            result = fg.estimate(
                distribution,
                function,
                args.n,
                estimator=args.estimator,
                nan_policy=args.nan_policy,
                pilot=args.pilot,
                **common,
            )
        else:
            result = fg.variance_curve(
                distribution, function, args.sizes, args.repeats, estimators=args.estimators, pilot=args.pilot,
                nan_policy=args.nan_policy, **common,
            )  # fmt: skip
    except fg.NonFiniteValuesError:
        raise
    except fg.PartialError as error:
        raise UsageError(f"argument --checkpoint: {error}") from None
    except (TypeError, ValueError) as error:  # argument checks run before any draw
        raise UsageError(_with_option(str(error))) from None
    wall_seconds = time.perf_counter() - clock

    if result is None:  # an MPI rank other than 0: rank 0 writes everything
        return 0
    if isinstance(result, fg.Partial):
        _write_atomically(json_path, result.dumps())
        part = result.parts[0]
        i, k = result.shard
        print(f"shard {i}/{k}: chunks [{part.first}, {part.next}) of {result.n_chunks} done; wrote {json_path}")
        if not part.done:
            print(f"{prog}: interrupted ({result.interrupted}); rerun to finish the shard", file=sys.stderr)
            return 143 if result.interrupted == "SIGTERM" else 130
        return 0
    if plot_path is not None and not result.sample_sizes:
        print(f"{prog}: no sample size finished: no plot written", file=sys.stderr)
        plot_path = None
    if plot_path is not None:
        result.plot(plot_path)
    threads_source = "--threads" if args.threads is not None else _threads_source()
    ranks = comm.Get_size() if comm is not None else 1
    metadata = _metadata(prog, argv, result, started, wall_seconds, threads_source, ranks)
    return _emit(result, metadata, args.json, json_path, plot_path, prog)


def _emit(result, metadata, json_option, json_path, plot_path, prog):
    """Print the result and write its JSON; return the exit status (130/143 when the run was interrupted)."""
    document = dict(result.to_dict(), run=metadata)
    text = json.dumps(document, indent=2, allow_nan=False) + "\n"
    if json_option == "-":
        sys.stdout.write(text)
    else:
        print(result)
        if json_path is not None:
            _write_atomically(json_path, text)
            print(f"\nwrote {json_path}")
        if plot_path is not None:
            print(f"wrote {plot_path}")
    interrupted = getattr(result, "interrupted", None)
    if interrupted:
        if hasattr(result, "sample_sizes_requested"):
            done = f"{len(result.sample_sizes)} of {len(result.sample_sizes_requested)} sample sizes finished"
        elif hasattr(result, "steps_requested"):
            done = f"after step {result.steps_done:,} of {result.steps_requested:,}"
        else:
            done = f"after {result.n + result.n_omitted:,} of {result.n_requested:,} draws"
        print(f"{prog}: interrupted ({interrupted}) {done}", file=sys.stderr)
        return 143 if interrupted == "SIGTERM" else 130
    return 0


def _threads_source():
    from fastgrad._api import default_threads

    return default_threads()[1]


def _job_arguments(args, comm):
    return {
        "progress": args.progress,
        "checkpoint": args.checkpoint,
        "checkpoint_every": args.checkpoint_every,
        "shard": args.shard,
        "comm": comm,
    }


def _mpi_world():
    try:
        from mpi4py import MPI
    except ImportError:
        raise UsageError(
            "argument --mpi: needs mpi4py and an MPI library: pip install 'fastgrad[mpi]' (mpi4py and mpich)"
        ) from None
    return MPI.COMM_WORLD


def _merge(args, prog, argv):
    import fastgrad as fg

    json_path = _output_path("--json", args.json)
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    clock = time.perf_counter()
    try:
        result = fg.merge(args.parts)
    except fg.PartialError as error:
        raise UsageError(str(error)) from None
    metadata = _metadata(prog, argv, result, started, time.perf_counter() - clock, "shards", 1)
    metadata["parts"] = list(args.parts)
    return _emit(result, metadata, args.json, json_path, None, prog)


#: Exit status when a user's function raised while the draws were evaluated.
USER_FUNCTION_FAILED = 3

#: Exit status of a run that finished (result printed and written) but could not write its checkpoint.
CHECKPOINT_FAILED = 4


def main(argv=None, prog="fastgrad"):
    """Run the command line; return the exit status."""
    from fastgrad._api import NonFiniteValuesError
    from fastgrad._jobs import UserFunctionError

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            raise UsageError(f"choose a command: {', '.join(COMMANDS)} (see '{prog} --help')")
        return _run(args, prog, argv)
    except UsageError as error:
        command = f"{prog} {argv[0]}" if argv and argv[0] in COMMANDS else prog
        print(f"{command}: error: {error}", file=sys.stderr)
        return 2
    except NonFiniteValuesError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    except UserFunctionError as error:
        if error.where is None or _mpi_world().Get_rank() == 0:  # (under MPI every rank has it: rank 0 says it)
            print(f"{prog}: error: {error}", file=sys.stderr)
        return USER_FUNCTION_FAILED
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. "fastgrad compare ... | head": the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


def main_exit(prog="fastgrad"):
    """Entry point of the ``fastgrad`` console script (and of ``python -m fastgrad``).

    Once the command has returned, its result written, Ctrl-C and SIGTERM
    are ignored to the process's end: arriving during the interpreter's shut
    down they would otherwise kill a process whose run was complete (SLURM
    saw exit 143 beside a finished, not interrupted, result when its early
    SIGTERM came just as a run ended).
    """
    import signal

    status = main(prog=prog)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(status)
