"""PyG's point ops on ragged batches without pyg-lib or torch-cluster.

:func:`fps`, :func:`radius`, :func:`knn`, :func:`radius_graph`, :func:`knn_graph` and
:func:`knn_interpolate` have the signatures, ragged ``batch`` vectors and outputs of
``torch_geometric.nn``'s (torch-cluster's), so PyG layers such as ``PointNetConv`` and
``EdgeConv`` build on them unchanged (:func:`pckeypoints.ops.pyg_backend.use_as_pyg_backend` serves PyG's own). Large CPU
searches of :func:`radius` and :func:`knn` (1- to 3-D) run on a uniform grid (:mod:`pckeypoints.ops.grid_search`);
the others pad the clouds into one dense batch for pointnet2's brute-force kernels (:mod:`pointnet2.ops`,
C++/OpenMP on the CPU, CUDA on GPUs) with the padding moved out of reach of every search. Both give
exactly the same results, and each cloud the result it would get alone.

Where torch-cluster leaves a choice open, these ops fix it:

- :func:`fps` picks ties by the smaller index in the order that starts at the start point;
  ``random_start`` draws the start from the global torch RNG.
- :func:`radius` keeps the first ``max_num_neighbors`` points of a ball by index (as torch-cluster's
  CUDA kernel; its CPU k-d tree keeps an arbitrary subset of the same size), ``None`` keeps whole balls;
  :func:`radius_graph` counts the limit after leaving the point itself out, as pyg-lib does (torch-cluster
  1.6.3 truncates first and keeps one more where its subset misses the point itself).
- :func:`knn` is nearest first (:func:`pckeypoints.ops.neighbors.knn_points`); :func:`knn_graph` without ``loop``
  gives every point exactly ``k`` neighbours even when exact duplicates hide the point itself.

``num_workers`` is accepted for compatibility and ignored (the kernels use PyTorch's threads).
Positions of any dimension are taken (features too): 1- to 3-D run on the kernels, more dimensions on
PyTorch (a loop over the picks for :func:`fps`, chunked distances for :func:`radius`). No gradient flows
through the searches. Speed against torch-cluster: ``experiments/bench_pyg_ops.py``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from pckeypoints.ops import grid_search
from pckeypoints.errors import InputError
from pckeypoints.ops.neighbors import CDIST_ENTRIES, far_coordinate, knn_points
from pckeypoints.validation import check_batch_index, check_finite

__all__ = ["fps", "knn", "knn_graph", "knn_interpolate", "radius", "radius_graph"]

FLOWS = ("source_to_target", "target_to_source")


def fps(x: Tensor, batch: Tensor | None = None, ratio: float = 0.5, random_start: bool = True,
        batch_size: int | None = None) -> Tensor:
    """Farthest point sampling of ``ceil(ratio · N_b)`` points of each cloud.

    Args:
        x: ``(N, D)`` positions (or features).
        batch: ``(N,)`` sorted cloud index of each point (``None``: one cloud).
        ratio: fraction of each cloud's points to keep, in (0, 1].
        random_start: start each cloud at a random point (else at its first).
        batch_size: number of clouds (default ``batch.max() + 1``).

    Returns:
        ``(M,)`` indices into ``x``, cloud by cloud, each cloud's start first.

    Examples:
        >>> x = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0], [12.0]])
        >>> fps(x, torch.tensor([0, 0, 0, 1, 1, 1]), ratio=0.5, random_start=False).tolist()
        [0, 2, 3, 5]
    """
    if not (isinstance(ratio, (int, float)) and 0 < ratio <= 1):
        raise InputError(f"ratio must be a number in (0, 1], got {ratio!r}")
    x = _positions(x, "x")
    batch, sizes, ptr = _clouds(batch, x, "batch", batch_size)
    # ceil in x's dtype, as torch-cluster computes it (float32: ceil(100 · 0.3f) = 31)
    num = torch.ceil(sizes.to(x.dtype) * torch.tensor(ratio, dtype=x.dtype, device=x.device)).long()
    width = int(sizes.max()) if sizes.numel() else 0
    if width == 0:
        return batch.new_empty(0)
    start = torch.zeros_like(sizes)
    if random_start:
        start = torch.minimum((torch.rand(sizes.shape, device=x.device) * sizes).long(), (sizes - 1).clamp(min=0))
    # each cloud's points from its start on (padding: the start again, which is never farther than a real point)
    j = torch.arange(width, device=x.device)
    local = torch.where(j < sizes[:, None], (start[:, None] + j) % sizes.clamp(min=1)[:, None], start[:, None])
    index = (ptr[:-1, None] + local).clamp(max=max(x.shape[0] - 1, 0))  # (B, N_max) rows of x
    picked = _furthest_point_sample(x[index], int(num.max()))  # (B, M_max) into index's rows
    picked = index.gather(1, picked)
    return picked[torch.arange(picked.shape[1], device=x.device) < num[:, None]]


def radius(x: Tensor, y: Tensor, r: float, batch_x: Tensor | None = None, batch_y: Tensor | None = None,
           max_num_neighbors: int | None = 32, num_workers: int = 1, batch_size: int | None = None,
           ignore_same_index: bool = False) -> Tensor:
    """The points of ``x`` within distance ``r`` (``|x_j - y_i| < r``) of each point of ``y`` in its cloud.

    Args:
        x: ``(N, D)`` points.
        y: ``(M, D)`` centres.
        r: radius (> 0).
        batch_x, batch_y: sorted cloud indices of ``x`` and ``y`` (``None``: one cloud).
        max_num_neighbors: neighbours kept per centre, the first by index (``None``: all).
        ignore_same_index: leave out ``x_i`` from the ball of ``y_i`` (before counting the limit).

    Returns:
        ``(2, E)`` long: row 0 indexes ``y``, row 1 ``x``; sorted by centre, neighbours by index.

    Examples:
        >>> x = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0]])
        >>> radius(x, x[[1, 3]], 1.5, torch.tensor([0, 0, 0, 1, 1]), torch.tensor([0, 1])).tolist()
        [[0, 0, 0, 1, 1], [0, 1, 2, 3, 4]]
    """
    if not (isinstance(r, (int, float)) and math.isfinite(r) and r > 0):
        raise InputError(f"radius r must be a finite number > 0, got {r!r}")
    if max_num_neighbors is not None:
        _check_count("max_num_neighbors", max_num_neighbors)
    x, y = _pair(x, y, positions=True)
    if not (x.shape[0] and y.shape[0]):
        return x.new_empty(2, 0, dtype=torch.long)
    if _use_grid(x, y):
        return grid_search.radius(x, y, *_ptrs(x, y, batch_x, batch_y, batch_size), r, max_num_neighbors,
                                  ignore_same_index)
    dense_x, dense_y, valid_y, ptr_x = _dense_pair(x, y, batch_x, batch_y, batch_size, reach=r)
    # one more slot where the centre's own index may be dropped; None: grow until no ball fills its slots
    limit = None if max_num_neighbors is None else max_num_neighbors + ignore_same_index
    slots = min(limit or 64, dense_x.shape[1])
    while True:
        idx, counts = _ball_query(dense_x, dense_y, float(r), slots)
        if limit is not None or slots == dense_x.shape[1] or not bool((counts[valid_y] >= slots).any()):
            break
        slots = min(4 * slots, dense_x.shape[1])
    keep = (torch.arange(slots, device=x.device) < counts[..., None]) & valid_y[..., None]
    row, col = _edges(idx, keep, valid_y, ptr_x)
    if ignore_same_index:
        other = row != col
        row, col = row[other], col[other]
        if max_num_neighbors is not None:  # the first max_num_neighbors of the others
            count = torch.bincount(row, minlength=y.shape[0])
            rank = torch.arange(row.shape[0], device=x.device) - (count.cumsum(0) - count)[row]
            row, col = row[rank < max_num_neighbors], col[rank < max_num_neighbors]
    return torch.stack([row, col])


def knn(x: Tensor, y: Tensor, k: int, batch_x: Tensor | None = None, batch_y: Tensor | None = None,
        cosine: bool = False, num_workers: int = 1, batch_size: int | None = None) -> Tensor:
    """The ``k`` nearest points of ``x`` to each point of ``y`` in its cloud (fewer where the cloud is smaller).

    Args:
        x: ``(N, D)`` points or features, any D.
        y: ``(M, D)`` queries.
        k: neighbours per query.
        batch_x, batch_y: sorted cloud indices of ``x`` and ``y`` (``None``: one cloud).
        cosine: rank by cosine distance instead of Euclidean.

    Returns:
        ``(2, E)`` long: row 0 indexes ``y``, row 1 ``x``; sorted by query, neighbours nearest first.

    Examples:
        >>> x = torch.tensor([[0.0], [1.0], [3.0], [10.0], [11.0]])
        >>> knn(x, torch.tensor([[2.9], [10.2]]), 2, torch.tensor([0, 0, 0, 1, 1]), torch.tensor([0, 1])).tolist()
        [[0, 0, 1, 1], [2, 1, 3, 4]]
    """
    _check_count("k", k)
    x, y = _pair(x, y, positions=False)
    if not (x.shape[0] and y.shape[0]):
        return x.new_empty(2, 0, dtype=torch.long)
    if cosine:
        x, y = torch.nn.functional.normalize(x, dim=-1), torch.nn.functional.normalize(y, dim=-1)
    if x.shape[1] <= 3 and _use_grid(x, y):
        x, y = torch.nn.functional.pad(x, (0, 3 - x.shape[1])), torch.nn.functional.pad(y, (0, 3 - y.shape[1]))
        return grid_search.knn(x, y, *_ptrs(x, y, batch_x, batch_y, batch_size), k)
    dense_x, dense_y, valid_y, ptr_x = _dense_pair(x, y, batch_x, batch_y, batch_size)
    idx = knn_points(dense_y, dense_x, min(k, dense_x.shape[1])).index  # (B, M_max, k'), padding last
    sizes_x = ptr_x[1:] - ptr_x[:-1]
    keep = (idx < sizes_x[:, None, None]) & valid_y[..., None]
    return _edges(idx, keep, valid_y, ptr_x)


def radius_graph(x: Tensor, r: float, batch: Tensor | None = None, loop: bool = False,
                 max_num_neighbors: int | None = 32, flow: str = "source_to_target", num_workers: int = 1,
                 batch_size: int | None = None) -> Tensor:
    """Graph ``(2, E)`` of the points within ``r`` of each point of ``x`` in its cloud (see :func:`radius`).

    ``flow="source_to_target"``: edges neighbour -> point (row 0 the neighbour), as PyG's. Without
    ``loop`` the point itself is left out before the limit is counted (as pyg-lib does), so up to
    ``max_num_neighbors`` others remain.
    """
    _check_flow(flow)
    target, source = radius(x, x, r, batch, batch, max_num_neighbors, num_workers, batch_size,
                            ignore_same_index=not loop)
    return _directed(source, target, flow)


def knn_graph(x: Tensor, k: int, batch: Tensor | None = None, loop: bool = False, flow: str = "source_to_target",
              cosine: bool = False, num_workers: int = 1, batch_size: int | None = None) -> Tensor:
    """k-NN graph ``(2, E)`` of the points of each cloud: an edge j -> i from each of the k nearest
    points j of point i (``flow="source_to_target"``, row 0 the neighbour, as PyG's), nearest first.

    Without ``loop`` the point itself is left out; where exact duplicates hide it, the farthest of
    the k + 1 goes instead, so every point of a cloud of more than k points has exactly k neighbours.

    Examples:
        >>> x = torch.tensor([[0.0], [1.0], [3.0], [10.0], [11.0]])
        >>> knn_graph(x, k=1, batch=torch.tensor([0, 0, 0, 1, 1])).tolist()
        [[1, 0, 1, 4, 3], [0, 1, 2, 3, 4]]
    """
    _check_flow(flow)
    _check_count("k", k)
    points = _points(x, "x")
    if not cosine and x.shape[0] and _use_grid(points, points):  # the grid kernel drops the point itself
        points = torch.nn.functional.pad(points, (0, 3 - points.shape[1]))
        ptr, _ = _ptrs(points, points, batch, batch, batch_size)
        target, source = grid_search.knn(points, points, ptr, ptr, k + (not loop), drop_self=not loop)
        return _directed(source, target, flow)
    target, source = knn(x, x, k + (not loop), batch, batch, cosine, num_workers, batch_size)
    if not loop:
        n = x.shape[0]
        own = source == target
        count = torch.bincount(target, minlength=n)
        first = torch.cumsum(count, 0) - count  # each point's first edge
        last = torch.arange(target.shape[0], device=x.device) - first[target] == count[target] - 1
        hidden = torch.zeros(n, dtype=torch.long, device=x.device).index_add_(0, target, own.long()) == 0
        drop = own | (last & hidden[target] & (count[target] == k + 1))
        source, target = source[~drop], target[~drop]
    return _directed(source, target, flow)


def knn_interpolate(x: Tensor, pos_x: Tensor, pos_y: Tensor, batch_x: Tensor | None = None,
                    batch_y: Tensor | None = None, k: int = 3, num_workers: int = 1) -> Tensor:
    """Features ``(M, C)`` at ``pos_y (M, D)``: the inverse-squared-distance weighted mean of the
    features ``x (N, C)`` of the ``k`` nearest of ``pos_x (N, D)`` in the cloud (PyG's formula:
    weights ``1 / max(d², 1e-16)``). Gradients flow into ``x``; the weights are constants.

    Examples:
        >>> knn_interpolate(torch.tensor([[0.0], [3.0]]), torch.tensor([[0.0], [3.0]]), torch.tensor([[1.0]]), k=2)
        tensor([[0.6000]])
    """
    if x.dim() != 2 or x.shape[0] != pos_x.shape[0]:
        raise InputError(f"x must be (N={pos_x.shape[0]}, C) features of pos_x, got shape {tuple(x.shape)}")
    with torch.no_grad():
        y_idx, x_idx = knn(pos_x, pos_y, k, batch_x, batch_y)
        weight = 1.0 / (pos_x[x_idx] - pos_y[y_idx]).square().sum(-1, keepdim=True).clamp(min=1e-16)
        weight = weight.to(x.dtype)
        m = pos_y.shape[0]
        weight = (weight / weight.new_zeros(m, 1).index_add_(0, y_idx, weight)[y_idx]).flatten()  # normalised
    # one weighted gather-sum per target (no (E, C) intermediate); edges are grouped by target
    if y_idx.shape[0] == m * k:  # k each (no cloud smaller than k)
        return torch.nn.functional.embedding_bag(x_idx.view(m, k), x, mode="sum", per_sample_weights=weight.view(m, k))
    count = torch.bincount(y_idx, minlength=m)
    return torch.nn.functional.embedding_bag(x_idx, x, count.cumsum(0) - count, mode="sum", per_sample_weights=weight)


# ---------------------------------------------------------------------------------------- helpers
def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be an integer >= 1, got {value!r}")


def _check_flow(flow: str) -> None:
    if flow not in FLOWS:
        raise InputError(f"flow must be one of {FLOWS}, got {flow!r}")


def _points(x: Tensor, name: str) -> Tensor:
    """``x`` detached, as float32 or float64, after checking it is ``(N, D)`` and finite."""
    if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] < 1 or not x.is_floating_point():
        raise InputError(f"{name} must be a floating (N, D) tensor, got {getattr(x, 'shape', type(x))}")
    check_finite(x, name, "values")
    return x.detach() if x.dtype in (torch.float32, torch.float64) else x.detach().float()


def _positions(x: Tensor, name: str) -> Tensor:
    """:func:`_points`, 1- and 2-D positions zero-padded to 3-D for the kernels (more dimensions as they are)."""
    x = _points(x, name)
    return torch.nn.functional.pad(x, (0, 3 - x.shape[1])) if x.shape[1] < 3 else x


def _furthest_point_sample(points: Tensor, m: int) -> Tensor:
    """``(B, m)`` FPS picks in ``points (B, N, D)`` from index 0, ties to the smaller index (pointnet2's rule)."""
    if points.shape[-1] == 3:
        from pointnet2.ops import furthest_point_sample

        return furthest_point_sample(points, m, validate=False)
    b = points.shape[0]
    rows = torch.arange(b, device=points.device)
    picked = torch.zeros(b, m, dtype=torch.long, device=points.device)
    nearest = torch.full(points.shape[:2], math.inf, dtype=points.dtype, device=points.device)
    for i in range(1, m):
        last = points[rows, picked[:, i - 1]]  # (B, D)
        nearest = torch.minimum(nearest, (points - last[:, None]).square().sum(-1))
        picked[:, i] = nearest.argmax(1)
    return picked


def _ball_query(points: Tensor, centres: Tensor, r: float, slots: int) -> tuple[Tensor, Tensor]:
    """The first ``slots`` points (by index) of ``points (B, N, D)`` with ``|p - c|² < r²`` for each of
    ``centres (B, M, D)``: ``idx (B, M, slots)`` and ``counts (B, M)`` (pointnet2's ball query in any D)."""
    if points.shape[-1] == 3:
        from pointnet2.ops import ball_query

        return ball_query(points, centres, r, slots, validate=False)
    b, m, _ = centres.shape
    idx = torch.zeros(b, m, slots, dtype=torch.long, device=points.device)
    counts = torch.zeros(b, m, dtype=torch.int32, device=points.device)
    step = max(1, CDIST_ENTRIES // max(b * points.shape[1], 1))
    for s in range(0, m, step):
        d2 = (centres[:, s : s + step, None] - points[:, None]).square().sum(-1)  # (B, step, N)
        inside = d2 < r * r
        rank = inside.cumsum(-1)  # 1-based rank of each inside point by index
        kept = inside & (rank <= slots)
        counts[:, s : s + step] = kept.sum(-1).int()
        # scatter each kept point's index into its slot (rank - 1); the other slots stay 0
        slot = torch.where(kept, rank - 1, slots)
        out = torch.zeros(*kept.shape[:2], slots + 1, dtype=torch.long, device=points.device)
        out.scatter_(-1, slot, torch.arange(points.shape[1], device=points.device).expand_as(slot))
        idx[:, s : s + step] = out[..., :slots]
    return idx, counts


def _pair(x: Tensor, y: Tensor, positions: bool) -> tuple[Tensor, Tensor]:
    """:func:`_points` (``positions``: :func:`_positions`) of ``x`` and ``y``, of one dimension."""
    x, y = _points(x, "x"), _points(y, "y")
    if x.shape[1] != y.shape[1]:
        raise InputError(f"x and y must have the same dimension, got {tuple(x.shape)} and {tuple(y.shape)}")
    return (_positions(x, "x"), _positions(y, "y")) if positions else (x, y)


def _clouds(batch: Tensor | None, x: Tensor, name: str, batch_size: int | None) -> tuple[Tensor, Tensor, Tensor]:
    """``batch`` of the points ``x`` (zeros when None), the cloud sizes ``(B,)`` and their offsets ``ptr (B + 1,)``."""
    n = x.shape[0]
    if batch is None:
        batch = torch.zeros(n, dtype=torch.long, device=x.device)
    check_batch_index(batch, n, name)
    if batch_size is None:
        batch_size = int(batch.max()) + 1 if n else 0
    sizes = torch.bincount(batch, minlength=batch_size)
    if sizes.shape[0] != batch_size:
        raise InputError(f"{name} holds cloud index {sizes.shape[0] - 1} but batch_size is {batch_size}")
    return batch, sizes, torch.cat([sizes.new_zeros(1), sizes.cumsum(0)])


def _dense(x: Tensor, sizes: Tensor, ptr: Tensor, width: int, fill: Tensor | float) -> tuple[Tensor, Tensor]:
    """Clouds ``(B, width, D)`` of ``x`` with padding ``fill``, and the validity mask ``(B, width)``."""
    j = torch.arange(width, device=x.device)
    valid = j < sizes[:, None]
    rows = (ptr[:-1, None] + j).clamp(max=max(x.shape[0] - 1, 0))
    dense = x[rows] if x.shape[0] else x.new_zeros(*rows.shape, x.shape[1])
    return torch.where(valid[..., None], dense, fill), valid


def _use_grid(x: Tensor, y: Tensor) -> bool:
    """Whether the grid search (:mod:`pckeypoints.ops.grid_search`) answers: 1- to 3-D CPU points, a large search."""
    return (x.device.type == "cpu" and x.shape[1] <= 3 and x.shape[0] * y.shape[0] >= grid_search.MIN_PAIRS
            and grid_search.available())


def _ptrs(x: Tensor, y: Tensor, batch_x: Tensor | None, batch_y: Tensor | None,
          batch_size: int | None) -> tuple[Tensor, Tensor]:
    """The cloud offsets ``(B + 1,)`` of ``x`` and of ``y``, over the same batch."""
    if batch_size is None and (batch_x is not None or batch_y is not None):
        batch_size = max(int(b.max()) + 1 if b is not None and b.numel() else 1 for b in (batch_x, batch_y))
    _, sizes_x, ptr_x = _clouds(batch_x, x, "batch_x", batch_size)
    return ptr_x, _clouds(batch_y, y, "batch_y", sizes_x.shape[0])[2]


def _dense_pair(x: Tensor, y: Tensor, batch_x: Tensor | None, batch_y: Tensor | None, batch_size: int | None,
                reach: float = 0.0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Dense clouds of ``x`` and ``y`` over the same batch, ``x``'s padding farther from every real
    point of either than any two real points are from each other and than ``reach``; the mask of
    real ``y`` and ``x``'s offsets."""
    ptr_x, ptr_y = _ptrs(x, y, batch_x, batch_y, batch_size)
    sizes_x, sizes_y = ptr_x.diff(), ptr_y.diff()
    both = torch.cat([x, y])
    far = far_coordinate(both.amax(0), both.amin(0), reach)
    width_x = max(int(sizes_x.max()), 1)
    dense_x, _ = _dense(x, sizes_x, ptr_x, width_x, far)
    dense_y, valid_y = _dense(y, sizes_y, ptr_y, max(int(sizes_y.max()), 1), 0.0)
    return dense_x, dense_y, valid_y, ptr_x


def _edges(idx: Tensor, keep: Tensor, valid_y: Tensor, ptr_x: Tensor) -> Tensor:
    """``(2, E)`` edges (row into ``y``, column into ``x``) of the kept dense neighbours ``idx (B, M, S)``."""
    _, m, s = idx.shape
    flat = keep.flatten().nonzero().squeeze(1)  # kept slots in (cloud, centre, slot) order
    cloud = flat // (m * s)
    ptr_y = torch.cat([valid_y.new_zeros(1, dtype=torch.long), valid_y.sum(1).cumsum(0)])
    return torch.stack([ptr_y[cloud] + flat // s % m, ptr_x[cloud] + idx.flatten()[flat]])


def _directed(source: Tensor, target: Tensor, flow: str) -> Tensor:
    return torch.stack([source, target] if flow == "source_to_target" else [target, source])
