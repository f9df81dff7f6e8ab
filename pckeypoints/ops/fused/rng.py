"""Counter-based random numbers: each draw is a pure function of (seed, b, k, s, column).

The fused sampling-argmax kernels (C++ and Triton) regenerate their Gumbel noise in the backward
pass instead of storing a ``(B, K, Ns, N)`` tensor. They and this pure-PyTorch implementation
compute the same 32-bit hash, so every backend draws the same samples for the same seed.

The hash is a keyed chain of ``mix`` rounds (the "lowbias32" integer finaliser, a bijection of
32-bit words built from multiply/xor-shift steps, as in Philox-style counter RNGs)::

    h    = mix(mix(mix(mix(mix(seed_lo) ^ seed_hi) ^ b) ^ k) ^ s)      # per sample (b, k, s)
    key1, key2 = h, mix(h ^ 0x9E3779B9)
    bits = mix(mix(column ^ key1) ^ key2)                              # per point column
    u    = ((bits >> 9) + 0.5) · 2^-23                                  # in (0, 1), never 0 or 1

(23 bits, not 24: in float32 (2^24 - 1) + 0.5 rounds to 2^24, which would make u = 1 and the Gumbel noise infinite.)

Columns ``2^31 + 2d, 2^31 + 2d + 1`` give the Box-Muller pair of sample (b, k, s)'s Gaussian draw on axis d.
Columns ``c < 2^31`` under the keys of (b, 0, s) give the Gumbel noise of sample s of cloud b, which the
cloud's K keypoints share: keypoint k reads point i's noise from column ``(i + ⌊k N / K⌋) mod N``
(:func:`noise_columns`). So the kernels draw it once per (cloud, sample), not once per keypoint; each
keypoint's noise is still i.i.d. Gumbel over its points (its samples have exactly their distribution), and
different keypoints read it at different shifts (distinct while K <= N).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

MASK32 = 0xFFFFFFFF
MUL1, MUL2 = 0x21F0AAAD, 0x735A2D97
GOLDEN = 0x9E3779B9
NORMAL_COLUMN = 1 << 31


def _mul32(x: Tensor, c: int) -> Tensor:
    """``x · c mod 2^32`` for int64 ``x`` in [0, 2^32), without int64 overflow."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & MASK32


def mix(x: Tensor) -> Tensor:
    """The lowbias32 bijection of 32-bit words held in int64 tensors."""
    x = x ^ (x >> 16)
    x = _mul32(x, MUL1)
    x = x ^ (x >> 15)
    x = _mul32(x, MUL2)
    return x ^ (x >> 15)


def draw_seed(generator: torch.Generator | None, device: torch.device) -> Tensor:
    """A fresh seed ``(2,)`` int64 (low and high 32-bit words) on ``device``, drawn from
    ``generator`` (default: the global RNG); no host synchronisation."""
    if generator is not None:
        device = generator.device
    return torch.randint(0, 1 << 32, (2,), generator=generator, device=device)


def row_keys(seed: Tensor, b: Tensor, k: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
    """The two 32-bit keys of samples (b, k, s) (broadcast int64 tensors) under ``seed`` (2,)."""
    h = mix(mix(seed[0]) ^ seed[1])
    h = mix(mix(mix(h ^ b) ^ k) ^ s)
    return h, mix(h ^ GOLDEN)


def uniform(keys: tuple[Tensor, Tensor], column: Tensor, dtype: torch.dtype) -> Tensor:
    """U(0, 1) draws of ``column`` (int64) under ``keys``, broadcast, in ``dtype``."""
    bits = mix(mix(column ^ keys[0]) ^ keys[1])
    return ((bits >> 9).to(dtype) + 0.5) * 2.0**-23  # exact in float32: at most 1 - 2^-24


def _sample_keys(seed: Tensor, b: int, k: int, s: int) -> tuple[Tensor, Tensor]:
    """Keys ``(B, K, Ns, 1)`` of every sample."""
    idx = lambda n, dim: torch.arange(n, device=seed.device).view([-1 if d == dim else 1 for d in range(4)])
    return row_keys(seed.long(), idx(b, 0), idx(k, 1), idx(s, 2))


def noise_columns(num_keypoints: int, num_points: int, device: torch.device | None = None) -> Tensor:
    """``(K, N)`` int64: the column of its cloud's shared noise that keypoint k reads for point i,
    ``(i + ⌊k N / K⌋) mod N``."""
    k = torch.arange(num_keypoints, device=device)[:, None]
    return (torch.arange(num_points, device=device) + k * num_points // num_keypoints) % num_points


def gumbel(seed: Tensor, shape: tuple[int, int, int, int], dtype: torch.dtype) -> Tensor:
    """Gumbel noise -log(-log u) ``(B, K, Ns, N)`` of every sample and point (the reference of the
    fused kernels, which never hold it): keypoint k's window on its cloud's shared noise."""
    b, k, s, n = shape
    cloud_keys = _sample_keys(seed, b, 1, s)  # (B, 1, Ns, 1): keypoint 0's, read by every keypoint
    u = uniform(cloud_keys, noise_columns(k, n, seed.device)[:, None, :], dtype)
    return u.log().neg_().log_().neg_()


def normal(seed: Tensor, shape: tuple[int, int, int, int], dtype: torch.dtype) -> Tensor:
    """Standard normal draws ``(B, K, Ns, D)`` (Box-Muller), one per sample and axis."""
    b, k, s, d = shape
    keys = _sample_keys(seed, b, k, s)
    column = NORMAL_COLUMN + 2 * torch.arange(d, device=seed.device)
    u1, u2 = uniform(keys, column, dtype), uniform(keys, column + 1, dtype)
    return u1.log().mul_(-2).sqrt_().mul_(torch.cos(2 * math.pi * u2))
