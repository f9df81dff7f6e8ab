"""Chamfer distances between point clouds, plain and composite (Skeleton Merger, Shi et al., CVPR 2021).

Distances are smoothed Euclidean, d(x, y) = sqrt(|x - y|² + eps), so that their gradient stays finite
when points coincide. Nearest neighbours are searched without autograd (``torch.cdist`` on chunks of
the batch) and only the selected pairs are recomputed with gradients: the gradient of a minimum
flows only to its argmin anyway, and memory stays O(B·N) instead of O(B·N·M).

The composite Chamfer distance compares a cloud with a reconstruction made of P sub-clouds (parts),
each present with an activation strength a_p in [0, 1]:

- reconstruction -> input: every reconstructed point's distance to its nearest input point, averaged
  per part and weighted by the part's activation, ``(1/P) Σ_p a_p mean_m d(r_pm, X)``;
- input -> reconstruction: for each input point the parts are sorted by their nearest distance
  d_p(x) and activations are accumulated greedily until they reach 1: part p (in sorted order) gets
  weight w_p = min(a_p, max(0, 1 - Σ_{q before p} a_q)); the point costs Σ_p w_p d_p(x) plus
  ``uncovered_penalty`` times the coverage still missing, max(0, 1 - Σ_p a_p).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

#: Largest number of distance entries computed at once by the nearest-neighbour search.
_CHUNK_ENTRIES = 1 << 24


class CompositeChamfer(NamedTuple):
    """The two directions of :func:`composite_chamfer_distance`, each ``(B,)``."""

    reconstruction_to_input: Tensor
    input_to_reconstruction: Tensor


def _check_cloud(x: Tensor, name: str) -> None:
    if x.dim() != 3 or x.shape[-1] != 3:
        raise ValueError(f"{name} must be (B, N, 3), got shape {tuple(x.shape)}")
    if x.shape[1] == 0:
        raise ValueError(f"{name} is an empty cloud (N = 0)")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite coordinates")


def nearest_neighbor(x: Tensor, y: Tensor, eps: float = 1e-4) -> tuple[Tensor, Tensor]:
    """Smoothed distance from each point of ``x`` to its nearest point of ``y``.

    Args:
        x: ``(B, N, 3)`` query points; y: ``(B, M, 3)`` reference points.
        eps: smoothing of the distance, sqrt(|x - y|² + eps).
    Returns:
        distances ``(B, N)`` (differentiable in ``x`` and ``y``) and indices ``(B, N)`` into ``y``.
    """
    _check_cloud(x, "x")
    _check_cloud(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same batch size, got {x.shape[0]} and {y.shape[0]}")
    with torch.no_grad():
        step = max(1, _CHUNK_ENTRIES // (x.shape[1] * y.shape[1]))
        index = torch.cat([torch.cdist(x[b : b + step], y[b : b + step]).argmin(-1) for b in range(0, x.shape[0], step)])
    nearest = y.gather(1, index.unsqueeze(-1).expand(-1, -1, 3))
    return (x - nearest).square().sum(-1).add(eps).sqrt(), index


def chamfer_distance(x: Tensor, y: Tensor, eps: float = 1e-4) -> Tensor:
    """Symmetric Chamfer distance mean_n d(x_n, Y) + mean_m d(y_m, X), ``(B,)``, for ``x (B, N, 3)``, ``y (B, M, 3)``."""
    return nearest_neighbor(x, y, eps)[0].mean(-1) + nearest_neighbor(y, x, eps)[0].mean(-1)


def greedy_coverage(distances: Tensor, activations: Tensor) -> tuple[Tensor, Tensor]:
    """Skeleton Merger's greedy activation coverage of each point.

    Args:
        distances: ``(B, N, P)`` distance of each point to each part.
        activations: ``(B, P)`` part activations in [0, 1].
    Returns:
        weights ``(B, N, P)`` (the nearest parts take their activation until the total reaches 1) and
        the coverage each point still misses, ``(B, N)``.
    """
    order = distances.detach().argsort(dim=-1)
    sorted_act = activations.unsqueeze(1).expand_as(distances).gather(-1, order)  # (B, N, P)
    before = sorted_act.cumsum(-1) - sorted_act
    sorted_weights = torch.minimum(sorted_act, (1 - before).clamp(min=0))
    weights = torch.zeros_like(sorted_weights).scatter(-1, order, sorted_weights)
    missing = (1 - sorted_act.sum(-1)).clamp(min=0)
    return weights, missing


def composite_chamfer_distance(
    points: Tensor,
    parts: Tensor,
    activations: Tensor,
    uncovered_penalty: float = 20.0,
    eps: float = 1e-4,
) -> CompositeChamfer:
    """Composite Chamfer distance between a cloud and a reconstruction made of activated parts.

    Args:
        points: ``(B, N, 3)`` input cloud.
        parts: ``(B, P, M, 3)`` reconstructed sub-clouds.
        activations: ``(B, P)`` activation strength of each part, in [0, 1].
        uncovered_penalty: cost per unit of activation an input point misses (Skeleton Merger: 20).
        eps: distance smoothing (see :func:`nearest_neighbor`).
    Returns:
        :class:`CompositeChamfer` with both directions, ``(B,)`` each.
    """
    _check_cloud(points, "points")
    if parts.dim() != 4 or parts.shape[-1] != 3 or parts.shape[0] != points.shape[0] or 0 in parts.shape[1:3]:
        raise ValueError(f"parts must be (B={points.shape[0]}, P, M, 3) with P, M >= 1, got shape {tuple(parts.shape)}")
    if activations.shape != parts.shape[:2]:
        raise ValueError(f"activations must be {tuple(parts.shape[:2])} (one per part), got {tuple(activations.shape)}")
    if not torch.isfinite(activations).all() or activations.min() < 0 or activations.max() > 1:
        raise ValueError("activations must lie in [0, 1]")
    b, p, m, _ = parts.shape
    flat = parts.reshape(b, p * m, 3)
    to_input = nearest_neighbor(flat, points, eps)[0].view(b, p, m).mean(-1)  # (B, P)
    reconstruction_to_input = (to_input * activations).mean(-1)

    # Per input point, the nearest point of every part: one search over all parts, then a per-part
    # argmin over the M points of each (no autograd), then the selected distances with gradients.
    with torch.no_grad():
        step = max(1, _CHUNK_ENTRIES // (points.shape[1] * p * m))
        index = torch.cat([
            torch.cdist(points[i : i + step], flat[i : i + step]).view(-1, points.shape[1], p, m).argmin(-1)
            for i in range(0, b, step)
        ])  # (B, N, P)
    index = index + torch.arange(p, device=index.device) * m
    nearest = flat.gather(1, index.view(b, -1, 1).expand(-1, -1, 3)).view(b, -1, p, 3)
    distances = (points.unsqueeze(2) - nearest).square().sum(-1).add(eps).sqrt()  # (B, N, P)
    weights, missing = greedy_coverage(distances, activations)
    input_to_reconstruction = ((weights * distances).sum(-1) + uncovered_penalty * missing).mean(-1)
    return CompositeChamfer(reconstruction_to_input, input_to_reconstruction)
