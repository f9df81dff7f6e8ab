"""Pure-PyTorch reference of the fused sampler: the same counter-based noise, held densely.

Memory is O(B·K·Ns·N); autograd does the backward. The tests compare the C++ and Triton kernels
against it.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from pckeypoints.ops.fused import rng


def gumbel_moments(logits: Tensor, pos: Tensor, var: Tensor, seed: Tensor, num_samples: int, inv_tau: float,
                   noise: Tensor | None = None, clip: float = 0.0) -> tuple[Tensor, Tensor]:
    """Mean and variance ``(B, K, Ns, D)`` of Σ_i w_i (y_i + ε_i), ε_i ~ N(0, var_i), for the
    Gumbel-softmax weights w = softmax((l + g) / τ) of every sample.

    Args:
        logits: ``(B, K, N)``, -inf at padding.
        pos, var: ``(Bp, D, N)`` positions and basis variances, channels first, ``Bp`` 1 or B.
        seed: ``(2,)`` int64.
        inv_tau: 1 / τ (clamped to the dtype's largest value).
        noise: ``(B, K, Ns, D)`` the samples' standard normal draws; needed when ``clip > 0``.
        clip: > 0: the weights get the clipped-integral gradient of amplitude ``clip`` basis standard
            deviations for each sample mean + sqrt(variance) · noise (:func:`clipped_weight_grads`); 0: the exact
            gradient.
    """
    b, k, n = logits.shape
    t = logits[:, :, None, :] + rng.gumbel(seed, (b, k, num_samples, n), logits.dtype)
    inv_tau = min(inv_tau, torch.finfo(logits.dtype).max)
    w = ((t - t.amax(-1, keepdim=True).detach()) * inv_tau).softmax(-1)  # (B, K, Ns, N)
    pos, var = pos.expand(b, -1, -1), var.expand(b, -1, -1)
    if clip <= 0:
        return torch.einsum("bksn,bdn->bksd", w, pos), torch.einsum("bksn,bdn->bksd", w.square(), var)
    fixed = w.detach()
    mean = torch.einsum("bksn,bdn->bksd", fixed, pos)
    variance = torch.einsum("bksn,bdn->bksd", fixed.square(), var)
    sample = mean.detach() + variance.detach().sqrt() * noise
    grads = clipped_weight_grads(fixed, pos.detach(), var.detach(), mean.detach(), variance.detach(), sample, clip)
    surrogate = torch.einsum("bksn,bksnd->bksd", w, grads)  # its gradient for w is the clipped one
    return mean + (surrogate - surrogate.detach()), variance


def clipped_weight_grads(weights: Tensor, pos: Tensor, var: Tensor, mean: Tensor, variance: Tensor, sample: Tensor,
                         clip: float) -> Tensor:
    """The clipped-integral gradient of each weight per unit gradient of each sample axis, ``(B, K, Ns, N, D)``.

    The authors' estimator gives weight i the gradient a_i · sign(y_i + ε_i − s) (amplitude a_i = ``clip`` · σ_i,
    the point's own basis draw ε_i ~ N(0, σ_i²), the sample s = Σ_j w_j (y_j + ε_j)). The fused sampler draws s
    from its moments, mean m and variance V = Σ_j w_j² σ_j², and uses that sign's expectation given w and s: per
    axis y_i + ε_i − s and s are jointly normal, so with the point's share ρ_i = w_i² σ_i² / V of V,

        E[sign(y_i + ε_i − s) | w, s] = erf((y_i − s + (w_i σ_i² / V)(s − m)) / (√2 σ_i √(1 − ρ_i))).

    Both estimators so have the same expected gradient. 0 where the weight is 0 (padding, where σ may be 0).

    Args:
        weights: ``(B, K, Ns, N)``.
        pos, var: ``(B, D, N)``.
        mean, variance, sample: ``(B, K, Ns, D)``.
    """
    var = var.transpose(1, 2)[:, None, None]  # (B, 1, 1, N, D)
    w = weights[..., None]
    share = w * var / variance[..., None, :]  # w_i σ_i² / V
    offset = pos.transpose(1, 2)[:, None, None] - sample[..., None, :] + share * (sample - mean)[..., None, :]
    rest = (1 - w * share).clamp_min(torch.finfo(var.dtype).eps)  # 1 − ρ_i
    sigma = var.sqrt()
    grads = clip * sigma * torch.erf(offset / (math.sqrt(2) * sigma * rest.sqrt()))
    return torch.where(w > 0, grads, 0.0)
