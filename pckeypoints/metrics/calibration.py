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
from pckeypoints.errors import InputError

__all__ = ["TEMPERATURE_BOUNDS", "brier_score", "calibration_correlation", "component_within",
           "expected_calibration_error", "fit_temperature", "mixture_within", "reliability_bins", "within_radius_nll",
           "within_radius_probability"]

#: Search interval of :func:`fit_temperature` (σ scaled by 0.01 to 10).
TEMPERATURE_BOUNDS = (1e-4, 1e2)


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


def within_radius_probability(center: Tensor, probs: Tensor, pos: Tensor, sigma: Tensor, radius: Tensor | float,
                              temperature: float = 1.0) -> Tensor:
    """P(|Y - c| < r) for Y drawn from the 3-D mixture Σ_i π_i N(y_i, σ_i² I), in closed form.

    For one component at distance m = |y_i - c| (noncentral χ with 3 degrees of freedom),
    P = Φ((r - m)/σ) - Φ((-r - m)/σ) - (σ/m) [φ((r - m)/σ) - φ((r + m)/σ)], and
    erf(r/σ√2) - √(2/π) (r/σ) exp(-r²/2σ²) at m = 0.

    With ``temperature`` T each component is tempered, N(y_i, σ_i² I)^(1/T) ∝ N(y_i, T σ_i² I), the weights π
    kept (see :func:`fit_temperature`).

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
    center = center.double()
    r = torch.as_tensor(radius, dtype=torch.float64, device=center.device).reshape(-1, 1, 1)
    m = torch.cdist(center, pos.double().expand(center.shape[0], -1, -1))  # (B, K, N)
    s = sigma.double().expand(center.shape[0], -1)[:, None, :]
    return (probs.double() * component_within(m, s * math.sqrt(temperature), r)).sum(-1).clamp(0, 1)


def component_within(distance: Tensor, sigma: Tensor, radius: Tensor) -> Tensor:
    """P(|Y - c| < r) for Y ~ N(y, σ² I) in 3-D at ``distance`` m = |y - c| (see :func:`within_radius_probability`);
    broadcasting float64 tensors, in [0, 1]."""
    tiny = distance < 1e-6 * sigma
    m = torch.where(tiny, sigma, distance)
    a, b = (radius - m) / sigma, (radius + m) / sigma
    off = torch.special.ndtr(a) - torch.special.ndtr(-b) - sigma / m * (_normal_pdf(a) - _normal_pdf(b))
    q = radius / sigma
    at_center = torch.erf(q / math.sqrt(2)) - math.sqrt(2 / math.pi) * q * torch.exp(-q.square() / 2)
    return torch.where(tiny, at_center, off).clamp(0, 1)


def mixture_within(temperature: float, probs: Tensor, distance: Tensor, sigma: Tensor, radius: Tensor) -> Tensor:
    """The within-radius probability ``(M,)`` at ``temperature`` of ``M`` maps given as weights ``probs (M, N)``
    (0 at padding), distances ``distance (M, N)`` of their components from the estimates, component
    ``sigma (M, N)`` and ``radius (M,)``, all float64."""
    return (probs * component_within(distance, sigma * math.sqrt(temperature), radius[:, None])).sum(-1).clamp(0, 1)


def within_radius_nll(temperature: float, probs: Tensor, distance: Tensor, sigma: Tensor, radius: Tensor,
                      correct: Tensor) -> float:
    """Mean Bernoulli negative log-likelihood of ``correct (M,)`` under :func:`mixture_within` (same arguments)."""
    p = mixture_within(temperature, probs, distance, sigma, radius).clamp(1e-12, 1 - 1e-12)
    correct = correct.double()
    return float(-(correct * p.log() + (1 - correct) * (-p).log1p()).mean())


def fit_temperature(probs: Tensor, distance: Tensor, sigma: Tensor, radius: Tensor, correct: Tensor,
                    bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> float:
    """The temperature T in ``bounds`` that minimises :func:`within_radius_nll` (same arguments, ``correct``
    bool: the target lies within ``radius`` of the estimate), by a bounded scalar search over log T.

    T tempers the map's Gaussian components, σ_i -> √T σ_i, and keeps the weights π that the estimates are read
    from. The maps' weights already spread over the neighbourhood of the target that the loss teaches; the basis
    σ_i widens each point again, so T < 1 corrects an underconfidence that a temperature of π alone
    (softmax(logits / T)) cannot: it leaves the spread of the basis as a floor.
    """
    from scipy.optimize import minimize_scalar

    if probs.ndim != 2 or not probs.shape == distance.shape == sigma.shape or not radius.shape == correct.shape \
            == probs.shape[:1]:
        raise InputError(f"need probs, distance and sigma (M, N), radius and correct (M,), got {tuple(probs.shape)}, "
                         f"{tuple(distance.shape)}, {tuple(sigma.shape)}, {tuple(radius.shape)}, {tuple(correct.shape)}")
    if len(correct) == 0:
        raise InputError("cannot fit a temperature to no keypoints")
    probs, distance, sigma, radius = probs.double(), distance.double(), sigma.double(), radius.double()
    result = minimize_scalar(lambda log_t: within_radius_nll(math.exp(log_t), probs, distance, sigma, radius, correct),
                             bounds=tuple(math.log(b) for b in bounds), method="bounded", options={"xatol": 1e-3})
    return math.exp(result.x)


def reliability_bins(confidence: Tensor, correct: Tensor, num_bins: int = 10) -> tuple[Tensor, Tensor, Tensor]:
    """Predictions binned by confidence into ``num_bins`` equal-width bins of [0, 1] (1 in the last); the one
    binning of the ECE and of every reliability diagram (:func:`viz.plots.plot_calibration`).

    Returns:
        ``(mean confidence, accuracy, count)``, each ``(num_bins,)`` float64 over every bin in order, so that the
        bins of several runs line up; an empty bin has count 0 and NaN means (plots select ``count > 0``).
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
