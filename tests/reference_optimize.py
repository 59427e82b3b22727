"""A fixed table of optimisations whose every float is kept in ``tests/data/reference_optimize.json``.

Written by the step loop before replicates ran in vector lanes (``python
tests/reference_optimize.py dcd50b9`` at dcd50b9), but for the
``baseline-``, ``antithetic-`` and ``measure-valued-`` cases, written by
85cf71e, the last version to run the optimal baseline, the antithetic pairs
and the measure-valued estimators on the general filler at one draw a step
(``python tests/reference_optimize.py 85cf71e --add NAME ...`` there, with
these cases);
``tests/test_optimize.py`` reruns every case and requires each float to
match bit for bit. The cases cover what the step loop branches on: score and
pathwise, the general filler's estimators, one and two optimised parameters,
updates on a parameter, its logarithm and its logit, SGD with a constant or
decaying rate and Adam, batches that divide a block of draws, that straddle
two and that span several, replicate counts that are not a multiple of the
lanes, a first replicate other than 0, and steps to tolerance. The functions
are those other tests compile optimisation kernels for already (kernels are
the suite's main cost); for that reason an update through a logit (a
Bernoulli's ``p``, a kernel of its own) is not here: it matched dcd50b9 bit
for bit when the lane loop was written (2026-12-07), and it runs the same
lane code as the update through a logarithm, which is here.
"""

import json
import sys
from pathlib import Path

import numpy as np

import fastgrad as fg

PATH = Path(__file__).parent / "data" / "reference_optimize.json"

_NORMAL = ("normal", 2.0, 1.0)
#: (name, distribution, function, wrt, keyword arguments)
CASES = [
    ("pathwise-loc-batch1", _NORMAL, "square", "loc", dict(estimators=["pathwise", "score"], steps=1100)),
    (
        "loc-tolerance",
        _NORMAL,
        "square",
        "loc",
        dict(estimators=["pathwise", "score"], steps=700, optimum={"loc": 0.0}, tolerance=0.3),
    ),
    ("batch3-straddles", _NORMAL, "square", "loc", dict(estimators=["pathwise", "score"], steps=400, batch=3)),
    (
        "batch8-two-parameters",
        _NORMAL,
        "square",
        ["loc", "scale"],
        dict(estimators=["pathwise", "score"], steps=300, batch=8, learning_rate=0.005),
    ),
    ("batch704", _NORMAL, "square", "loc", dict(estimators=["pathwise", "score"], steps=12, batch=704)),
    (
        "adam-schedule",
        _NORMAL,
        "square",
        ["loc", "scale"],
        dict(
            estimators=["pathwise", "score"],
            steps=600,
            optimizer="adam",
            learning_rate=fg.schedules.inverse_power(0.05, 10.0, 0.6),
        ),
    ),
    (
        "general-filler",
        _NORMAL,
        "square",
        "loc",
        dict(estimators=["score+optimal-baseline", "pathwise+antithetic", "measure-valued"], steps=600, batch=2),
    ),
    (
        "baseline-batch1-tolerance",
        _NORMAL,
        "square",
        "loc",
        dict(estimators=["score+optimal-baseline"], steps=500, optimum={"loc": 0.0}, tolerance=0.3),
    ),
    (
        "baseline-adam",
        _NORMAL,
        "square",
        "loc",
        dict(estimators=["score+optimal-baseline"], steps=300, optimizer="adam"),
    ),
    (
        "antithetic-batch1",
        _NORMAL,
        "square",
        "loc",
        dict(estimators=["pathwise+antithetic", "score+antithetic"], steps=300, optimum={"loc": 0.0}, tolerance=0.3),
    ),
    (
        "measure-valued-batch1",
        _NORMAL,
        "square",
        ["loc", "scale"],
        dict(estimators=["measure-valued+coupled", "measure-valued+decoupled"], steps=300, learning_rate=0.005),
    ),
    (
        "scale-through-its-logarithm",
        _NORMAL,
        "square",
        "scale",
        dict(estimators=["pathwise", "score"], steps=600, learning_rate=0.002),
    ),
]

_FAMILIES = {"normal": fg.Normal}


def run_case(case, threads=2):
    """The case's result as plain data: every trajectory's statistics, reached and settled steps, final parameters."""
    _, (family, *args), function, wrt, kwargs = case
    kwargs = {"learning_rate": 0.01, "replicates": 37, "first_replicate": 5, "seed": 3, "log_every": 100,
              "threads": threads, **kwargs}  # fmt: skip
    result = fg.optimize(_FAMILIES[family](*args), function, wrt, **kwargs)
    out = {}
    for name, trajectory in result.trajectories.items():
        out[name] = {
            "parameters": {key: np.asarray(value).tolist() for key, value in trajectory.parameters.items()},
            "objective": None if trajectory.objective is None else np.asarray(trajectory.objective).tolist(),
            "reached": np.asarray(trajectory.reached).tolist(),
            "settled": None if trajectory.settled is None else np.asarray(trajectory.settled).tolist(),
            "final": np.asarray(trajectory.final).tolist(),
        }
    return out


def main():
    """``python tests/reference_optimize.py REV``: write every case; ``REV --add NAME ...``: add those cases."""
    written_by = sys.argv[1] if len(sys.argv) > 1 else ""
    if "--add" in sys.argv:
        names = sys.argv[sys.argv.index("--add") + 1 :]
        document = json.loads(PATH.read_text())
        document["cases"].update({case[0]: run_case(case) for case in CASES if case[0] in names})
        document.setdefault("added_by", {}).update(dict.fromkeys(names, written_by))
    else:
        document = {"written_by": written_by, "cases": {case[0]: run_case(case) for case in CASES}}
    PATH.write_text(json.dumps(document) + "\n")


if __name__ == "__main__":
    main()
