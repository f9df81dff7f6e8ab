"""What the generic trainer (:mod:`pckeypoints.train.training`) needs to know about a kind of model.

A task owns everything that depends on the learning problem: its datasets, its model, its loss and its
metrics. The trainer owns the loop (optimiser, schedules, logging, checkpoints, DDP). Tasks are looked up
by ``config.mode`` with :func:`get_task`.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol, runtime_checkable

from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from pckeypoints.config import TrainConfig
from pckeypoints.errors import ConfigError
from pckeypoints.metrics.results import EvaluationResult


@runtime_checkable
class Task(Protocol):
    """A learning problem the trainer can run."""

    def dataset(self, config: TrainConfig, split: str | None, train: bool) -> Dataset:
        """Items of ``split`` (``"train"``, ``"val"``, ``"test"``, or ``None`` for every annotated model);
        ``train`` adds the augmentations.
        Items are dicts batched by :func:`pckeypoints.data.collate_keypoints`."""

    def configure(self, config: TrainConfig, dataset: Dataset) -> TrainConfig:
        """``config`` with the fields that depend on the training ``dataset`` filled in (e.g. the supervised
        ``num_keypoints``). Checkpoints store the result, so :meth:`build_model` needs nothing else."""

    def build_model(self, config: TrainConfig) -> nn.Module:
        """A freshly initialised model for a configured ``config`` (see :meth:`configure`)."""

    def loss(self, model: nn.Module, batch: dict, config: TrainConfig, tau: float) -> tuple[Tensor, dict[str, Tensor]]:
        """Scalar training loss of ``batch`` at the temperature ``tau`` and the scalars to log with it (detached
        0-dim tensors: the trainer reads them with the loss, one host synchronisation a step). ``model`` may be
        wrapped in ``DistributedDataParallel``: call it, don't reach into its attributes. A step runs no value
        checks (``validate=False``): the datasets check their clouds when they read them."""

    def evaluate(self, model: nn.Module, loader: DataLoader, config: TrainConfig) -> EvaluationResult:
        """Metrics of ``model`` (unwrapped, in eval mode) over ``loader``; their ``monitored`` score selects
        ``best.pt``."""

    def report(self, model: nn.Module, loader: DataLoader, config: TrainConfig, out_dir: Path,
               figures=None) -> EvaluationResult:
        """Like :meth:`evaluate`, and also write tables (markdown, JSON) into ``out_dir``, and figures (PNG)
        drawn with ``figures`` if given: the :mod:`viz` module or anything with its plotting functions (the
        library itself never imports viz)."""

    def summary(self, metrics: EvaluationResult, config: TrainConfig) -> str:
        """The headline numbers of :meth:`report`'s result as a short markdown table (with a line saying
        what they measure), printed first by ``pckeypoints eval`` and put atop ``metrics.md``."""

    def predict(self, model: nn.Module, points: Tensor, config: TrainConfig) -> dict:
        """Keypoints of one cloud ``points (N, 3)`` in its own coordinates, as a JSON-ready dict with
        ``keypoints`` ``[[x, y, z], ...]``, ``semantic_ids`` and ``confidence`` lists."""


#: mode -> "module:Class", imported on first use so that a task's dependencies load only when needed.
TASKS = {
    "supervised": "pckeypoints.train.supervised:SupervisedTask",
    "unsupervised": "pckeypoints.train.unsupervised:UnsupervisedTask",
}


def get_task(mode: str) -> Task:
    """A new task object for ``mode`` (a key of :data:`TASKS`)."""
    if mode not in TASKS:
        raise ConfigError(f"mode must be one of {tuple(TASKS)}, got {mode!r}")
    module, name = TASKS[mode].split(":")
    return getattr(importlib.import_module(module), name)()
