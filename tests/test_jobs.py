"""Long runs: interruption, checkpoints (killed for real, then resumed), shards and merge, MPI, threads.

Every "identical" here is bit for bit: the JSON of the results, timing left out.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import fastgrad as fg
from fastgrad import _jobs, cli

from conftest import ROOT, mpiexec

NORMAL = fg.Normal(2.0, 1.0)
TIMING = ("seconds", "draws_per_second", "threads")


def numbers(result, drop=()):
    """A result's JSON without timing and thread counts (and ``drop``): what must agree bit for bit."""
    document = result.to_dict() if not isinstance(result, dict) else dict(result)
    for key in (*TIMING, "run", *drop):
        document.pop(key, None)
    for value in [*document.values(), *document.get("estimators", [])]:
        if isinstance(value, dict):
            for key in (*TIMING, *drop):
                value.pop(key, None)
    return document


# --- shards and merge -----------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_merge_bit_identically(count):
    n = 40 * 65536 + 777  # 41 chunks, the last one short
    single = fg.compare(NORMAL, "square", n, seed=8)
    parts = [fg.compare(NORMAL, "square", n, seed=8, shard=(i, count)) for i in range(count)]
    assert all(isinstance(part, fg.Partial) for part in parts)
    merged = fg.merge(list(reversed(parts)))  # any order
    assert numbers(merged) == numbers(single)


def test_more_shards_than_chunks_and_estimate_and_variants(tmp_path):
    n = 3 * 65536
    single = fg.estimate(NORMAL, "cos", n, estimator="score", seed=2)
    paths = []
    for i in range(5):  # two of the five shards are empty
        path = tmp_path / f"part{i}.json"
        fg.estimate(NORMAL, "cos", n, estimator="score", seed=2, shard=(i, 5)).save(path)
        paths.append(path)
    assert numbers(fg.merge(paths)) == numbers(single)
    specs = ["score+cv", "score+loo(8)", "pathwise+antithetic", "measure-valued"]
    table = fg.compare(NORMAL, "square", 8 * 65536 * 3, seed=2, estimators=specs)
    parts = [fg.compare(NORMAL, "square", 8 * 65536 * 3, seed=2, estimators=specs, shard=(i, 2)) for i in range(2)]
    assert numbers(fg.merge(parts)) == numbers(table)


def _save_shards(tmp_path, count, seed=8, n=10 * 65536):
    paths = []
    for i in range(count):
        path = tmp_path / f"s{seed}-{i}of{count}.json"
        fg.compare(NORMAL, "square", n, seed=seed, shard=(i, count)).save(path)
        paths.append(path)
    return paths


def test_merge_refuses_missing_overlapping_and_mismatched_shards(tmp_path):
    paths = _save_shards(tmp_path, 3)
    with pytest.raises(fg.PartialError, match=r"chunks \[3, 6\) are missing"):
        fg.merge([paths[0], paths[2]])
    with pytest.raises(fg.PartialError, match="given twice"):
        fg.merge([*paths, paths[1]])
    other = _save_shards(tmp_path, 3, seed=9)
    with pytest.raises(fg.PartialError, match="seed is 9 there and 8 here"):
        fg.merge([paths[0], paths[1], other[2]])
    two = _save_shards(tmp_path, 2)
    with pytest.raises(fg.PartialError, match=r"given twice|missing"):
        fg.merge([paths[0], two[1], paths[2]])


def test_merge_refuses_corrupted_files(tmp_path):
    paths = _save_shards(tmp_path, 2)
    text = paths[1].read_text()
    paths[1].write_text(text[: len(text) // 2])
    with pytest.raises(fg.PartialError, match="not JSON"):
        fg.merge(paths)
    data = json.loads(text)
    data["parts"][0]["next"] -= 1  # an edit without a new checksum
    paths[1].write_text(json.dumps(data))
    with pytest.raises(fg.PartialError, match="checksum"):
        fg.merge(paths)


# --- checkpoints ----------------------------------------------------------------------------------

RUN = """
import sys
import fastgrad as fg
r = fg.compare(fg.Normal(2.0, 1.0), "square", {n}, seed=5, checkpoint=sys.argv[1], checkpoint_every=0.05,
               progress=False)
print(repr(r.score.variance["loc"]), repr(r.pathwise.variance["scale"]), r.interrupted, r.n)
"""
LONG = 5 * 10**8  # about 2 s here: long enough to be killed mid-run
LONG_CHUNKS = -(-LONG // 65536)


def _checkpoint_next(path):
    return json.loads(path.read_text())["parts"][0]["next"]


def _wait_for(predicate, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.mark.subprocess
def test_killed_run_resumes_bit_identically_and_sigterm_flushes_a_checkpoint(tmp_path):
    checkpoint = tmp_path / "run.ckpt"
    code = RUN.format(n=LONG)
    run = [sys.executable, "-c", code, str(checkpoint)]
    killed = subprocess.Popen(run, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: checkpoint.exists() and _checkpoint_next(checkpoint) > 500)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    at_kill = _checkpoint_next(checkpoint)
    assert 0 < at_kill < LONG_CHUNKS

    terminated = subprocess.Popen(run, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: _checkpoint_next(checkpoint) > at_kill + 500)
    terminated.send_signal(signal.SIGTERM)
    out, err = terminated.communicate()
    assert terminated.returncode == 0, err
    assert out.split()[2] == "SIGTERM"  # a partial result, flagged
    flushed = _checkpoint_next(checkpoint)
    assert flushed * 65536 == int(out.split()[3])  # the checkpoint holds exactly the draws reported

    resumed = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, check=True)
    clean = subprocess.run(
        [sys.executable, "-c", code.replace("checkpoint=sys.argv[1], ", "")],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert resumed.stdout == clean.stdout
    assert resumed.stdout.split()[2] == "None"


def test_a_finished_checkpoint_gives_the_result_again(tmp_path):
    checkpoint = tmp_path / "done.ckpt"
    first = fg.compare(NORMAL, "square", 5 * 65536, seed=1, checkpoint=checkpoint, checkpoint_every=0)
    again = fg.compare(NORMAL, "square", 5 * 65536, seed=1, checkpoint=checkpoint)
    assert numbers(first) == numbers(again) == numbers(fg.compare(NORMAL, "square", 5 * 65536, seed=1))


def test_checkpoints_from_elsewhere_are_refused_and_left_untouched(tmp_path):
    checkpoint = tmp_path / "run.ckpt"
    fg.compare(NORMAL, "square", 5 * 65536, seed=1, checkpoint=checkpoint)
    original = checkpoint.read_bytes()
    with pytest.raises(fg.PartialError, match="n is 327680 there and 327681 here"):
        fg.compare(NORMAL, "square", 5 * 65536 + 1, seed=1, checkpoint=checkpoint)
    with pytest.raises(fg.PartialError, match="function"):
        fg.compare(NORMAL, "cos", 5 * 65536, seed=1, checkpoint=checkpoint)
    assert checkpoint.read_bytes() == original

    data = json.loads(original)
    data.pop("sha256")
    data["fingerprint"]["stream_layout"] += 1  # a checkpoint written by a fastgrad with another stream layout
    other = tmp_path / "other-version.ckpt"
    other.write_text(json.dumps({"sha256": _jobs._digest(data), **data}))
    layout = fg.rng.STREAM_LAYOUT_VERSION
    with pytest.raises(
        fg.PartialError, match=f"written with stream_layout {layout + 1}; this fastgrad has stream_layout {layout}"
    ):
        fg.compare(NORMAL, "square", 5 * 65536, seed=1, checkpoint=other)

    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(original[: len(original) // 3])
    flipped = tmp_path / "flipped.ckpt"
    position = original.index(b'"records": "') + 20
    flipped.write_bytes(original[:position] + bytes([original[position] ^ 0x01]) + original[position + 1 :])
    for bad, message in ((truncated, "not JSON"), (flipped, "checksum")):
        before = bad.read_bytes()
        with pytest.raises(fg.PartialError, match=message):
            fg.compare(NORMAL, "square", 5 * 65536, seed=1, checkpoint=bad)
        assert bad.read_bytes() == before


# --- interruption ------------------------------------------------------------------------------------


# (distribution, function, --dist options): the scalar seed case, and the DiagNormal whose Ctrl-C used to
# raise a TypeError instead of returning the partial result (one-pipeline issue, reproduced as filed).
INTERRUPTED = {
    "normal": (NORMAL, "square", ["--loc", "2", "--f", "square"]),
    "diagnormal": (fg.DiagNormal([2.0, 1.0, 0.0], [1.0, 1.0, 2.0]), fg.functions.sum_of_squares(),
                   ["--dist", "diagnormal", "--loc", "2,1,0", "--scale", "1,1,2", "--f", "sum_of_squares"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(INTERRUPTED))
def test_ctrl_c_returns_a_flagged_partial_result(case):
    distribution, function, _ = INTERRUPTED[case]
    fg.compare(distribution, function, 10**6, seed=0)  # compiled before the clock
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    result = fg.compare(distribution, function, 10**11, seed=0, progress=False)
    timer.join()
    assert result.interrupted == "SIGINT" and result.n_requested == 10**11
    per_chunk = 65536 // getattr(distribution, "dim", 1)
    assert 0 < result.n < 10**11 and result.n % per_chunk == 0
    assert "INTERRUPTED (SIGINT) after" in str(result)
    # the partial result is the first chunks of the full run: the same as a run of that many draws
    flags = ("interrupted", "n_requested")
    again = fg.compare(distribution, function, result.n, seed=0)
    assert numbers(result, drop=flags) == numbers(again, drop=flags)


@pytest.mark.subprocess
@pytest.mark.parametrize(("case", "signum", "status"), [("normal", signal.SIGTERM, 143),
                                                        ("diagnormal", signal.SIGINT, 130)])  # fmt: skip
def test_cli_ctrl_c_exits_130_with_the_partial_json(tmp_path, case, signum, status):
    out = tmp_path / "partial.json"
    command = [sys.executable, "-m", "fastgrad", "compare", *INTERRUPTED[case][2], "-n", "1e11",
               "--seed", "0", "--json", str(out), "--progress"]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: process.stderr.readable() and _progress_started(process))
    process.send_signal(signum)
    _, err = process.communicate()
    assert process.returncode == status, err
    data = json.loads(out.read_text())
    name = signal.Signals(signum).name
    assert data["interrupted"] == name and data["n_requested"] == 10**11 and 0 < data["n"] < 10**11
    assert f"interrupted ({name}) after {data['n']:,} of 100,000,000,000 draws" in err


def _progress_started(process):
    line = process.stderr.read(10)  # progress lines start with "\rfastgrad:"
    return "fastgrad" in line


def test_no_progress_unless_asked_when_not_a_terminal(capsys):
    fg.compare(NORMAL, "square", 2 * 65536, seed=0)
    assert capsys.readouterr().err == ""
    fg.compare(NORMAL, "square", 2 * 65536, seed=0, progress=True)
    err = capsys.readouterr().err
    assert "of 131,072 draws (100.0%)" in err and "M draws/s" in err and "ETA" in err


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"shard": (2, 2)}, ValueError, "shard must be"),
        ({"shard": 3}, TypeError, "shard must be"),
        ({"checkpoint_every": -1}, ValueError, "checkpoint_every must be"),
        ({"checkpoint": "no-such-directory/x.ckpt"}, ValueError, "does not exist"),
        ({"progress": "yes"}, TypeError, "progress must be"),
        ({"comm": object()}, TypeError, "mpi4py communicator"),
    ],
)
def test_bad_long_run_options(kwargs, error, message):
    with pytest.raises(error, match=message):
        fg.compare(NORMAL, "square", 1000, seed=0, **kwargs)


def test_diagnormal_shards_and_checkpoints_keep_the_trace_interval(tmp_path):
    d = fg.DiagNormal([2.0, 1.0, 0.0], [1.0, 1.0, 2.0])
    f = fg.functions.quadratic([1.0, 2.0, 3.0])
    n = 12 * 21845 + 11  # 13 chunks of 21 845 draws (65 536 // 3)
    single = fg.compare(d, f, n, seed=4)
    merged = fg.merge([fg.compare(d, f, n, seed=4, shard=(i, 3)) for i in range(3)])
    assert numbers(merged) == numbers(single)  # per-chunk trace sums travel with the shards: same interval
    checkpoint = tmp_path / "diag.ckpt"
    fg.estimate(d, f, n, estimator="score", seed=4, checkpoint=checkpoint)
    again = fg.estimate(d, f, n, estimator="score", seed=4, checkpoint=checkpoint)
    assert numbers(again) == numbers(fg.estimate(d, f, n, estimator="score", seed=4))


@pytest.mark.parametrize(
    ("sizes", "repeats", "count"),
    [([10, 1000], 300, 3), ([7, 70_000, 300_000], 50, 7)],  # the last: repeats of 2 to 5 chunks cut by shards
)
def test_curve_shards_merge_bit_identically(sizes, repeats, count, tmp_path):
    single = fg.variance_curve(NORMAL, "square", sizes, repeats, seed=2)
    paths = []
    for i in range(count):
        paths.append(tmp_path / f"curve-{i}.json")
        fg.variance_curve(NORMAL, "square", sizes, repeats, seed=2, shard=(i, count)).save(paths[-1])
    assert numbers(fg.merge(paths[::-1])) == numbers(single)
    specs = ["score+loo(8)", "measure-valued"]
    variants = fg.variance_curve(NORMAL, "square", [16, 160_000], 60, seed=2, estimators=specs)
    shards = [fg.variance_curve(NORMAL, "square", [16, 160_000], 60, seed=2, estimators=specs, shard=(i, 3))
              for i in range(3)]  # fmt: skip
    assert numbers(fg.merge(shards)) == numbers(variants)


def test_curves_resume_from_checkpoints_and_stop_with_the_sizes_finished(tmp_path):
    sizes = [10, 1000]
    plain = fg.variance_curve(NORMAL, "square", sizes, 300, seed=1)
    checkpoint = tmp_path / "curve.ckpt"
    fg.variance_curve(NORMAL, "square", sizes, 300, seed=1, checkpoint=checkpoint, checkpoint_every=0)
    resumed = fg.variance_curve(NORMAL, "square", sizes, 300, seed=1, checkpoint=checkpoint)
    assert numbers(resumed) == numbers(plain) and resumed.interrupted is None
    with pytest.raises(fg.PartialError, match="from a different run: n is 303000 there and 304010 here"):
        fg.variance_curve(NORMAL, "square", sizes, 301, seed=1, checkpoint=checkpoint)
    specs = ["score+loo(8)", "measure-valued"]
    variants = fg.variance_curve(NORMAL, "square", [16, 800], 200, seed=1, estimators=specs)
    checkpoint = tmp_path / "variants.ckpt"
    fg.variance_curve(NORMAL, "square", [16, 800], 200, seed=1, estimators=specs, checkpoint=checkpoint)
    again = fg.variance_curve(NORMAL, "square", [16, 800], 200, seed=1, estimators=specs, checkpoint=checkpoint)
    assert numbers(again) == numbers(variants)

    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    stopped = fg.variance_curve(NORMAL, "square", [10, 100, 10**7, 10**8], 1000, seed=1, progress=False)
    timer.join()
    assert stopped.interrupted == "SIGINT" and stopped.sample_sizes_requested == (10, 100, 10**7, 10**8)
    assert stopped.sample_sizes == (10, 100)  # sizes 10 and 100 take the first 110 000 draws: one batch
    full = fg.variance_curve(NORMAL, "square", [10, 100], 1000, seed=1)
    assert stopped.variance == full.variance and stopped.variance_ratio_ci == full.variance_ratio_ci
    assert "INTERRUPTED (SIGINT): 2 of 4 sample sizes finished" in str(stopped)


# --- threads ----------------------------------------------------------------------------------------


@pytest.mark.subprocess
def test_threads_come_from_slurm_when_numba_is_not_told(python_runner):
    code = "import fastgrad as fg; print(fg.compare(fg.Normal(), 'square', 1000, seed=0).threads)"
    environment = {k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"}
    run = subprocess.run(
        [sys.executable, "-c", code], env=environment | {"SLURM_CPUS_PER_TASK": "1"},
        capture_output=True, text=True, cwd=ROOT, check=True,
    )  # fmt: skip
    assert run.stdout.strip() == "1"
    assert python_runner(code, NUMBA_NUM_THREADS=2, SLURM_CPUS_PER_TASK=1).strip() == "2"


# --- the command line -----------------------------------------------------------------------------


def test_cli_shards_and_merge(tmp_path, capsys):
    n = str(6 * 65536 + 5)
    paths = []
    for i in range(3):
        path = tmp_path / f"part-{i}.json"
        assert (
            cli.main(["compare", "--f", "square", "-n", n, "--seed", "4", "--shard", f"{i}/3", "--json", str(path)])
            == 0
        )
        paths.append(str(path))
    merged = tmp_path / "merged.json"
    assert cli.main(["merge", *paths, "--json", str(merged)]) == 0
    single = tmp_path / "single.json"
    assert cli.main(["compare", "--f", "square", "-n", n, "--seed", "4", "--json", str(single)]) == 0
    assert numbers(json.loads(merged.read_text())) == numbers(json.loads(single.read_text()))
    capsys.readouterr()
    assert cli.main(["merge", paths[0], paths[2]]) == 2
    assert "are missing" in capsys.readouterr().err
    assert cli.main(["compare", "--f", "square", "-n", n, "--shard", "0/3"]) == 2
    assert "give --json PATH" in capsys.readouterr().err


# --- MPI ---------------------------------------------------------------------------------------------------


@pytest.mark.subprocess
def test_mpi_two_ranks_agree_with_one_process_bit_for_bit(tmp_path):
    n = str(9 * 65536 + 3)
    out = tmp_path / "mpi.json"
    checkpoint = tmp_path / "mpi.ckpt"
    command = [mpiexec(), "-n", "2", sys.executable, "-m", "fastgrad", "compare", "--f", "square", "-n", n,
               "--seed", "6", "--threads", "1", "--mpi", "--json", str(out),
               "--checkpoint", str(checkpoint)]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("fastgrad.compare") == 1  # rank 0 prints, rank 1 does not
    data = json.loads(out.read_text())
    assert data["run"]["mpi_ranks"] == 2
    assert json.loads(checkpoint.read_text())["ranks"] == 2
    single = fg.compare(fg.Normal(), "square", int(n), seed=6)  # the command line's defaults: loc 0, scale 1
    assert numbers(data) == numbers(single)
    # the 2-rank checkpoint resumes under 2 ranks (already finished: the same numbers) ...
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert numbers(json.loads(out.read_text())) == numbers(single)
    # ... and a single process refuses it
    with pytest.raises(fg.PartialError, match="same number of MPI ranks"):
        fg.compare(fg.Normal(), "square", int(n), seed=6, checkpoint=checkpoint)


@pytest.mark.subprocess
def test_mpi_api_takes_a_communicator(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(
        "from mpi4py import MPI\n"
        "import fastgrad as fg\n"
        "r = fg.estimate(fg.Exponential(2.0), 'quartic', 500_000, estimator='pathwise', seed=3, threads=1,\n"
        "                comm=MPI.COMM_WORLD)\n"
        "rank = MPI.COMM_WORLD.Get_rank()\n"
        "lines = [f\"{rank} {repr(r.variance['rate']) if r is not None else None}\"]\n"
        "c = fg.variance_curve(fg.Normal(2.0, 1.0), 'square', [7, 70_000, 300_000], 50, seed=2, threads=1,\n"
        "                      comm=MPI.COMM_WORLD)\n"
        "if c is not None:\n"
        "    lines.append(f\"curve {c.variance['score']['loc']!r} {c.variance_ratio_ci['scale']!r}\")\n"
        "open(f'rank{rank}.txt', 'w').write('\\n'.join(lines))\n"  # (a file each: stdout lines can interleave)
    )
    done = subprocess.run([mpiexec(), "-n", "2", sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = sorted(["", *(tmp_path / "rank0.txt").read_text().split("\n"), (tmp_path / "rank1.txt").read_text()])
    single = fg.estimate(fg.Exponential(2.0), "quartic", 500_000, estimator="pathwise", seed=3)
    assert lines[-3:-1] == [f"0 {single.variance['rate']!r}", "1 None"]
    curve = fg.variance_curve(fg.Normal(2.0, 1.0), "square", [7, 70_000, 300_000], 50, seed=2)
    assert lines[-1] == f"curve {curve.variance['score']['loc']!r} {curve.variance_ratio_ci['scale']!r}"


def _tests_on_path():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]))


@pytest.mark.subprocess
def test_mpi_a_rank_whose_function_raises_stops_every_rank_and_keeps_the_others_work(tmp_path):
    """Seed 8, 10**7 draws: only rank 1's draws reach x > 5. Before, rank 0 waited for rank 1 for ever."""
    import user_functions as uf

    checkpoint = tmp_path / "run.ckpt"
    command = [mpiexec(), "-n", "2", sys.executable, "-m", "fastgrad", "compare",
               "--f", "user_functions:raises_above_five", "--df", "user_functions:square_derivative",
               "-n", "1e7", "--seed", "8", "--threads", "1", "--mpi", "--checkpoint", str(checkpoint)]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, env=_tests_on_path(), capture_output=True, text=True, timeout=300)
    assert done.returncode == cli.USER_FUNCTION_FAILED, done.stderr
    (line,) = done.stderr.strip().splitlines()  # one line, from rank 0
    assert line == (f"python -m fastgrad: error: the function 'raises_above_five' raised ValueError: x above 5 "
                    f"while evaluating draws on MPI rank 1 of 2; the 4,980,736 draws finished before it are "
                    f"saved in the checkpoint {checkpoint}")  # fmt: skip
    # rank 0 finished its chunks, rank 1 none: the checkpoint holds rank 0's, as a clean run of its shard has them
    first, second = fg.Partial.load(checkpoint).parts
    assert (first.next, second.next) == (first.stop, second.first) and 65_536 * first.stop == 4_980_736
    clean = tmp_path / "clean.ckpt"
    square = fg.Function(uf.square, uf.square_derivative)
    fg.compare(fg.Normal(0.0, 1.0), square, 10**7, seed=8, threads=1, shard=(0, 2), checkpoint=clean)
    (expected,) = fg.Partial.load(clean).parts
    assert (expected.first, expected.stop, expected.next) == (first.first, first.stop, first.next)
    assert expected.records.tolist() == first.records.tolist()


@pytest.mark.subprocess
def test_mpi_a_rank_that_fails_otherwise_stops_every_rank_naming_it(tmp_path):
    """Not the user's function (here a MemoryError put into rank 1's kernel): no rank waits, none saves."""
    script = tmp_path / "run.py"
    script.write_text(
        "from mpi4py import MPI\n"
        "import fastgrad as fg\n"
        "from fastgrad import _kernels\n"
        "if MPI.COMM_WORLD.Get_rank() == 1:\n"
        "    def fail(*args):\n"
        "        raise MemoryError('no room')\n"
        "    _kernels.Kernel.__call__ = fail\n"
        "try:\n"
        "    fg.compare(fg.Normal(2.0, 1.0), 'square', 10**6, seed=1, threads=1, comm=MPI.COMM_WORLD)\n"
        "except Exception as error:\n"
        "    rank = MPI.COMM_WORLD.Get_rank()\n"  # (a file each: the ranks' stdout lines can interleave)
        "    open(f'rank{rank}.txt', 'w').write(f'{type(error).__name__} {error}')\n"
    )
    done = subprocess.run([mpiexec(), "-n", "2", sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "rank0.txt").read_text() == (
        "RuntimeError MPI rank 1 of 2 failed with MemoryError: no room; every rank stopped "
        "(the last checkpoint written, if any, is kept)"
    )
    assert (tmp_path / "rank1.txt").read_text() == "MemoryError no room"


@pytest.mark.xdist_group("user-functions")  # (tests/test_hardening.py's ONE_WORKER: its kernel is compiled once)
def test_variant_shards_of_a_user_function_merge_bit_identically(tmp_path):
    """The pilot's coefficients travel in the partial results: merge needs no function to recompute them."""
    import user_functions as uf

    function = fg.Function(uf.square, uf.square_derivative)
    args = (fg.Normal(1.0, 2.0), function, 4 * 65536)
    options = {"seed": 3, "estimators": ["score+optimal-baseline", "score+cv", "pathwise"], "pilot": 5000}
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"part{i}.json")
        paths[-1].write_text(fg.compare(*args, shard=(i, 3), **options).dumps())
    merged = fg.merge(paths)
    assert numbers(merged) == numbers(fg.compare(*args, **options))
    assert merged["score+cv"].analytic_mean is None  # a user function recorded by name has no exact values
