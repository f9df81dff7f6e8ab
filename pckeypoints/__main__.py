"""``python -m pckeypoints``: the command line of :mod:`pckeypoints.cli`."""
from pckeypoints.cli import run

run()
