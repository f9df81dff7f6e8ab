"""pckeypoints' point ops as the ``pyg::`` ops of PyG 2.8, for PyG's own layers without pyg-lib.

PyG 2.8 runs ``torch_geometric.nn.fps / knn / knn_graph / radius / radius_graph / nearest /
knn_interpolate``, ``DynamicEdgeConv``, ``XConv``, ``GravNetConv`` and ``T.KNNGraph`` /
``T.RadiusGraph`` on four ops of pyg-lib (``torch.ops.pyg.fps``, ``knn``, ``radius``, ``nearest``)
and refuses them ("requires 'pyg-lib>=0.6.0'") where pyg-lib lacks them. :func:`use_as_pyg_backend`
registers :mod:`pckeypoints.ops.pyg` under those names and schemas (``torch.library.custom_op``, with
fake kernels of data-dependent size for ``torch.compile``) and turns on PyG's flags for them.

Only ops that pyg-lib does not provide are registered: with pyg-lib installed nothing changes.
Results are the toolkit's (:mod:`pckeypoints.ops.pyg`): the same sets as pyg-lib's / torch-cluster's;
``radius`` keeps the first ``max_num_neighbors`` by index where pyg-lib's CPU kernel keeps an arbitrary
subset of that size, and accepts ``max_num_neighbors=None`` (all).
"""
from __future__ import annotations

import torch
from torch import Tensor

from pckeypoints.ops import pyg
from pckeypoints.errors import InputError, PCKeypointsError

__all__ = ["use_as_pyg_backend"]

#: op name -> ``torch_geometric.typing`` flag that turns it on.
FLAGS = {"fps": "WITH_FPS", "knn": "WITH_KNN", "radius": "WITH_RADIUS", "nearest": "WITH_NEAREST"}

SCHEMAS = {
    "fps": "(Tensor src, Tensor ptr, float ratio=0.5, bool random_start=True) -> Tensor",
    "knn": "(Tensor x, Tensor y, Tensor? ptr_x=None, Tensor? ptr_y=None, int k=1, bool cosine=False, "
           "int num_workers=1) -> Tensor",
    "radius": "(Tensor x, Tensor y, Tensor? ptr_x=None, Tensor? ptr_y=None, float r=1.0, "
              "int? max_num_neighbors=32, int num_workers=1, bool ignore_same_index=False) -> Tensor",
    "nearest": "(Tensor x, Tensor y, Tensor? ptr_x=None, Tensor? ptr_y=None) -> Tensor",
}

_REGISTERED: dict[str, object] = {}  # op name -> its custom_op (kept alive: the registration lives with it)


def use_as_pyg_backend() -> list[str]:
    """Register pckeypoints' ops as ``torch.ops.pyg.{fps, knn, radius, nearest}`` where pyg-lib lacks them.

    Idempotent; call it once before using PyG's point layers.

    Returns:
        the names of the ops pckeypoints serves (``[]`` where pyg-lib provides all four).

    Examples:
        >>> import pckeypoints as pk
        >>> from torch_geometric.nn import knn_graph
        >>> served = pk.use_as_pyg_backend()
        >>> knn_graph(torch.tensor([[0.0], [1.0], [3.0]]), k=1).tolist()
        [[1, 0, 1], [0, 1, 2]]
    """
    try:
        import torch_geometric.typing as pyg_typing
    except ImportError as err:
        raise PCKeypointsError(f"use_as_pyg_backend needs torch_geometric installed ({err})") from None
    served = []
    for name, flag in FLAGS.items():
        if name not in _REGISTERED:
            if getattr(pyg_typing, flag, False) or hasattr(torch.ops.pyg, name):
                continue  # pyg-lib's own
            op = torch.library.custom_op(f"pyg::{name}", _KERNELS[name], mutates_args=(), schema=SCHEMAS[name])
            op.register_fake(_FAKES[name])
            _REGISTERED[name] = op
        setattr(pyg_typing, flag, True)
        served.append(name)
    return served


# --------------------------------------------------------------------------------------- kernels
def _batch(ptr: Tensor | None, n: int, device: torch.device) -> Tensor | None:
    """The sorted cloud index ``(n,)`` of the offsets ``ptr (B + 1,)``."""
    if ptr is None:
        return None
    ptr = ptr.to(device=device, dtype=torch.long)
    if ptr.dim() != 1 or ptr.numel() < 1 or int(ptr[0]) != 0 or int(ptr[-1]) != n or bool((ptr.diff() < 0).any()):
        raise InputError(f"ptr must rise from 0 to {n} (the number of points), got {ptr.tolist()}")
    return torch.repeat_interleave(torch.arange(ptr.numel() - 1, device=device), ptr.diff(), output_size=n)


def _pair(x: Tensor, y: Tensor, ptr_x: Tensor | None, ptr_y: Tensor | None) -> tuple:
    """``batch_x, batch_y, batch_size`` of PyG's offsets (a missing one: one cloud)."""
    if ptr_x is None and ptr_y is None:
        return None, None, None
    ptr_x = torch.tensor([0, x.shape[0]]) if ptr_x is None else ptr_x
    ptr_y = torch.tensor([0, y.shape[0]]) if ptr_y is None else ptr_y
    size = max(ptr_x.numel(), ptr_y.numel()) - 1
    return _batch(ptr_x, x.shape[0], x.device), _batch(ptr_y, y.shape[0], y.device), size


def _fps(src: Tensor, ptr: Tensor, ratio: float = 0.5, random_start: bool = True) -> Tensor:
    src = src.reshape(src.shape[0], -1)
    return pyg.fps(src, _batch(ptr, src.shape[0], src.device), ratio, random_start, ptr.numel() - 1)


def _knn(x: Tensor, y: Tensor, ptr_x: Tensor | None = None, ptr_y: Tensor | None = None, k: int = 1,
         cosine: bool = False, num_workers: int = 1) -> Tensor:
    batch_x, batch_y, size = _pair(x, y, ptr_x, ptr_y)
    return pyg.knn(x, y, k, batch_x, batch_y, cosine, num_workers, size)


def _radius(x: Tensor, y: Tensor, ptr_x: Tensor | None = None, ptr_y: Tensor | None = None, r: float = 1.0,
            max_num_neighbors: int | None = 32, num_workers: int = 1, ignore_same_index: bool = False) -> Tensor:
    batch_x, batch_y, size = _pair(x, y, ptr_x, ptr_y)
    return pyg.radius(x, y, r, batch_x, batch_y, max_num_neighbors, num_workers, size, ignore_same_index)


def _nearest(x: Tensor, y: Tensor, ptr_x: Tensor | None = None, ptr_y: Tensor | None = None) -> Tensor:
    x, y = x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)
    row, col = _knn(x, y, ptr_x, ptr_y, 1)
    if row.numel() != y.shape[0]:
        raise InputError("nearest: every cloud of y needs a point of x in its cloud")
    return col


_KERNELS = {"fps": _fps, "knn": _knn, "radius": _radius, "nearest": _nearest}


def _fake_edges(x: Tensor, y: Tensor, *args) -> Tensor:
    return x.new_empty(2, torch.library.get_ctx().new_dynamic_size(), dtype=torch.long)


def _fake_fps(src: Tensor, ptr: Tensor, ratio: float = 0.5, random_start: bool = True) -> Tensor:
    return src.new_empty(torch.library.get_ctx().new_dynamic_size(), dtype=torch.long)


def _fake_nearest(x: Tensor, y: Tensor, *args) -> Tensor:
    return y.new_empty(y.shape[0], dtype=torch.long)


_FAKES = {"fps": _fake_fps, "knn": _fake_edges, "radius": _fake_edges, "nearest": _fake_nearest}
