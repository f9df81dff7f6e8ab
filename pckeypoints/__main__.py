"""``python -m pckeypoints``: the command line of :mod:`pckeypoints.cli`."""
import sys

from .cli import main

sys.exit(main())
