import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # reference_streams, user_functions


def mpiexec():
    """The mpiexec of the test extra's MPI (mpich), or fail saying how to install it."""
    found = shutil.which("mpiexec", path=sysconfig.get_path("scripts")) or shutil.which("mpiexec")
    if found is None:
        pytest.fail("mpiexec not found: the test extra installs mpi4py and mpich (pip install -e '.[test]')")
    return found


def run_python(code, **env):
    """Run ``code`` in a fresh interpreter with extra environment variables; return stdout."""
    environment = dict(os.environ, **{k: str(v) for k, v in env.items()})
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, cwd=ROOT, timeout=600
    )
    if result.returncode != 0:
        raise AssertionError(f"subprocess failed:\n{result.stderr}")
    return result.stdout


@pytest.fixture(scope="session")
def python_runner():
    return run_python


def pytest_collection_modifyitems(config, items):
    """Put the matrix first: its group runs on one worker, so starting it first keeps the two workers even."""
    items.sort(key=lambda item: 0 if item.nodeid.startswith("tests/test_matrix.py") else 1)
