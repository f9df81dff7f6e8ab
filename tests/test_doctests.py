"""Runs the ``Examples:`` of the public modules' docstrings (doctest)."""
import doctest
import importlib

import pytest

PUBLIC = [
    "pckeypoints", "pckeypoints.core.basis", "pckeypoints.core.head", "pckeypoints.core.losses", "pckeypoints.core.argmax",
    "pckeypoints.core.schedules", "pckeypoints.ops.neighbors", "pckeypoints.ops.pyg", "pckeypoints.ops.pyg_backend",
    "pckeypoints.validation", "pckeypoints.models.detector",
]


@pytest.mark.parametrize("name", PUBLIC)
def test_docstring_examples_run(name):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
