"""Nearest neighbours: the one k-NN search of pckeypoints.

:func:`knn` serves the basis σ (:meth:`~pckeypoints.basis.PointBasis.from_points`), the geodesic k-NN
graph and the snapping of keypoints onto clouds (:mod:`~pckeypoints.metrics.geodesic`). It is exact
(up to rounding), nearest first, on any device and needs no torch-cluster or pyg-lib:

- 3-D points: :func:`pointnet2.ops.knn` (C++/OpenMP on the CPU, a CUDA kernel on GPUs, ties to the
  smaller index), except large CPU searches (B · Q · N above :data:`KDTREE_ENTRIES`), which a SciPy
  k-d tree answers in O((N + Q) log N);
- other dimensions (e.g. DGCNN's feature space): ``torch.cdist`` (matrix-product distances) and
  ``topk``, in chunks of queries.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from .errors import PCKeypointsError

__all__ = ["Neighbors", "knn", "knn_graph"]

#: CPU searches with more query-point pairs than this (over the batch) use a k-d tree. At N = Q = 2048, k = 9,
#: 1 thread, it takes 3.6 ms a cloud against 7.7 ms brute force, but importing SciPy's spatial module takes
#: ~0.15 s: the tree pays from a few clouds on (a training batch), not for one cloud (``predict``, ``viz``).
KDTREE_ENTRIES = 1 << 24
#: Query-point pairs per ``torch.cdist`` chunk of the brute-force search in other dimensions.
CDIST_ENTRIES = 1 << 18


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
    if points.device.type == "cpu" and b * q * points.shape[1] > KDTREE_ENTRIES:
        return _kdtree(query, points, k)
    if d == 3:
        from pointnet2.ops import knn as knn3

        dist2, index = knn3(points, query, k)
        return Neighbors(dist2.sqrt(), index)
    return _brute_force(query, points, k)


def knn_graph(x: Tensor, k: int, batch: Tensor | None = None, loop: bool = False) -> Tensor:
    """PyG-style k-NN graph of ragged points: ``edge_index (2, N·k)`` with an edge j -> i from each of
    the k nearest points j of point i in its cloud (source = neighbour, target = point, as PyG's
    ``knn_graph``), nearest first; ``loop=False`` leaves each point itself out.

    Args:
        x: ``(N, D)`` points or features of all clouds.
        k: neighbours per point (every cloud needs more than k points, ``loop``: at least k).
        batch: ``(N,)`` sorted cloud index of each point (``None``: one cloud).

    Examples:
        >>> x = torch.tensor([[0.0], [1.0], [3.0], [10.0], [11.0]])
        >>> knn_graph(x, k=1, batch=torch.tensor([0, 0, 0, 1, 1])).tolist()
        [[1, 0, 1, 4, 3], [0, 1, 2, 3, 4]]
    """
    if x.dim() != 2:
        raise PCKeypointsError(f"x must be (N, D), got shape {tuple(x.shape)}")
    if batch is None:
        batch = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    from torch_geometric.utils import to_dense_batch

    dense, mask = to_dense_batch(x.detach(), batch)  # (B, N_max, D)
    start = torch.cumsum(mask.sum(1), 0) - mask.sum(1)  # (B,) first row of each cloud
    # Padding goes beyond every cloud's diameter, so no real point has a padding point among its
    # k (+ 1) nearest while each cloud holds more than k points.
    index = knn(dense, pad_far(dense, mask), k + (not loop)).index  # (B, N_max, k')
    index = (index + start[:, None, None])[mask]  # (N, k') rows of x
    if not loop:  # drop the point itself, or the farthest where exact duplicates hid it
        own = index == torch.arange(x.shape[0], device=x.device)[:, None]
        own[:, -1] |= ~own.any(1)
        index = index.gather(1, own.byte().argsort(dim=1, stable=True)[:, :k])  # own entry last, then cut
    target = torch.arange(x.shape[0], device=x.device).repeat_interleave(k)
    return torch.stack([index.reshape(-1), target])


def pad_far(dense: Tensor, mask: Tensor) -> Tensor:
    """``dense (B, N, D)`` with its padding (``mask`` False) moved to one point farther from every
    real point than the diameter of all of them, so that k-NN searches never pick it."""
    hi = dense.masked_fill(~mask[..., None], -math.inf).amax(dim=(0, 1))  # (D,)
    lo = dense.masked_fill(~mask[..., None], math.inf).amin(dim=(0, 1))
    far = hi.amax() + (hi - lo).amax() * math.sqrt(dense.shape[-1]) + 1
    return torch.where(mask[..., None], dense, far)


def _kdtree(query: Tensor, points: Tensor, k: int) -> Neighbors:
    from scipy.spatial import cKDTree

    dist, index = [], []
    for qs, cloud in zip(query.double().numpy(), points.double().numpy()):
        dc, ic = cKDTree(cloud).query(qs, k=k)
        dist.append(np.reshape(dc, (len(qs), k)))
        index.append(np.reshape(ic, (len(qs), k)))
    return Neighbors(torch.from_numpy(np.stack(dist)).to(query.dtype), torch.from_numpy(np.stack(index)).long())


def _brute_force(query: Tensor, points: Tensor, k: int) -> Neighbors:
    step = max(1, CDIST_ENTRIES // (query.shape[0] * points.shape[1]))
    dist, index = [], []
    for s in range(0, query.shape[1], step):
        d, i = torch.cdist(query[:, s : s + step], points).topk(k, dim=-1, largest=False, sorted=True)
        dist.append(d)
        index.append(i)
    return Neighbors(torch.cat(dist, 1), torch.cat(index, 1))
