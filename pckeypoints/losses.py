"""Keypoint losses over probability maps, with masks for missing keypoints.

Shapes: logits ``(B, K, N)``, targets ``(B, K, D)``, mask ``(B, K)`` (True = annotated),
samples ``(B, K, Ns, D)``. Every loss returns the mean over annotated keypoints (0 with a
gradient when there are none).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .argmax import sampling_argmax, soft_argmax
from .basis import PointBasis

METRICS = ("l1", "l2")
METHODS = ("soft", "soft+var", "soft+js", "discrete", "sampling")


def distance(a: Tensor, b: Tensor, metric: str = "l1") -> Tensor:
    """Distance over the last axis: ``"l1"`` Σ_d |a_d - b_d|, ``"l2"`` Euclidean."""
    diff = a - b
    if metric == "l1":
        return diff.abs().sum(-1)
    if metric == "l2":
        return diff.square().sum(-1).sqrt()
    raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``values (B, K)`` over the entries where ``mask`` is True."""
    if mask is None:
        return values.mean()
    if mask.shape != values.shape:
        raise ValueError(f"mask {tuple(mask.shape)} does not match the keypoints {tuple(values.shape)}")
    return torch.where(mask, values, 0).sum() / mask.sum().clamp(min=1)


def _check_target(target: Tensor, mask: Tensor | None, num_keypoints: int) -> None:
    if target.dim() != 3 or target.shape[1] != num_keypoints:
        raise ValueError(f"target must be (B, K={num_keypoints}, D), got shape {tuple(target.shape)}")
    present = target if mask is None else target[mask]
    if not torch.isfinite(present).all():
        raise ValueError("target keypoints contain NaN or infinite values (mark missing keypoints with the mask)")


def expectation_of_error(samples: Tensor, target: Tensor, mask: Tensor | None = None, metric: str = "l1") -> Tensor:
    """Sampling-argmax loss: mean over samples of d(y_s, y_t), ``samples (B, K, Ns, D)``."""
    _check_target(target, mask, samples.shape[1])
    return masked_mean(distance(samples, target[:, :, None], metric).mean(-1), mask)


def error_of_expectation(pred: Tensor, target: Tensor, mask: Tensor | None = None, metric: str = "l1") -> Tensor:
    """Soft-argmax loss: d(Σ π_i y_i, y_t) for predictions ``(B, K, D)``."""
    _check_target(target, mask, pred.shape[1])
    return masked_mean(distance(pred, target, metric), mask)


def discrete_expectation(
    logits: Tensor, basis: PointBasis, target: Tensor, mask: Tensor | None = None, metric: str = "l1"
) -> Tensor:
    """Expected distance over the discrete map, Σ_i π_i d(y_t, y_i) (paper Eq. 4)."""
    _check_target(target, mask, logits.shape[1])
    probs = basis.probabilities(logits)
    dist = distance(basis.pos[:, None], target[:, :, None], metric)  # (B, K, N)
    return masked_mean((probs * dist).sum(-1), mask)


def variance_regularization(
    logits: Tensor, basis: PointBasis, target_variance: float, mask: Tensor | None = None
) -> Tensor:
    """Nibali et al.'s variance loss Σ_d (Var_d[π] - σ_t²)² with Var_d the map's variance
    Σ_i π_i (y_id - μ_d)² along axis d."""
    probs = basis.probabilities(logits)
    mean = probs @ basis.pos  # (B, K, D)
    second = probs @ basis.pos.square()
    var = (second - mean.square()).clamp(min=0)
    return masked_mean((var - target_variance).square().sum(-1), mask)


def js_regularization(
    logits: Tensor, basis: PointBasis, target: Tensor, sigma: float, mask: Tensor | None = None
) -> Tensor:
    """Nibali et al.'s distribution loss: Jensen-Shannon divergence between π and the Gaussian
    N(y_t, σ² I) evaluated on the basis positions and normalised over each cloud (nats)."""
    _check_target(target, mask, logits.shape[1])
    log_p = basis.mask_logits(logits).log_softmax(-1)
    sq = (basis.pos[:, None] - target[:, :, None]).square().sum(-1)  # (B, K, N)
    log_q = basis.mask_logits(-sq / (2 * sigma**2)).log_softmax(-1)
    log_m = torch.logaddexp(log_p, log_q) - math.log(2)

    def kl_to_m(log_a: Tensor) -> Tensor:
        a = log_a.exp()
        return torch.where(a > 0, a * (log_a - log_m), 0).sum(-1)

    return masked_mean(0.5 * (kl_to_m(log_p) + kl_to_m(log_q)), mask)


class KeypointLoss(nn.Module):
    """Training objective of a keypoint map, by method.

    - ``"soft"``: error of the expectation of soft-argmax.
    - ``"soft+var"``: ... + ``reg_weight`` · variance regularisation towards ``target_sigma``².
    - ``"soft+js"``: ... + ``reg_weight`` · JS regularisation towards N(y_t, ``target_sigma``²).
    - ``"discrete"``: discrete expectation of the error, Σ π_i d(y_t, y_i).
    - ``"sampling"``: expectation of the error over ``num_samples`` sampling-argmax samples at
      temperature ``tau`` (set it from a :mod:`~pckeypoints.schedules` schedule each epoch).
    """

    def __init__(
        self,
        method: str = "sampling",
        metric: str = "l1",
        num_samples: int = 30,
        tau: float = 1.0,
        reg_weight: float = 1.0,
        target_sigma: float = 0.01,
        sampler: str = "auto",
    ):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        self.method, self.metric, self.num_samples, self.tau = method, metric, num_samples, tau
        self.reg_weight, self.target_sigma, self.sampler = reg_weight, target_sigma, sampler

    def forward(
        self,
        logits: Tensor,
        basis: PointBasis,
        target: Tensor,
        mask: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        if self.method == "sampling":
            samples = sampling_argmax(logits, basis, self.num_samples, self.tau, generator, self.sampler)
            return expectation_of_error(samples, target, mask, self.metric)
        if self.method == "discrete":
            return discrete_expectation(logits, basis, target, mask, self.metric)
        loss = error_of_expectation(soft_argmax(logits, basis), target, mask, self.metric)
        if self.method == "soft+var":
            loss = loss + self.reg_weight * variance_regularization(logits, basis, self.target_sigma**2, mask)
        elif self.method == "soft+js":
            loss = loss + self.reg_weight * js_regularization(logits, basis, target, self.target_sigma, mask)
        return loss
