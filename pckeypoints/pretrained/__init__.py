"""Keypoint detectors trained by this project and shipped with the package.

``registry.json`` maps each name (``"bathtub"``) to its checkpoint file in this folder (weights and config
only) and its model card (markdown: training protocol, seeds, test PCK, date). Wherever a command takes a
checkpoint (``pckeypoints predict bathtub model.ply``, ``eval``, ``viz --model``), a name of the registry may
stand in for a run folder or checkpoint file; an existing path of the same name wins.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from ..errors import CheckpointError

__all__ = ["MAX_BYTES", "REGISTRY", "export_model", "model_card", "pretrained_models", "pretrained_path"]

#: ``{name: {"file": ..., "card": ..., "category": ..., ...}}``, one entry per shipped model.
REGISTRY = Path(__file__).with_name("registry.json")
#: Size limit of a shipped checkpoint file.
MAX_BYTES = 2**20


def pretrained_models() -> dict[str, dict]:
    """The registry: name -> entry with ``file`` and ``card`` (names of files in this folder), ``category``,
    ``test_pck`` (PCK@0.01 on the whole test split) and ``first20_pck`` (on its first 20 models)."""
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


def export_model(checkpoint: str | Path, dest: str | Path, max_bytes: int = MAX_BYTES) -> torch.dtype:
    """Write the weights and config of ``checkpoint`` (a run folder or checkpoint file) to ``dest``, without the
    training state and machine-specific paths; floating weights in float32, or float16 when float32 would exceed
    ``max_bytes``. Returns the dtype used; raises :class:`~pckeypoints.errors.CheckpointError` if neither fits."""
    from ..checkpoint import read_checkpoint, resolve_checkpoint, save_checkpoint

    checkpoint, config = read_checkpoint(resolve_checkpoint(checkpoint, prefer_best=True))
    config = dataclasses.replace(config, data_root=None, device="auto")
    dest = Path(dest)
    for dtype in (torch.float32, torch.float16):
        weights = {k: v.to(dtype) if v.is_floating_point() else v for k, v in checkpoint["model"].items()}
        save_checkpoint({"model": weights, "config": config.to_dict(), "epoch": checkpoint.get("epoch")}, dest)
        if dest.stat().st_size <= max_bytes:
            return dtype
    size = dest.stat().st_size
    dest.unlink()
    raise CheckpointError(f"{dest}: the weights take {size} bytes even in float16, over the limit of {max_bytes}")
