"""``bench/scaling.py``: bad arguments are refused before any work, and a tiny run prints its table."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "scaling.py"


def _scaling(*args):
    command = [sys.executable, str(SCRIPT), *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600, stdin=subprocess.DEVNULL)


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--threads", "0,1"], "argument --threads: thread counts must be between 1 and"),
        (["--threads", "1,x"], "argument --threads: expected comma-separated thread counts"),
        (["--threads", "100000"], "(NUMBA_NUM_THREADS); got '100000'"),
        (["--n", "abc"], "argument --n: expected a number of draws like 2e8; got 'abc'"),
        (["--n", "0"], "argument --n: the number of draws must be positive"),
        (["--rounds", "0"], "argument --rounds: must be at least 1; got 0"),
    ],
)
def test_scaling_refuses_bad_arguments(args, message):
    result = _scaling(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


@pytest.mark.subprocess
def test_scaling_prints_one_row_per_thread_count():
    result = _scaling("--threads", "1", "--n", "1e5", "--rounds", "1")
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| 1 |")]
    assert len(rows) == 1
    assert rows[0].count("1.00x") == 3  # speed-ups are over the first count, itself
