"""Supervised keypoints: one :class:`~pckeypoints.models.KeypointDetector` per KeypointNet category.

The network sees normalised clouds (unit radius); predictions are mapped back with each item's
``center`` and ``scale`` so that every metric is in the dataset's own units, where KeypointNet's
PCK@0.01 threshold is defined. The predicted keypoint is ``config.readout`` of its map
(:mod:`pckeypoints.readouts`); its confidence is the map's probability that the keypoint lies within
PCK@0.01 of it (:func:`~pckeypoints.metrics.within_radius_probability`).
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from .data import KeypointFolder, KeypointNet, transforms
from .head import KeypointMaps
from .losses import KeypointLoss
from .evaluation import THRESHOLD, collect_readouts
from .metrics import snap_to_points, within_radius_probability
from .metrics.summary import CURVE_THRESHOLDS, keypoint_records, records_metrics
from .models import KeypointDetector
from .readouts import read_out
from .validation import check_cloud
from .config import TrainConfig



class SupervisedTask:
    """Supervised semantic keypoints (see :class:`pckeypoints.tasks.Task`)."""

    monitor = "pck@0.01"

    def dataset(self, config: TrainConfig, split: str, train: bool) -> Dataset:
        augment = _augmentation(config) if train else None
        if config.data is not None:
            dataset = KeypointFolder(config.data, split, normalize=True, transform=augment)
        else:
            dataset = KeypointNet(config.data_root, config.category, split, normalize=True, transform=augment)
        if config.max_models is not None and config.max_models < len(dataset):
            dataset = Subset(dataset, range(config.max_models))
        return dataset

    def configure(self, config: TrainConfig, dataset: Dataset) -> TrainConfig:
        num_keypoints = int(_keypointnet(dataset).num_keypoints)
        if config.num_keypoints not in (None, num_keypoints):
            raise ValueError(f"{config.category} has {num_keypoints} semantic keypoints, config asks for "
                             f"{config.num_keypoints}")
        category = _keypointnet(dataset).category if config.data is not None else config.category  # the folder's name
        return dataclasses.replace(config, num_keypoints=num_keypoints, category=category)

    def build_model(self, config: TrainConfig) -> nn.Module:
        if config.num_keypoints is None:
            raise ValueError("config.num_keypoints is unset; call SupervisedTask.configure first")
        return KeypointDetector(
            config.num_keypoints, width=config.width, msg=config.msg, radius_scale=config.radius_scale,
            hidden_channels=config.hidden_channels, knn_k=config.knn_k,
            fixed_sigma=config.fixed_sigma,
        )

    def loss(self, model: nn.Module, batch: dict, config: TrainConfig, tau: float) -> tuple[Tensor, dict[str, float]]:
        maps = model(batch["points"])
        criterion = KeypointLoss(config.method, config.metric, config.num_samples, reg_weight=config.reg_weight,
                                 target_sigma=config.target_sigma, sampler=config.sampler)
        return criterion(maps.logits, maps.basis, batch["keypoints"], batch["mask"], tau=tau), {}

    def evaluate(self, model: nn.Module, loader: DataLoader, config: TrainConfig) -> dict[str, float]:
        """Euclidean PCK of ``config.readout`` (cheap: run after every epoch to select ``best.pt``)."""
        predictions = collect_readouts(model, loader, (config.readout,))
        return records_metrics(keypoint_records(predictions, geodesic=False), config.readout)

    def report(self, model: nn.Module, loader: DataLoader, config: TrainConfig, out_dir: Path,
               figures=None) -> dict[str, float]:
        """Every readout's metrics (:mod:`pckeypoints.metrics.summary`) in ``metrics.md``/``metrics.json`` and
        the per-keypoint records in ``records.pt`` in ``out_dir``; with ``figures`` (the :mod:`viz` module or
        anything with its ``plot_pck_curves``, ``plot_calibration`` and ``render_gallery``) also
        ``pck_curve.png``, ``calibration.png`` and ``gallery.png`` (the first 8 clouds)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        predictions = collect_readouts(model, loader)
        records = keypoint_records(predictions)
        metrics = records_metrics(records, config.readout)
        title = f"{config.category} {config.method}"
        torch.save({"records": records, "model_id": predictions["model_id"]}, out_dir / "records.pt")
        (out_dir / "metrics.json").write_text(json.dumps({"config": config.to_dict(), "metrics": metrics}, indent=2))
        (out_dir / "metrics.md").write_text(metrics_markdown(title, metrics))
        if figures is not None:
            correct = records[f"dist/{config.readout}"] <= THRESHOLD
            figures.plot_pck_curves({title: (CURVE_THRESHOLDS.tolist(), [metrics[f"pck@{t:.2f}"] for t in CURVE_THRESHOLDS])},
                                    out_dir / "pck_curve.png", title=f"PCK on {config.category}")
            figures.plot_calibration(records[f"within/{config.readout}"].numpy(), correct.numpy(),
                                     out_dir / "calibration.png")
            figures.render_gallery(gallery_items(predictions, config.readout, 8), out_dir / "gallery.png",
                                   if_available=True)
        return metrics

    def predict(self, model: nn.Module, points: Tensor, config: TrainConfig) -> dict:
        """Keypoints of one cloud by ``config.readout``; ``confidence`` is the map's probability that the
        keypoint lies within :data:`THRESHOLD` of the estimate, ``peak`` its largest point probability."""
        points = torch.as_tensor(points, dtype=torch.float64)  # centred in float64: see run_on_cloud
        maps, center, scale = run_on_cloud(model, points, config)
        probs = maps.probabilities
        estimate = read_out(probs, maps.basis, config.readout)
        sigma = maps.basis.scale[..., 0]
        confidence = within_radius_probability(estimate, probs, maps.basis.pos, sigma, THRESHOLD / float(scale))[0]
        keypoints = estimate[0].cpu().double() * scale + center
        return {
            "keypoints": keypoints.tolist(),
            "semantic_ids": list(range(len(keypoints))),
            "readout": config.readout,
            "confidence": confidence.cpu().tolist(),
            "peak": probs[0].amax(-1).cpu().tolist(),
            "snapped": points[snap_to_points(keypoints, points.double())].tolist(),
        }


def run_on_cloud(model: nn.Module, points: Tensor, config: TrainConfig) -> tuple[KeypointMaps, Tensor, Tensor]:
    """The maps of ``model`` (eval mode, no gradient) on one cloud ``points (N, 3)``, normalised as in
    training; returns ``(maps, center (3,), scale ())`` with original = normalised · scale + center."""
    check_cloud(points, min_points=config.knn_k + 1)
    # centre and scale in float64 (clouds far from the origin), then the float32 the model takes
    item = transforms.Normalize(dtype=torch.float32)({
        "points": points, "keypoints": torch.zeros(0, 3), "mask": torch.zeros(0, dtype=torch.bool),
        "point_index": torch.zeros(0, dtype=torch.long), "center": torch.zeros(3, dtype=torch.float64),
        "scale": torch.tensor(1.0, dtype=torch.float64)})
    device = next(model.parameters()).device
    with torch.no_grad():
        output = model.eval()(item["points"][None].to(device))
    return getattr(output, "maps", output), item["center"], item["scale"]


def _augmentation(config: TrainConfig):
    steps = []
    if config.rotate:
        steps.append(transforms.RandomRotateUp())
    if (config.scale_lo, config.scale_hi) != (1.0, 1.0):
        steps.append(transforms.RandomScale(config.scale_lo, config.scale_hi))
    if config.jitter > 0:
        steps.append(transforms.Jitter(config.jitter, clip=5 * config.jitter))
    return transforms.Compose(steps) if steps else None


def _keypointnet(dataset: Dataset) -> KeypointNet:
    return dataset.dataset if isinstance(dataset, Subset) else dataset


# ---------------------------------------------------------------------------------------------- evaluation
def collect_predictions(model: nn.Module, loader: DataLoader, progress: bool = False) -> dict:
    """:func:`~pckeypoints.evaluation.collect_readouts` of the expectation alone, flattened: ``pred (M, K, 3)``
    soft-argmax keypoints, ``confidence (M, K)`` peak probabilities, ``target``, ``mask``, ``points``,
    ``point_index`` and ``model_id``."""
    collected = collect_readouts(model, loader, ("expectation",), progress=progress)
    return {**collected, "pred": collected["pred"]["expectation"], "confidence": collected["peak"]}


def metrics_markdown(title: str, metrics: dict[str, float]) -> str:
    """The metrics of one model as a markdown table."""
    def fmt(value: float) -> str:
        return "n/a" if math.isnan(value) else f"{value:.4f}"

    lines = [f"# {title}", "", "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {fmt(value)} |" for name, value in metrics.items()]
    return "\n".join(lines) + "\n"


def gallery_items(predictions: dict, readout: str, count: int) -> list[dict]:
    """Up to ``count`` clouds of :func:`~pckeypoints.evaluation.collect_readouts` with their annotated and
    ``readout`` keypoints, for :func:`viz.render_gallery`."""
    items = []
    for i in range(min(count, len(predictions["model_id"]))):
        mask = predictions["mask"][i]
        pred = predictions["pred"][readout][i]
        error = (pred - predictions["target"][i])[mask].norm(dim=-1)
        items.append({
            "points": predictions["points"][i].numpy(),
            "keypoints": predictions["target"][i][mask].numpy(),
            "pred": pred[mask].numpy(),
            "semantic_ids": np.flatnonzero(mask.numpy()),
            "title": f"{predictions['model_id'][i][:8]} PCK {float((error <= THRESHOLD).double().mean()):.2f}",
        })
    return items
