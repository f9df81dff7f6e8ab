"""Unsupervised keypoints: a :class:`~pckeypoints.models.autoencoder.SkeletonAutoencoder` per KeypointNet category.

Training sees no labels: the loss is the composite Chamfer distance between the normalised cloud and its
skeleton reconstruction, plus the L2 penalty of the decoder's offsets. With ``method = "sampling"`` the
decoder rebuilds the cloud from each of ``num_samples`` sampling-argmax keypoint sets and the loss is the
mean over them (the expected reconstruction error); with ``"soft"`` from the soft-argmax.

Checkpoints are selected without labels: ``best.pt`` has the lowest soft-argmax reconstruction loss on the
eval split (its negation ``neg_reconstruction`` is the monitored score; ``reconstruction`` in a report). The annotations only score the soft-argmax
keypoints, mapped back to the dataset's own coordinates: the dual alignment score (DAS, with its forward and
backward parts) in two protocols and KeypointNet's keypoint mIoU at geodesic distance 0.1. ``das``: the
strict one, pairs of distinct shapes of the evaluated split; ``das_sm``: Skeleton Merger's published one
(self-pairs counted, over every annotated shape of the category, whatever the split), computed by
:meth:`UnsupervisedTask.report`.

The loss weights are the fields of :class:`~pckeypoints.config.UnsupervisedLoss` (``[loss]`` of an
unsupervised config), with Skeleton Merger's values as defaults.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from pckeypoints.metrics.das import DualAlignment, alignment_votes, das_from_votes, keypoint_matches
from pckeypoints.metrics.results import AlignmentEvaluation
from pckeypoints.models.autoencoder import SkeletonAutoencoder, skeleton_loss
from pckeypoints.data.from_config import dataset_from_config
from pckeypoints.evaluation.inference import collect_predictions, predict_keypoints
from pckeypoints.evaluation.report import gallery_title, markdown_table, save_records, write_metrics
from pckeypoints.config import TrainConfig, UnsupervisedLoss
from pckeypoints.errors import InputError

#: Default number of keypoints (Skeleton Merger uses 10 on KeypointNet).
NUM_KEYPOINTS = 10
#: Geodesic threshold of the keypoint mIoU, in dataset units (KeypointNet's clouds have radius ~0.5).
MIOU_THRESHOLD = 0.1
#: Neighbours of the k-NN graph of geodesic distances.
GEODESIC_K = 10


class UnsupervisedTask:
    """Unsupervised, ordered keypoints by skeleton reconstruction (see :class:`pckeypoints.train.tasks.Task`)."""

    def dataset(self, config: TrainConfig, split: str, train: bool) -> Dataset:
        """The same normalised KeypointNet items and augmentations as the supervised task."""
        return dataset_from_config(config, split, train)

    def configure(self, config: TrainConfig, dataset: Dataset) -> TrainConfig:
        return config if config.model.num_keypoints is not None else config.replace(num_keypoints=NUM_KEYPOINTS)

    def build_model(self, config: TrainConfig) -> nn.Module:
        return SkeletonAutoencoder(**config.model.arguments())

    def loss(self, model: nn.Module, batch: dict, config: TrainConfig, tau: float) -> tuple[Tensor, dict[str, Tensor]]:
        # no value checks inside the step: the datasets checked their clouds when they read them
        output = model(batch["points"], validate=False)
        return reconstruction_objective(batch["points"], output, config.loss, tau=tau, validate=False)

    def evaluate(self, model: nn.Module, loader: DataLoader, config: TrainConfig) -> AlignmentEvaluation:
        """The label-free reconstruction loss (monitored) and, for the log only, the strict DAS and mIoU of
        ``loader``'s split."""
        return _records_metrics(reconstruction_loss(model, loader, config),
                                _shape_records(collect_predictions(model, loader), "das"))

    def report(self, model: nn.Module, loader: DataLoader, config: TrainConfig, out_dir: Path,
               figures=None) -> AlignmentEvaluation:
        """:meth:`evaluate`'s metrics plus ``das_sm`` (with ``_forward``, ``_backward``) over every annotated shape
        of the category; writes ``metrics.md``/``metrics.json``, ``records.pt`` (per shape: the reconstruction
        loss and the counts behind DAS and mIoU, :func:`_shape_records`, for bootstrap CIs over shapes) and
        ``gallery.png`` (keypoints of the first 8 clouds of ``loader``, coloured by index: aligned keypoints share
        a colour across shapes) in ``out_dir``."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        collected = collect_predictions(model, loader)
        every_shape = self.dataset(config.replace(max_models=None), None, train=False)
        collected_all = collect_predictions(model, DataLoader(every_shape, loader.batch_size,
                                                              collate_fn=loader.collate_fn))
        reconstruction = reconstruction_per_shape(model, loader, config)
        records = {"model_id": collected["model_id"], "reconstruction": reconstruction,
                   **_shape_records(collected, "das"), **_shape_records(collected_all, "das_sm"),
                   "das_sm_model_id": collected_all["model_id"]}
        metrics = _records_metrics(float(reconstruction.mean()), records, das_sm_shapes=len(every_shape))
        save_records(records, out_dir / "records.pt")
        title = f"{config.data.label} unsupervised ({config.loss.method})"
        write_metrics(out_dir, config, metrics.to_dict(), title, self.summary(metrics, config))
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

    def summary(self, metrics: AlignmentEvaluation, config: TrainConfig) -> str:
        """One row: the strict and Skeleton Merger DAS, the keypoint mIoU and the reconstruction loss."""
        das_sm = math.nan if metrics.das_sm is None else metrics.das_sm.das
        header = ["DAS", "DAS (SM)", f"mIoU@{metrics.miou_threshold}", "reconstruction"]
        return markdown_table(header, [[metrics.das.das, das_sm, metrics.miou, metrics.reconstruction]]) + (
            f"\nDAS: strict over pairs of shapes; DAS (SM): Skeleton Merger's protocol over "
            f"{metrics.das_sm_shapes or 0} shapes; mIoU at geodesic distance {metrics.miou_threshold}.\n")

    def predict(self, model: nn.Module, points: Tensor, config: TrainConfig) -> dict:
        """As the supervised task's: each map's ``eval.readout``, with its within-radius probability as confidence."""
        return predict_keypoints(model, points, config)


def reconstruction_objective(points: Tensor, output, weights: UnsupervisedLoss = UnsupervisedLoss(), *,
                             tau: float | None = None, validate: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
    """Skeleton Merger loss, weighted by ``weights``, of a :class:`~pckeypoints.models.autoencoder.SkeletonOutput`
    for the clouds ``points (B, N, 3)`` (the batch mean of :func:`_objective_per_shape`), and its terms (batch
    means, detached 0-dim tensors) for logging. With ``weights.method = "sampling"`` the loss of
    ``weights.num_samples`` sampling-argmax skeletons at the temperature ``tau`` of this step (their mean), else
    the soft-argmax skeleton's. ``validate``: the value checks of
    :func:`~pckeypoints.ops.chamfer.composite_chamfer_distance`."""
    if weights.method == "sampling":
        if tau is None:
            raise InputError("the sampling loss needs the temperature of this step: reconstruction_objective(..., "
                             "tau=schedule.value)")
        output = output.sample(weights.num_samples, tau)
    per_shape, terms = _objective_per_shape(points, output, weights, validate)
    return per_shape.mean(), {name: value.mean().detach() for name, value in terms.items()}


def _objective_per_shape(points: Tensor, output, weights: UnsupervisedLoss,
                         validate: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
    """The weighted Skeleton Merger loss of each cloud ``(B,)`` and its terms ``(B,)`` (the offsets' penalty is
    the same for every cloud)."""
    chamfer = skeleton_loss(points, output, uncovered_penalty=weights.uncovered, validate=validate)
    terms = {
        "reconstruction_to_input": chamfer.reconstruction_to_input,
        "input_to_reconstruction": chamfer.input_to_reconstruction,
        "offset": output.offsets.square().sum().expand(len(points)),
    }
    return sum(getattr(weights, name) * value for name, value in terms.items()), terms


@torch.no_grad()
def reconstruction_per_shape(model: nn.Module, loader: DataLoader, config: TrainConfig) -> Tensor:
    """Training objective of the soft-argmax skeleton for each cloud of ``loader`` ``(S,)`` (no labels used)."""
    model.eval()
    device = next(model.parameters()).device
    losses = []
    for batch in loader:
        points = batch["points"].to(device)
        losses.append(_objective_per_shape(points, model(points), config.loss)[0].cpu())
    return torch.cat(losses)


def reconstruction_loss(model: nn.Module, loader: DataLoader, config: TrainConfig) -> float:
    """Mean training objective of the soft-argmax skeleton over ``loader``'s clouds (no labels used)."""
    return float(reconstruction_per_shape(model, loader, config).mean())


def _annotations(collected: dict) -> list[tuple[Tensor, Tensor]]:
    """Per shape ``(xyz (K_i, 3), semantic ids (K_i,))`` of :func:`~pckeypoints.evaluation.inference.collect_predictions`."""
    target, mask = collected["target"], collected["mask"]
    return [(target[i][mask[i]], mask[i].nonzero().squeeze(-1)) for i in range(len(target))]


def _shape_records(collected: dict, prefix: str) -> dict[str, Tensor]:
    """Per shape of :func:`~pckeypoints.evaluation.inference.collect_predictions`: the DAS votes (``<prefix>_forward_votes
    (S, P, I)``, ``<prefix>_backward_votes (S, I, P)``, :func:`~pckeypoints.metrics.das.alignment_votes`) and, for
    ``prefix == "das"``, the mIoU counts ``miou_matches (S, 3)`` (:func:`~pckeypoints.metrics.das.keypoint_matches`
    at :data:`MIOU_THRESHOLD`)."""
    annotations = _annotations(collected)
    votes = alignment_votes(collected["pred"], annotations)
    records = {f"{prefix}_forward_votes": votes.forward, f"{prefix}_backward_votes": votes.backward}
    if prefix == "das":
        records["miou_matches"] = keypoint_matches(collected["pred"], [xyz for xyz, _ in annotations],
                                                   collected["points"], MIOU_THRESHOLD, k=GEODESIC_K)[:, 0]
    return records


def _records_metrics(reconstruction: float, records: dict, das_sm_shapes: int | None = None) -> AlignmentEvaluation:
    """The :class:`~pckeypoints.metrics.results.AlignmentEvaluation` of the mean ``reconstruction`` loss and the
    sums of :func:`_shape_records`: the strict DAS (pairs of distinct shapes), the keypoint mIoU at
    :data:`MIOU_THRESHOLD` and, where ``records`` hold its votes, Skeleton Merger's DAS (self-pairs included)."""
    if len(records["das_forward_votes"]) < 2:
        raise InputError(f"DAS compares shapes: need at least 2 models to evaluate, got "
                         f"{len(records['das_forward_votes'])}")
    scores = {}
    for prefix, self_pairs in (("das", False), ("das_sm", True)):
        if f"{prefix}_forward_votes" not in records:
            continue
        forward, backward = records[f"{prefix}_forward_votes"], records[f"{prefix}_backward_votes"]
        das, *parts = (float(x) for x in das_from_votes(forward.sum(0), backward.sum(0), len(forward), self_pairs))
        if not math.isfinite(das):
            raise InputError("no semantic id is annotated on two or more shapes; backward alignment is undefined")
        scores[prefix] = DualAlignment(das, *parts)
    true_positives, false_positives, annotated = records["miou_matches"].sum(0)
    return AlignmentEvaluation(reconstruction, scores["das"], float(true_positives / (annotated + false_positives)),
                               MIOU_THRESHOLD, scores.get("das_sm"), das_sm_shapes)

