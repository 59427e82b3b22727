"""Numba's cache on read-only installs: import everywhere, read a pre-filled cache, ``fastgrad warmup``.

The two cases that compile fastgrad's kernels from nothing in a child (about
25 s each, all of it compiling) are marked ``readonly`` and run as a step of
their own in ``.ci/run`` (``pytest -m readonly tests/test_cache.py``), outside
the suite's five-minute budget, like the SLURM tests.

Each case runs a fresh interpreter on a private copy of the package whose
directories cannot be written. As root, permission bits do not bind, so
the child is started without the capabilities that bypass them
(``CAP_DAC_OVERRIDE``, ``CAP_DAC_READ_SEARCH``): then root is refused a
write to a directory of mode 0555 like anyone else.
"""

import ctypes
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import fastgrad

pytestmark = [pytest.mark.subprocess, pytest.mark.xdist_group("cache")]

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


def _without_override():
    """In the child, before exec: drop the capabilities that let root ignore permission bits."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
            if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _read_only(path):
    """Remove write permission from ``path`` and everything under it."""
    for item in [path, *path.rglob("*")]:
        mode = item.stat().st_mode
        item.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _writable(path):
    for item in [path, *path.rglob("*")]:
        item.chmod(item.stat().st_mode | stat.S_IWUSR)


@pytest.fixture
def install(tmp_path):
    """A copy of the package (sources only) in ``tmp_path/site``, and an unwritable home and cache directory."""
    site = tmp_path / "site"
    shutil.copytree(Path(fastgrad.__file__).parent, site / "fastgrad", ignore=shutil.ignore_patterns("__pycache__"))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    yield site, locked
    _writable(tmp_path)


def _run(site, args, *, env, restricted=True):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    environment.update(PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1", **env)
    result = subprocess.run(
        [sys.executable, "-m", "fastgrad", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=site,
        timeout=600,
        preexec_fn=_without_override if restricted else None,
    )
    return result


def _files(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_the_restricted_child_really_cannot_write(install):
    site, locked = install
    code = f"open({str(locked / 'x')!r}, 'w')"
    environment = dict(os.environ, PYTHONPATH=str(site))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment,
                            cwd=site, preexec_fn=_without_override)  # fmt: skip
    assert result.returncode != 0 and "PermissionError" in result.stderr


SEED_RUN = ["compare", "--loc", "2", "--f", "square", "-n", "1e4", "--seed", "0", "--json", "-"]


def _figures(stdout):
    data = json.loads(stdout)
    return {name: (row["mean"], row["variance"]) for name, row in data["estimators"].items()}


@pytest.mark.readonly
def test_nothing_writable_imports_runs_and_warns_once(install):
    """Package, NUMBA_CACHE_DIR and HOME all unwritable, no cache anywhere: it runs, compiling in memory."""
    site, locked = install
    _read_only(site)
    env = {"HOME": str(locked), "XDG_CACHE_HOME": str(locked), "NUMBA_CACHE_DIR": str(locked / "numba")}
    version = _run(site, ["--version"], env=env)
    assert version.returncode == 0 and version.stdout.startswith("fastgrad ")
    assert version.stderr == ""  # importing says nothing: the warning belongs to a run
    result = _run(site, SEED_RUN, env=env)
    assert result.returncode == 0, result.stderr
    # the same figures as this process's cached kernel (a second child would compile it again: 14 s)
    here = fastgrad.compare(fastgrad.Normal(2.0, 1.0), "square", n=10**4, seed=0).to_dict()
    assert _figures(result.stdout) == _figures(json.dumps(here))
    warnings = [line for line in result.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and "no writable cache directory" in warnings[0] and "fastgrad warmup" in warnings[0]
    assert _files(locked) == []


@pytest.mark.readonly
def test_a_prefilled_read_only_cache_is_used_and_left_alone(install, tmp_path):
    """The cluster case: a read-only install warmed up by its owner, a writable HOME."""
    site, _ = install
    fill = "from fastgrad import _warmup; _warmup.warmup(_warmup.select(_warmup.cases(), ['normal'], ['square'])[:1])"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    subprocess.run([sys.executable, "-c", fill], check=True, capture_output=True, cwd=site, env=dict(
        environment, PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1"))  # fmt: skip
    assert list((site / "fastgrad" / "__pycache__").glob("*.nbi"))
    _read_only(site)
    before = {p: p.stat().st_mtime_ns for p in site.rglob("*")}
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}

    result = _run(site, SEED_RUN, env=env)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr  # every kernel came from the read-only cache
    # Nothing compiled, so nothing cached in the user's directory (Numba makes the directory of functions
    # the warm-up did not reach: they are cached there when a run compiles them).
    assert [p for p in home.rglob("*") if p.is_file()] == []
    assert {p: p.stat().st_mtime_ns for p in site.rglob("*")} == before

    # A kernel the cache lacks (cos): compiled in memory, one warning naming warmup, the same figures as ever.
    missing = ["compare", "--loc", "2", "--f", "cos", "-n", "1e4", "--seed", "0", "--json", "-"]
    result = _run(site, missing, env=env)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and "read-only Numba cache" in warnings[0] and "fastgrad warmup" in warnings[0]
    assert {p: p.stat().st_mtime_ns for p in site.rglob("*")} == before

    # warmup itself refuses to run where it cannot save, before compiling anything.
    refused = _run(site, ["warmup", "--families", "normal", "--functions", "square"], env=env)
    assert refused.returncode == 1 and "read-only" in refused.stderr and "compiling" not in refused.stdout


def test_warmup_lists_every_builtin_kernel_once(capsys):
    from fastgrad import cli

    assert cli.main(["warmup", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    keys = [tuple(line.split()) for line in lines]
    assert len(keys) == len(set(keys))
    families = {"normal", "exponential", "bernoulli", "laplace", "gamma", "poisson", "diagnormal", "beta",
                "dirichlet", "categorical", "mvn"}  # fmt: skip
    assert {key[0] for key in keys} == families
    assert {key[2] for key in keys} == {"plain", "plain-weak", "general", "vector", "vector-general", "noise"}
    assert {key[3] for key in keys} == {"moments", "curve", "sum"}
    assert cli.main(["warmup", "--families", "normal", "--functions", "cos", "--list"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 6


def test_warmup_refuses_unknown_names(capsys):
    from fastgrad import cli

    assert cli.main(["warmup", "--functions", "sine"]) == 2
    assert "argument --functions: unknown function sine" in capsys.readouterr().err


def test_cached_functions_are_stamped_with_every_source_of_the_package():
    """An edit anywhere in the package makes every cached function stale, not only those of the edited file.

    Numba's own stamp is the function's file's time and size, so ``distributions._normal_noise`` (cached)
    kept the code of an edited ``rng.normals_from_words`` it calls; the digest of all sources in the stamp
    prevents that.
    """
    from fastgrad import _jit, distributions, rng

    for function in (distributions._normal_noise, rng.fill_normals):
        stamp = function._cache._cache_file._source_stamp
        assert stamp[1] == _jit.SOURCE_DIGEST and stamp[0] == function._cache._impl.locator.get_source_stamp()
