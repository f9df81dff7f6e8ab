"""Callbacks of :func:`~pckeypoints.train.training.train`: code that runs in rank 0 after each training step and
each validation, outside the run's time budget (:mod:`pckeypoints.train.budget`).

A callback subclasses :class:`Callback` and overrides what it needs; it sees the run through a
:class:`TrainSession`. After ``on_step`` the trainer puts the model back into training mode (``freeze_norm``
kept), so a callback may evaluate it. With ``run.procs > 1`` the callbacks (and the budget) are copied into the
training processes: they must pickle, and what they record stays in rank 0's process.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from pckeypoints.config import TrainConfig
from pckeypoints.distributed import World
from pckeypoints.metrics.results import EvaluationResult
from pckeypoints.train.budget import TimeBudget
from pckeypoints.train.tasks import Task

if TYPE_CHECKING:
    from pckeypoints.train.training import TrainState

__all__ = ["Callback", "TrainSession"]


class Callback:
    """Hooks of a training run; the defaults do nothing."""

    def on_step(self, session: TrainSession) -> None:
        """After each optimiser step (``session.step`` steps so far)."""

    def on_validation(self, session: TrainSession, result: EvaluationResult) -> None:
        """After each of the trainer's validations (``eval.every`` epochs and the last): the task's ``result``."""


@dataclass
class TrainSession:
    """One call of :func:`~pckeypoints.train.training.train` as its callbacks see it: the task, the config as the
    task configured it, the training state (``state.model``), this process's place, the time budget and the
    progress of this session (a resumed run starts a new one)."""

    task: Task
    config: TrainConfig
    state: TrainState
    world: World
    budget: TimeBudget
    callbacks: Sequence[Callback] = ()  # rank 0's; empty on the other ranks
    step: int = 0  # optimiser steps of this session
    epochs: float = 0.0  # epochs trained, a fraction while one runs (state.epoch: whole epochs)

    def notify(self, event: str, *args) -> None:
        """Call every callback's ``event`` hook with the budget's clock stopped."""
        with self.budget.paused():
            for callback in self.callbacks:
                getattr(callback, event)(self, *args)
