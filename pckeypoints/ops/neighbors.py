"""Nearest neighbours: the one k-NN search of pckeypoints.

:func:`knn_points` serves the basis σ (:meth:`~pckeypoints.core.basis.PointBasis.from_points`), the geodesic k-NN
graph and the snapping of keypoints onto clouds (:mod:`~pckeypoints.metrics.geodesic`). It is exact
(up to rounding), nearest first, on any device and needs no torch-cluster or pyg-lib:

- 3-D points: :func:`pointnet2.ops.knn` (C++/OpenMP on the CPU, a CUDA kernel on GPUs, ties to the
  smaller index), except large CPU searches (B · Q · N above :data:`KDTREE_ENTRIES`), which a SciPy
  k-d tree answers in O((N + Q) log N);
- other dimensions (e.g. DGCNN's feature space): ``torch.cdist`` (matrix-product distances) and
  ``topk``, in chunks of queries.

Ragged PyG-style searches (``knn``, ``knn_graph``, ``radius``, ``fps``) are in :mod:`pckeypoints.ops.pyg`.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from pckeypoints.errors import AnyInputError, InputError

__all__ = ["Neighbors", "knn_points"]

#: CPU searches with more query-point pairs than this (over the batch) use a k-d tree: the tree is faster per
#: cloud than brute force, but importing SciPy's spatial module costs more than one cloud's search, so it pays
#: from a few clouds on (a training batch), not for one cloud (``predict``, ``viz``).
KDTREE_ENTRIES = 1 << 24
#: Query-point pairs per ``torch.cdist`` chunk of the brute-force search in other dimensions.
CDIST_ENTRIES = 1 << 18


class Neighbors(NamedTuple):
    """Result of :func:`knn_points`: ``distance`` (Euclidean) and ``index`` into the points, ``(B, Q, k)``."""

    distance: Tensor
    index: Tensor


def knn_points(query: Tensor, points: Tensor, k: int, *, validate: bool = True) -> Neighbors:
    """The ``k`` nearest of ``points (B, N, D)`` to each of ``query (B, Q, D)``, nearest first.

    No gradient flows (the search is piecewise constant); recompute distances from ``index`` where
    one is needed. ``validate``: the 3-D search checks that the coordinates are finite (a caller that
    checked them passes False).

    Examples:
        >>> points = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [3, 0, 0]]])
        >>> dist, idx = knn_points(torch.tensor([[[2.9, 0, 0]]]), points, k=2)
        >>> idx.tolist(), [round(d, 4) for d in dist.flatten().tolist()]
        ([[[2, 1]]], [0.1, 1.9])
    """
    if query.dim() != 3 or points.dim() != 3 or query.shape[0] != points.shape[0] or query.shape[2] != points.shape[2]:
        raise InputError(
            f"knn_points needs query (B, Q, D) and points (B, N, D), got {tuple(query.shape)} and {tuple(points.shape)}"
        )
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= points.shape[1]:
        raise InputError(f"k must be an integer in [1, N={points.shape[1]}], got {k!r}")
    dtype = torch.promote_types(query.dtype, points.dtype)
    query, points = query.detach().to(dtype), points.detach().to(dtype)
    b, q, d = query.shape
    if points.device.type == "cpu" and b * q * points.shape[1] > KDTREE_ENTRIES:
        return _kdtree(query, points, k)
    if d == 3:
        from pointnet2.ops import knn as knn3

        try:
            dist2, index = knn3(points, query, k, validate=validate)
        except AnyInputError as err:  # pointnet2's class (NaN, dtype): reported as pckeypoints' own
            raise InputError(f"knn_points: {err}") from None
        return Neighbors(dist2.sqrt(), index)
    return _brute_force(query, points, k)


def pad_far(dense: Tensor, mask: Tensor) -> Tensor:
    """``dense (B, N, D)`` with its padding (``mask`` False) moved to one point farther from every
    real point than the diameter of all of them, so that k-NN searches never pick it."""
    hi = dense.masked_fill(~mask[..., None], -math.inf).amax(dim=(0, 1))  # (D,)
    lo = dense.masked_fill(~mask[..., None], math.inf).amin(dim=(0, 1))
    return torch.where(mask[..., None], dense, far_coordinate(hi, lo))


def far_coordinate(hi: Tensor, lo: Tensor, reach: float = 0.0) -> Tensor:
    """The padding coordinate c (0-d) of points within the box ``[lo, hi]`` (``(D,)`` each): the point (c, ..., c)
    lies farther from each of them than any two of them are from each other, and than ``reach``."""
    return hi.amax() + (hi - lo).amax() * math.sqrt(hi.shape[0]) + reach + 1


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
