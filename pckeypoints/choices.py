"""The names a run may choose from, in one place: the core's registries use them and the configuration checks
against them without importing the core."""
from __future__ import annotations

__all__ = ["GUMBEL_FORMS", "METHODS", "METRICS", "READOUTS", "SAMPLERS", "SPLITS", "TAU_SCHEDULES"]

#: Samplers of :func:`~pckeypoints.core.argmax.sampling_argmax`.
SAMPLERS = ("auto", "naive", "gaussian", "fused")
#: Gumbel-softmax forms: the paper's (log π + g) / τ, the authors' code's τ·l + g.
GUMBEL_FORMS = ("paper", "official")
#: Distances of the losses.
METRICS = ("l1", "l2")
#: Supervised losses of :class:`~pckeypoints.core.losses.KeypointLoss`.
METHODS = ("soft", "soft+var", "soft+js", "discrete", "sampling", "sampling+js")
#: Readouts of a map (:mod:`~pckeypoints.core.readouts`).
READOUTS = ("expectation", "snapped", "top", "mode")
#: Gumbel-softmax temperature schedules (:mod:`~pckeypoints.core.schedules`).
TAU_SCHEDULES = ("constant", "linear", "cosine", "exponential")
#: Dataset splits.
SPLITS = ("train", "val", "test")
