"""Write tests/data/reference_results.json: every float of the runs in tests/reference_results.py.

Run once, on the code whose bits the file is to pin (it was written before the
one-pipeline refactor); the test suite then checks that the package still
reproduces it.
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import fastgrad  # noqa: E402

from reference_results import cases, run_case  # noqa: E402

if __name__ == "__main__":
    import subprocess

    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=ROOT).stdout
    data = {
        "written_by": f"fastgrad {fastgrad.__version__} at commit {commit.strip()}",
        "cases": {name: run_case(name) for name in cases()},
    }
    path = ROOT / "tests" / "data" / "reference_results.json"
    path.write_text(json.dumps(data, indent=0, sort_keys=True) + "\n")
    print(f"wrote {path.relative_to(ROOT)}: {sum(len(c) for c in data['cases'].values())} figures")
