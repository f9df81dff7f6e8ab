"""Installable metadata: ranges (not pins) in pyproject.toml, optional extras with clear errors, setup.sh pins."""
from __future__ import annotations

import importlib
import re
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from pckeypoints.extras import EXTRAS, MissingExtraError, require

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirements(entries) -> dict[str, Requirement]:
    return {Requirement(entry).name: Requirement(entry) for entry in entries}


def test_dependencies_are_ranges_and_optional_parts_are_extras():
    base = _requirements(PROJECT["project"]["dependencies"])
    assert not [str(r) for r in base.values() if any(s.operator in ("==", "===") for s in r.specifier)]
    assert [s.operator for s in base["torch"].specifier] == [">="]  # installs into an existing torch
    extras = {name: _requirements(entries) for name, entries in PROJECT["project"]["optional-dependencies"].items()}
    assert set(extras["viz"]) == {"open3d"} and set(extras["cluster"]) == {"torch-cluster"}
    assert {"pytest", "hypothesis"} <= set(extras["test"])
    assert not {"open3d", "torch-cluster"} & set(base)
    assert {name: [m.replace("_", "-") for m in modules] for name, modules in EXTRAS.items()} == \
        {name: list(requirements) for name, requirements in extras.items() if name in EXTRAS}


def test_setup_script_pins_satisfy_the_declared_ranges():
    pins = dict(re.findall(r"([A-Za-z][\w-]*)==([\w.+]+)", (ROOT / "scripts" / "setup.sh").read_text()))
    declared = {**_requirements(PROJECT["project"]["dependencies"]),
                **{name: r for entries in PROJECT["project"]["optional-dependencies"].values()
                   for name, r in _requirements(entries).items()}}
    assert {"torch", "torch-geometric", "open3d", "torch-cluster"} <= set(pins)
    for name, pinned in pins.items():
        if name in declared:
            assert declared[name].specifier.contains(pinned, prereleases=True), (name, pinned)


def test_setup_script_builds_torch_cluster_only_when_asked():
    script = (ROOT / "scripts" / "setup.sh").read_text()
    assert 'if [ "$WITH_CLUSTER" = 1 ] && ! "$PY" -c \'import torch_cluster\'' in script
    assert "bash scripts/setup.sh --with-cluster" in (ROOT / ".ci" / "run").read_text()
    out = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh"), "--bogus"], capture_output=True, text=True)
    assert out.returncode == 2 and "unknown argument --bogus" in out.stderr


def test_installed_versions_satisfy_the_declared_ranges():
    for name, requirement in _requirements(PROJECT["project"]["dependencies"]).items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            pytest.fail(f"{name} is declared but not installed")
        assert requirement.specifier.contains(installed.split("+")[0], prereleases=True), (name, installed)


def test_pretrained_files_are_package_data():
    patterns = PROJECT["tool"]["setuptools"]["package-data"]["pckeypoints"]
    shipped = (ROOT / "pckeypoints" / "pretrained").iterdir()
    files = [p.relative_to(ROOT / "pckeypoints").as_posix() for p in shipped if p.suffix != ".py" and p.is_file()]
    assert "pretrained/registry.json" in files
    assert all(any(Path(f).match(pattern) for pattern in patterns) for f in files), files


def test_a_missing_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "open3d", None)  # as if Open3D were not installed
    with pytest.raises(MissingExtraError, match=r"rendering needs open3d, .* pip install 'pckeypoints\[viz\]'"):
        require("open3d", "rendering")
    monkeypatch.delitem(sys.modules, "viz.scene", raising=False)
    with pytest.raises(MissingExtraError, match=r"pckeypoints\[viz\]"):
        importlib.import_module("viz.scene")
    monkeypatch.setitem(sys.modules, "torch_cluster", None)
    with pytest.raises(MissingExtraError, match=r"pckeypoints\[cluster\]"):
        require("torch_cluster", "the torch-cluster comparison")
