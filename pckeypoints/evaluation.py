"""Inference: a keypoint model on one cloud or over a dataset, in the dataset's own units.

:func:`collect_readouts` gathers, for each cloud and keypoint, the estimate of every
:mod:`~pckeypoints.readouts` readout, the map's peak probability, and for every readout the mixture's own
probability that the target lies within the PCK radius of it
(:func:`~pckeypoints.metrics.within_radius_probability`); :mod:`pckeypoints.metrics.summary` turns that
into numbers. :func:`predict_keypoints` does the same for one cloud of any size or position.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .config import TrainConfig
from .data import transforms
from .head import KeypointMaps
from .metrics.calibration import within_radius_probability
from .metrics.geodesic import snap_to_points
from .readouts import READOUTS, read_out
from .validation import check_cloud
from .errors import InputError

#: The PCK threshold of the tables, in dataset units (KeypointNet's PCK@0.01).
THRESHOLD = 0.01


@torch.no_grad()
def collect_readouts(model: nn.Module, loader: DataLoader, readouts: tuple[str, ...] = READOUTS,
                     threshold: float = THRESHOLD, progress: bool = False) -> dict:
    """Run ``model`` over ``loader``: a detector returning :class:`~pckeypoints.head.KeypointMaps`, or a
    model whose output has such ``maps``.

    Returns a dict, everything on the CPU and in the dataset's original coordinates:
    ``pred`` ``{readout: (M, K, 3)}``, ``within`` ``{readout: (M, K)}`` P(target within ``threshold`` of
    that estimate) under the map's mixture, ``peak (M, K)`` max π, ``target (M, K, 3)``, ``mask (M, K)``,
    ``points (M, N, 3)``, ``point_index (M, K)`` and ``model_id`` (M strings).
    """
    model.eval()
    device = next(model.parameters()).device
    parts: dict[str, list] = {k: [] for k in ("peak", "target", "mask", "points", "point_index")}
    pred: dict[str, list] = {r: [] for r in readouts}
    within: dict[str, list] = {r: [] for r in readouts}
    model_ids: list[str] = []
    for batch in tqdm(loader, desc="evaluate", leave=False, disable=not progress):
        output = model(batch["points"].to(device))
        maps = getattr(output, "maps", output)
        probs, basis = maps.probabilities, maps.basis
        scale, center = batch["scale"].double(), batch["center"].double()
        sigma = basis.bandwidth[..., 0].expand(probs.shape[0], -1)
        for readout in readouts:
            estimate = read_out(probs, basis, readout)
            pred[readout].append(estimate.cpu().double() * scale[:, None, None] + center[:, None])
            within[readout].append(within_radius_probability(estimate, probs, basis.pos, sigma,
                                                             threshold / scale.to(device)).cpu())
        parts["peak"].append(probs.amax(-1).cpu())
        parts["target"].append(batch["keypoints"].double() * scale[:, None, None] + center[:, None])
        parts["points"].append(batch["points"].double() * scale[:, None, None] + center[:, None])
        parts["mask"].append(batch["mask"])
        parts["point_index"].append(batch["point_index"])
        model_ids += batch["model_id"]
    if not model_ids:
        raise InputError("cannot evaluate on an empty split")
    return {**{k: torch.cat(v) for k, v in parts.items()},
            "pred": {r: torch.cat(v) for r, v in pred.items()},
            "within": {r: torch.cat(v) for r, v in within.items()},
            "model_id": model_ids}


def collect_predictions(model: nn.Module, loader: DataLoader, progress: bool = False) -> dict:
    """:func:`collect_readouts` of the expectation alone, flattened: ``pred (M, K, 3)`` soft-argmax keypoints,
    ``confidence (M, K)`` peak probabilities, ``target``, ``mask``, ``points``, ``point_index``, ``model_id``."""
    collected = collect_readouts(model, loader, ("expectation",), progress=progress)
    return {**collected, "pred": collected["pred"]["expectation"], "confidence": collected["peak"]}


def run_on_cloud(model: nn.Module, points: Tensor, config: TrainConfig) -> tuple[KeypointMaps, Tensor, Tensor]:
    """The maps of ``model`` (eval mode, no gradient) on one cloud ``points (N, 3)``, normalised as in
    training; returns ``(maps, center (3,), scale ())`` with original = normalised · scale + center."""
    check_cloud(points, min_points=config.model.knn_k + 1)
    # centre and scale in float64 (clouds far from the origin), then the float32 the model takes
    item = transforms.Normalize(dtype=torch.float32)({
        "points": points, "keypoints": torch.zeros(0, 3), "mask": torch.zeros(0, dtype=torch.bool),
        "point_index": torch.zeros(0, dtype=torch.long), "center": torch.zeros(3, dtype=torch.float64),
        "scale": torch.tensor(1.0, dtype=torch.float64)})
    device = next(model.parameters()).device
    with torch.no_grad():
        output = model.eval()(item["points"][None].to(device))
    return getattr(output, "maps", output), item["center"], item["scale"]


def predict_keypoints(model: nn.Module, points: Tensor, config: TrainConfig, threshold: float = THRESHOLD) -> dict:
    """Keypoints of one cloud ``points (N, 3)`` by ``config.eval.readout``, as a JSON-ready dict: ``keypoints``,
    ``semantic_ids`` (the data's id of each: those trained, ``model.semantic_ids``), ``readout``,
    ``confidence`` (the map's probability that the keypoint lies within ``confidence_radius`` of the estimate),
    ``confidence_radius`` (``threshold`` x the cloud's bounding-box diagonal, in its units: the PCK radius of a
    ShapeNet model, whose diagonal is 1, scaled with the cloud), ``peak`` (its largest point probability) and
    ``snapped`` (the nearest cloud points)."""
    points = torch.as_tensor(points, dtype=torch.float64)  # centred in float64: see run_on_cloud
    maps, center, scale = run_on_cloud(model, points, config)
    probs = maps.probabilities
    estimate = read_out(probs, maps.basis, config.eval.readout)
    sigma = maps.basis.bandwidth[..., 0]
    radius = threshold * float((points.amax(0) - points.amin(0)).norm())
    confidence = within_radius_probability(estimate, probs, maps.basis.pos, sigma, radius / float(scale))[0]
    keypoints = estimate[0].cpu().double() * scale + center
    return {
        "keypoints": keypoints.tolist(),
        "semantic_ids": config.model.semantic_ids or list(range(len(keypoints))),  # the trained ids, and only those
        "readout": config.eval.readout,
        "confidence_radius": radius,
        "confidence": confidence.cpu().tolist(),
        "peak": probs[0].amax(-1).cpu().tolist(),
        "snapped": points[snap_to_points(keypoints, points)].tolist(),
    }
