"""Bit-identity with the code before the one-pipeline refactor: every float of a dozen runs."""

import json
from pathlib import Path

import pytest

from reference_results import cases, run_case

REFERENCE = json.loads((Path(__file__).parent / "data" / "reference_results.json").read_text())["cases"]


@pytest.mark.parametrize("name", list(cases()))
def test_every_float_matches_the_reference_file(name):
    expected = REFERENCE[name]
    got = run_case(name)
    assert set(got) == set(expected)
    different = {path: (got[path], expected[path]) for path in expected if got[path] != expected[path]}
    assert not different, f"{len(different)} of {len(expected)} figures differ, e.g. {list(different.items())[:3]}"
