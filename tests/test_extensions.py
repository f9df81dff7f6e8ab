"""The C++ extensions are built by the set-up (``python -m pckeypoints.ops.extensions``), so no user command compiles.

These run after ``bash scripts/setup.sh`` (as ``.ci/run`` does): loading with ``PCKP_NO_BUILD=1`` fails instead of
compiling, so a passing check means the first training step loads every extension built for the current sources.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from pckeypoints.ops.extensions import EXTENSIONS, extensions

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pckeypoints.ops.extensions", *args], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **env})


def test_setup_built_every_extension_so_none_compiles():
    done = _run("--check")
    assert done.returncode == 0, f"run `bash scripts/setup.sh` (or python -m pckeypoints.ops.extensions):\n" \
                                 f"{done.stdout}{done.stderr}"
    assert all(f"{name}: ok" in done.stdout for name in extensions())


def test_build_step_is_idempotent_and_compiles_nothing_when_built():
    done = _run(PCKP_NO_BUILD="1")  # a compile attempt would fail
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"extensions: {len(extensions())} already built, 0 built" in done.stdout


def test_a_missing_extension_is_refused_without_compiling(tmp_path):
    done = _run("--check", TORCH_EXTENSIONS_DIR=str(tmp_path))
    assert done.returncode == 1
    for name in extensions():
        assert f"{name}: not built" in done.stdout
        assert f"the extension {name} is not built for its current sources" in done.stderr
    assert not list(tmp_path.iterdir())  # no build folder was even created


def test_every_runtime_loader_is_built_by_the_set_up():
    """Each module that calls ``load_extension`` is the loader of a listed extension (a new extension must be
    listed in ``pckeypoints.ops.extensions.EXTENSIONS`` to be built ahead of time)."""
    callers = {".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
               for package in ("pckeypoints", "pointnet2") for path in (ROOT / package).rglob("*.py")
               if re.search(r"\bload_extension\(", path.read_text()) and path.name != "build.py"}
    assert callers == {module for module, _, _ in EXTENSIONS.values()}


def test_load_or_warn_is_the_one_fallback_of_the_auto_backends():
    import types
    import warnings

    from pointnet2.build import load_or_warn

    def broken():
        raise RuntimeError("no compiler")

    module = types.ModuleType("built")
    assert load_or_warn(lambda: module, "the X kernel", "using Y") is module
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_or_warn(broken, "the X kernel", "using Y", stacklevel=1) is None  # the warning points here
    assert [str(w.message) for w in caught] == ["building the X kernel failed (RuntimeError: no compiler); using Y"]
    assert caught[0].category is RuntimeWarning and caught[0].filename == __file__
