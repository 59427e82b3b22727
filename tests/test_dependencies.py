"""What fastgrad imports: numba, numpy and the standard library, and its optional extras only where they are used.

A plain ``pip install fastgrad`` has numba and numpy alone; a module that imports anything else (mpmath, scipy) at
run time fails there and nowhere in the test environment, which has the test extra. So the sources are read here.
"""

import ast
import sys
from pathlib import Path

import fastgrad

RUNTIME = {"numba", "numpy", "llvmlite", "fastgrad"}
#: Extras (pyproject.toml's optional dependencies), imported inside the functions that need them.
OPTIONAL = {"matplotlib", "mpi4py"}


def _imports(tree):
    """(top-level module name, whether the import is at module level) of every import in ``tree``."""
    module_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        else:
            continue
        for name in names:
            yield name.split(".")[0], id(node) in module_level


def test_the_package_imports_only_its_dependencies_and_extras_where_used():
    found = []
    for path in sorted(Path(fastgrad.__file__).parent.glob("*.py")):
        for name, top in _imports(ast.parse(path.read_text())):
            allowed = name in sys.stdlib_module_names or name in RUNTIME or (name in OPTIONAL and not top)
            if not allowed:
                found.append(f"{path.name}: {name}{' (module level)' if top else ''}")
    assert not found, found
