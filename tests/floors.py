"""Every figure of the reference runs under the dependency floors (run by ``.ci/floors``).

The draws' figures must be bit-identical to the file. The exact values of the
Normal's measure-valued rows are Gauss-Legendre quadratures through NumPy
(its ``exp`` and ``leggauss``), whose last bits depend on the NumPy version
and the CPU: they are reported in ulps and must agree to 1e-13 relative.
"""

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference_results import cases, run_case

REFERENCE = json.loads((Path(__file__).parent / "data" / "reference_results.json").read_text())["cases"]


def main():
    failures, worst, figures = [], 0.0, 0
    for name in cases():
        got, expected = run_case(name), REFERENCE[name]
        for path, value in expected.items():
            figures += 1
            if got[path] == value:
                continue
            a, b = float.fromhex(got[path]), float.fromhex(value)
            if "analytic" in path and "measure-valued" in path and abs(a - b) <= 1e-13 * abs(b):
                worst = max(worst, abs(a - b) / math.ulp(b))
            else:
                failures.append((name, path, got[path], value))
    print(
        f"{figures} figures of {len(cases())} runs: {len(failures)} differ; quadrature values within {worst:.0f} ulps"
    )
    for failure in failures[:10]:
        print("  differs:", *failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
