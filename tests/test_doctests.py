"""Runs the ``Examples:`` of the public modules' docstrings (doctest)."""
import doctest
import importlib

import pytest

PUBLIC = [
    "pckeypoints", "pckeypoints.basis", "pckeypoints.head", "pckeypoints.losses", "pckeypoints.argmax",
    "pckeypoints.schedules", "pckeypoints.neighbors", "pckeypoints.pyg_ops", "pckeypoints.pyg_backend",
    "pckeypoints.validation", "pckeypoints.models.detector",
]


@pytest.mark.parametrize("name", PUBLIC)
def test_docstring_examples_run(name):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
