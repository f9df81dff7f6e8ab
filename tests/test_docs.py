"""The documentation's generated pages (docs/_ext/pckp_docs.py), without building it: the configuration reference
lists every TrainConfig field with its default and flag; the evidence pages and the README's links exist; the docs
tools' pins satisfy the [docs] extra. ``bash scripts/docs.sh`` builds the whole site (in .ci/run)."""
from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from docs._ext import pckp_docs
from pckeypoints import config as c

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reference() -> str:
    return pckp_docs.config_reference()


def _sections(reference: str) -> dict[str, str]:
    """``{heading: text under it}`` of the reference's ``###``/``####`` headings."""
    parts = re.split(r"^#{3,4} (.+)$", reference, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def _row(text: str, key: str) -> list[str]:
    rows = [line for line in text.splitlines() if line.startswith(f"| `{key}` |")]
    assert len(rows) == 1, (key, rows)
    return [cell.strip() for cell in rows[0].strip("|").split(" | ")]


def test_the_config_reference_lists_every_field_with_its_default(reference):
    sections = _sections(reference)
    assert _row(sections["`mode`"], "mode")[3] == '`"supervised"`'
    documented = 1
    for name, cls in c.SECTIONS.items():
        classes = [c.SupervisedLoss, c.UnsupervisedLoss] if name == "loss" else [cls]
        for kind in classes:
            for f in dataclasses.fields(kind):
                inherited = name == "loss" and f.name in {g.name for g in dataclasses.fields(c._LossBase)}
                mode = "supervised" if kind is c.SupervisedLoss else "unsupervised"
                heading = f"`[{name}]`" if name != "loss" or inherited else f"`[loss]` of {mode} runs"
                key, flag, _, default, _ = _row(sections[heading], f.name)
                default = default.strip("`").strip('"')
                expected = f.metadata.get("default_text", f.default)
                expected = {None: "none", True: "true", False: "false"}.get(expected, expected) \
                    if not isinstance(expected, (int, float)) or isinstance(expected, bool) else expected
                assert default == str(expected), (name, f.name, default, expected)
                documented += not (name == "loss" and inherited and kind is c.UnsupervisedLoss)
    every = {(s, f.name) for s, k in c.SECTIONS.items() if s != "loss" for f in dataclasses.fields(k)}
    every |= {("loss", f.name) for k in c.LOSSES.values() for f in dataclasses.fields(k)}
    assert documented == len(every) + 1  # + mode


def test_every_command_line_flag_is_in_the_config_reference(reference):
    for f in c.config_fields():
        assert f"`--{f.name.replace('_', '-')}`" in reference, f.name


def test_the_config_reference_takes_comments_and_choices_from_the_source(reference):
    sections = _sections(reference)
    assert "DataLoader worker processes" in _row(sections["`[data]`"], "num_workers")[4]  # a trailing comment
    assert "mean distance to the knn_k nearest" in _row(sections["`[model]`"], "knn_factor")[4]  # comment above
    assert "sampling-argmax samples per map" in _row(sections["`[loss]`"], "num_samples")[4]  # inherited field
    assert "one of `expectation`, `snapped`, `top`, `mode`" in _row(sections["`[eval]`"], "readout")[4]
    assert "unsupervised: one of `soft`, `sampling`" in _row(sections["`[loss]`"], "method")[4]


def test_evidence_pages_include_existing_files():
    pages = pckp_docs.evidence_pages()
    files = pckp_docs.evidence_files()
    assert Path("experiments/results/evidence/table6.md") in files and Path("pckeypoints/pretrained/bed.md") in files
    for path in files:
        page = pages[pckp_docs.evidence_page_name(path)]
        included = (ROOT / "docs" / pckp_docs.evidence_page_name(path)).parent / page.split()[1]
        assert included.resolve() == (ROOT / path).resolve() and (ROOT / path).is_file(), path  # no build needed


def test_the_readmes_links_exist():
    text = (ROOT / "README.md").read_text()
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text) if not t.startswith(("http", "#"))]
    assert any(t.startswith("docs/") for t in targets)
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing


def test_the_docs_pins_satisfy_the_docs_extra():
    declared = {Requirement(r).name: Requirement(r)
                for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["docs"]}
    pins = dict(re.findall(r"([A-Za-z][\w-]*)==([\w.]+)", (ROOT / "scripts" / "docs.sh").read_text()))
    assert set(pins) == set(declared)
    for name, pinned in pins.items():
        assert declared[name].specifier.contains(pinned), (name, pinned)
