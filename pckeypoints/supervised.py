"""Supervised keypoints: one :class:`~pckeypoints.models.KeypointDetector` per KeypointNet category.

The network sees normalised clouds (unit radius); predictions are mapped back with each item's
``center`` and ``scale`` so that every metric is in the dataset's own units, where KeypointNet's
PCK@0.01 threshold is defined. The predicted keypoint is the soft-argmax of its map; its confidence is
the map's peak probability max π.
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
from tqdm.auto import tqdm

from .data import KeypointFolder, KeypointNet, transforms
from .head import KeypointMaps
from .losses import KeypointLoss
from .metrics import calibration_correlation, geodesic_distance, pck_curve, snap_to_points
from .models import KeypointDetector
from .config import TrainConfig

#: The PCK threshold of the tables, in dataset units.
THRESHOLD = 0.01
#: Thresholds of the PCK curve (KeypointNet's range).
CURVE_THRESHOLDS = torch.linspace(0, 0.1, 11, dtype=torch.float64)


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
        return keypoint_metrics(collect_predictions(model, loader))

    def report(self, model: nn.Module, loader: DataLoader, config: TrainConfig, out_dir: Path) -> dict[str, float]:
        """Metrics plus ``metrics.md``/``metrics.json``, ``pck_curve.png``, ``calibration.png`` and
        ``gallery.png`` (the first 8 clouds) in ``out_dir``."""
        import viz

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        predictions = collect_predictions(model, loader)
        metrics = keypoint_metrics(predictions)
        correct, confidence = _correctness(predictions), predictions["confidence"][predictions["mask"]]
        bins = confidence_bins(confidence, correct)
        title = f"{config.category} {config.method}"
        (out_dir / "metrics.json").write_text(json.dumps({"config": config.to_dict(), "metrics": metrics,
                                                          "calibration_bins": bins}, indent=2))
        (out_dir / "metrics.md").write_text(metrics_markdown(title, metrics, bins))
        viz.plot_pck_curves({title: (CURVE_THRESHOLDS.tolist(), [metrics[f"pck@{t:.2f}"] for t in CURVE_THRESHOLDS])},
                            out_dir / "pck_curve.png", title=f"PCK on {config.category}")
        viz.plot_calibration(confidence.numpy(), correct.numpy(), out_dir / "calibration.png")
        viz.render_gallery(gallery_items(predictions, 8), out_dir / "gallery.png", if_available=True)
        return metrics

    def predict(self, model: nn.Module, points: Tensor, config: TrainConfig) -> dict:
        points = torch.as_tensor(points, dtype=torch.float32)
        maps, center, scale = run_on_cloud(model, points, config)
        keypoints = maps.keypoints[0].cpu() * scale + center
        confidence = maps.probabilities[0].amax(-1).cpu()
        return {
            "keypoints": keypoints.tolist(),
            "semantic_ids": list(range(len(keypoints))),
            "confidence": confidence.tolist(),
            "snapped": points[snap_to_points(keypoints, points)].tolist(),
        }


def run_on_cloud(model: nn.Module, points: Tensor, config: TrainConfig) -> tuple[KeypointMaps, Tensor, Tensor]:
    """The maps of ``model`` (eval mode, no gradient) on one cloud ``points (N, 3)``, normalised as in
    training; returns ``(maps, center (3,), scale ())`` with original = normalised · scale + center."""
    if points.dim() != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got shape {tuple(points.shape)}")
    if len(points) <= config.knn_k:
        raise ValueError(f"need more than {config.knn_k} points, got {len(points)}")
    if not points.isfinite().all():
        raise ValueError("points contain NaN or infinite coordinates")
    item = transforms.Normalize()({"points": points, "keypoints": torch.zeros(0, 3), "mask": torch.zeros(0, dtype=torch.bool),
                                   "point_index": torch.zeros(0, dtype=torch.long), "center": torch.zeros(3),
                                   "scale": torch.tensor(1.0)})
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
@torch.no_grad()
def collect_predictions(model: nn.Module, loader: DataLoader, progress: bool = False) -> dict:
    """Run ``model`` over ``loader``; everything in the dataset's original coordinates, on the CPU.

    Returns a dict of ``pred (M, K, 3)`` soft-argmax keypoints, ``target (M, K, 3)``, ``mask (M, K)``,
    ``confidence (M, K)`` peak probabilities, ``points (M, N, 3)``, ``point_index (M, K)`` and ``model_id``.
    """
    model.eval()
    device = next(model.parameters()).device
    parts: dict[str, list] = {k: [] for k in ("pred", "target", "mask", "confidence", "points", "point_index")}
    model_ids: list[str] = []
    for batch in tqdm(loader, desc="evaluate", leave=False, disable=not progress):
        maps = model(batch["points"].to(device))
        scale, center = batch["scale"][:, None, None], batch["center"][:, None, :]
        parts["pred"].append(maps.keypoints.cpu() * scale + center)
        parts["target"].append(batch["keypoints"] * scale + center)
        parts["points"].append(batch["points"] * scale + center)
        parts["confidence"].append(maps.probabilities.amax(-1).cpu())
        parts["mask"].append(batch["mask"])
        parts["point_index"].append(batch["point_index"])
        model_ids += batch["model_id"]
    if not model_ids:
        raise ValueError("cannot evaluate on an empty split")
    return {**{k: torch.cat(v) for k, v in parts.items()}, "model_id": model_ids}


def _correctness(predictions: dict, threshold: float = THRESHOLD) -> Tensor:
    """``(M,)`` whether each annotated keypoint's prediction is within ``threshold`` (Euclidean)."""
    mask = predictions["mask"]
    return (predictions["pred"] - predictions["target"])[mask].norm(dim=-1) <= threshold


def keypoint_metrics(predictions: dict) -> dict[str, float]:
    """From :func:`collect_predictions`: Euclidean PCK at every curve threshold (``pck@0.00`` ...
    ``pck@0.10``), geodesic PCK@0.01 on the cloud's 8-NN graph, PCK@0.01 of the prediction snapped to
    its nearest cloud point, mean error and the calibration correlation r(max π, correct@0.01)."""
    pred, target, mask, points = (predictions[k] for k in ("pred", "target", "mask", "points"))
    _, curve = pck_curve(pred, target, mask, CURVE_THRESHOLDS)
    metrics = {f"pck@{t:.2f}": float(v) for t, v in zip(CURVE_THRESHOLDS, curve)}
    geodesic = geodesic_distance(pred, points, predictions["point_index"].clamp(min=0), mask)[mask]
    snapped = points.gather(1, snap_to_points(pred, points)[..., None].expand(-1, -1, 3))
    confidence = predictions["confidence"][mask]
    correct = _correctness(predictions)
    metrics.update({
        "geo_pck@0.01": float((geodesic <= THRESHOLD).double().mean()),
        "snap_pck@0.01": float(((snapped - target)[mask].norm(dim=-1) <= THRESHOLD).double().mean()),
        "mean_error": float((pred - target)[mask].norm(dim=-1).mean()),
        "mean_confidence": float(confidence.mean()),
        "calibration_r": calibration_correlation(confidence, correct),
    })
    return metrics


def confidence_bins(confidence: Tensor, correct: Tensor, num_bins: int = 5) -> list[dict[str, float]]:
    """Keypoints split into ``num_bins`` equally populated bins of increasing confidence, with each bin's
    confidence range, count and mean correctness (how often a keypoint of that confidence is right)."""
    order = confidence.argsort()
    rows = []
    for part in torch.tensor_split(order, num_bins):
        if len(part):
            rows.append({"low": float(confidence[part].min()), "high": float(confidence[part].max()),
                         "count": len(part), "correct": float(correct[part].double().mean())})
    return rows


def metrics_markdown(title: str, metrics: dict[str, float], bins: list[dict[str, float]] = ()) -> str:
    """The metrics of one model and, if given, its calibration bins as markdown tables."""
    def fmt(value: float) -> str:
        return "n/a" if math.isnan(value) else f"{value:.4f}"

    lines = [f"# {title}", "", "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {fmt(value)} |" for name, value in metrics.items()]
    if not bins:
        return "\n".join(lines) + "\n"
    lines += ["", "Calibration: mean correctness (PCK@0.01) in bins of confidence max π", "",
              "| confidence | keypoints | correct |", "|---|---|---|"]
    lines += [f"| {b['low']:.3g} – {b['high']:.3g} | {b['count']} | {b['correct']:.3f} |" for b in bins]
    return "\n".join(lines) + "\n"


def gallery_items(predictions: dict, count: int) -> list[dict]:
    """Up to ``count`` clouds with their annotated and predicted keypoints, for :func:`viz.render_gallery`."""
    items = []
    for i in range(min(count, len(predictions["model_id"]))):
        mask = predictions["mask"][i]
        error = (predictions["pred"][i] - predictions["target"][i])[mask].norm(dim=-1)
        items.append({
            "points": predictions["points"][i].numpy(),
            "keypoints": predictions["target"][i][mask].numpy(),
            "pred": predictions["pred"][i][mask].numpy(),
            "semantic_ids": np.flatnonzero(mask.numpy()),
            "title": f"{predictions['model_id'][i][:8]} PCK {float((error <= THRESHOLD).double().mean()):.2f}",
        })
    return items
