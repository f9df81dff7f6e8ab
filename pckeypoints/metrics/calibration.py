"""How well a keypoint's confidence predicts whether it is correct.

Two kinds of confidence: the map's peak probability ``max π`` (the paper's Table 3 uses its Pearson
correlation with correctness), and the mixture's own probability that the target lies within the PCK
radius of the estimate (:func:`within_radius_probability`), which is a probability and can be checked
with a reliability diagram, the expected calibration error and the Brier score.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from ..errors import InputError

__all__ = ["brier_score", "calibration_correlation", "expected_calibration_error", "reliability_bins",
           "within_radius_probability"]


def calibration_correlation(confidence: Tensor, correct: Tensor) -> float:
    """Pearson correlation between confidence and correctness.

    Args:
        confidence: ``(M,)`` one value per predicted keypoint, e.g. the peak probability ``max π`` of its map.
        correct: ``(M,)`` bool or values in [0, 1] (e.g. a continuous correctness exp(-d²/2t²)).

    Returns:
        r in [-1, 1]; NaN when either input is constant (e.g. every keypoint correct), where r is undefined.
    """
    confidence, correct = _pair(confidence, correct, min_count=2)
    confidence, correct = confidence - confidence.mean(), correct - correct.mean()
    norm = confidence.norm() * correct.norm()
    if norm == 0:
        return math.nan
    return float((confidence @ correct / norm).clamp(-1, 1))


def within_radius_probability(center: Tensor, probs: Tensor, pos: Tensor, sigma: Tensor, radius: Tensor | float) -> Tensor:
    """P(|Y - c| < r) for Y drawn from the 3-D mixture Σ_i π_i N(y_i, σ_i² I), in closed form.

    For one component at distance m = |y_i - c| (noncentral χ with 3 degrees of freedom),
    P = Φ((r - m)/σ) - Φ((-r - m)/σ) - (σ/m) [φ((r - m)/σ) - φ((r + m)/σ)], and
    erf(r/σ√2) - √(2/π) (r/σ) exp(-r²/2σ²) at m = 0.

    Args:
        center: ``(B, K, 3)`` the estimates c.
        probs: ``(B, K, N)`` mixture weights π (0 at padding).
        pos: ``(B, N, 3)`` component means y_i (``B`` may be 1).
        sigma: ``(B, N)`` isotropic component σ_i > 0.
        radius: r, a float or ``(B,)`` per cloud.
    Returns:
        ``(B, K)`` probabilities in [0, 1], float64.
    """
    if center.shape[-1] != 3 or pos.shape[-1] != 3:
        raise InputError(f"the closed form is for 3-D points, got center {tuple(center.shape)}, pos {tuple(pos.shape)}")
    center, probs, pos, sigma = center.double(), probs.double(), pos.double(), sigma.double()
    r = torch.as_tensor(radius, dtype=torch.float64, device=center.device).reshape(-1, 1, 1)
    m = torch.cdist(center, pos.expand(center.shape[0], -1, -1))  # (B, K, N)
    s = sigma.expand(center.shape[0], -1)[:, None, :]
    tiny = m < 1e-6 * s
    m_safe = torch.where(tiny, s, m)
    a, b = (r - m_safe) / s, (r + m_safe) / s
    off = torch.special.ndtr(a) - torch.special.ndtr(-b) - s / m_safe * (_normal_pdf(a) - _normal_pdf(b))
    at_center = torch.erf(r / (s * math.sqrt(2))) - math.sqrt(2 / math.pi) * (r / s) * torch.exp(-(r / s).square() / 2)
    inside = torch.where(tiny, at_center, off).clamp(0, 1)
    return (probs * inside).sum(-1).clamp(0, 1)


def reliability_bins(confidence: Tensor, correct: Tensor, num_bins: int = 10) -> tuple[Tensor, Tensor, Tensor]:
    """Predictions binned by confidence into ``num_bins`` equal-width bins of [0, 1].

    Returns:
        ``(mean confidence, accuracy, count)``, each ``(num_bins,)`` float64 (NaN means for empty bins).
    """
    confidence, correct = _pair(confidence, correct, min_count=1)
    if confidence.min() < 0 or confidence.max() > 1:
        raise InputError("confidence must lie within [0, 1]")
    bins = (confidence * num_bins).long().clamp(max=num_bins - 1)
    count = torch.bincount(bins, minlength=num_bins).double()
    mean_confidence = torch.bincount(bins, confidence, num_bins) / count
    accuracy = torch.bincount(bins, correct, num_bins) / count
    return mean_confidence, accuracy, count


def expected_calibration_error(confidence: Tensor, correct: Tensor, num_bins: int = 10) -> float:
    """ECE: Σ_bins (count / M) · |accuracy - mean confidence| over equal-width confidence bins."""
    mean_confidence, accuracy, count = reliability_bins(confidence, correct, num_bins)
    used = count > 0
    return float((count[used] / count.sum() * (accuracy[used] - mean_confidence[used]).abs()).sum())


def brier_score(confidence: Tensor, correct: Tensor) -> float:
    """Mean squared difference between the predicted probability of being correct and the outcome."""
    confidence, correct = _pair(confidence, correct, min_count=1)
    return float((confidence - correct).square().mean())


def _normal_pdf(x: Tensor) -> Tensor:
    return torch.exp(-0.5 * x.square()) / math.sqrt(2 * math.pi)


def _pair(confidence: Tensor, correct: Tensor, min_count: int) -> tuple[Tensor, Tensor]:
    confidence = torch.as_tensor(confidence).detach().double().reshape(-1)
    correct = torch.as_tensor(correct).detach().double().reshape(-1)
    if confidence.shape != correct.shape:
        raise InputError(f"confidence {tuple(confidence.shape)} and correct {tuple(correct.shape)} differ in size")
    if confidence.numel() < min_count:
        raise InputError(f"need at least {min_count} keypoints, got {confidence.numel()}")
    if not (torch.isfinite(confidence).all() and torch.isfinite(correct).all()):
        raise InputError("confidence and correct must be finite")
    return confidence, correct
