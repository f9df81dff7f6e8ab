"""Geodesic distances on a point cloud, approximated by shortest paths in its k-nearest-neighbour graph.

KeypointNet evaluates keypoints by geodesic distance on the shape. Here the shape is the cloud: every point is joined
to its ``k`` nearest neighbours by an edge weighted with their Euclidean distance, the graph is made undirected
(an edge exists if either end is among the other's ``k`` nearest), and distances are Dijkstra shortest paths
(``scipy.sparse.csgraph``). Points in different connected components are at distance ``inf``.
The default is KeypointNet's benchmark metric: ``k = 20`` (:data:`OFFICIAL_GRAPH_K`), and :func:`geodesic_pck`
counts a keypoint when ``d < t`` (the Euclidean :func:`~pckeypoints.metrics.pck` counts ``d <= t``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from pckeypoints.ops.neighbors import knn_points
from pckeypoints.validation import check_cloud
from pckeypoints.metrics.pck import Thresholds, check_keypoints, pck_from_distances
from pckeypoints.errors import InputError

if TYPE_CHECKING:
    import scipy.sparse

__all__ = ["OFFICIAL_GRAPH_K", "cloud_geodesics", "geodesic_distance", "geodesic_pck", "knn_distance_graph", "snap_to_points"]

#: Neighbours per point in the graph of KeypointNet's geodesic benchmark.
OFFICIAL_GRAPH_K = 20


def knn_distance_graph(points: torch.Tensor | np.ndarray, k: int = OFFICIAL_GRAPH_K) -> scipy.sparse.csr_matrix:
    """Directed k-NN graph ``(N, N)`` of ``points (N, 3)``: ``[i, j] = |p_i - p_j|`` for the ``k`` nearest ``j``.

    Use with ``directed=False`` in ``scipy.sparse.csgraph`` to get the symmetric graph; zero-length edges between
    duplicate points are kept as explicit zeros, which csgraph treats as edges.
    """
    import scipy.sparse  # here, not at import: SciPy's sparse module is slow to load

    points = _as_cloud(points)
    n = len(points)
    if k < 1:
        raise InputError(f"k must be positive, got {k}")
    k = min(k, n - 1)
    if k == 0:
        return scipy.sparse.csr_matrix((n, n))
    cloud = torch.from_numpy(points)[None]
    distances, neighbours = (t[0].numpy() for t in knn_points(cloud, cloud, k + 1))
    rows = np.repeat(np.arange(n), k + 1)
    keep = neighbours.reshape(-1) != rows  # each point's self match, wherever duplicate points put it
    return scipy.sparse.csr_matrix((distances.reshape(-1)[keep], (rows[keep], neighbours.reshape(-1)[keep])),
                                   shape=(n, n))


def cloud_geodesics(points: torch.Tensor | np.ndarray, sources: torch.Tensor | np.ndarray,
                    k: int = OFFICIAL_GRAPH_K) -> torch.Tensor:
    """Geodesic distances ``(M, N)`` from the points indexed by ``sources (M,)`` to every point of ``points (N, 3)``."""
    from scipy.sparse.csgraph import dijkstra

    points = _as_cloud(points)
    sources = np.asarray(torch.as_tensor(sources).cpu(), dtype=np.int64).reshape(-1)
    if len(sources) and (sources.min() < 0 or sources.max() >= len(points)):
        raise InputError(f"source indices must lie in [0, {len(points)}), got {sources.tolist()}")
    return torch.from_numpy(dijkstra(knn_distance_graph(points, k), directed=False, indices=sources).reshape(len(sources), -1))


def snap_to_points(query: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Index ``(..., Q)`` of the point of ``points (..., N, 3)`` nearest to each of ``query (..., Q, 3)``."""
    query, points = torch.as_tensor(query), torch.as_tensor(points)
    if query.shape[-1] != 3 or query.shape[:-2] != points.shape[:-2] or query.ndim < 2:
        raise InputError(f"query (..., Q, 3) and points (..., N, 3) must share leading dimensions, got "
                         f"{tuple(query.shape)} and {tuple(points.shape)}")
    clouds = points.detach().reshape(-1, *points.shape[-2:])
    check_cloud(clouds, batched=True)
    queries = query.detach().to(clouds.device).reshape(len(clouds), query.shape[-2], 3)
    index = knn_points(queries.double(), clouds.double(), 1).index[..., 0]
    return index.reshape(query.shape[:-1]).to(query.device)


def geodesic_distance(pred: torch.Tensor, points: torch.Tensor, target_index: torch.Tensor, mask: torch.Tensor,
                      k: int = OFFICIAL_GRAPH_K) -> torch.Tensor:
    """Geodesic distance ``(B, K)`` from each prediction, snapped to its nearest cloud point, to its target point.

    Args:
        pred: ``(B, K, 3)`` predicted keypoints.
        points: ``(B, N, 3)`` clouds.
        target_index: ``(B, K)`` long, index of the ground-truth point in its cloud.
        mask: ``(B, K)`` bool, annotated keypoints.
        k: neighbours per point in the graph (see module doc).

    Returns:
        float64 distances; ``inf`` where prediction and target lie in different components, NaN where ``mask`` is unset.
    """
    check_keypoints(pred, mask, "pred")
    if points.ndim != 3 or points.shape[0] != pred.shape[0] or points.shape[-1] != 3:
        raise InputError(f"points must have shape ({pred.shape[0]}, N, 3), got {tuple(points.shape)}")
    if target_index.shape != mask.shape:
        raise InputError(f"target_index must have shape {tuple(mask.shape)}, got {tuple(target_index.shape)}")
    distances = torch.full(mask.shape, float("nan"), dtype=torch.float64)
    for b in range(len(points)):
        present = mask[b].cpu()
        targets = target_index[b].cpu()[present]
        geodesics = cloud_geodesics(points[b], targets, k)  # (K_b, N)
        distances[b, present] = geodesics[torch.arange(len(targets)), snap_to_points(pred[b][present], points[b])]
    return distances


def geodesic_pck(pred: torch.Tensor, points: torch.Tensor, target_index: torch.Tensor, mask: torch.Tensor,
                 thresholds: Thresholds, k: int = OFFICIAL_GRAPH_K) -> torch.Tensor:
    """PCK ``(T,)`` with :func:`geodesic_distance`: fraction of present keypoints with ``d < t`` for each
    threshold (KeypointNet's benchmark, strictly below; with the default ``k`` its 20-NN graph)."""
    distances = geodesic_distance(pred, points, target_index, mask, k)
    return pck_from_distances(distances[mask.cpu()], thresholds, inclusive=False)


def _as_cloud(points: torch.Tensor | np.ndarray) -> np.ndarray:
    points = np.asarray(points.detach().cpu() if torch.is_tensor(points) else points, dtype=np.float64)
    check_cloud(points)
    return points
