"""Typed results of an evaluation, and their flat form in ``metrics.json`` and the training log.

- :class:`ReadoutScores`: one readout's PCK (Euclidean and geodesic), mean error and calibration.
- :class:`KeypointEvaluation`: a supervised evaluation, every readout's scores and the headline readout's PCK
  curve and confidence correlations (:func:`pckeypoints.metrics.summary.records_metrics`).
- :class:`AlignmentEvaluation`: an unsupervised evaluation, the reconstruction loss, DAS and keypoint mIoU.

Each has :attr:`monitored` (the score that selects ``best.pt``, higher is better) and ``to_dict()`` / ``from_dict()``
for the flat ``{name: number}`` form (``pck@0.01/<readout>``, ``ece/<readout>``, ``das_sm`` ...) of ``metrics.json``,
whose names are those of ``log.csv``'s columns.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Protocol

from pckeypoints.metrics.das import DualAlignment
from pckeypoints.metrics.pck import CURVE_THRESHOLDS

__all__ = ["AlignmentEvaluation", "EvaluationResult", "KeypointEvaluation", "ReadoutScores"]

#: The second, coarse PCK threshold reported per readout (``pck@0.05/<readout>``), dataset units.
COARSE_THRESHOLD = 0.05


class EvaluationResult(Protocol):
    """What a task's evaluation returns (:meth:`pckeypoints.train.tasks.Task.evaluate`)."""

    @property
    def monitored(self) -> float:
        """The score that selects ``best.pt`` (higher is better)."""

    @property
    def monitored_name(self) -> str:
        """Its flat name (a key of :meth:`to_dict`, a column of ``log.csv``)."""

    def to_dict(self) -> dict[str, float]:
        """The flat ``{name: number}`` form."""


@dataclass(frozen=True)
class ReadoutScores:
    """Scores of one readout's estimates at the evaluation's threshold ``t`` (dataset units).

    Attributes:
        pck: Euclidean PCK@t (``d <= t``).
        geo_pck: KeypointNet's official PCK@t (geodesic ``d < t`` from the estimate snapped to the cloud), or
            ``None`` where geodesics were not computed.
        pck_coarse: Euclidean PCK at :data:`COARSE_THRESHOLD`.
        mean_error: mean Euclidean error.
        mean_within: mean of the confidence P(target within t of the estimate).
        ece: its expected calibration error against Euclidean correctness.
        ece_raw: the ECE at temperature 1 (before calibration), or ``None`` where not collected.
        brier: its Brier score.
        r_within: its Pearson r with correctness.
    """

    pck: float
    geo_pck: float | None
    pck_coarse: float
    mean_error: float
    mean_within: float
    ece: float
    ece_raw: float | None
    brier: float
    r_within: float

    @staticmethod
    def flat_names(threshold: float) -> dict[str, str]:
        """Field -> the prefix of its flat name (``pck`` -> ``pck@0.01``; the flat name adds ``/<readout>``)."""
        names = {"pck": f"pck@{threshold:.2f}", "geo_pck": f"geo_pck@{threshold:.2f}",
                 "pck_coarse": f"pck@{COARSE_THRESHOLD:.2f}"}
        return {f.name: names.get(f.name, f.name) for f in fields(ReadoutScores)}


@dataclass(frozen=True)
class KeypointEvaluation:
    """A supervised evaluation at the PCK threshold ``threshold``: ``readouts`` (name -> :class:`ReadoutScores`)
    and, of the headline readout ``readout``, the Euclidean PCK ``curve`` (threshold -> PCK, at
    :data:`~pckeypoints.metrics.pck.CURVE_THRESHOLDS` rounded to 6 decimals), the mean peak π ``mean_confidence`` and its Pearson r with
    correctness, binary (``calibration_r``) and continuous exp(-d²/2t²) (``calibration_r_continuous``)."""

    threshold: float
    readout: str
    readouts: dict[str, ReadoutScores]
    curve: dict[float, float]
    mean_confidence: float
    calibration_r: float
    calibration_r_continuous: float

    @property
    def headline(self) -> ReadoutScores:
        """The scores of :attr:`readout`."""
        return self.readouts[self.readout]

    @property
    def monitored(self) -> float:
        """The headline readout's Euclidean PCK: what selects ``best.pt``."""
        return self.headline.pck

    @property
    def monitored_name(self) -> str:
        return f"pck@{self.threshold:.2f}"

    def to_dict(self) -> dict[str, float]:
        """The flat form: per readout ``<prefix>/<readout>`` (:meth:`ReadoutScores.flat_names`; ``None`` fields
        left out), the curve ``pck@0.00`` ... ``pck@0.10``, then ``geo_pck@t`` (if computed), ``mean_error``,
        ``mean_confidence``, ``calibration_r`` and ``calibration_r_continuous``."""
        names = ReadoutScores.flat_names(self.threshold)
        flat = {f"{names[name]}/{readout}": value for readout, scores in self.readouts.items()
                for name, value in vars(scores).items() if value is not None}
        flat.update({f"pck@{t:.2f}": value for t, value in self.curve.items()})
        if self.headline.geo_pck is not None:
            flat[f"geo_pck@{self.threshold:.2f}"] = self.headline.geo_pck
        return {**flat, "mean_error": self.headline.mean_error, "mean_confidence": self.mean_confidence,
                "calibration_r": self.calibration_r, "calibration_r_continuous": self.calibration_r_continuous}

    @classmethod
    def from_dict(cls, flat: dict[str, float], readout: str, threshold: float = 0.01) -> "KeypointEvaluation":
        """Inverse of :meth:`to_dict` (``readout``: the headline readout, which the flat form does not name)."""
        names = ReadoutScores.flat_names(threshold)

        def scores(name: str) -> ReadoutScores:  # a missing field that is never left out: KeyError naming it
            keys = {field: f"{prefix}/{name}" for field, prefix in names.items()}
            return ReadoutScores(**{field: flat.get(key) if field in ("geo_pck", "ece_raw") else flat[key]
                                    for field, key in keys.items()})

        readouts = {key.split("/", 1)[1]: scores(key.split("/", 1)[1]) for key in flat
                    if key.startswith(f"{names['pck']}/")}
        curve = {round(t, 6): flat[f"pck@{t:.2f}"] for t in CURVE_THRESHOLDS.tolist()}
        return cls(threshold, readout, readouts, curve, flat["mean_confidence"], flat["calibration_r"],
                   flat["calibration_r_continuous"])


@dataclass(frozen=True)
class AlignmentEvaluation:
    """An unsupervised evaluation: the mean soft-argmax ``reconstruction`` loss (no labels), the strict DAS
    ``das`` (pairs of distinct shapes), the keypoint mIoU ``miou`` at geodesic distance ``miou_threshold`` and,
    from a report, Skeleton Merger's DAS ``das_sm`` over its ``das_sm_shapes`` shapes (else ``None``)."""

    reconstruction: float
    das: DualAlignment
    miou: float
    miou_threshold: float
    das_sm: DualAlignment | None = None
    das_sm_shapes: int | None = None

    @property
    def monitored(self) -> float:
        """The negated reconstruction loss: what selects ``best.pt``."""
        return -self.reconstruction

    @property
    def monitored_name(self) -> str:
        return "neg_reconstruction"

    def to_dict(self) -> dict[str, float]:
        """The flat form: ``neg_reconstruction``, ``das`` (with ``das_forward``, ``das_backward``), ``das_sm...``,
        ``miou@<miou_threshold>`` and ``das_sm_shapes`` (those of a report only)."""
        flat = {"neg_reconstruction": self.monitored}
        for prefix, scores in (("das", self.das), ("das_sm", self.das_sm)):
            if scores is not None:
                flat.update({prefix: scores.das, f"{prefix}_forward": scores.forward,
                             f"{prefix}_backward": scores.backward})
        flat[f"miou@{self.miou_threshold}"] = self.miou
        if self.das_sm_shapes is not None:
            flat["das_sm_shapes"] = self.das_sm_shapes
        return flat

    @classmethod
    def from_dict(cls, flat: dict[str, float], miou_threshold: float = 0.1) -> "AlignmentEvaluation":
        """Inverse of :meth:`to_dict`."""
        def alignment(prefix):
            if prefix not in flat:
                return None
            return DualAlignment(flat[prefix], flat[f"{prefix}_forward"], flat[f"{prefix}_backward"])

        shapes = flat.get("das_sm_shapes")
        return cls(-flat["neg_reconstruction"], alignment("das"), flat[f"miou@{miou_threshold}"], miou_threshold,
                   alignment("das_sm"), None if shapes is None else int(shapes))
