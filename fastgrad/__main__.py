"""``python -m fastgrad``: the ``fastgrad`` command line (see :mod:`fastgrad.cli`)."""

from fastgrad.cli import main_exit

main_exit(prog="python -m fastgrad")
