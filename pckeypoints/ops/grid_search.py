"""Radius and k-NN searches on ragged CPU clouds through a uniform grid (C++, ``csrc/grid_neighbors.cpp``).

Each cloud's points are bucketed into cubic cells and a query reads only the cells near it: O(N + M · ball)
instead of pointnet2's brute force O(M · N). The results are pointnet2's exactly (the same squared distance
in the points' dtype, the same ``< r²`` test, first neighbours by index, ties to the smaller index), so
:mod:`pckeypoints.ops.pyg` switches between the two by size only (:data:`MIN_PAIRS`).
"""
from __future__ import annotations

from functools import cache
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

__all__ = ["MIN_PAIRS", "available", "knn", "radius"]

#: Searches with fewer query-point pairs than this (over the batch) stay brute force: below it the grid's
#: set-up costs more than it saves (``experiments/bench_pyg_ops.py``).
MIN_PAIRS = 1 << 16
#: Points per grid cell of the k-NN search, per neighbour sought (at least half a point per cell).
PER_CELL = 0.125


def available() -> bool:
    """Whether the C++ kernel built (else the callers stay brute force)."""
    return _kernels() is not None


def radius(x: Tensor, y: Tensor, ptr_x: Tensor, ptr_y: Tensor, r: float, max_num_neighbors: int | None,
           ignore_same_index: bool) -> Tensor:
    """``(2, E)`` edges (row into ``y``, column into ``x``) of ``|x_j - y_i|² < r²`` in each cloud, the first
    ``max_num_neighbors`` by index (``None``: all); ``x (N, 3)``, ``y (M, 3)`` CPU, offsets ``ptr (B + 1,)``."""
    limit = -1 if max_num_neighbors is None else max_num_neighbors
    row, col = _kernels().radius(x.contiguous(), y.contiguous(), ptr_x.contiguous(), ptr_y.contiguous(), float(r),
                                 limit, bool(ignore_same_index))
    return torch.stack([row, col])


def knn(x: Tensor, y: Tensor, ptr_x: Tensor, ptr_y: Tensor, k: int, drop_self: bool = False) -> Tensor:
    """``(2, E)`` edges of the ``k`` nearest points of ``x`` to each ``y`` in its cloud, nearest first;
    ``drop_self`` (``x`` is ``y``): without the query's own point (or, where exact duplicates hide it, the
    farthest of the ``k``), as :func:`pckeypoints.ops.pyg.knn_graph` without loops."""
    row, col = _kernels().knn(x.contiguous(), y.contiguous(), ptr_x.contiguous(), ptr_y.contiguous(), int(k),
                              max(PER_CELL * k, 0.5), bool(drop_self))
    return torch.stack([row, col])


@cache
def _build() -> ModuleType:
    """The C++ kernels, built (or loaded from the extensions cache); raises when the build fails."""
    from pointnet2.build import load_extension

    return load_extension("pckeypoints_grid_neighbors", (Path(__file__).parent / "csrc" / "grid_neighbors.cpp",))


@cache
def _kernels() -> ModuleType | None:
    from pointnet2.build import load_or_warn

    return load_or_warn(_build, "the grid search kernel", "radius and knn stay brute force", stacklevel=3)
