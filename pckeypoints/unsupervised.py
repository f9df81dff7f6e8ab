"""Unsupervised keypoints: a :class:`~pckeypoints.models.autoencoder.SkeletonAutoencoder` per KeypointNet category.

Training sees no labels: the loss is the composite Chamfer distance between the normalised cloud and its
skeleton reconstruction, plus the L2 penalty of the decoder's offsets. With ``method = "sampling"`` the
decoder rebuilds the cloud from each of ``num_samples`` sampling-argmax keypoint sets and the loss is the
mean over them (the expected reconstruction error); with ``"soft"`` from the soft-argmax.

Checkpoints are selected without labels: ``best.pt`` has the lowest soft-argmax reconstruction loss on the
eval split (the monitor ``neg_reconstruction`` is its negation). The annotations only score the soft-argmax
keypoints, mapped back to the dataset's own coordinates: the dual alignment score (DAS, with its forward and
backward parts) in two protocols and KeypointNet's keypoint mIoU at geodesic distance 0.1. ``das``: the
strict one, pairs of distinct shapes of the evaluated split; ``das_sm``: Skeleton Merger's published one
(self-pairs counted, over every annotated shape of the category, whatever the split), computed by
:meth:`UnsupervisedTask.report`.

The loss weights are the fields of :class:`~pckeypoints.config.UnsupervisedLoss` (``[loss]`` of an
unsupervised config), with Skeleton Merger's values as defaults.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .metrics import dual_alignment_score, keypoint_miou
from .models.autoencoder import SkeletonAutoencoder, skeleton_loss
from .data.from_config import dataset_from_config
from .evaluation import collect_predictions, predict_keypoints
from .report import gallery_title, markdown_table, metrics_markdown
from .config import TrainConfig, UnsupervisedLoss
from .errors import InputError

#: Default number of keypoints (Skeleton Merger uses 10 on KeypointNet).
NUM_KEYPOINTS = 10
#: Geodesic threshold of the keypoint mIoU, in dataset units (KeypointNet's clouds have radius ~0.5).
MIOU_THRESHOLD = 0.1
#: Neighbours of the k-NN graph of geodesic distances.
GEODESIC_K = 10


class UnsupervisedTask:
    """Unsupervised, ordered keypoints by skeleton reconstruction (see :class:`pckeypoints.tasks.Task`)."""

    monitor = "neg_reconstruction"

    def dataset(self, config: TrainConfig, split: str, train: bool) -> Dataset:
        """The same normalised KeypointNet items and augmentations as the supervised task."""
        return dataset_from_config(config, split, train)

    def configure(self, config: TrainConfig, dataset: Dataset) -> TrainConfig:
        return config if config.model.num_keypoints is not None else config.replace(num_keypoints=NUM_KEYPOINTS)

    def build_model(self, config: TrainConfig) -> nn.Module:
        return SkeletonAutoencoder(**config.model.arguments())

    def loss(self, model: nn.Module, batch: dict, config: TrainConfig, tau: float) -> tuple[Tensor, dict[str, float]]:
        num_samples = config.loss.num_samples if config.loss.method == "sampling" else 0
        output = model(batch["points"], num_samples=num_samples, tau=tau)
        return reconstruction_objective(batch["points"], output, config.loss)

    def evaluate(self, model: nn.Module, loader: DataLoader, config: TrainConfig) -> dict[str, float]:
        """The label-free monitor and, for the log only, :func:`unsupervised_metrics` of ``loader``'s split."""
        return {"neg_reconstruction": -reconstruction_loss(model, loader, config),
                **unsupervised_metrics(collect_predictions(model, loader))}

    def report(self, model: nn.Module, loader: DataLoader, config: TrainConfig, out_dir: Path,
               figures=None) -> dict[str, float]:
        """:meth:`evaluate`'s metrics plus ``das_sm`` (with ``_forward``, ``_backward``) over every annotated shape
        of the category; writes ``metrics.md``/``metrics.json`` and ``gallery.png`` (keypoints of the first 8
        clouds of ``loader``, coloured by index: aligned keypoints share a colour across shapes) in ``out_dir``."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        collected = collect_predictions(model, loader)
        every_shape = self.dataset(config.replace(max_models=None), None, train=False)
        published = skeleton_merger_das(collect_predictions(model, DataLoader(
            every_shape, loader.batch_size, collate_fn=loader.collate_fn)))
        metrics = {"neg_reconstruction": -reconstruction_loss(model, loader, config),
                   **unsupervised_metrics(collected), **published, "das_sm_shapes": len(every_shape)}
        (out_dir / "metrics.json").write_text(json.dumps({"config": config.to_dict(), "metrics": metrics}, indent=2))
        title = f"{config.data.label} unsupervised ({config.loss.method})"
        (out_dir / "metrics.md").write_text(metrics_markdown(title, metrics, self.summary(metrics, config)))
        items = [{
            "points": collected["points"][i].numpy(),
            "keypoints": collected["pred"][i].numpy(),
            "semantic_ids": list(range(config.model.num_keypoints)),
            "title": collected["model_id"][i][:8],
        } for i in range(min(8, len(collected["model_id"])))]
        if figures is not None:
            figures.render_gallery(items, out_dir / "gallery.png", title=gallery_title(config, loader),
                                   if_available=True)
        return metrics

    def summary(self, metrics: dict[str, float], config: TrainConfig) -> str:
        """One row: the strict and Skeleton Merger DAS, the keypoint mIoU and the reconstruction loss."""
        columns = {"DAS": "das", "DAS (SM)": "das_sm", f"mIoU@{MIOU_THRESHOLD}": f"miou@{MIOU_THRESHOLD}",
                   "reconstruction": "neg_reconstruction"}
        row = [metrics.get(key, float("nan")) for key in columns.values()]
        row[-1] = -row[-1]
        return markdown_table(list(columns), [row]) + (
            f"\nDAS: strict over pairs of shapes; DAS (SM): Skeleton Merger's protocol over "
            f"{int(metrics.get('das_sm_shapes', 0))} shapes; mIoU at geodesic distance {MIOU_THRESHOLD}.\n")

    def predict(self, model: nn.Module, points: Tensor, config: TrainConfig) -> dict:
        """As the supervised task's: each map's ``eval.readout``, with its within-radius probability as confidence."""
        return predict_keypoints(model, points, config)


def reconstruction_objective(points: Tensor, output, weights: UnsupervisedLoss = UnsupervisedLoss()
                             ) -> tuple[Tensor, dict[str, float]]:
    """Skeleton Merger loss, weighted by ``weights``, of a :class:`~pckeypoints.models.autoencoder.SkeletonOutput`
    for the clouds ``points (B, N, 3)``, and its terms (batch means) for logging."""
    chamfer = skeleton_loss(points, output, uncovered_penalty=weights.uncovered)
    terms = {
        "reconstruction_to_input": chamfer.reconstruction_to_input.mean(),
        "input_to_reconstruction": chamfer.input_to_reconstruction.mean(),
        "offset": output.offsets.square().sum(),
    }
    total = sum(getattr(weights, name) * value for name, value in terms.items())
    return total, {name: value.item() for name, value in terms.items()}


@torch.no_grad()
def reconstruction_loss(model: nn.Module, loader: DataLoader, config: TrainConfig) -> float:
    """Mean training objective of the soft-argmax skeleton over ``loader``'s clouds (no labels used)."""
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for batch in loader:
        points = batch["points"].to(device)
        loss, _ = reconstruction_objective(points, model(points), config.loss)
        total, count = total + loss.item() * len(points), count + len(points)
    return total / count


def _annotations(collected: dict) -> list[tuple[Tensor, Tensor]]:
    """Per shape ``(xyz (K_i, 3), semantic ids (K_i,))`` of :func:`~pckeypoints.evaluation.collect_predictions`."""
    target, mask = collected["target"], collected["mask"]
    return [(target[i][mask[i]], mask[i].nonzero().squeeze(-1)) for i in range(len(target))]


def skeleton_merger_das(collected: dict) -> dict[str, float]:
    """DAS with self-pairs (Skeleton Merger's published evaluation) of :func:`~pckeypoints.evaluation.
    collect_predictions` run on every annotated shape of a category: ``das_sm``, ``das_sm_forward``,
    ``das_sm_backward``."""
    alignment = dual_alignment_score(collected["pred"], _annotations(collected), self_pairs=True)
    return {"das_sm": alignment.das, "das_sm_forward": alignment.forward, "das_sm_backward": alignment.backward}


def unsupervised_metrics(collected: dict) -> dict[str, float]:
    """From :func:`pckeypoints.evaluation.collect_predictions` (``pred``, ``target``, ``mask``, ``points`` in the
    dataset's coordinates): the strict DAS (pairs of distinct shapes) with its forward and backward parts and the
    keypoint mIoU at geodesic distance :data:`MIOU_THRESHOLD`."""
    if len(collected["pred"]) < 2:
        raise InputError(f"DAS compares shapes: need at least 2 models to evaluate, got {len(collected['pred'])}")
    pred, points = collected["pred"], collected["points"]
    annotations = _annotations(collected)
    alignment = dual_alignment_score(pred, annotations)
    miou = keypoint_miou(pred, [xyz for xyz, _ in annotations], points, MIOU_THRESHOLD, k=GEODESIC_K)
    return {
        "das": alignment.das,
        "das_forward": alignment.forward,
        "das_backward": alignment.backward,
        f"miou@{MIOU_THRESHOLD}": float(miou[0]),
    }
