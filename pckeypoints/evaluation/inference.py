"""Inference: a keypoint model on one cloud or over a dataset, in the dataset's own units.

:func:`evaluate_model` scores any model (this project's or a PyG one) on a dataset as ``pckeypoints eval``
does. :func:`collect_readouts` gathers, for each cloud and keypoint, the estimate of every
:mod:`~pckeypoints.core.readouts` readout, the map's peak probability, and for every readout the mixture's own
probability that the target lies within the PCK radius of it
(:func:`~pckeypoints.metrics.within_radius_probability`); :mod:`pckeypoints.metrics.summary` turns that
into numbers. :func:`predict_keypoints` does the same for one cloud of any size or position.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from pckeypoints.core.basis import PointBasis
from pckeypoints.config import EvalConfig, TrainConfig
from pckeypoints.data import transforms
from pckeypoints.errors import InputError
from pckeypoints.core.head import KeypointMaps, RaggedKeypointMaps
from pckeypoints.metrics.calibration import (expected_calibration_error, fit_temperature, mixture_within, within_radius_nll,
                                  within_radius_probability)
from pckeypoints.metrics.geodesic import snap_to_points
from pckeypoints.metrics.results import KeypointEvaluation
from pckeypoints.metrics.summary import keypoint_records, records_metrics
from pckeypoints.core.readouts import READOUTS, read_out
from pckeypoints.validation import check_cloud

__all__ = ["THRESHOLD", "ModelEvaluation", "TemperatureFit", "collect_predictions", "collect_readouts",
           "evaluate_model", "fit_confidence_temperature", "predict_keypoints", "run_on_cloud"]

#: The PCK threshold of the tables, in dataset units (KeypointNet's PCK@0.01).
THRESHOLD = 0.01


@dataclass
class ModelEvaluation:
    """What :func:`evaluate_model` measured: ``metrics`` (:func:`~pckeypoints.metrics.summary.records_metrics`),
    per-keypoint ``records`` (:func:`~pckeypoints.metrics.summary.keypoint_records`) and the ``predictions`` of
    :func:`collect_readouts` they came from, all in the dataset's units."""

    metrics: KeypointEvaluation
    records: dict[str, Tensor]
    predictions: dict


def evaluate_model(model: Callable, data, readout: str = EvalConfig.readout, batch_size: int = 8,
                   progress: bool = False, temperature: float = EvalConfig.temperature) -> ModelEvaluation:
    """The metrics and records of ``pckeypoints eval`` for any keypoint model, in the dataset's units.

    Args:
        model: called as ``model(points (B, N, 3))`` on dense batches and ``model(pos (ΣN, 3), batch (ΣN,))``
            on PyG batches; returns :class:`~pckeypoints.core.head.KeypointMaps`,
            :class:`~pckeypoints.core.head.RaggedKeypointMaps`, an object with such ``maps``, or
            ``(logits (B, K, N), basis)``. Wrap other
            signatures: ``lambda pos, batch: net(None, pos, batch)``. An ``nn.Module`` is put in eval mode.
        data: a loader of dict batches (:func:`~pckeypoints.data.collate_keypoints`) or of PyG batches
            (:class:`~pckeypoints.data.pyg.PyGKeypoints`), or such a dataset (batched by ``batch_size``).
            Items carry ``center`` and ``scale``: predictions and targets are mapped back to the dataset's
            own coordinates, where the PCK thresholds (KeypointNet's 0.01) are defined.
        readout: the headline readout of the ``pck@t`` curve and ``mean_error`` (every readout is scored;
            default: the config's ``eval.readout``).
        temperature: of the confidence (:func:`collect_readouts`; default 1, the uncalibrated map).
    """
    predictions = collect_readouts(model, _loader(data, batch_size), progress=progress, temperature=temperature)
    records = keypoint_records(predictions)
    return ModelEvaluation(records_metrics(records, readout), records, predictions)


@torch.no_grad()
def collect_readouts(model: Callable, loader, readouts: tuple[str, ...] = READOUTS,
                     threshold: float = THRESHOLD, progress: bool = False, temperature: float = 1.0) -> dict:
    """Run ``model`` over ``loader`` (both as in :func:`evaluate_model`).

    Returns a dict, everything on the CPU and in the dataset's original coordinates:
    ``pred`` ``{readout: (M, K, 3)}``, ``within`` ``{readout: (M, K)}`` P(target within ``threshold`` of
    that estimate) under the map's mixture with its components at ``temperature`` (the calibrated confidence;
    the estimates are read from the map itself), ``within_raw`` the same at T = 1, ``peak (M, K)`` max π,
    ``target (M, K, 3)``, ``mask (M, K)``, ``points (M, N, 3)`` (a list of ``(N_i, 3)`` where the clouds differ
    in size), ``point_index (M, K)`` and ``model_id`` (M strings).
    """
    parts: dict[str, list] = {k: [] for k in ("peak", "target", "mask", "point_index")}
    pred: dict[str, list] = {r: [] for r in readouts}
    within: dict[str, list] = {r: [] for r in readouts}
    within_raw: dict[str, list] = {r: [] for r in readouts}
    points: list[Tensor] = []
    model_ids: list[str] = []
    for probs, basis, batch in _maps(model, loader, progress):
        scale, center = batch["scale"].double().cpu(), batch["center"].double().cpu()
        sigma = basis.bandwidth[..., 0].expand(probs.shape[0], -1)
        for readout in readouts:
            estimate = read_out(probs, basis, readout)
            pred[readout].append(estimate.cpu().double() * scale[:, None, None] + center[:, None])
            radius = threshold / scale.to(probs.device)
            within_raw[readout].append(within_radius_probability(estimate, probs, basis.pos, sigma, radius).cpu())
            within[readout].append(within_raw[readout][-1] if temperature == 1 else within_radius_probability(
                estimate, probs, basis.pos, sigma, radius, temperature).cpu())
        parts["peak"].append(probs.amax(-1).cpu())
        parts["target"].append(batch["keypoints"].double().cpu() * scale[:, None, None] + center[:, None])
        points += [p.double().cpu() * s + c for p, s, c in zip(batch["points"], scale, center)]
        parts["mask"].append(batch["mask"].cpu())
        parts["point_index"].append(batch["point_index"].cpu())
        model_ids += list(batch["model_id"])
    if not model_ids:
        raise InputError("cannot evaluate on an empty split")
    same_size = len({len(p) for p in points}) == 1
    return {**{k: torch.cat(v) for k, v in parts.items()},
            "points": torch.stack(points) if same_size else points,
            "pred": {r: torch.cat(v) for r, v in pred.items()},
            "within": {r: torch.cat(v) for r, v in within.items()},
            "within_raw": {r: torch.cat(v) for r, v in within_raw.items()},
            "model_id": model_ids}


@dataclass
class TemperatureFit:
    """What :func:`fit_confidence_temperature` found: the ``temperature`` and, on the keypoints it was fitted to,
    the Bernoulli NLL and ECE of the within-radius probability at T = 1 (``*_before``) and at it (``*_after``)."""

    temperature: float
    num_keypoints: int
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float


@torch.no_grad()
def fit_confidence_temperature(model: Callable, loader, readout: str, threshold: float = THRESHOLD,
                               progress: bool = False) -> TemperatureFit:
    """The temperature T of the maps' components (:func:`~pckeypoints.metrics.calibration.fit_temperature`) whose
    within-radius probability best predicts, by Bernoulli NLL, whether each annotated target of ``loader`` lies
    within ``threshold`` (Euclidean, dataset units) of the ``readout`` estimate of its map."""
    rows: dict[str, list] = {k: [] for k in ("probs", "distance", "sigma")}
    radius, correct = [], []
    for probs, basis, batch in _maps(model, loader, progress):
        scale = batch["scale"].double().to(probs.device)
        estimate = read_out(probs, basis, readout).double()
        mask = batch["mask"].to(probs.device)
        error = (estimate - batch["keypoints"].double().to(probs.device)).norm(dim=-1) * scale[:, None]
        maps = {"probs": probs.double(), "distance": torch.cdist(estimate, basis.pos.double().expand(len(probs), -1, -1)),
                "sigma": basis.bandwidth[..., 0].double().expand(len(probs), -1)[:, None].expand_as(probs)}
        for key, value in maps.items():
            rows[key] += list(value[mask].cpu())  # (N,) per annotated keypoint
        radius.append((threshold / scale)[:, None].expand_as(mask)[mask].cpu())
        correct.append((error <= threshold)[mask].cpu())
    if not correct:
        raise InputError("cannot fit a temperature on an empty split")
    width = max(len(row) for row in rows["probs"])  # clouds of different sizes: padded with π = 0
    probs, distance, sigma = (torch.stack([nn.functional.pad(row, (0, width - len(row)), value=1.0 if k == "sigma" else 0.0)
                                           for row in rows[k]]) for k in ("probs", "distance", "sigma"))
    radius, correct = torch.cat(radius), torch.cat(correct)
    temperature = fit_temperature(probs, distance, sigma, radius, correct)
    scores = {t: (within_radius_nll(t, probs, distance, sigma, radius, correct),
                  expected_calibration_error(mixture_within(t, probs, distance, sigma, radius), correct))
              for t in (1.0, temperature)}
    return TemperatureFit(temperature, len(correct), scores[1.0][0], scores[temperature][0], scores[1.0][1],
                          scores[temperature][1])


def _maps(model: Callable, loader, progress: bool):
    """``(probabilities (B, K, N), basis, batch fields)`` of ``model`` on each batch of ``loader``."""
    device = None  # a plain callable gets the batches where the loader puts them
    if isinstance(model, nn.Module):
        device = next(model.eval().parameters(), torch.empty(0)).device
    for batch in tqdm(loader, desc="evaluate", leave=False, disable=not progress):
        inputs, batch = _model_inputs(batch)
        yield *_dense_maps(model(*(x.to(device) if device else x for x in inputs))), batch


def _loader(data, batch_size: int):
    """``data`` itself if it is a loader, else a loader of the dataset ``data`` (PyG's for PyG datasets)."""
    if isinstance(data, DataLoader) or not isinstance(data, Dataset):
        return data
    if "torch_geometric" in sys.modules and isinstance(data, sys.modules["torch_geometric"].data.Dataset):
        from torch_geometric.loader import DataLoader as PyGLoader

        return PyGLoader(data, batch_size)
    from pckeypoints.data import collate_keypoints

    return DataLoader(data, batch_size, collate_fn=collate_keypoints)


def _model_inputs(batch) -> tuple[tuple[Tensor, ...], dict]:
    """The model's arguments for ``batch`` and its fields as a dict of dense batches (``points`` per cloud)."""
    if isinstance(batch, dict):
        return (batch["points"],), batch
    if not all(hasattr(batch, name) for name in ("pos", "batch", "y", "mask")):
        raise InputError(f"cannot evaluate on a batch of type {type(batch).__name__}: need dicts of "
                         f"collate_keypoints or PyG batches of PyGKeypoints (pos, batch, y, mask, ...)")
    counts = torch.bincount(batch.batch, minlength=batch.num_graphs).tolist()
    fields = {"points": batch.pos.split(counts), "keypoints": batch.y, "mask": batch.mask,
              "point_index": batch.point_index, "center": batch.center, "scale": batch.scale,
              "model_id": batch.model_id}
    return (batch.pos, batch.batch), fields


def _dense_maps(output) -> tuple[Tensor, PointBasis]:
    """``(probabilities (B, K, N), basis)`` of a model's output (see :func:`evaluate_model`)."""
    output = getattr(output, "maps", output)
    if isinstance(output, RaggedKeypointMaps):
        output = output.to_dense()
    if isinstance(output, KeypointMaps):
        return output.probabilities, output.basis
    if isinstance(output, tuple) and len(output) == 2 and isinstance(output[1], PointBasis) \
            and output[0].ndim == 3:
        return output[1].probabilities(output[0]), output[1]
    raise InputError(f"the model must return KeypointMaps, RaggedKeypointMaps or (logits (B, K, N), basis), "
                     f"got {type(output).__name__}")


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
    ``confidence`` (the map's probability that the keypoint lies within ``confidence_radius`` of the estimate, at
    ``config.eval.temperature``: see :func:`~pckeypoints.metrics.calibration.fit_temperature`),
    ``confidence_radius`` (``threshold`` x the cloud's bounding-box diagonal, in its units: the PCK radius of a
    ShapeNet model, whose diagonal is 1, scaled with the cloud), ``peak`` (its largest point probability) and
    ``snapped`` (the nearest cloud points)."""
    points = torch.as_tensor(points, dtype=torch.float64)  # centred in float64: see run_on_cloud
    maps, center, scale = run_on_cloud(model, points, config)
    probs = maps.probabilities
    estimate = read_out(probs, maps.basis, config.eval.readout)
    sigma = maps.basis.bandwidth[..., 0]
    radius = threshold * float((points.amax(0) - points.amin(0)).norm())
    confidence = within_radius_probability(estimate, probs, maps.basis.pos, sigma, radius / float(scale),
                                           config.eval.temperature)[0]
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
