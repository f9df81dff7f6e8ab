"""A time budget for :func:`~pckeypoints.train.training.train`: the run ends before the step that would pass it.

Training steps and data loading count; validation, checkpoints, logs and callbacks do not (the trainer runs the
clock only while it iterates over the training batches, and pauses it around callbacks). The clock is the
process's CPU time (``"cpu"``, :func:`time.process_time`: fair on a shared machine, one process) or the wall
clock (``"wall"``, :func:`time.perf_counter`: several processes). Under DistributedDataParallel rank 0's clock
decides for every rank.
"""
from __future__ import annotations

import contextlib
import math
import time

import torch
import torch.distributed as dist

from pckeypoints.distributed import World
from pckeypoints.errors import ConfigError

__all__ = ["CLOCKS", "TimeBudget"]

CLOCKS = ("cpu", "wall")


class TimeBudget:
    """``seconds`` of training on ``clock`` (``math.inf``: unlimited, the time is still kept).

    ``cpu_s`` and ``wall_s`` are the training time on both clocks so far (of this process), ``spent`` the
    budget's; ``cut`` says whether the budget ended the run. Each process of a run holds its own copy."""

    def __init__(self, seconds: float, clock: str = "cpu"):
        if not seconds > 0:
            raise ConfigError(f"a time budget must be positive seconds, got {seconds!r}")
        if clock not in CLOCKS:
            raise ConfigError(f"a time budget's clock must be one of {CLOCKS}, got {clock!r}")
        self.seconds, self.clock = float(seconds), clock
        self.cpu_s = self.wall_s = 0.0
        self.last_step = 0.0  # seconds of the last step on the budget's clock: the guess for the next one
        self.cut = False
        self._since: tuple[float, float] | None = None  # (CPU, wall) clock readings while running

    @property
    def running(self) -> bool:
        return self._since is not None

    @property
    def spent(self) -> float:
        """Seconds of the budget's clock counted so far (the running stretch included)."""
        cpu, wall = self.cpu_s, self.wall_s
        if self._since is not None:
            cpu, wall = cpu + time.process_time() - self._since[0], wall + time.perf_counter() - self._since[1]
        return cpu if self.clock == "cpu" else wall

    def start(self) -> None:
        """Run the clock (training batches from here on count)."""
        if self._since is None:
            self._since = (time.process_time(), time.perf_counter())

    def stop(self) -> None:
        """Stop the clock, adding the stretch since :meth:`start`."""
        if self._since is not None:
            self.cpu_s += time.process_time() - self._since[0]
            self.wall_s += time.perf_counter() - self._since[1]
            self._since = None

    @contextlib.contextmanager
    def paused(self):
        """Stop the clock for the ``with`` block (if it runs), then run it again."""
        running = self.running
        self.stop()
        try:
            yield
        finally:
            if running:
                self.start()

    @contextlib.contextmanager
    def step(self):
        """Time one training step on the budget's clock (the guess of the next step's time)."""
        now = time.process_time if self.clock == "cpu" else time.perf_counter
        t0 = now()
        yield
        self.last_step = now() - t0

    def allows_step(self, world: World, device: torch.device) -> bool:
        """Whether the next step fits the budget (its time guessed as the last step's); rank 0 decides for every
        rank (a broadcast on ``device``). Once it does not, :attr:`cut` is set."""
        if math.isinf(self.seconds):
            return True
        fits = torch.tensor(float(self.spent + self.last_step <= self.seconds), device=device)
        if world.world_size > 1:
            dist.broadcast(fits, 0)
        self.cut = not bool(fits)
        return not self.cut
