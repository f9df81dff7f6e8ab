"""Numbers from the predictions of :func:`pckeypoints.evaluation.inference.collect_predictions`.

Every readout is scored with two distances, named apart in every table:

- Euclidean: |estimate - target|, correct if ``d <= t`` (``pck@t/<readout>``).
- KeypointNet's benchmark metric: the estimate snapped to its nearest cloud point, geodesic distance to
  the target point on the cloud's symmetric 20-NN graph, correct if ``d < t`` (``geo_pck@t/<readout>``).

Calibration per readout: the mixture's probability that the target lies within ``t`` of the estimate
(``within``), scored by ECE and Brier against Euclidean correctness; and the paper's Pearson r between
the map's peak max π and correctness (binary, and continuous exp(-d²/2t²)).
"""
from __future__ import annotations

import torch
from torch import Tensor

from pckeypoints.metrics.calibration import brier_score, calibration_correlation, expected_calibration_error
from pckeypoints.metrics.geodesic import OFFICIAL_GRAPH_K, cloud_geodesics, snap_to_points
from pckeypoints.metrics.pck import CURVE_THRESHOLDS
from pckeypoints.metrics.results import COARSE_THRESHOLD, KeypointEvaluation, ReadoutScores

__all__ = ["COARSE_THRESHOLD", "distances", "is_correct", "keypoint_metrics", "keypoint_records", "readout_scores",
           "record_readouts", "records_metrics"]


def keypoint_records(predictions: dict, geodesic: bool = True, k: int = OFFICIAL_GRAPH_K) -> dict[str, Tensor]:
    """One entry per annotated keypoint, ``(M,)`` each: ``cloud`` (index into ``model_id``), ``keypoint``
    (semantic id), ``peak``, and for every readout r ``dist/r`` (Euclidean), ``geo/r`` (geodesic from the
    snapped estimate, if ``geodesic``), ``within/r`` (the calibrated confidence) and, if ``predictions`` hold it, ``within_raw/r`` (at T = 1)."""
    mask = predictions["mask"]
    cloud, keypoint = mask.nonzero(as_tuple=True)
    records = {"cloud": cloud, "keypoint": keypoint, "peak": predictions["peak"][mask].double()}
    for readout, pred in predictions["pred"].items():
        records[f"dist/{readout}"] = (pred - predictions["target"])[mask].norm(dim=-1)
        records[f"within/{readout}"] = predictions["within"][readout][mask]
        if "within_raw" in predictions:
            records[f"within_raw/{readout}"] = predictions["within_raw"][readout][mask]
    if geodesic:
        geo = {r: [] for r in predictions["pred"]}
        for b in range(len(mask)):
            present = mask[b]
            points = predictions["points"][b]
            distances = cloud_geodesics(points, predictions["point_index"][b][present], k)  # (K_b, N)
            rows = torch.arange(len(distances))
            for readout, pred in predictions["pred"].items():
                geo[readout].append(distances[rows, snap_to_points(pred[b][present], points)])
        records.update({f"geo/{r}": torch.cat(v) for r, v in geo.items()})
    return records


def distances(records: dict, readout: str, geodesic: bool = False):
    """Per keypoint of :func:`keypoint_records` (tensors or arrays): the Euclidean error of ``readout``, or the
    geodesic one of its snapped estimate."""
    return records[f"{'geo' if geodesic else 'dist'}/{readout}"]


def record_readouts(records: dict) -> list[str]:
    """The readouts that :func:`keypoint_records` scored."""
    return [name.split("/", 1)[1] for name in records if name.startswith("dist/")]


def is_correct(records: dict, readout: str, geodesic: bool = False, threshold: float = 0.01):
    """Per keypoint of :func:`keypoint_records` (tensors or arrays): Euclidean ``d <= t``, or KeypointNet's
    geodesic ``d < t``."""
    if geodesic:
        return distances(records, readout, True) < threshold
    return distances(records, readout) <= threshold


def readout_scores(records: dict[str, Tensor], readout: str, threshold: float = 0.01) -> ReadoutScores:
    """The :class:`~pckeypoints.metrics.results.ReadoutScores` of ``readout`` in :func:`keypoint_records`; its
    geodesic PCK where the records hold geodesics, its ECE at T = 1 where they hold ``within_raw``."""
    correct = is_correct(records, readout, threshold=threshold)
    within = records[f"within/{readout}"]
    raw = records.get(f"within_raw/{readout}")
    geodesic = f"geo/{readout}" in records
    return ReadoutScores(
        pck=float(correct.double().mean()),
        geo_pck=float(is_correct(records, readout, True, threshold).double().mean()) if geodesic else None,
        pck_coarse=float(is_correct(records, readout, threshold=COARSE_THRESHOLD).double().mean()),
        mean_error=float(distances(records, readout).mean()),
        mean_within=float(within.mean()),
        ece=expected_calibration_error(within, correct),
        ece_raw=None if raw is None else expected_calibration_error(raw, correct),
        brier=brier_score(within, correct),
        r_within=calibration_correlation(within, correct),
    )


def records_metrics(records: dict[str, Tensor], default: str = "expectation", threshold: float = 0.01
                    ) -> KeypointEvaluation:
    """The :class:`~pckeypoints.metrics.results.KeypointEvaluation` of :func:`keypoint_records`: every readout's
    :func:`readout_scores` and, for the ``default`` readout, the Euclidean PCK curve at
    :data:`~pckeypoints.metrics.pck.CURVE_THRESHOLDS`, the mean peak π and its Pearson r with correctness, binary
    and continuous (exp(-d²/2t²))."""
    dist = distances(records, default)
    return KeypointEvaluation(
        threshold=threshold,
        readout=default,
        readouts={readout: readout_scores(records, readout, threshold) for readout in record_readouts(records)},
        curve={round(float(c), 6): float((dist <= c).double().mean()) for c in CURVE_THRESHOLDS},
        mean_confidence=float(records["peak"].mean()),
        calibration_r=calibration_correlation(records["peak"], dist <= threshold),
        calibration_r_continuous=calibration_correlation(records["peak"], torch.exp(-dist.square() / (2 * threshold**2))),
    )


def keypoint_metrics(predictions: dict, default: str = "expectation", geodesic: bool = True) -> KeypointEvaluation:
    """:func:`records_metrics` of :func:`keypoint_records` of ``predictions``."""
    return records_metrics(keypoint_records(predictions, geodesic), default)
