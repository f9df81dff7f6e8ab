"""Keypoint models trained by this project and shipped with the package: detectors and unsupervised ones.

``registry.json`` maps each name (``"bathtub"``, ``"bathtub-unsup"``) to its checkpoint file in this folder (weights
and config only) and its model card (markdown: training protocol, seeds, test metrics, date). Wherever a command takes a
checkpoint (``pckeypoints predict bathtub model.ply``, ``eval``, ``viz --model``), a name of the registry may
stand in for a run folder or checkpoint file; an existing path of the same name wins.
"""
from __future__ import annotations

import json
from pathlib import Path

from pckeypoints.errors import CheckpointError

__all__ = ["REGISTRY", "model_card", "pretrained_models", "pretrained_path"]

#: ``{name: {"file": ..., "card": ..., "category": ..., ...}}``, one entry per shipped model.
REGISTRY = Path(__file__).with_name("registry.json")


def pretrained_models() -> dict[str, dict]:
    """The registry: name -> entry with ``file`` and ``card`` (names of files in this folder), ``category`` and the
    test metrics: a detector's ``test_pck`` (PCK@0.01 on the whole test split) and ``first20_pck`` (on its first 20
    models), and once calibrated its ``confidence_temperature`` and the test ECE of its confidence at T = 1
    (``test_ece_before``) and at it (``test_ece``); an unsupervised model's strict DAS ``test_das`` and ``first20_das``, ``test_miou@0.1`` and ``das_sm``
    (Skeleton Merger's protocol, over ``das_sm_shapes`` shapes)."""
    return json.loads(REGISTRY.read_text())


def pretrained_path(name: str) -> Path | None:
    """The checkpoint file of the shipped model ``name``; ``None`` if no model has that name.

    Raises :class:`~pckeypoints.errors.CheckpointError` when the model is registered but its weights are not
    installed.
    """
    entry = pretrained_models().get(name)
    if entry is None:
        return None
    path = REGISTRY.parent / entry["file"]
    if not path.is_file():
        raise CheckpointError(f"the pretrained model {name!r} is registered but {path} is not installed")
    return path


def model_card(name: str) -> str:
    """The model card (markdown) of the shipped model ``name``."""
    models = pretrained_models()
    if name not in models:
        raise CheckpointError(f"no pretrained model {name!r}; available: {', '.join(sorted(models)) or 'none'}")
    return (REGISTRY.parent / models[name]["card"]).read_text()
