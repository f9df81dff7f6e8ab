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

__all__ = ["COARSE_THRESHOLD", "is_correct", "keypoint_metrics", "keypoint_records", "records_metrics"]

#: The second, coarse PCK threshold reported per readout (``pck@0.05/<readout>``), dataset units.
COARSE_THRESHOLD = 0.05


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


def is_correct(records: dict, readout: str, geodesic: bool = False, threshold: float = 0.01):
    """Per keypoint of :func:`keypoint_records` (tensors or arrays): Euclidean ``d <= t``, or KeypointNet's
    geodesic ``d < t``."""
    if geodesic:
        return records[f"geo/{readout}"] < threshold
    return records[f"dist/{readout}"] <= threshold


def records_metrics(records: dict[str, Tensor], default: str = "expectation", threshold: float = 0.01) -> dict[str, float]:
    """Metrics of :func:`keypoint_records`: per readout ``pck@t/r``, ``geo_pck@t/r``, ``pck@0.05/r``
    (:data:`COARSE_THRESHOLD`), ``mean_error/r``, and of its
    within-radius probability ``mean_within/r``, ``ece/r``, ``brier/r`` and ``r_within/r`` (Pearson r with
    correctness), and ``ece_raw/r`` of it at T = 1 (before calibration) where the records hold it; for the ``default`` readout the Euclidean PCK curve ``pck@0.00`` ... ``pck@0.10``,
    ``geo_pck@t``, ``mean_error``, the mean peak π ``mean_confidence`` and its Pearson r with correctness,
    ``calibration_r`` (binary) and ``calibration_r_continuous`` (exp(-d²/2t²))."""
    readouts = [name.split("/", 1)[1] for name in records if name.startswith("dist/")]
    t = f"{threshold:.2f}"
    metrics: dict[str, float] = {}
    for readout in readouts:
        correct = is_correct(records, readout, threshold=threshold)
        metrics[f"pck@{t}/{readout}"] = float(correct.double().mean())
        if f"geo/{readout}" in records:
            metrics[f"geo_pck@{t}/{readout}"] = float(is_correct(records, readout, True, threshold).double().mean())
        coarse = is_correct(records, readout, threshold=COARSE_THRESHOLD)
        metrics[f"pck@{COARSE_THRESHOLD:.2f}/{readout}"] = float(coarse.double().mean())
        metrics[f"mean_error/{readout}"] = float(records[f"dist/{readout}"].mean())
        within = records[f"within/{readout}"]
        metrics[f"mean_within/{readout}"] = float(within.mean())
        metrics[f"ece/{readout}"] = expected_calibration_error(within, correct)
        if f"within_raw/{readout}" in records:
            metrics[f"ece_raw/{readout}"] = expected_calibration_error(records[f"within_raw/{readout}"], correct)
        metrics[f"brier/{readout}"] = brier_score(within, correct)
        metrics[f"r_within/{readout}"] = calibration_correlation(within, correct)
    dist = records[f"dist/{default}"]
    metrics.update({f"pck@{c:.2f}": float((dist <= c).double().mean()) for c in CURVE_THRESHOLDS})
    if f"geo/{default}" in records:
        metrics[f"geo_pck@{t}"] = metrics[f"geo_pck@{t}/{default}"]
    metrics.update({
        "mean_error": float(dist.mean()),
        "mean_confidence": float(records["peak"].mean()),
        "calibration_r": calibration_correlation(records["peak"], dist <= threshold),
        "calibration_r_continuous": calibration_correlation(records["peak"], torch.exp(-dist.square() / (2 * threshold**2))),
    })
    return metrics


def keypoint_metrics(predictions: dict, default: str = "expectation", geodesic: bool = True) -> dict[str, float]:
    """:func:`records_metrics` of :func:`keypoint_records` of ``predictions``."""
    return records_metrics(keypoint_records(predictions, geodesic), default)
