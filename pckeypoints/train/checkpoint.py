"""Checkpoint files: the one writer (training) and the one loader (every command).

A checkpoint is a ``torch.save`` dict with the model weights (``model``), the run's
:class:`~pckeypoints.config.TrainConfig` as a dict (``config``), the training state (``optimizer``,
``lr_schedule``, ``tau_schedule``, ``epoch``, ``best``) and the format marker ``format`` /
``format_version``. Files are loaded
with ``weights_only=True``: a checkpoint holds tensors and plain values only, never code.

Every way a file can be unusable (missing, empty, truncated, not a checkpoint, from a newer version,
unknown config keys, weights of another model) raises one :class:`~pckeypoints.errors.CheckpointError`
naming the file and the problem.
"""
from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import torch
from torch import nn

from pckeypoints.config import MODES, TrainConfig
from pckeypoints.errors import CheckpointError, ConfigError, write_error
from pckeypoints.train.tasks import Task, get_task

__all__ = ["FORMAT_VERSION", "MAX_EXPORT_BYTES", "export_model", "load_checkpoint", "read_checkpoint",
           "resolve_checkpoint", "save_checkpoint"]

FORMAT = "pckeypoints"
#: Version of the checkpoint layout written by :func:`save_checkpoint` (2: the nested config), the one read.
FORMAT_VERSION = 2
#: Size limit of an exported (shipped) checkpoint file.
MAX_EXPORT_BYTES = 2**20
#: What :func:`read_checkpoint` needs to continue training from a checkpoint.
TRAINING_STATE = ("optimizer", "lr_schedule", "tau_schedule", "epoch", "best")


def resolve_checkpoint(path: str | Path, prefer_best: bool = False) -> Path:
    """A checkpoint file: ``path`` itself, ``best.pt``/``last.pt`` inside the run folder ``path``, or, when no
    such file or folder exists, the shipped model of that name (:mod:`pckeypoints.pretrained`)."""
    from pckeypoints.pretrained import pretrained_path

    path = Path(path)
    shipped = pretrained_path(str(path)) if len(path.parts) == 1 else None
    if shipped is not None and path.exists():
        if path.is_dir() and not any((path / name).is_file() for name in ("best.pt", "last.pt")):
            path = shipped  # a folder that is no run does not hide the shipped model
        else:
            warnings.warn(f"the local {path} hides the shipped model {path.name!r}; using the local one "
                          f"(the shipped one is {shipped})")
    elif shipped is not None:
        path = shipped
    if path.is_dir():
        names = ("best.pt", "last.pt") if prefer_best else ("last.pt",)
        for name in names:
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"run folder {path} has no {' or '.join(names)}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write ``state`` (with the format marker) to ``path`` atomically: a kill leaves either the old file or
    the new one, never a partial one (at worst a stale ``<name>.tmp`` beside it). A failed write (disk full,
    read-only folder) raises a :class:`~pckeypoints.errors.WriteError` naming ``path``."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    try:
        torch.save({**state, "format": FORMAT, "format_version": FORMAT_VERSION}, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch.save reports failed writes as RuntimeError
        tmp.unlink(missing_ok=True)
        raise write_error(path, err, "checkpoint") from None


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", prefer_best: bool = False,
                    training_state: bool = False) -> tuple[dict, TrainConfig]:
    """``(checkpoint dict, its config)`` of a checkpoint file or run folder (see :func:`resolve_checkpoint`),
    checked: a pckeypoints checkpoint of a known format version with a valid config and (with
    ``training_state``) everything needed to resume training."""
    path = resolve_checkpoint(path, prefer_best)
    checkpoint = _load(path, map_location)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict) \
            or not isinstance(checkpoint.get("config"), dict):
        raise CheckpointError(f"{path} is not a pckeypoints checkpoint (no model weights and config)")
    if checkpoint.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pckeypoints checkpoint (format {checkpoint.get('format')!r})")
    version = checkpoint.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{path} is damaged: format_version {version!r}")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by {'a newer' if version > FORMAT_VERSION else 'an older'} "
                              f"pckeypoints (checkpoint format {version}; this version reads format {FORMAT_VERSION})")
    if not all(isinstance(k, str) and torch.is_tensor(v) for k, v in checkpoint["model"].items()):
        raise CheckpointError(f"{path} is damaged: its model weights are not all tensors")
    for name, value in checkpoint["model"].items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise CheckpointError(f"{path} is damaged: weight {name} holds NaN or infinite values")
    config = _config(checkpoint["config"], path)
    if training_state:
        missing = [key for key in TRAINING_STATE if key not in checkpoint]
        if missing:
            raise CheckpointError(f"{path} cannot resume training: it has no {', '.join(missing)}")
        epochs = config.optim.epochs
        if not isinstance(checkpoint["epoch"], int) or not 0 <= checkpoint["epoch"] <= epochs:
            raise CheckpointError(f"{path} is damaged: epoch {checkpoint['epoch']!r} of {epochs}")
    return checkpoint, config


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    mode: str | None = None) -> tuple[Task, nn.Module, TrainConfig, dict]:
    """``(task, model in eval mode, config, checkpoint dict)`` from a checkpoint file or a run folder (its
    ``best.pt`` if present, else ``last.pt``). ``mode`` requires a checkpoint of that training mode."""
    path = resolve_checkpoint(path, prefer_best=True)
    checkpoint, config = read_checkpoint(path, map_location)
    if mode is not None and config.mode != mode:
        raise CheckpointError(f"{path} was written by the {config.mode} mode; a {mode} checkpoint is needed")
    task = get_task(config.mode)
    model = _build(task, config, path)
    _load_weights(model, checkpoint["model"], config, path)
    return task, model.eval(), config, checkpoint


def _load(path: Path, map_location) -> object:
    with open(path, "rb") as f:
        magic = f.read(4)
    if not magic:
        raise CheckpointError(f"{path} is empty (0 bytes), not a checkpoint")
    try:
        with warnings.catch_warnings():  # e.g. about the pickle protocol of a foreign file
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch.load raises many types for damaged files  # noqa: BLE001
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        written_by_torch = magic == b"PK\x03\x04" or magic[:1] == b"\x80"  # zip archive or legacy pickle
        if isinstance(err, pickle.UnpicklingError) and "weights_only" in str(err).lower() and written_by_torch:
            raise CheckpointError(f"{path} is not a pckeypoints checkpoint (it holds Python objects, "
                                  f"not only tensors and plain values)") from None
        if magic == b"PK\x03\x04":
            raise CheckpointError(f"{path} is truncated or damaged ({reason})") from None
        raise CheckpointError(f"{path} is not a pckeypoints checkpoint (not a file written by torch.save)") from None


def _config(values: dict, path: Path) -> TrainConfig:
    try:
        return TrainConfig.from_dict(values)
    except ConfigError as err:
        raise CheckpointError(f"{path} has a config this version of pckeypoints cannot use: {err}") from None


def _build(task: Task, config: TrainConfig, path: Path) -> nn.Module:
    try:
        return task.build_model(config)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: cannot build the {config.mode} model of its config ({err})") from None


def _load_weights(model: nn.Module, weights: dict, config: TrainConfig, path: Path) -> None:
    """Load ``weights`` into ``model`` or raise one line saying how they differ (and which mode's model
    they fit, if another one)."""
    expected = model.state_dict()
    if weights.keys() == expected.keys():
        try:  # modules convert the layouts of older versions in their load hooks
            model.load_state_dict(weights)
            return
        except RuntimeError as err:
            for name, value in weights.items():
                if value.shape != expected[name].shape:
                    raise CheckpointError(f"{path} is damaged or foreign: weight {name} has shape "
                                          f"{tuple(value.shape)}, the model of its config expects "
                                          f"{tuple(expected[name].shape)}") from None
            raise CheckpointError(f"{path}: its weights do not load ({err})") from None
    for other in MODES:
        if other != config.mode and _weights_fit(other, config, weights):
            raise CheckpointError(f"{path} holds weights written by the {other} mode, but its config says "
                                  f"{config.mode}")
    missing, unexpected = sorted(expected.keys() - weights.keys()), sorted(weights.keys() - expected.keys())
    raise CheckpointError(f"{path}: its weights do not fit the {config.mode} model of its config "
                          f"({len(missing)} missing, e.g. {missing[:1]}; {len(unexpected)} unexpected, e.g. "
                          f"{unexpected[:1]})")


def _weights_fit(mode: str, config: TrainConfig, weights: dict) -> bool:
    try:
        other = get_task(mode).build_model(TrainConfig.from_dict({**config.to_dict(), "mode": mode, "loss": {}}))
        return other.state_dict().keys() == weights.keys()
    except Exception:  # noqa: BLE001 - the other mode's model may not be buildable from this config
        return False


def export_model(checkpoint: str | Path, dest: str | Path, max_bytes: int = MAX_EXPORT_BYTES) -> torch.dtype:
    """Write the weights and config of ``checkpoint`` (a run folder or checkpoint file) to ``dest``, without the
    training state and machine-specific paths; floating weights in float32, or float16 when float32 would exceed
    ``max_bytes``. Returns the dtype used; raises :class:`~pckeypoints.errors.CheckpointError` if neither fits."""
    checkpoint, config = read_checkpoint(resolve_checkpoint(checkpoint, prefer_best=True))
    config = config.replace(data_root=None, device="auto")
    dest = Path(dest)
    for dtype in (torch.float32, torch.float16):
        weights = {k: v.to(dtype) if v.is_floating_point() else v for k, v in checkpoint["model"].items()}
        save_checkpoint({"model": weights, "config": config.to_dict(), "epoch": checkpoint.get("epoch")}, dest)
        if dest.stat().st_size <= max_bytes:
            return dtype
    size = dest.stat().st_size
    dest.unlink()
    raise CheckpointError(f"{dest}: the weights take {size} bytes even in float16, over the limit of {max_bytes}")
