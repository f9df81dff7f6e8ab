"""Temperature schedules for the Gumbel-softmax of sampling-argmax, stepped once per epoch.

``tau = schedule.value`` gives the temperature of the current epoch; ``schedule.step()`` moves to
the next. All anneal from ``start`` (epoch 0) to ``end`` (epoch ``epochs - 1`` and after), so
``make_schedule("linear", 2.0, 0.5, epochs=26)`` is the authors' public code's τ = max(0.5, 2 - 3·epoch/50)
(with ``gumbel="official"`` in :class:`~pckeypoints.core.losses.KeypointLoss`).
"""
from __future__ import annotations

import math

from pckeypoints.errors import InputError


class TemperatureSchedule:
    """Base class: subclasses define :meth:`at` for progress ``t`` in [0, 1]."""

    def __init__(self, start: float, end: float | None = None, epochs: int = 1):
        end = start if end is None else end
        if not (start > 0 and end > 0):
            raise InputError(f"temperatures must be > 0, got start={start}, end={end}")
        if epochs < 1:
            raise InputError(f"epochs must be >= 1, got {epochs}")
        self.start, self.end, self.epochs, self.epoch = float(start), float(end), epochs, 0

    def at(self, t: float) -> float:
        raise NotImplementedError

    @property
    def value(self) -> float:
        return self.at(min(self.epoch / max(self.epochs - 1, 1), 1.0))

    def step(self) -> None:
        self.epoch += 1

    def state_dict(self) -> dict:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])


class ConstantTau(TemperatureSchedule):
    def at(self, t: float) -> float:
        return self.start


class LinearTau(TemperatureSchedule):
    def at(self, t: float) -> float:
        return self.start + (self.end - self.start) * t


class CosineTau(TemperatureSchedule):
    def at(self, t: float) -> float:
        return self.end + 0.5 * (self.start - self.end) * (1 + math.cos(math.pi * t))


class ExponentialTau(TemperatureSchedule):
    """Geometric interpolation: the temperature falls by a constant factor each epoch."""

    def at(self, t: float) -> float:
        return self.start * (self.end / self.start) ** t


SCHEDULES = {"constant": ConstantTau, "linear": LinearTau, "cosine": CosineTau, "exponential": ExponentialTau}


def make_schedule(name: str, start: float, end: float | None = None, epochs: int = 1) -> TemperatureSchedule:
    """Schedule by name: ``constant``, ``linear``, ``cosine`` or ``exponential``.

    Examples:
        >>> schedule = make_schedule("exponential", start=1.0, end=0.01, epochs=3)
        >>> taus = []
        >>> for epoch in range(3):
        ...     taus.append(round(schedule.value, 6))  # loss(..., tau=schedule.value) in this epoch
        ...     schedule.step()
        >>> taus
        [1.0, 0.1, 0.01]
    """
    if name not in SCHEDULES:
        raise InputError(f"schedule must be one of {tuple(SCHEDULES)}, got {name!r}")
    return SCHEDULES[name](start, end, epochs)
