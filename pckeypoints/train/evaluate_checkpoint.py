"""The one path from a checkpoint to its metrics on a split, used by ``pckeypoints eval``, the experiments and
the shipping script; and :func:`calibrate_checkpoint`, the confidence temperature of ``pckeypoints calibrate``."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import DataLoader

from pckeypoints.train.checkpoint import load_checkpoint, read_checkpoint, resolve_checkpoint, save_checkpoint
from pckeypoints.config import TrainConfig
from pckeypoints.data import collate_keypoints
from pckeypoints.devices import resolve_device
from pckeypoints.errors import CheckpointError, PCKeypointsError
from pckeypoints.evaluation.inference import TemperatureFit, fit_confidence_temperature
from pckeypoints.metrics.results import EvaluationResult

__all__ = ["Evaluation", "calibrate_checkpoint", "evaluate_checkpoint"]


@dataclass
class Evaluation:
    """What :func:`evaluate_checkpoint` measured: the task's ``metrics`` (a result of
    :mod:`pckeypoints.metrics.results`) over ``num_models`` models, the
    ``config`` it ran with (the checkpoint's, with the overrides), the checkpoint's ``epoch`` and the report
    folder (``None`` if none)."""

    metrics: EvaluationResult
    num_models: int
    config: TrainConfig
    epoch: int
    out_dir: Path | None


def evaluate_checkpoint(checkpoint: str | Path, split: str = "test", device: str = "cpu",
                        out_dir: str | Path | None = None, figures=None, **overrides) -> Evaluation:
    """Score ``checkpoint`` (a run folder: its ``best.pt``, else ``last.pt``; a checkpoint file; or a shipped
    model's name) on ``split`` of its data.

    ``overrides`` change config fields by flat name (``max_models=20``, ``data_root=...``, ``readout="top"``;
    ``None`` values are ignored, :data:`~pckeypoints.config.UNSET` unsets a field). Without ``out_dir`` it runs
    the task's cheap :meth:`~pckeypoints.train.tasks.Task.evaluate`; with it the full
    :meth:`~pckeypoints.train.tasks.Task.report` (tables, records, and figures drawn with ``figures``, e.g. the
    :mod:`viz` module), written aside (``<out_dir>.partial-<pid>``) and moved into ``out_dir`` file by file
    once complete: a failed or interrupted report leaves the old one as it was, and a report folder (and
    parents) it created is removed again. The report's ``metrics.json`` names the checkpoint it scored
    (``"checkpoint"``: file, SHA-256, epoch); if that file changed meanwhile (``train --overwrite`` or a resumed
    run replaced it) no report is written: a one-line error."""
    device = resolve_device(device)
    source = resolve_checkpoint(checkpoint, prefer_best=True)
    digest = _sha256(source)
    task, model, config, state = load_checkpoint(source)
    if _sha256(source) != digest:
        raise CheckpointError(f"{source} changed while it was read (a run writing it?); evaluate it again")
    config = config.replace(**{k: v for k, v in overrides.items() if v is not None})
    dataset = task.dataset(config, split, train=False)
    if len(dataset) == 0:
        raise PCKeypointsError(f"the {split} split of {config.data.label} is empty")
    loader = DataLoader(dataset, config.optim.batch_size, shuffle=False, collate_fn=collate_keypoints)
    model = model.to(device)
    if out_dir is None:
        return Evaluation(task.evaluate(model, loader, config), len(dataset), config, state["epoch"], None)
    out_dir = Path(out_dir)
    missing = [p for p in [out_dir, *out_dir.parents] if not p.exists()]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # the folder the report goes into, held open: a run swapped in meanwhile (train --overwrite) never gets it
    parent = os.open(out_dir.parent, os.O_RDONLY)
    staging = out_dir.with_name(f"{out_dir.name}.partial-{os.getpid()}")
    try:
        metrics = task.report(model, loader, config, staging, figures=figures)
        _record_checkpoint(staging / "metrics.json", source, digest, state)
        if not source.is_file() or _sha256(source) != digest:
            raise PCKeypointsError(f"{source} changed while it was evaluated (the run was replaced or continued "
                                   f"meanwhile); no report written, evaluate it again")
        _move_into(parent, staging.name, out_dir.name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in missing:  # only those this call created, if empty
            try:
                folder.rmdir()
            except FileNotFoundError:
                continue
            except OSError:
                break
        raise
    finally:
        os.close(parent)
    return Evaluation(metrics, len(dataset), config, state["epoch"], out_dir)


def calibrate_checkpoint(checkpoint: str | Path, split: str = "val", device: str = "cpu", out: str | Path | None = None,
                         **overrides) -> tuple[Path, TemperatureFit]:
    """Fit the confidence temperature of ``checkpoint`` (resolved as in :func:`evaluate_checkpoint`) on ``split``
    (:func:`~pckeypoints.evaluation.inference.fit_confidence_temperature`, for its ``eval.readout``) and store it as the
    config's ``eval.temperature`` in ``out`` (default: the checkpoint file itself, rewritten atomically; the
    weights and training state unchanged). ``overrides`` as in :func:`evaluate_checkpoint`; they only select
    the data. Returns ``(the file written, the fit)``."""
    path = resolve_checkpoint(checkpoint, prefer_best=True)
    task, model, config, _ = load_checkpoint(path)
    if config.mode != "supervised":
        raise CheckpointError(f"{path} was written by the {config.mode} mode; only detectors have a confidence "
                              f"to calibrate")
    data_config = config.replace(**{k: v for k, v in overrides.items() if v is not None})
    dataset = task.dataset(data_config, split, train=False)
    if len(dataset) == 0:
        raise PCKeypointsError(f"the {split} split of {config.data.label} is empty")
    loader = DataLoader(dataset, config.optim.batch_size, shuffle=False, collate_fn=collate_keypoints)
    fit = fit_confidence_temperature(model.to(resolve_device(device)), loader, config.eval.readout)
    state, _ = read_checkpoint(path)
    state["config"] = config.replace(confidence_temperature=fit.temperature).to_dict()
    out = Path(out) if out is not None else path
    save_checkpoint({k: v for k, v in state.items() if k not in ("format", "format_version")}, out)
    return out, fit


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _record_checkpoint(metrics_file: Path, source: Path, digest: str, state: dict) -> None:
    """Add to the report's ``metrics.json`` the checkpoint it scored: its file, SHA-256 and epoch."""
    if not metrics_file.is_file():
        return
    report = json.loads(metrics_file.read_text())
    report["checkpoint"] = {"file": str(source.absolute()), "sha256": digest, "epoch": state.get("epoch")}
    metrics_file.write_text(json.dumps(report, indent=2))


def _move_into(parent: int, staging: str, out: str) -> None:
    """Move the files of the folder ``staging`` into the folder ``out`` (created if missing; its other files
    stay), both in the folder ``parent`` (a descriptor), each file atomically; remove ``staging``."""
    try:
        os.mkdir(out, dir_fd=parent)
    except FileExistsError:
        pass
    source = os.open(staging, os.O_RDONLY, dir_fd=parent)
    target = os.open(out, os.O_RDONLY, dir_fd=parent)
    try:
        for name in os.listdir(source):
            os.replace(name, name, src_dir_fd=source, dst_dir_fd=target)
    finally:
        os.close(source)
        os.close(target)
    os.rmdir(staging, dir_fd=parent)
