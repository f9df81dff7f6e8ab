"""Percentage of correct keypoints (PCK) and mean error for predicted keypoints with Euclidean distances.

Keypoints are 2-D or 3-D (``D`` = 2 or 3). Every distance and threshold is in the units of the coordinates
passed in: KeypointNet's PCK@0.01 is defined in the dataset's own units, so map normalised predictions back
first (``x * scale + center``, as :func:`pckeypoints.evaluation.inference.evaluate_model` does); on unit-radius
(``normalize=True``) coordinates the same threshold means something else."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from pckeypoints.errors import InputError

__all__ = ["CURVE_THRESHOLDS", "keypoint_distances", "mean_error", "pck", "pck_auc", "pck_curve", "pck_from_distances"]

#: Thresholds of a PCK curve: KeypointNet's range, 0 to 0.1 in steps of 0.01.
CURVE_THRESHOLDS = torch.linspace(0, 0.1, 11, dtype=torch.float64)

Thresholds = float | Sequence[float] | torch.Tensor


def keypoint_distances(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``(M,)``, in the units of the coordinates, between ``pred (B, K, D)`` and
    ``target (B, K, D)`` where ``mask (B, K)`` is set."""
    check_keypoints(pred, mask, "pred")
    check_keypoints(target, mask, "target")
    if pred.shape != target.shape:
        raise InputError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    return (pred - target)[mask].norm(dim=-1)


def pck_from_distances(distances: torch.Tensor, thresholds: Thresholds, inclusive: bool = True) -> torch.Tensor:
    """Fraction ``(T,)`` of ``distances (M,)`` within each threshold: ``d <= t``, or ``d < t`` when not
    ``inclusive`` (``inf`` never counts)."""
    thresholds = as_thresholds(thresholds, distances.device)
    if distances.ndim != 1 or distances.numel() == 0:
        raise InputError(f"need a non-empty 1D tensor of distances, got shape {tuple(distances.shape)}")
    if torch.isnan(distances).any():
        raise InputError("distances contain NaN")
    within = distances[None, :] <= thresholds[:, None] if inclusive else distances[None, :] < thresholds[:, None]
    return within.float().mean(dim=1)


def pck_auc(distances: torch.Tensor, thresholds: Thresholds | None = None, inclusive: bool = True) -> float:
    """Area under the PCK curve of ``distances (M,)`` over ``thresholds (T,)`` (default :data:`CURVE_THRESHOLDS`,
    0 to 0.1), trapezoidal, divided by the thresholds' span: 1 when every keypoint is within the first
    threshold, 0 when none is within the last."""
    thresholds = as_thresholds(CURVE_THRESHOLDS if thresholds is None else thresholds, distances.device)
    if thresholds.numel() < 2 or (thresholds.diff() <= 0).any():
        raise InputError(f"need at least two increasing thresholds, got {thresholds.tolist()}")
    curve = pck_from_distances(distances, thresholds, inclusive).double()
    return float(torch.trapezoid(curve, thresholds) / (thresholds[-1] - thresholds[0]))


def pck(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, thresholds: Thresholds) -> torch.Tensor:
    """PCK ``(T,)``: fraction of present keypoints (``mask (B, K)``) whose prediction lies within each threshold.

    Args:
        pred: ``(B, K, D)`` predicted keypoints, ``D`` = 2 or 3.
        target: ``(B, K, D)`` ground truth, in the same units.
        mask: ``(B, K)`` bool, keypoints that are annotated; at least one must be set.
        thresholds: a float or ``(T,)`` distances, in the units of the keypoints; a keypoint counts when ``d <= t``.
    """
    return pck_from_distances(keypoint_distances(pred, target, mask), thresholds)


def pck_curve(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
              thresholds: Thresholds | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(thresholds (T,), pck (T,))`` of :func:`pck`, by default at :data:`CURVE_THRESHOLDS`, KeypointNet's
    range in its dataset units."""
    thresholds = as_thresholds(CURVE_THRESHOLDS.float() if thresholds is None else thresholds, pred.device)
    return thresholds, pck(pred, target, mask, thresholds)


def mean_error(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean distance ``()`` over present keypoints of ``pred``/``target (B, K, D)``, in their units."""
    return keypoint_distances(pred, target, mask).mean()


def as_thresholds(thresholds: Thresholds, device: torch.device | None = None) -> torch.Tensor:
    """Thresholds as a non-empty float tensor ``(T,)`` of finite, non-negative values."""
    thresholds = torch.as_tensor(thresholds, dtype=torch.float64, device=device).reshape(-1)
    if thresholds.numel() == 0:
        raise InputError("need at least one threshold")
    if not torch.isfinite(thresholds).all() or (thresholds < 0).any():
        raise InputError(f"thresholds must be finite and non-negative, got {thresholds.tolist()}")
    return thresholds


def check_keypoints(keypoints: torch.Tensor, mask: torch.Tensor, name: str) -> None:
    """Raise an :class:`~pckeypoints.errors.InputError` unless ``keypoints (B, K, D)``, ``D`` = 2 or 3, are
    finite where ``mask (B, K)`` (bool) is set."""
    if keypoints.ndim != 3 or keypoints.shape[-1] not in (2, 3):
        raise InputError(f"{name} must have shape (B, K, 2) or (B, K, 3), got {tuple(keypoints.shape)}")
    if mask.dtype != torch.bool or mask.shape != keypoints.shape[:2]:
        raise InputError(f"mask must be a bool tensor of shape {tuple(keypoints.shape[:2])}, got "
                         f"{mask.dtype} {tuple(mask.shape)}")
    if not mask.any():
        raise InputError("mask selects no keypoints")
    if not torch.isfinite(keypoints[mask]).all():
        raise InputError(f"{name} has NaN or infinite values at present keypoints")
