"""Metrics for unsupervised keypoints, which have no semantic labels: dual alignment score and keypoint IoU."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pckeypoints.metrics.geodesic import cloud_geodesics, snap_to_points
from pckeypoints.metrics.pck import Thresholds, as_thresholds
from pckeypoints.errors import InputError
from pckeypoints.validation import check_cloud

__all__ = ["AlignmentVotes", "DualAlignment", "alignment_votes", "das_from_votes", "dual_alignment_score",
           "keypoint_matches", "keypoint_miou"]

Annotation = tuple[torch.Tensor, torch.Tensor]  # (xyz (K_i, 3), semantic ids (K_i,))


@dataclass(frozen=True)
class DualAlignment:
    """Result of :func:`dual_alignment_score`; ``das = (forward + backward) / 2``."""

    das: float
    forward: float
    backward: float


def dual_alignment_score(pred: torch.Tensor, annotations: Sequence[Annotation],
                         self_pairs: bool = False) -> DualAlignment:
    """Dual alignment score (DAS, Shi et al., Skeleton Merger, CVPR 2021) of predicted keypoints against annotations.

    Args:
        pred: ``(S, P, 3)`` keypoints predicted on ``S`` shapes; index ``p`` is the same keypoint on every shape.
        annotations: per shape, ``(xyz (K_i, 3), semantic ids (K_i,))`` with ``K_i >= 1`` distinct ids.
        self_pairs: count each shape paired with itself, as Skeleton Merger's published evaluation does
            (``eval_keypointnet.py``, run on every shape of a category's annotation file); ``False``: only pairs of
            distinct shapes, ``S >= 2``.

    Forward: each prediction ``(s, p)`` takes the semantic id of its nearest annotated keypoint of shape ``s``; forward
    is the fraction of ordered shape pairs ``(s, t)`` with equal labels, averaged uniformly over all ``P`` predictions
    and pairs. Backward: each annotated id of shape ``s`` takes the index of its nearest prediction; for each id, the
    fraction of ordered pairs of shapes having it whose indices agree; backward is the uniform mean over the ids with
    at least one pair (with ``self_pairs`` an id annotated on one shape scores 1). Nearest means Euclidean, so the
    score is unchanged by scaling and shifting a shape (Skeleton Merger's min/max normalisation); ties go to the
    lowest index.
    """
    votes = alignment_votes(pred, annotations)
    min_shapes = 1 if self_pairs else 2
    if len(pred) < min_shapes:
        raise InputError(f"pred must have shape (S, P, 3) with S >= {min_shapes} and P >= 1, got {tuple(pred.shape)}")
    shapes_with_id = votes.backward.sum(dim=(0, 2))
    if not (shapes_with_id * (shapes_with_id - (0 if self_pairs else 1)) > 0).any():
        raise InputError("no semantic id is annotated on two or more shapes; backward alignment is undefined")
    das, forward, backward = das_from_votes(votes.forward.sum(0), votes.backward.sum(0), len(pred), self_pairs)
    return DualAlignment(das=float(das), forward=float(forward), backward=float(backward))


@dataclass(frozen=True)
class AlignmentVotes:
    """Per shape, the one-hot votes behind :func:`dual_alignment_score` (float64): ``forward (S, P, I)``, the
    semantic id (of I) each prediction takes; ``backward (S, I, P)``, the prediction each annotated id takes (a
    zero row for an id the shape lacks). Their sums over any multiset of shapes give its DAS by
    :func:`das_from_votes` (a bootstrap over shapes weights them)."""

    forward: torch.Tensor
    backward: torch.Tensor


def alignment_votes(pred: torch.Tensor, annotations: Sequence[Annotation]) -> AlignmentVotes:
    """:class:`AlignmentVotes` of ``pred (S, P, 3)`` against the annotations (see :func:`dual_alignment_score`)."""
    if pred.ndim != 3 or pred.shape[-1] != 3 or pred.shape[0] < 1 or pred.shape[1] < 1:
        raise InputError(f"pred must have shape (S, P, 3) with S >= 1 and P >= 1, got {tuple(pred.shape)}")
    if len(annotations) != len(pred):
        raise InputError(f"got {len(annotations)} annotations for {len(pred)} shapes")
    if not torch.isfinite(pred).all():
        raise InputError("pred has NaN or infinite values")
    xyz, ids, present = _pad_annotations(annotations, pred.device)  # (S, K, 3), (S, K), (S, K)
    num_pred, num_ids = pred.shape[1], int(ids.max()) + 1
    distances = torch.cdist(pred.double(), xyz.double())  # (S, P, K)
    nearest_gt = distances.masked_fill(~present[:, None, :], float("inf")).argmin(dim=2)  # (S, P)
    forward = torch.nn.functional.one_hot(ids.gather(1, nearest_gt), num_ids).double()  # (S, P, I)
    nearest_pred = torch.nn.functional.one_hot(distances.argmin(dim=1), num_pred).double()  # (S, K, P)
    backward = torch.zeros(len(pred), num_ids, num_pred, dtype=torch.float64, device=pred.device)
    backward.scatter_add_(1, ids[..., None].expand_as(nearest_pred), nearest_pred * present[..., None])
    return AlignmentVotes(forward, backward)


def das_from_votes(forward: torch.Tensor, backward: torch.Tensor, num_shapes: float | torch.Tensor,
                   self_pairs: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(das, forward, backward)``, each ``(...)``, from summed :class:`AlignmentVotes` ``forward (..., P, I)``,
    ``backward (..., I, P)`` of ``num_shapes`` shapes (``(...)`` or a number; weights of a resample may count a
    shape several times, each a distinct shape of the pairs). Backward averages the ids with at least one pair."""
    not_self = 0 if self_pairs else 1  # ordered pairs among n shapes: n (n - not_self)
    num_pred = forward.shape[-2]
    num_shapes = torch.as_tensor(num_shapes, dtype=torch.float64)
    forward_score = (forward * (forward - not_self)).sum((-2, -1)) / (num_pred * num_shapes * (num_shapes - not_self))
    shapes_with_id = backward.sum(-1)
    pairs = shapes_with_id * (shapes_with_id - not_self)
    agreeing = (backward * (backward - not_self)).sum(-1)
    scored = pairs > 0
    per_id = torch.where(scored, agreeing / pairs.clamp(min=1), torch.zeros_like(pairs))
    backward_score = per_id.sum(-1) / scored.sum(-1)
    return (forward_score + backward_score) / 2, forward_score, backward_score


def keypoint_miou(pred: torch.Tensor | Sequence[torch.Tensor], gt: Sequence[torch.Tensor],
                  points: torch.Tensor | Sequence[torch.Tensor] | None, thresholds: Thresholds,
                  k: int = 10) -> torch.Tensor:
    """KeypointNet's keypoint IoU ``(T,)`` between predicted and annotated keypoint sets, pooled over shapes.

    For shape ``s`` and threshold ``t``: a ground-truth keypoint is matched (TP) if some prediction is within ``t``,
    otherwise it is a false negative (FN); a prediction with no ground truth within ``t`` is a false positive (FP).
    IoU = ΣTP / (ΣTP + ΣFP + ΣFN), the counts summed over shapes as in KeypointNet's ``eval_det_cls`` (its mIoU is
    the mean of this over categories).

    Args:
        pred: ``(S, P, 3)`` or a list of ``(P_i, 3)`` predicted keypoints (``P_i`` may be 0).
        gt: list of ``(K_i, 3)`` annotated keypoints, ``K_i >= 1``.
        points: ``(S, N, 3)`` or list of ``(N_i, 3)`` clouds: distances are geodesic (k-NN graph, see
            :mod:`~pckeypoints.metrics.geodesic`) between keypoints snapped to their nearest cloud point; ``None``:
            Euclidean distances.
        thresholds: float or ``(T,)``; a pair matches when its distance is ``<= t``.
        k: neighbours per point of the geodesic graph.
    """
    counts = keypoint_matches(pred, gt, points, thresholds, k).sum(0)  # (T, 3)
    return (counts[:, 0] / (counts[:, 2] + counts[:, 1])).float()


def keypoint_matches(pred: torch.Tensor | Sequence[torch.Tensor], gt: Sequence[torch.Tensor],
                     points: torch.Tensor | Sequence[torch.Tensor] | None, thresholds: Thresholds,
                     k: int = 10) -> torch.Tensor:
    """Per shape and threshold the counts behind :func:`keypoint_miou` (same arguments), ``(S, T, 3)``: true
    positives, false positives and annotated keypoints (a bootstrap over shapes weights them)."""
    if len(pred) != len(gt) or (points is not None and len(points) != len(gt)) or len(gt) == 0:
        raise InputError(f"pred, gt and points must list the same positive number of shapes, got {len(pred)}, "
                         f"{len(gt)}, {None if points is None else len(points)}")
    thresholds = as_thresholds(thresholds)
    counts = torch.zeros(len(gt), len(thresholds), 3, dtype=torch.float64)
    for s in range(len(gt)):
        shape_pred, shape_gt = _keypoint_set(pred[s], "pred", s), _keypoint_set(gt[s], "gt", s)
        if len(shape_gt) == 0:
            raise InputError(f"gt of shape {s} has no keypoints")
        distances = _set_distances(shape_pred, shape_gt, None if points is None else points[s], k)  # (P, K)
        close = distances[None] <= thresholds[:, None, None]  # (T, P, K)
        counts[s, :, 0] = close.any(dim=1).sum(dim=1)
        counts[s, :, 1] = (~close.any(dim=2)).sum(dim=1)
        counts[s, :, 2] = len(shape_gt)
    return counts


def _pad_annotations(annotations: Sequence[Annotation], device: torch.device):
    """Pad per-shape annotations to ``xyz (S, K, 3)``, ``ids (S, K)`` long and ``present (S, K)`` bool."""
    size = max(len(torch.as_tensor(a[1]).reshape(-1)) for a in annotations)
    xyz = torch.zeros(len(annotations), size, 3, dtype=torch.float64, device=device)
    ids = torch.zeros(len(annotations), size, dtype=torch.long, device=device)
    present = torch.zeros(len(annotations), size, dtype=torch.bool, device=device)
    for s, (shape_xyz, shape_ids) in enumerate(annotations):
        shape_xyz = _keypoint_set(shape_xyz, "annotated xyz", s)
        shape_ids = torch.as_tensor(shape_ids, device=device).reshape(-1)
        if len(shape_ids) == 0 or len(shape_ids) != len(shape_xyz):
            raise InputError(f"shape {s}: need K_i >= 1 annotated keypoints with one id each, got "
                             f"{len(shape_xyz)} keypoints and {len(shape_ids)} ids")
        if shape_ids.is_floating_point() or shape_ids.min() < 0 or len(shape_ids.unique()) != len(shape_ids):
            raise InputError(f"shape {s}: semantic ids must be distinct non-negative integers, "
                             f"got {shape_ids.tolist()}")
        xyz[s, :len(shape_ids)] = shape_xyz.to(device)
        ids[s, :len(shape_ids)] = shape_ids
        present[s, :len(shape_ids)] = True
    return xyz, ids, present


def _keypoint_set(keypoints: torch.Tensor, name: str, shape: int) -> torch.Tensor:
    """``keypoints`` as float64 ``(n, 3)``, n >= 0, checked by :func:`~pckeypoints.validation.check_cloud`."""
    keypoints = torch.as_tensor(keypoints, dtype=torch.float64)
    check_cloud(keypoints, f"{name} of shape {shape}", min_points=0)
    return keypoints


def _set_distances(pred: torch.Tensor, gt: torch.Tensor, points: torch.Tensor | None, k: int) -> torch.Tensor:
    """Distances ``(P, K)`` from predictions to ground truth: Euclidean, or geodesic on ``points (N, 3)``."""
    if points is None:
        return torch.cdist(pred, gt)
    geodesics = cloud_geodesics(points, snap_to_points(gt, points), k)  # (K, N)
    return geodesics[:, snap_to_points(pred, points)].T
