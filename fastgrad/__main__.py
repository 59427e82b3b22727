"""``python -m fastgrad``: the ``fastgrad`` command line (see :mod:`fastgrad.cli`)."""

import sys

from fastgrad.cli import main

sys.exit(main(prog="python -m fastgrad"))
