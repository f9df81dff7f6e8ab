"""The one path from a checkpoint to its metrics on a split, used by ``pckeypoints eval``, the experiments and
the shipping script; and :func:`calibrate_checkpoint`, the confidence temperature of ``pckeypoints calibrate``."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import DataLoader

from .checkpoint import load_checkpoint, read_checkpoint, resolve_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import collate_keypoints
from .devices import resolve_device
from .errors import CheckpointError, PCKeypointsError
from .evaluation import TemperatureFit, fit_confidence_temperature

__all__ = ["Evaluation", "calibrate_checkpoint", "evaluate_checkpoint"]


@dataclass
class Evaluation:
    """What :func:`evaluate_checkpoint` measured: the task's ``metrics`` over ``num_models`` models, the
    ``config`` it ran with (the checkpoint's, with the overrides), the checkpoint's ``epoch`` and the report
    folder (``None`` if none)."""

    metrics: dict[str, float]
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
    the task's cheap :meth:`~pckeypoints.tasks.Task.evaluate`; with it the full
    :meth:`~pckeypoints.tasks.Task.report` (tables, records, and figures drawn with ``figures``, e.g. the
    :mod:`viz` module), and a report folder it created is removed again if that fails."""
    device = resolve_device(device)
    task, model, config, state = load_checkpoint(checkpoint)
    config = config.replace(**{k: v for k, v in overrides.items() if v is not None})
    dataset = task.dataset(config, split, train=False)
    if len(dataset) == 0:
        raise PCKeypointsError(f"the {split} split of {config.data.label} is empty")
    loader = DataLoader(dataset, config.optim.batch_size, shuffle=False, collate_fn=collate_keypoints)
    model = model.to(device)
    if out_dir is None:
        return Evaluation(task.evaluate(model, loader, config), len(dataset), config, state["epoch"], None)
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    try:
        metrics = task.report(model, loader, config, out_dir, figures=figures)
    except BaseException:
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return Evaluation(metrics, len(dataset), config, state["epoch"], out_dir)


def calibrate_checkpoint(checkpoint: str | Path, split: str = "val", device: str = "cpu", out: str | Path | None = None,
                         **overrides) -> tuple[Path, TemperatureFit]:
    """Fit the confidence temperature of ``checkpoint`` (resolved as in :func:`evaluate_checkpoint`) on ``split``
    (:func:`~pckeypoints.evaluation.fit_confidence_temperature`, for its ``eval.readout``) and store it as the
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
