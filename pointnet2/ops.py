"""PointNet++ point-cloud ops with fused ball query + grouping.

All ops take channels-first features ``(B, C, N)`` and points ``(B, N, 3)`` (float32 or float64, same
dtype and device), and a keyword ``backend`` (``"auto"``, ``"cpu"``, ``"cuda"``, ``"reference"``; default
from the ``POINTNET2_BACKEND`` environment variable, else ``"auto"``; see :mod:`pointnet2._extension`).

Conventions (identical in every backend; the CPU and CUDA kernels equal :mod:`pointnet2.reference` bit for
bit in the forward pass):

* **Farthest point sampling** starts at index 0; argmax ties go to the smaller index. When ``m`` exceeds
  the number of distinct points, the remaining picks have distance 0 and repeat index 0 (as in the
  original CUDA kernel), so small clouds still give ``m`` centres.
* **Ball query is first-found in index order** (as in the original PointNet++): the ``nsample`` neighbours
  are the first points, by index, with ``|p - c|^2 < radius^2``. It needs no sort and can stop early, which
  keeps the fused kernel cheap, and it is deterministic. When a ball holds more than ``nsample`` points,
  the kept ones are spread over the whole ball (point order in scanned/sampled clouds carries no
  distance information) rather than shrunk to its core as nearest-first truncation would do; the ball
  radius, not the truncation, sets the receptive field.
* **Padding**: when a ball holds ``count < nsample`` points the remaining slots repeat the first found
  neighbour (harmless under max pooling; gradients of padded slots flow to that neighbour, as in the
  original). ``counts`` (B, M) gives the number of distinct neighbours, so
  ``arange(nsample) < counts[..., None]`` masks the padding.
* **Empty ball** (``count == 0``, only possible when centres are not cloud points): every slot is zero
  (offset of the centre to itself, zero features) with ``idx == -1`` from :func:`ball_query`; no other
  point's index is used silently. Masked out by ``counts == 0``.
* **knn** is nearest first, ties to the smaller index; **three_nn_interpolate** weights the (up to) 3
  nearest known points by ``1 / max(d^2, 1e-10)``, normalised, as in PointNet++ and PyG's
  ``knn_interpolate``.
* **Validation**: shapes, dtypes and devices are always checked (no data is read); ``validate=True``
  also rejects NaN/infinite coordinates, a full pass and, on a GPU, a host synchronisation, so the
  modules call the ops with ``validate=False`` inside a training step.
* **Dispatcher**: the C++/CUDA kernels are the ops ``torch.ops.pointnet2.*`` (:mod:`pointnet2._library`)
  with fake kernels and registered backward passes, so ``torch.compile`` traces through them; eager
  calls that need no gradient (inference) run the extension directly.
* **Gradients**: :func:`ball_query_group` back-propagates into ``features``, ``xyz`` and ``new_xyz`` (a
  scatter-add; neighbour selection is piecewise constant); :func:`three_nn_interpolate` into
  ``known_feats`` only (interpolation weights are treated as constants). The CPU backward is
  deterministic; the CUDA backward uses atomicAdd.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from pointnet2 import _library, reference
from pointnet2._extension import use_reference
from pointnet2.errors import InputError

__all__ = ["BallQuery", "Grouped", "KNN", "ball_query", "ball_query_group", "furthest_point_sample", "knn",
           "three_nn_interpolate"]


class BallQuery(NamedTuple):
    """idx (B, M, nsample) long, -1 in empty balls; counts (B, M) int32 distinct neighbours."""

    idx: Tensor
    counts: Tensor


class Grouped(NamedTuple):
    """grouped (B, 3 + C, M, nsample) offsets and features; counts (B, M) int32 distinct neighbours."""

    grouped: Tensor
    counts: Tensor


class KNN(NamedTuple):
    """dist2 and idx (B, M, k) of the k nearest points, nearest first."""

    dist2: Tensor
    idx: Tensor


def _check_points(name: str, points: Tensor, validate: bool) -> None:
    if not isinstance(points, Tensor) or points.dim() != 3 or points.shape[-1] != 3:
        raise InputError(f"{name} must be a (B, N, 3) tensor, got {getattr(points, 'shape', type(points))}")
    if points.dtype not in (torch.float32, torch.float64):
        raise InputError(f"{name} must be float32 or float64, got {points.dtype}")
    if points.shape[1] == 0:
        raise InputError(f"{name} holds no points (N=0)")
    if validate and not torch.compiler.is_compiling() and not torch.isfinite(points).all():
        raise InputError(f"{name} contains NaN or infinite coordinates")


def _check_pair(name: str, points: Tensor, ref_name: str, ref: Tensor, validate: bool) -> None:
    _check_points(name, points, validate)
    if points.shape[0] != ref.shape[0]:
        raise InputError(f"{name} has batch size {points.shape[0]} but {ref_name} has {ref.shape[0]}")
    if points.dtype != ref.dtype or points.device != ref.device:
        raise InputError(f"{name} ({points.dtype}, {points.device}) must match {ref_name} ({ref.dtype}, {ref.device})")


def _check_features(name: str, features: Tensor, points_name: str, points: Tensor) -> None:
    B, N, _ = points.shape
    if not isinstance(features, Tensor) or features.dim() != 3 or features.shape[0] != B or features.shape[2] != N:
        raise InputError(
            f"{name} must be (B, C, N) = ({B}, C, {N}) to match {points_name}, "
            f"got {getattr(features, 'shape', type(features))}"
        )
    if features.dtype != points.dtype or features.device != points.device:
        raise InputError(f"{name} ({features.dtype}, {features.device}) must match {points_name}")


def _check_count(name: str, value: int, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_ball(xyz: Tensor, new_xyz: Tensor, radius: float, nsample: int, validate: bool) -> None:
    _check_points("xyz", xyz, validate)
    _check_pair("new_xyz", new_xyz, "xyz", xyz, validate)
    _check_count("nsample", nsample)
    if not (isinstance(radius, (int, float)) and math.isfinite(radius) and radius > 0):
        raise InputError(f"radius must be a finite number > 0, got {radius!r}")


def furthest_point_sample(xyz: Tensor, m: int, *, backend: str | None = None, validate: bool = True) -> Tensor:
    """Indices (B, m) long of ``m`` farthest-point samples of xyz (B, N, 3), starting at index 0."""
    _check_points("xyz", xyz, validate)
    _check_count("m", m)
    xyz = xyz.detach().contiguous()
    if use_reference(backend, xyz.device):
        return reference.furthest_point_sample(xyz, m)
    return _library.call("furthest_point_sample", xyz, m)


def ball_query(
    xyz: Tensor, new_xyz: Tensor, radius: float, nsample: int, *, backend: str | None = None, validate: bool = True
) -> BallQuery:
    """First ``nsample`` neighbours within ``radius`` of each centre (see :class:`BallQuery`)."""
    _check_ball(xyz, new_xyz, radius, nsample, validate)
    xyz, new_xyz = xyz.detach().contiguous(), new_xyz.detach().contiguous()
    if use_reference(backend, xyz.device):
        return BallQuery(*reference.ball_query(xyz, new_xyz, radius, nsample))
    _, idx, counts = _library.call("ball_query_group", xyz, new_xyz, None, float(radius), nsample)
    return BallQuery(idx.long(), counts)


def ball_query_group(
    xyz: Tensor,
    new_xyz: Tensor,
    features: Tensor | None,
    radius: float,
    nsample: int,
    *,
    backend: str | None = None,
    validate: bool = True,
) -> Grouped:
    """Fused ball query + grouping.

    Args:
        xyz: (B, N, 3) points.
        new_xyz: (B, M, 3) ball centres.
        features: (B, C, N) point features or None.
        radius: ball radius (> 0); a point is inside when its squared distance is < radius**2.
        nsample: slots per ball (>= 1).

    Returns:
        :class:`Grouped`: grouped (B, 3 + C, M, nsample): neighbour minus centre, then neighbour features
        (C = 0 without features); counts (B, M) int32: distinct neighbours per ball, the remaining slots are
        padding.
    """
    _check_ball(xyz, new_xyz, radius, nsample, validate)
    if features is not None:
        _check_features("features", features, "xyz", xyz)
    if use_reference(backend, xyz.device):
        return Grouped(*reference.ball_query_group(xyz, new_xyz, features, radius, nsample))
    features = None if features is None else features.contiguous()
    grouped, _, counts = _library.call("ball_query_group", xyz.contiguous(), new_xyz.contiguous(), features,
                                       float(radius), nsample)
    return Grouped(grouped, counts)


def knn(xyz: Tensor, new_xyz: Tensor, k: int, *, backend: str | None = None, validate: bool = True) -> KNN:
    """k nearest points of xyz (B, N, 3) to each query new_xyz (B, M, 3) (see :class:`KNN`)."""
    _check_points("xyz", xyz, validate)
    _check_pair("new_xyz", new_xyz, "xyz", xyz, validate)
    _check_count("k", k)
    if k > xyz.shape[1]:
        raise InputError(f"k={k} exceeds the number of points N={xyz.shape[1]}")
    xyz, new_xyz = xyz.detach().contiguous(), new_xyz.detach().contiguous()
    if use_reference(backend, xyz.device):
        return KNN(*reference.knn(xyz, new_xyz, k))
    return KNN(*_library.call("knn", xyz, new_xyz, k))


def three_nn_interpolate(
    unknown: Tensor, known: Tensor, known_feats: Tensor, *, backend: str | None = None, validate: bool = True
) -> Tensor:
    """Features (B, C, n) at unknown (B, n, 3), inverse-distance weighted from the 3 nearest of known (B, m, 3).

    known_feats is (B, C, m); fewer than 3 known points use all of them.
    """
    _check_points("known", known, validate)
    _check_pair("unknown", unknown, "known", known, validate)
    _check_features("known_feats", known_feats, "known", known)
    if use_reference(backend, known.device):
        return reference.three_nn_interpolate(unknown, known, known_feats)
    known_xyz, unknown_xyz = known.detach().contiguous(), unknown.detach().contiguous()
    dist2, idx = _library.call("knn", known_xyz, unknown_xyz, min(3, known.shape[1]))
    return _library.call("interpolate", known_feats.contiguous(), idx, reference.interpolation_weights(dist2))
