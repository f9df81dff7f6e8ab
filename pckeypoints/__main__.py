"""``python -m pckeypoints``: the command line of :mod:`pckeypoints.cli`."""
from .cli import run

run()
