"""Chamfer distances between point clouds, plain and composite (Skeleton Merger, Shi et al., CVPR 2021).

Distances are smoothed Euclidean, d(x, y) = sqrt(|x - y|² + eps), so that their gradient stays finite
when points coincide. Nearest neighbours are searched without autograd and only the selected pairs are
recomputed with gradients: the gradient of a minimum flows only to its argmin anyway, and memory stays
O(B·N) instead of O(B·N·M). The search is one pass over the point pairs serving both directions: a C++
kernel on the CPU (``csrc/chamfer.cpp``), one ``torch.cdist`` per chunk of the batch elsewhere.
On the CPU the composite distance's greedy coverage is a C++ kernel too (forward and backward, without
the ``(B, N, P)`` tensors of distances, orders and weights); the PyTorch code is its fallback and the
reference it is tested against.

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

from functools import cache
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import torch
from torch import Tensor

from pckeypoints.validation import check_cloud
from pckeypoints.errors import InputError

#: Largest number of distance entries computed at once by the nearest-neighbour search.
_CHUNK_ENTRIES = 1 << 24


class CompositeChamfer(NamedTuple):
    """The two directions of :func:`composite_chamfer_distance`, each ``(B,)``."""

    reconstruction_to_input: Tensor
    input_to_reconstruction: Tensor


def _nearest_indices(x: Tensor, y: Tensor, groups: int = 1, backend: str = "auto") -> tuple[Tensor, Tensor]:
    """Nearest-neighbour indices both ways, no autograd.

    Args:
        x: ``(B, N, 3)``; y: ``(B, G·M, 3)``, read as ``groups`` = G consecutive groups of M points.
        backend: ``"auto"`` (the C++ kernel for float32/float64 CPU tensors when it builds, else the dense
            search), ``"kernel"`` or ``"dense"``.
    Returns:
        for each point of ``x`` its nearest point of each group of ``y``, ``(B, N, G)`` indices into ``y``,
        and for each point of ``y`` its nearest point of ``x``, ``(B, G·M)`` indices into ``x``.
    """
    x, y = x.detach(), y.detach()
    kernel = _kernel() if backend == "kernel" else _cpu_kernel(x, y) if backend == "auto" else None
    if kernel is None:
        return _dense_nearest_indices(x, y, groups)
    return tuple(kernel.nearest(x.contiguous(), y.contiguous(), groups))


def _dense_nearest_indices(x: Tensor, y: Tensor, groups: int) -> tuple[Tensor, Tensor]:
    """:func:`_nearest_indices` by one ``torch.cdist`` per chunk of the batch (any device)."""
    b, n, _ = x.shape
    size = y.shape[1] // groups
    x_to_y, y_to_x = [], []
    step = max(1, _CHUNK_ENTRIES // (n * y.shape[1]))
    for i in range(0, b, step):
        d = torch.cdist(x[i : i + step], y[i : i + step])  # (b', N, G·M)
        x_to_y.append(d.view(d.shape[0], n, groups, size).argmin(-1))
        y_to_x.append(d.argmin(1))
    offsets = torch.arange(groups, device=x.device) * size
    return torch.cat(x_to_y) + offsets, torch.cat(y_to_x)


def _cpu_kernel(*tensors: Tensor) -> ModuleType | None:
    """The C++ kernels when ``tensors`` are CPU float32 or float64 of one dtype and they build, else None."""
    dtype = tensors[0].dtype
    if dtype in (torch.float32, torch.float64) and all(t.device.type == "cpu" and t.dtype == dtype for t in tensors):
        return _kernel_or_warn()
    return None


@cache
def _kernel() -> ModuleType:
    from pointnet2.build import load_extension

    source = Path(__file__).parent / "csrc" / "chamfer.cpp"
    return load_extension("pckeypoints_chamfer", (source,), ("-fno-trapping-math",))


@cache
def _kernel_or_warn() -> ModuleType | None:
    from pointnet2.build import load_or_warn

    return load_or_warn(_kernel, "the Chamfer CPU kernels", "using PyTorch", stacklevel=4)


def _squared_distance(x: Tensor, y: Tensor, index: Tensor) -> Tensor:
    """Squared distance from ``x (B, N, 3)`` to the points of ``y (B, M, 3)`` at ``index (B, N, G)``, ``(B, N, G)``."""
    b, n, g = index.shape
    picked = y.gather(1, index.reshape(b, n * g, 1).expand(-1, -1, 3)).view(b, n, g, 3)
    return (x.unsqueeze(2) - picked).square().sum(-1)


def _check_pair(x: Tensor, y: Tensor) -> None:
    check_cloud(x, "x", batched=True)
    check_cloud(y, "y", batched=True)
    if x.shape[0] != y.shape[0]:
        raise InputError(f"x and y must have the same batch size, got {x.shape[0]} and {y.shape[0]}")


def chamfer_distance(x: Tensor, y: Tensor, eps: float = 1e-4) -> Tensor:
    """Symmetric Chamfer distance mean_n d(x_n, Y) + mean_m d(y_m, X), ``(B,)``, for ``x (B, N, 3)``, ``y (B, M, 3)``."""
    _check_pair(x, y)
    x_to_y, y_to_x = _nearest_indices(x, y)
    forward = _squared_distance(x, y, x_to_y).add(eps).sqrt().mean((1, 2))
    backward = _squared_distance(y, x, y_to_x.unsqueeze(-1)).add(eps).sqrt().mean((1, 2))
    return forward + backward


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
    *,
    validate: bool = True,
) -> CompositeChamfer:
    """Composite Chamfer distance between a cloud and a reconstruction made of activated parts.

    Args:
        points: ``(B, N, 3)`` input cloud.
        parts: ``(B, P, M, 3)`` reconstructed sub-clouds.
        activations: ``(B, P)`` activation strength of each part, in [0, 1].
        uncovered_penalty: cost per unit of activation an input point misses (Skeleton Merger: 20).
        eps: distance smoothing, d = sqrt(|x - y|² + eps).
        validate: check the values (finite points and parts, activations in [0, 1]); shapes are always
            checked (a training step whose data were checked when read passes False).
    Returns:
        :class:`CompositeChamfer` with both directions, ``(B,)`` each.
    """
    check_cloud(points, "points", batched=True, validate=validate)
    if parts.dim() != 4 or parts.shape[-1] != 3 or parts.shape[0] != points.shape[0] or 0 in parts.shape[1:3]:
        raise InputError(f"parts must be (B={points.shape[0]}, P, M, 3) with P, M >= 1, got shape {tuple(parts.shape)}")
    if activations.shape != parts.shape[:2]:
        raise InputError(f"activations must be {tuple(parts.shape[:2])} (one per part), got {tuple(activations.shape)}")
    if validate and not bool(((activations >= 0) & (activations <= 1)).all()):  # NaN fails both
        raise InputError("activations must lie in [0, 1]")
    b, p, m, _ = parts.shape
    flat = parts.reshape(b, p * m, 3)
    check_cloud(flat, "parts", batched=True, validate=validate)
    to_parts, to_input = _nearest_indices(points, flat, groups=p)  # (B, N, P), (B, P·M)
    rec_dist = _squared_distance(flat, points, to_input.unsqueeze(-1)).add(eps).sqrt().view(b, p, m)
    reconstruction_to_input = (rec_dist.mean(-1) * activations).mean(-1)
    kernel = _cpu_kernel(points, flat, activations)
    if kernel is not None:
        per_point = _CoverageCost.apply(points, flat, activations, to_parts, uncovered_penalty, eps)
    else:
        distances = _squared_distance(points, flat, to_parts).add(eps).sqrt()  # (B, N, P)
        weights, missing = greedy_coverage(distances, activations)
        per_point = (weights * distances).sum(-1) + uncovered_penalty * missing
    return CompositeChamfer(reconstruction_to_input, per_point.mean(-1))


class _CoverageCost(torch.autograd.Function):
    """Per input point ``(B, N)``: Σ_p w_p d_p + penalty · missing coverage, by the C++ kernels (see
    :func:`greedy_coverage`); ``to_parts (B, N, P)`` indexes each point's nearest point of every part."""

    @staticmethod
    def forward(ctx, points, flat, activations, to_parts, penalty, eps):
        args = (points.contiguous(), flat.contiguous(), activations.contiguous(), to_parts.contiguous())
        ctx.save_for_backward(*args)
        ctx.constants = (penalty, eps)
        return _kernel().coverage_forward(*args, penalty, eps)

    @staticmethod
    def backward(ctx, grad_cost):
        grads = _kernel().coverage_backward(grad_cost.contiguous(), *ctx.saved_tensors, *ctx.constants)
        return *grads, None, None, None
