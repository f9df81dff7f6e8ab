"""Nearest neighbours: the one k-NN search of pckeypoints.

:func:`knn` serves the basis σ (:meth:`~pckeypoints.basis.PointBasis.from_points`), the geodesic k-NN
graph and the snapping of keypoints onto clouds (:mod:`~pckeypoints.metrics.geodesic`). It is exact,
nearest first, on any device and needs no torch-cluster:

- 3-D points: :func:`pointnet2.ops.knn` (C++/OpenMP on the CPU, a CUDA kernel on GPUs, ties to the
  smaller index), except large CPU searches (Q · N above :data:`KDTREE_ENTRIES`), which a SciPy
  k-d tree answers in O((N + Q) log N);
- other dimensions: brute force in PyTorch, in chunks of queries.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from .errors import PCKeypointsError

__all__ = ["Neighbors", "knn"]

#: CPU searches with more query-point pairs per cloud than this use a k-d tree.
KDTREE_ENTRIES = 1 << 24


class Neighbors(NamedTuple):
    """Result of :func:`knn`: ``distance`` (Euclidean) and ``index`` into the points, ``(B, Q, k)``."""

    distance: Tensor
    index: Tensor


def knn(query: Tensor, points: Tensor, k: int) -> Neighbors:
    """The ``k`` nearest of ``points (B, N, D)`` to each of ``query (B, Q, D)``, nearest first.

    No gradient flows (the search is piecewise constant); recompute distances from ``index`` where
    one is needed.

    Examples:
        >>> points = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [3, 0, 0]]])
        >>> dist, idx = knn(torch.tensor([[[2.9, 0, 0]]]), points, k=2)
        >>> idx.tolist(), [round(d, 4) for d in dist.flatten().tolist()]
        ([[[2, 1]]], [0.1, 1.9])
    """
    if query.dim() != 3 or points.dim() != 3 or query.shape[0] != points.shape[0] or query.shape[2] != points.shape[2]:
        raise PCKeypointsError(
            f"knn needs query (B, Q, D) and points (B, N, D), got {tuple(query.shape)} and {tuple(points.shape)}"
        )
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= points.shape[1]:
        raise PCKeypointsError(f"k must be an integer in [1, N={points.shape[1]}], got {k!r}")
    dtype = torch.promote_types(query.dtype, points.dtype)
    query, points = query.detach().to(dtype), points.detach().to(dtype)
    b, q, d = query.shape
    if points.device.type == "cpu" and q * points.shape[1] > KDTREE_ENTRIES:
        return _kdtree(query, points, k)
    if d == 3:
        from pointnet2.ops import knn as knn3

        dist2, index = knn3(points, query, k)
        return Neighbors(dist2.sqrt(), index)
    return _brute_force(query, points, k)


def _kdtree(query: Tensor, points: Tensor, k: int) -> Neighbors:
    from scipy.spatial import cKDTree

    dist, index = [], []
    for qs, cloud in zip(query.double().numpy(), points.double().numpy()):
        dc, ic = cKDTree(cloud).query(qs, k=k)
        dist.append(np.reshape(dc, (len(qs), k)))
        index.append(np.reshape(ic, (len(qs), k)))
    return Neighbors(torch.from_numpy(np.stack(dist)).to(query.dtype), torch.from_numpy(np.stack(index)).long())


def _brute_force(query: Tensor, points: Tensor, k: int) -> Neighbors:
    step = max(1, KDTREE_ENTRIES // (query.shape[0] * points.shape[1]))
    dist, index = [], []
    for s in range(0, query.shape[1], step):
        d2 = (query[:, s : s + step, None] - points[:, None]).square().sum(-1)  # (B, q, N)
        d2, i = d2.sort(dim=-1, stable=True)
        dist.append(d2[..., :k].sqrt())
        index.append(i[..., :k])
    return Neighbors(torch.cat(dist, 1), torch.cat(index, 1))
