#!/usr/bin/env bash
# Builds the documentation into docs/_build/html (open docs/_build/html/index.html):
#   bash scripts/docs.sh            # installs the pinned Sphinx tools if missing, then builds
# Warnings are errors (-W --keep-going: all of them are listed) and nitpicky (-n): every internal reference
# (:doc:, :ref:, :class:, links between pages and to experiments/results) must resolve. Extra arguments go to
# sphinx-build (e.g. -E to rebuild everything).
set -Eeuo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# The versions tested; pyproject.toml's [docs] extra declares the ranges (tests/test_docs.py checks both).
# docutils 0.19 is the newest awscli 1.x accepts, where both share one environment.
DOCS_PINS=(sphinx==7.2.6 docutils==0.19 furo==2024.8.6 myst-parser==2.0.0 sphinx-argparse==0.4.0)
"$PY" - "${DOCS_PINS[@]}" <<'PY' || "$PY" -m pip install --disable-pip-version-check -q "${DOCS_PINS[@]}"
import sys
from importlib.metadata import PackageNotFoundError, version
try:
    sys.exit(any(version(p.split("==")[0]) != p.split("==")[1] for p in sys.argv[1:]))
except PackageNotFoundError:
    sys.exit(1)
PY
start=$(date +%s)
"$PY" -m sphinx -W --keep-going -n -q -b html docs docs/_build/html "$@"
echo "docs.sh: built docs/_build/html/index.html in $(( $(date +%s) - start )) s"
