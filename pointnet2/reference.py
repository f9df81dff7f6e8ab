"""Pure-PyTorch reference of the pointnet2 ops (readable, vectorised, autograd does the backward).

Same conventions and bit-identical results as the C++/CUDA backends (see :mod:`pointnet2.ops`): squared
distances are summed as ``(dx*dx + dy*dy) + dz*dz`` and weighted sums in slot order. Inputs are assumed
valid; validation lives in :mod:`pointnet2.ops`. Memory is O(B * M * N) for the neighbour searches.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _sq_dist(points: Tensor, centres: Tensor) -> Tensor:
    """Squared distances (B, M, N) between centres (B, M, 3) and points (B, N, 3)."""
    diff = points[:, None, :, :] - centres[:, :, None, :]
    return diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1] + diff[..., 2] * diff[..., 2]


def _gather_points(values: Tensor, idx: Tensor) -> Tensor:
    """values (B, N, D) at idx (B, M, ...) -> (B, M, ..., D)."""
    batch = torch.arange(values.shape[0], device=values.device).view(-1, *([1] * (idx.dim() - 1)))
    return values[batch, idx]


def furthest_point_sample(xyz: Tensor, m: int) -> Tensor:
    """Farthest point sampling starting at index 0: xyz (B, N, 3) -> (B, M) long."""
    B, N, _ = xyz.shape
    idx = torch.zeros(B, m, dtype=torch.long, device=xyz.device)
    dist = torch.full((B, N), float("inf"), dtype=xyz.dtype, device=xyz.device)
    for j in range(1, m):
        last = _gather_points(xyz, idx[:, j - 1 : j])  # (B, 1, 3)
        dist = torch.minimum(dist, _sq_dist(xyz, last)[:, 0])
        idx[:, j] = dist.argmax(dim=1)  # first maximum on ties
    return idx


def ball_query(xyz: Tensor, new_xyz: Tensor, radius: float, nsample: int) -> tuple[Tensor, Tensor]:
    """First ``nsample`` points (index order) within ``radius`` of each centre.

    Returns idx (B, M, nsample) long, padded with the first neighbour, -1 for an empty ball, and
    counts (B, M) int32 = number of distinct neighbours written (<= nsample).
    """
    N = xyz.shape[1]
    inside = _sq_dist(xyz, new_xyz) < radius * radius  # (B, M, N)
    order = torch.arange(N, device=xyz.device).expand_as(inside)
    candidates = torch.where(inside, order, N)  # outside points sort last
    k = min(nsample, N)
    idx = candidates.topk(k, dim=-1, largest=False, sorted=True).values
    idx = torch.cat([idx, idx.new_full((*idx.shape[:2], nsample - k), N)], dim=-1)
    counts = inside.sum(-1).clamp(max=nsample)
    slot = torch.arange(nsample, device=xyz.device)
    idx = torch.where(slot < counts[..., None], idx, idx[..., :1])  # pad with the first neighbour
    idx = torch.where(counts[..., None] > 0, idx, -1)
    return idx, counts.to(torch.int32)


def ball_query_group(
    xyz: Tensor, new_xyz: Tensor, features: Tensor | None, radius: float, nsample: int
) -> tuple[Tensor, Tensor]:
    """Ball query + grouping: (B, 3 + C, M, nsample) neighbour offsets and features, and counts (B, M)."""
    idx, counts = ball_query(xyz, new_xyz, radius, nsample)
    empty = (idx < 0)[..., None]  # (B, M, S, 1)
    safe = idx.clamp(min=0)
    offsets = _gather_points(xyz, safe) - new_xyz[:, :, None, :]  # (B, M, S, 3)
    parts = [offsets]
    if features is not None:
        parts.append(_gather_points(features.transpose(1, 2), safe))  # (B, M, S, C)
    grouped = torch.where(empty, 0, torch.cat(parts, dim=-1))
    return grouped.permute(0, 3, 1, 2), counts


def knn(xyz: Tensor, new_xyz: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """k nearest points of each query, nearest first, ties to the smaller index: (dist2, idx) (B, M, k)."""
    dist2, idx = _sq_dist(xyz, new_xyz).sort(dim=-1, stable=True)
    return dist2[..., :k], idx[..., :k]


def interpolation_weights(dist2: Tensor) -> Tensor:
    """Inverse squared-distance weights (B, n, k) summing to 1, from squared distances (B, n, k)."""
    inv = 1.0 / dist2.clamp(min=1e-10)
    total = inv[..., 0]
    for j in range(1, inv.shape[-1]):  # explicit order: the same bits on every device
        total = total + inv[..., j]
    return inv / total[..., None]


def interpolate(features: Tensor, idx: Tensor, weight: Tensor) -> Tensor:
    """sum_j weight[b, i, j] * features[b, :, idx[b, i, j]]: features (B, C, m), idx/weight (B, n, k) -> (B, C, n)."""
    gathered = _gather_points(features.transpose(1, 2), idx)  # (B, n, k, C)
    out = gathered[:, :, 0] * weight[:, :, 0, None]
    for j in range(1, idx.shape[-1]):
        out = out + gathered[:, :, j] * weight[:, :, j, None]
    return out.transpose(1, 2)


def three_nn_interpolate(unknown: Tensor, known: Tensor, known_feats: Tensor) -> Tensor:
    """Inverse-distance interpolation from the 3 nearest known points: (B, C, n); weights are constants."""
    dist2, idx = knn(known.detach(), unknown.detach(), min(3, known.shape[1]))
    return interpolate(known_feats, idx, interpolation_weights(dist2))
