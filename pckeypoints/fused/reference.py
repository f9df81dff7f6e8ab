"""Pure-PyTorch reference of the fused sampler: the same counter-based noise, held densely.

Memory is O(B·K·Ns·N); autograd does the backward. The tests compare the C++ and Triton kernels
against it.
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import rng


def gumbel_moments(logits: Tensor, pos: Tensor, var: Tensor, seed: Tensor, num_samples: int, inv_tau: float):
    """Mean and variance ``(B, K, Ns, D)`` of Σ_i w_i (y_i + ε_i), ε_i ~ N(0, var_i), for the
    Gumbel-softmax weights w = softmax((l + g) / τ) of every sample.

    Args:
        logits: ``(B, K, N)``, -inf at padding.
        pos, var: ``(Bp, D, N)`` positions and basis variances, channels first, ``Bp`` 1 or B.
        seed: ``(2,)`` int64.
        inv_tau: 1 / τ (clamped to the dtype's largest value).
    """
    b, k, n = logits.shape
    t = logits[:, :, None, :] + rng.gumbel(seed, (b, k, num_samples, n), logits.dtype)
    inv_tau = min(inv_tau, torch.finfo(logits.dtype).max)
    w = ((t - t.amax(-1, keepdim=True).detach()) * inv_tau).softmax(-1)  # (B, K, Ns, N)
    mean = torch.einsum("bksn,bdn->bksd", w, pos.expand(b, -1, -1))
    return mean, torch.einsum("bksn,bdn->bksd", w.square(), var.expand(b, -1, -1))
