"""The C++/CUDA kernels as dispatcher ops ``torch.ops.pointnet2.*``: one binding list for both devices.

Each op runs the extension of its tensors' device (:func:`pointnet2._extension.extension`), has a fake
(meta) kernel giving its output shapes, so ``torch.compile`` traces through it, and the differentiable
ones register their backward (itself made of ops). :func:`call` is how :mod:`pointnet2.ops` runs them: eager
inference skips the dispatcher. Inputs are assumed valid and contiguous: the checks
live in :mod:`pointnet2.ops`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pointnet2._extension import extension


@torch.library.custom_op("pointnet2::furthest_point_sample", mutates_args=())
def furthest_point_sample(xyz: Tensor, m: int) -> Tensor:
    return extension(xyz.device).furthest_point_sample(xyz, m)


@furthest_point_sample.register_fake
def _(xyz, m):
    return xyz.new_empty(xyz.shape[0], m, dtype=torch.long)


@torch.library.custom_op("pointnet2::ball_query_group", mutates_args=())
def ball_query_group(
    xyz: Tensor, new_xyz: Tensor, features: Tensor | None, radius: float, nsample: int
) -> tuple[Tensor, Tensor, Tensor]:
    grouped, idx, counts = extension(xyz.device).ball_query_group(xyz, new_xyz, features, radius, nsample)
    return grouped, idx, counts


@ball_query_group.register_fake
def _(xyz, new_xyz, features, radius, nsample):
    b, m = new_xyz.shape[:2]
    channels = 3 + (0 if features is None else features.shape[1])
    idx = xyz.new_empty(b, m, nsample, dtype=torch.int32)
    return xyz.new_empty(b, channels, m, nsample), idx, xyz.new_empty(b, m, dtype=torch.int32)


@torch.library.custom_op("pointnet2::group_backward", mutates_args=())
def group_backward(grad_grouped: Tensor, idx: Tensor, num_points: int) -> Tensor:
    return extension(grad_grouped.device).group_backward(grad_grouped, idx, num_points)


@group_backward.register_fake
def _(grad_grouped, idx, num_points):
    return grad_grouped.new_empty(grad_grouped.shape[0], grad_grouped.shape[1], num_points)


def _ball_query_group_setup(ctx, inputs, output):
    xyz, _, features, _, _ = inputs
    ctx.save_for_backward(output[1])
    ctx.num_points, ctx.has_features = xyz.shape[1], features is not None


def _ball_query_group_backward(ctx, grad_grouped, _grad_idx, _grad_counts):
    """Scatter-add of the grouped gradient into xyz and features; minus its offset part into the centres."""
    (idx,) = ctx.saved_tensors
    need_xyz, need_new_xyz, need_features = ctx.needs_input_grad[:3]
    grad_xyz = grad_new_xyz = grad_features = None
    if need_xyz or need_features:
        grad_in = group_backward(grad_grouped.contiguous(), idx, ctx.num_points)  # (B, 3 + C, N)
        grad_xyz = grad_in[:, :3].transpose(1, 2) if need_xyz else None
        grad_features = grad_in[:, 3:] if need_features and ctx.has_features else None
    if need_new_xyz:
        filled = (idx >= 0).unsqueeze(1).to(grad_grouped.dtype)  # (B, 1, M, S)
        grad_new_xyz = -(grad_grouped[:, :3] * filled).sum(-1).transpose(1, 2)
    return grad_xyz, grad_new_xyz, grad_features, None, None


ball_query_group.register_autograd(_ball_query_group_backward, setup_context=_ball_query_group_setup)


@torch.library.custom_op("pointnet2::knn", mutates_args=())
def knn(xyz: Tensor, query: Tensor, k: int) -> tuple[Tensor, Tensor]:
    dist2, idx = extension(xyz.device).knn(xyz, query, k)
    return dist2, idx


@knn.register_fake
def _(xyz, query, k):
    b, m = query.shape[:2]
    return xyz.new_empty(b, m, k), xyz.new_empty(b, m, k, dtype=torch.long)


@torch.library.custom_op("pointnet2::interpolate", mutates_args=())
def interpolate(features: Tensor, idx: Tensor, weight: Tensor) -> Tensor:
    return extension(features.device).interpolate(features, idx, weight)


@interpolate.register_fake
def _(features, idx, weight):
    return features.new_empty(features.shape[0], features.shape[1], idx.shape[1])


@torch.library.custom_op("pointnet2::interpolate_backward", mutates_args=())
def interpolate_backward(grad_out: Tensor, idx: Tensor, weight: Tensor, num_known: int) -> Tensor:
    return extension(grad_out.device).interpolate_backward(grad_out, idx, weight, num_known)


@interpolate_backward.register_fake
def _(grad_out, idx, weight, num_known):
    return grad_out.new_empty(grad_out.shape[0], grad_out.shape[1], num_known)


def _interpolate_setup(ctx, inputs, output):
    features, idx, weight = inputs
    ctx.save_for_backward(idx, weight)
    ctx.num_known = features.shape[2]


def _interpolate_backward(ctx, grad_out):
    """Gradient into the known features only (the weights are constants of the geometry)."""
    idx, weight = ctx.saved_tensors
    return interpolate_backward(grad_out.contiguous(), idx, weight, ctx.num_known), None, None


interpolate.register_autograd(_interpolate_backward, setup_context=_interpolate_setup)


def call(name: str, *args):
    """Run op ``name`` (``torch.ops.pointnet2.<name>``) on ``args``: through the dispatcher while compiling or
    when a gradient is needed, else the extension directly, as inference needs neither, and a custom op's
    first call imports torch._dynamo (seconds of start-up; experiments/bench_viz.md)."""
    needs_grad = torch.is_grad_enabled() and any(isinstance(a, Tensor) and a.requires_grad for a in args)
    if torch.compiler.is_compiling() or needs_grad:
        return getattr(torch.ops.pointnet2, name)(*args)
    return getattr(extension(args[0].device), name)(*args)
