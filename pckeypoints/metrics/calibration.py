"""How well a heatmap's confidence predicts whether its keypoint is correct."""
from __future__ import annotations

import math

import torch

__all__ = ["calibration_correlation"]


def calibration_correlation(confidence: torch.Tensor, correct: torch.Tensor) -> float:
    """Pearson correlation between confidence and correctness.

    Args:
        confidence: ``(M,)`` one value per predicted keypoint, typically the peak probability ``max π`` of its map.
        correct: ``(M,)`` bool or 0/1, whether that keypoint lies within the PCK threshold.

    Returns:
        r in [-1, 1]; NaN when either input is constant (e.g. every keypoint correct), where r is undefined.
    """
    confidence = torch.as_tensor(confidence).detach().double().reshape(-1)
    correct = torch.as_tensor(correct).detach().double().reshape(-1)
    if confidence.shape != correct.shape:
        raise ValueError(f"confidence {tuple(confidence.shape)} and correct {tuple(correct.shape)} differ in size")
    if confidence.numel() < 2:
        raise ValueError(f"need at least 2 keypoints, got {confidence.numel()}")
    if not (torch.isfinite(confidence).all() and torch.isfinite(correct).all()):
        raise ValueError("confidence and correct must be finite")
    confidence, correct = confidence - confidence.mean(), correct - correct.mean()
    norm = confidence.norm() * correct.norm()
    if norm == 0:
        return math.nan
    return float((confidence @ correct / norm).clamp(-1, 1))
