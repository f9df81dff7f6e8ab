"""Triton kernels of the fused sampler (the GPU twin of ``csrc/sampling_argmax.cpp``).

Same functions, arguments and results as the C++ extension: :func:`forward` computes the moments of
every sample's Gumbel-softmax weights with an online softmax over tiles of points, :func:`backward`
their vector-Jacobian product, regenerating the counter-based noise of :mod:`.rng` (each keypoint
reads its window on the cloud's shared noise). Forward runs one program per (cloud, keypoint, tile of
samples); backward one per (cloud, tile of points), looping over keypoints and samples, so every
gradient element has one writer (no atomics, deterministic). The clipped-integral gradient (``clip > 0``) needs
each sample's Σ_i w_i dL/dw_i over all points first: one more program per (cloud, keypoint, tile of samples)
computes it (:func:`_clipped_dot_kernel`).
Positions are limited to D <= 3 (three named accumulators). With ``TRITON_INTERPRET=1`` (set before
this module is imported) the kernels run on CPU tensors, which is how the tests check them.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

BLOCK_N = 128  # points per tile
BLOCK_S = 16  # samples per tile
_FLOAT32_MAX = torch.finfo(torch.float32).max  # kernel scalars are float32


@triton.jit
def _load_axes(ptr, r, D, valid):
    """Columns 0, 1, 2 of the rows ``r`` of a ``(rows, D)`` tensor, 0 past column D - 1 and where not ``valid``."""
    a0 = tl.load(ptr + r * D, mask=valid, other=0.0)
    a1 = tl.load(ptr + r * D + 1, mask=valid & (D > 1), other=0.0)
    a2 = tl.load(ptr + r * D + 2, mask=valid & (D > 2), other=0.0)
    return a0, a1, a2


@triton.jit
def _mix(x):
    """lowbias32 on uint32 lanes (see rng.py)."""
    x = x ^ (x >> 16)
    x = x * 0x21F0AAAD
    x = x ^ (x >> 15)
    x = x * 0x735A2D97
    return x ^ (x >> 15)


@triton.jit
def _sample_keys(seed_ptr, b, k, s):
    """Keys of samples s (uint32 vector) of cloud b, keypoint k."""
    lo = tl.load(seed_ptr).to(tl.uint32)
    hi = tl.load(seed_ptr + 1).to(tl.uint32)
    h = _mix(_mix(lo) ^ hi)
    h = _mix(_mix(_mix(h ^ tl.cast(b, tl.uint32)) ^ tl.cast(k, tl.uint32)) ^ s.to(tl.uint32))
    return h, _mix(h ^ tl.full(h.shape, 0x9E3779B9, tl.uint32))


@triton.jit
def _uniform(column, key1, key2, dtype: tl.constexpr):
    """U(0, 1) draws of uint32 ``column`` under the keys (all broadcast together)."""
    bits = _mix(_mix(column ^ key1) ^ key2)
    return ((bits >> 9).to(dtype) + 0.5) * 1.1920928955078125e-07


@triton.jit
def _perturbed(logit, column, key1, key2):
    """t = l_i + Gumbel noise, ``(BLOCK_S, BLOCK_N)``, for samples (key1, key2) and the points' noise columns."""
    u = _uniform(column.to(tl.uint32)[None, :], key1[:, None], key2[:, None], logit.dtype)
    return logit[None, :] - tl.log(-tl.log(u))


@triton.jit
def _normal(d: tl.constexpr, key1, key2, dtype: tl.constexpr):
    """Standard normal draws of axis d of samples (key1, key2): Box-Muller on columns 2^31 + 2d, + 1."""
    column = tl.full(key1.shape, 0x80000000 + 2 * d, tl.uint32)
    u1 = _uniform(column, key1, key2, dtype)
    u2 = _uniform(column + 1, key1, key2, dtype)
    return tl.sqrt(-2.0 * tl.log(u1)) * tl.cos(6.283185307179586 * u2)


@triton.jit
def _clipped_axis(w, y, v, centre, drift, inv_v, clip, eps):
    """clip σ E[sign(y + ε − s) | w, s] per (sample, point), ``(BLOCK_S, BLOCK_N)``, for one axis of samples s
    (``centre``, ``drift`` = s − mean, ``inv_v`` = 1 / variance), as the C++ ``clipped_logit_grads`` (1 − ρ
    clamped to ``eps``, the dtype's epsilon); 0 where ``w`` is 0."""
    v = v[None, :]
    share = w * v * inv_v[:, None]
    rest = tl.maximum(1.0 - w * share, eps)
    offset = y[None, :] - centre[:, None] + share * drift[:, None]
    sigma = tl.sqrt(v)
    grad = clip * sigma * tl.math.erf(offset / (1.4142135623730951 * sigma * tl.sqrt(rest)))
    return tl.where(w > 0, grad, 0.0)


@triton.jit
def _clipped_grads(w, r, valid, grad_mean_ptr, sample_ptr, mean_ptr, variance_ptr, y0, y1, y2, v0, v1, v2, clip,
                   eps, D: tl.constexpr):
    """dL/dw of the clipped-integral gradient of samples ``r``, ``(BLOCK_S, BLOCK_N)``."""
    gm0, gm1, gm2 = _load_axes(grad_mean_ptr, r, D, valid)
    c0, c1, c2 = _load_axes(sample_ptr, r, D, valid)
    m0, m1, m2 = _load_axes(mean_ptr, r, D, valid)
    n0, n1, n2 = _load_axes(variance_ptr, r, D, valid)
    dw = gm0[:, None] * _clipped_axis(w, y0, v0, c0, c0 - m0, 1.0 / tl.where(valid, n0, 1.0), clip, eps)
    if D > 1:
        dw += gm1[:, None] * _clipped_axis(w, y1, v1, c1, c1 - m1, 1.0 / tl.where(valid, n1, 1.0), clip, eps)
    if D > 2:
        dw += gm2[:, None] * _clipped_axis(w, y2, v2, c2, c2 - m2, 1.0 / tl.where(valid, n2, 1.0), clip, eps)
    return dw


@triton.jit
def _clipped_dot_kernel(
    logits_ptr, pos_ptr, var_ptr, seed_ptr, max_ptr, log_sum_ptr, mean_ptr, variance_ptr, grad_mean_ptr,
    sample_ptr, dot_ptr, K, Ns, N, pos_stride, inv_tau, clip, eps,
    D: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """dot (B, K, Ns) = Σ_i w_i dL/dw_i of the clipped-integral gradient, as the C++ ``clipped_logit_grads``."""
    bk = tl.program_id(0)
    b, k = bk // K, bk % K
    s = tl.program_id(1) * BLOCK_S + tl.arange(0, BLOCK_S)
    valid = s < Ns
    r = bk * Ns + s
    key1, key2 = _sample_keys(seed_ptr, b, 0, s)
    shift = tl.cast(k, tl.int64) * N // K
    m = tl.load(max_ptr + r, mask=valid, other=0.0)
    log_sum = tl.load(log_sum_ptr + r, mask=valid, other=0.0)
    pos_ptr += b * pos_stride
    var_ptr += b * pos_stride
    dot = tl.zeros([BLOCK_S], logits_ptr.dtype.element_ty)
    for i0 in range(0, N, BLOCK_N):
        i = i0 + tl.arange(0, BLOCK_N)
        inside = i < N
        logit = tl.load(logits_ptr + bk * N + i, mask=inside, other=float("-inf"))
        t = _perturbed(logit, (i + shift) % N, key1, key2)
        w = tl.exp((t - m[:, None]) * inv_tau - log_sum[:, None])
        w = tl.where(valid[:, None] & (t > float("-inf")), w, 0.0)
        y0, v0 = tl.load(pos_ptr + i, mask=inside, other=0.0), tl.load(var_ptr + i, mask=inside, other=1.0)
        y1 = tl.load(pos_ptr + N + i, mask=inside & (D > 1), other=0.0)
        v1 = tl.load(var_ptr + N + i, mask=inside & (D > 1), other=1.0)
        y2 = tl.load(pos_ptr + 2 * N + i, mask=inside & (D > 2), other=0.0)
        v2 = tl.load(var_ptr + 2 * N + i, mask=inside & (D > 2), other=1.0)
        dw = _clipped_grads(w, r, valid, grad_mean_ptr, sample_ptr, mean_ptr, variance_ptr, y0, y1, y2, v0, v1, v2,
                            clip, eps, D)
        dot += tl.sum(w * dw, 1)
    tl.store(dot_ptr + r, dot, mask=valid)


@triton.jit
def _forward_kernel(
    logits_ptr, pos_ptr, var_ptr, seed_ptr, mean_ptr, variance_ptr, noise_ptr, max_ptr, log_sum_ptr,
    K, Ns, N, pos_stride, inv_tau,
    D: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_N: tl.constexpr,
):
    bk = tl.program_id(0)
    b, k = bk // K, bk % K
    s = tl.program_id(1) * BLOCK_S + tl.arange(0, BLOCK_S)
    noise1, noise2 = _sample_keys(seed_ptr, b, 0, s)  # the cloud's Gumbel noise, shared by its keypoints
    shift = tl.cast(k, tl.int64) * N // K
    dtype = logits_ptr.dtype.element_ty
    m = tl.full([BLOCK_S], float("-inf"), dtype)
    total = tl.zeros([BLOCK_S], dtype)
    p0, p1, p2 = tl.zeros([BLOCK_S], dtype), tl.zeros([BLOCK_S], dtype), tl.zeros([BLOCK_S], dtype)
    q0, q1, q2 = tl.zeros([BLOCK_S], dtype), tl.zeros([BLOCK_S], dtype), tl.zeros([BLOCK_S], dtype)
    pos_ptr += b * pos_stride
    var_ptr += b * pos_stride
    for i0 in range(0, N, BLOCK_N):
        i = i0 + tl.arange(0, BLOCK_N)
        inside = i < N
        logit = tl.load(logits_ptr + bk * N + i, mask=inside, other=float("-inf"))
        t = _perturbed(logit, (i + shift) % N, noise1, noise2)
        new_m = tl.maximum(m, tl.max(t, 1))
        scale = tl.where(new_m > m, tl.exp((m - new_m) * inv_tau), 1.0)
        e = tl.where(t > float("-inf"), tl.exp((t - new_m[:, None]) * inv_tau), 0.0)
        e2 = e * e
        total = total * scale + tl.sum(e, 1)
        scale2 = scale * scale
        y0 = tl.load(pos_ptr + i, mask=inside, other=0.0)
        v0 = tl.load(var_ptr + i, mask=inside, other=0.0)
        p0 = p0 * scale + tl.sum(e * y0[None, :], 1)
        q0 = q0 * scale2 + tl.sum(e2 * v0[None, :], 1)
        if D > 1:
            y1 = tl.load(pos_ptr + N + i, mask=inside, other=0.0)
            v1 = tl.load(var_ptr + N + i, mask=inside, other=0.0)
            p1 = p1 * scale + tl.sum(e * y1[None, :], 1)
            q1 = q1 * scale2 + tl.sum(e2 * v1[None, :], 1)
        if D > 2:
            y2 = tl.load(pos_ptr + 2 * N + i, mask=inside, other=0.0)
            v2 = tl.load(var_ptr + 2 * N + i, mask=inside, other=0.0)
            p2 = p2 * scale + tl.sum(e * y2[None, :], 1)
            q2 = q2 * scale2 + tl.sum(e2 * v2[None, :], 1)
        m = new_m
    valid = s < Ns
    r = bk * Ns + s
    key1, key2 = _sample_keys(seed_ptr, b, k, s)
    tl.store(max_ptr + r, m, mask=valid)
    tl.store(log_sum_ptr + r, tl.log(total), mask=valid)
    tl.store(mean_ptr + r * D, p0 / total, mask=valid)
    tl.store(variance_ptr + r * D, q0 / (total * total), mask=valid)
    tl.store(noise_ptr + r * D, _normal(0, key1, key2, dtype), mask=valid)
    if D > 1:
        tl.store(mean_ptr + r * D + 1, p1 / total, mask=valid)
        tl.store(variance_ptr + r * D + 1, q1 / (total * total), mask=valid)
        tl.store(noise_ptr + r * D + 1, _normal(1, key1, key2, dtype), mask=valid)
    if D > 2:
        tl.store(mean_ptr + r * D + 2, p2 / total, mask=valid)
        tl.store(variance_ptr + r * D + 2, q2 / (total * total), mask=valid)
        tl.store(noise_ptr + r * D + 2, _normal(2, key1, key2, dtype), mask=valid)


@triton.jit
def _backward_kernel(
    logits_ptr, pos_ptr, var_ptr, seed_ptr, max_ptr, log_sum_ptr, mean_ptr, variance_ptr, grad_mean_ptr,
    grad_var_ptr, grad_logits_ptr, grad_pos_ptr, grad_basis_var_ptr, sample_ptr, dot_ptr,
    K, Ns, N, pos_stride, inv_tau, clip, eps,
    D: tl.constexpr, NEED_POS: tl.constexpr, NEED_VAR: tl.constexpr, CLIP: tl.constexpr, BLOCK_S: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    b = tl.program_id(0)
    i = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    inside = i < N
    dtype = logits_ptr.dtype.element_ty
    pos_ptr += b * pos_stride
    var_ptr += b * pos_stride
    y0 = tl.load(pos_ptr + i, mask=inside, other=0.0)
    v0 = tl.load(var_ptr + i, mask=inside, other=0.0)
    y1 = tl.load(pos_ptr + N + i, mask=inside & (D > 1), other=0.0)
    v1 = tl.load(var_ptr + N + i, mask=inside & (D > 1), other=0.0)
    y2 = tl.load(pos_ptr + 2 * N + i, mask=inside & (D > 2), other=0.0)
    v2 = tl.load(var_ptr + 2 * N + i, mask=inside & (D > 2), other=0.0)
    sv0, sv1, sv2 = tl.where(inside, v0, 1.0), tl.where(inside, v1, 1.0), tl.where(inside, v2, 1.0)  # σ² > 0 for erf
    gy0, gy1, gy2 = tl.zeros([BLOCK_N], dtype), tl.zeros([BLOCK_N], dtype), tl.zeros([BLOCK_N], dtype)
    gv0, gv1, gv2 = tl.zeros([BLOCK_N], dtype), tl.zeros([BLOCK_N], dtype), tl.zeros([BLOCK_N], dtype)
    for k in range(K):
        bk = b * K + k
        logit = tl.load(logits_ptr + bk * N + i, mask=inside, other=float("-inf"))
        column = (i + tl.cast(k, tl.int64) * N // K) % N
        acc = tl.zeros([BLOCK_N], dtype)
        for s0 in range(0, Ns, BLOCK_S):
            s = s0 + tl.arange(0, BLOCK_S)
            valid = s < Ns
            r = bk * Ns + s
            key1, key2 = _sample_keys(seed_ptr, b, 0, s)
            m = tl.load(max_ptr + r, mask=valid, other=0.0)
            log_sum = tl.load(log_sum_ptr + r, mask=valid, other=0.0)
            gm0, gm1, gm2 = _load_axes(grad_mean_ptr, r, D, valid)
            gs0, gs1, gs2 = _load_axes(grad_var_ptr, r, D, valid)
            mu0, mu1, mu2 = _load_axes(mean_ptr, r, D, valid)
            nu0, nu1, nu2 = _load_axes(variance_ptr, r, D, valid)
            t = _perturbed(logit, column, key1, key2)
            w = tl.exp((t - m[:, None]) * inv_tau - log_sum[:, None])
            w = tl.where(valid[:, None] & (t > float("-inf")), w, 0.0)
            if CLIP:  # dL/dw_i - dot, dot from _clipped_dot_kernel
                dot = tl.load(dot_ptr + r, mask=valid, other=0.0)
                dw = _clipped_grads(w, r, valid, grad_mean_ptr, sample_ptr, mean_ptr, variance_ptr, y0, y1, y2, sv0,
                                    sv1, sv2, clip, eps, D)
                acc += tl.sum(w * (dw - dot[:, None]), 0)
            else:  # dL/dw_i - dot per axis, as the C++ kernel: exactly 0 for one-hot weights at any 1 / tau
                dw_pos = (gm0[:, None] * (y0[None, :] - mu0[:, None]) + gm1[:, None] * (y1[None, :] - mu1[:, None])
                          + gm2[:, None] * (y2[None, :] - mu2[:, None]))
                dw_var = (gs0[:, None] * (w * v0[None, :] - nu0[:, None])
                          + gs1[:, None] * (w * v1[None, :] - nu1[:, None])
                          + gs2[:, None] * (w * v2[None, :] - nu2[:, None]))
                acc += tl.sum(w * (dw_pos + 2 * dw_var), 0)
            if NEED_POS:
                gy0 += tl.sum(w * gm0[:, None], 0)
                gy1 += tl.sum(w * gm1[:, None], 0)
                gy2 += tl.sum(w * gm2[:, None], 0)
            if NEED_VAR:
                w2 = w * w
                gv0 += tl.sum(w2 * gs0[:, None], 0)
                gv1 += tl.sum(w2 * gs1[:, None], 0)
                gv2 += tl.sum(w2 * gs2[:, None], 0)
        tl.store(grad_logits_ptr + bk * N + i, acc * inv_tau, mask=inside)
    out = b * D * N + i
    if NEED_POS:
        tl.store(grad_pos_ptr + out, gy0, mask=inside)
        tl.store(grad_pos_ptr + out + N, gy1, mask=inside & (D > 1))
        tl.store(grad_pos_ptr + out + 2 * N, gy2, mask=inside & (D > 2))
    if NEED_VAR:
        tl.store(grad_basis_var_ptr + out, gv0, mask=inside)
        tl.store(grad_basis_var_ptr + out + N, gv1, mask=inside & (D > 1))
        tl.store(grad_basis_var_ptr + out + 2 * N, gv2, mask=inside & (D > 2))


def forward(logits: Tensor, pos: Tensor, var: Tensor, seed: Tensor, num_samples: int, inv_tau: float,
            block_n: int = BLOCK_N, block_s: int = BLOCK_S) -> list[Tensor]:
    """logits (B, K, N), pos and var (Bp, D, N), seed (2,) int64 -> mean, variance (B, K, Ns, D),
    max, log_sum (B, K, Ns), noise (B, K, Ns, D); as the C++ ``forward``."""
    b, k, n = logits.shape
    d = pos.shape[1]
    mean = logits.new_empty(b, k, num_samples, d)
    variance, noise = torch.empty_like(mean), torch.empty_like(mean)
    row_max, log_sum = logits.new_empty(b, k, num_samples), logits.new_empty(b, k, num_samples)
    grid = (b * k, triton.cdiv(num_samples, block_s))
    _forward_kernel[grid](
        logits, pos, var, seed, mean, variance, noise, row_max, log_sum,
        k, num_samples, n, 0 if pos.shape[0] == 1 else d * n, min(inv_tau, _FLOAT32_MAX),
        D=d, BLOCK_S=block_s, BLOCK_N=block_n,
    )
    return [mean, variance, row_max, log_sum, noise]


def backward(logits: Tensor, pos: Tensor, var: Tensor, seed: Tensor, inv_tau: float, row_max: Tensor,
             log_sum: Tensor, mean: Tensor, variance: Tensor, grad_mean: Tensor, grad_var: Tensor, need_pos: bool,
             need_var: bool, sample: Tensor, clip: float, block_n: int = BLOCK_N,
             block_s: int = BLOCK_S) -> list[Tensor | None]:
    """Gradients of the logits (B, K, N) and, when asked for, of pos and var (B, D, N); with ``clip > 0`` the
    logits' is the clipped-integral gradient around ``sample`` (B, K, Ns, D); as the C++ ``backward``."""
    b, k, n = logits.shape
    d, ns = pos.shape[1], row_max.shape[2]
    pos_stride, inv_tau = 0 if pos.shape[0] == 1 else d * n, min(inv_tau, _FLOAT32_MAX)
    eps = torch.finfo(logits.dtype).eps  # the floor of 1 − ρ in the clipped gradient
    grad_logits = torch.empty_like(logits)
    grad_pos = logits.new_empty(b, d, n) if need_pos else None
    grad_basis_var = logits.new_empty(b, d, n) if need_var else None
    mean, variance, dot = mean.contiguous(), variance.contiguous(), row_max  # dot: unread without clip
    if clip > 0:
        sample, dot = sample.contiguous(), torch.empty_like(row_max)
        _clipped_dot_kernel[(b * k, triton.cdiv(ns, block_s))](
            logits, pos, var, seed, row_max, log_sum, mean, variance, grad_mean, sample, dot, k, ns, n, pos_stride,
            inv_tau, clip, eps,
            D=d, BLOCK_S=block_s, BLOCK_N=block_n,
        )
    _backward_kernel[(b, triton.cdiv(n, block_n))](
        logits, pos, var, seed, row_max, log_sum, mean, variance, grad_mean, grad_var,
        grad_logits, grad_logits if grad_pos is None else grad_pos,
        grad_logits if grad_basis_var is None else grad_basis_var, sample if clip > 0 else row_max, dot,
        k, ns, n, pos_stride, inv_tau, float(clip), eps,
        D=d, NEED_POS=need_pos, NEED_VAR=need_var, CLIP=clip > 0, BLOCK_S=block_s, BLOCK_N=block_n,
    )
    return [grad_logits, grad_pos, grad_basis_var]
