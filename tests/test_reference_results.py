"""Bit-identity with the code before the one-pipeline refactor: every float of a dozen runs."""

import json
import math
from pathlib import Path

import pytest

from reference_results import cases, run_case

REFERENCE = json.loads((Path(__file__).parent / "data" / "reference_results.json").read_text())["cases"]


#: Cases whose kernel other tests compile too, on the worker that runs them (tests/test_hardening.py's ONE_WORKER):
#: a user function's kernel is compiled in every process that runs it.
USER_FUNCTIONS_WORKER = ("variants-user-scale",)


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.xdist_group("user-functions")) if n in USER_FUNCTIONS_WORKER else n
     for n in cases()],
)  # fmt: skip
def test_every_float_matches_the_reference_file(name):
    expected = REFERENCE[name]
    got = run_case(name)
    assert set(got) == set(expected)
    different = {path: (got[path], expected[path]) for path in expected if not _same(path, got[path], expected[path])}
    assert not different, f"{len(different)} of {len(expected)} figures differ, e.g. {list(different.items())[:3]}"


def _ulps(a, b):
    a, b = float.fromhex(a), float.fromhex(b)
    return abs(a - b) / math.ulp(max(abs(a), abs(b)))


def _same(path, got, expected):
    """Bit-identical, except the exact values of the Normal's measure-valued rows.

    Those are Gauss-Legendre quadratures whose density uses NumPy's ``exp``,
    which NumPy dispatches on the CPU (AVX2, AVX-512): the reference file's
    machine and an AVX512_SPR one differ in 9 of its 240 node values, and the
    code before the refactor run on the latter gives the same figures as
    today's code, one ulp from the file's. They may differ by 4 ulps; every
    figure of the draws, and every other exact value, must be identical.
    """
    if got == expected:
        return True
    quadrature = ".analytic_" in path and path.startswith("measure-valued")
    return quadrature and _ulps(got, expected) <= 4
