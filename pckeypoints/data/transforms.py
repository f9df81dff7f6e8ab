"""Transforms of KeypointNet items.

Each transform takes and returns an item dict (``points (N, 3)``, ``keypoints (K, 3)``, ``mask (K,)``,
``point_index (K,)``, ``center (3,)``, ``scale ()``). Keypoints are points of the cloud, so transforms move the points
and take the keypoints again at ``point_index``: ``keypoints[k] == points[point_index[k]]`` exactly for every present
keypoint, and missing keypoint rows stay 0. Inputs are not modified. Random transforms draw from the
``torch.Generator`` they were given (the global one when ``None``).

``center`` and ``scale`` record the similarity that ``Normalize`` and ``RandomScale`` apply, so that
``original = points * scale + center``; rotations and jitter are training augmentations and are not recorded.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from pckeypoints.errors import InputError

__all__ = ["Compose", "Normalize", "RandomRotateUp", "Jitter", "RandomScale", "keypoints_at", "rotation_about_axis",
           "subsample_cloud"]

Item = dict


class Compose:
    """Apply ``transforms`` in order."""

    def __init__(self, transforms: Sequence[Callable[[Item], Item]]):
        self.transforms = list(transforms)

    def __call__(self, item: Item) -> Item:
        for transform in self.transforms:
            item = transform(item)
        return item


class Normalize:
    """Translate the cloud's centre to the origin and scale it to unit radius (farthest point at distance 1).

    Centre and radius are computed, and the points moved, in float64, so that a cloud far from the origin
    (coordinates ~1e6) loses no precision; ``center`` and ``scale`` keep the item's dtype.

    Args:
        center: ``"bbox"`` (default) centres the axis-aligned bounding box, ``"centroid"`` the mean point.
        dtype: dtype of the normalised points (default: that of the input points).
    """

    def __init__(self, center: str = "bbox", dtype: torch.dtype | None = None):
        if center not in ("bbox", "centroid"):
            raise InputError(f"center must be 'bbox' or 'centroid', got {center!r}")
        self.center, self.dtype = center, dtype

    def __call__(self, item: Item) -> Item:
        points = item["points"].double()
        if self.center == "bbox":
            center = (points.amin(0) + points.amax(0)) / 2
        else:
            center = points.mean(0)
        radius = (points - center).norm(dim=1).amax()
        if not radius > 0:
            raise InputError("cannot normalise a point cloud whose points all coincide")
        item = _with_points(item, ((points - center) / radius).to(self.dtype or item["points"].dtype))
        scale = item["scale"].double()
        item["center"] = (item["center"].double() + center * scale).to(item["center"].dtype)
        item["scale"] = (scale * radius).to(item["scale"].dtype)
        return item


class RandomRotateUp:
    """Rotate about the up axis (``axis=1``, y, in KeypointNet/ShapeNet) by an angle uniform in [0, 2π)."""

    def __init__(self, axis: int = 1, generator: torch.Generator | None = None):
        if axis not in (0, 1, 2):
            raise InputError(f"axis must be 0, 1 or 2, got {axis}")
        self.axis, self.generator = axis, generator

    def __call__(self, item: Item) -> Item:
        angle = float(torch.rand((), generator=self.generator)) * 2 * math.pi
        rotation = rotation_about_axis(angle, self.axis, dtype=item["points"].dtype)
        return _with_points(item, item["points"] @ rotation.T)


class RandomScale:
    """Scale about the origin by a factor uniform in ``[lo, hi]`` (recorded in ``scale``)."""

    def __init__(self, lo: float = 0.8, hi: float = 1.25, generator: torch.Generator | None = None):
        if not 0 < lo <= hi:
            raise InputError(f"need 0 < lo <= hi, got lo={lo}, hi={hi}")
        self.lo, self.hi, self.generator = lo, hi, generator

    def __call__(self, item: Item) -> Item:
        factor = self.lo + (self.hi - self.lo) * float(torch.rand((), generator=self.generator))
        item = _with_points(item, item["points"] * factor)
        item["scale"] = item["scale"] / factor
        return item


class Jitter:
    """Add Gaussian noise (std ``sigma``, clipped to ``±clip``) to every point; keypoints follow their point."""

    def __init__(self, sigma: float = 0.01, clip: float = 0.05, generator: torch.Generator | None = None):
        if sigma < 0 or clip < 0:
            raise InputError(f"sigma and clip must be non-negative, got sigma={sigma}, clip={clip}")
        self.sigma, self.clip, self.generator = sigma, clip, generator

    def __call__(self, item: Item) -> Item:
        points = item["points"]
        noise = torch.randn(points.shape, generator=self.generator, dtype=points.dtype) * self.sigma
        return _with_points(item, points + noise.clamp(-self.clip, self.clip))


def subsample_cloud(points, num_points: int, seed: int = 0, oversample: int = 4) -> torch.Tensor:
    """At most ``num_points`` of ``points (N, 3)``, spread evenly over the cloud, as a tensor of its dtype.

    Clouds of up to ``num_points`` points are returned whole. Bigger ones are first cut to a seeded random
    subset of ``oversample * num_points`` points (O(N), cheap for millions of points), then reduced to
    ``num_points`` by farthest point sampling, the even spread of the clouds models are trained on."""
    from pointnet2 import furthest_point_sample

    points = torch.as_tensor(points)
    if len(points) <= num_points:
        return points
    if len(points) > oversample * num_points:
        generator = torch.Generator().manual_seed(seed)
        points = points[torch.randperm(len(points), generator=generator)[: oversample * num_points]]
    return points[furthest_point_sample(points[None].contiguous(), num_points)[0]]


def rotation_about_axis(angle: float, axis: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Right-handed rotation matrix ``(3, 3)`` by ``angle`` radians about coordinate axis ``axis``."""
    c, s = math.cos(angle), math.sin(angle)
    i, j = [a for a in range(3) if a != axis][::1 if axis != 1 else -1]  # (y, z), (z, x) or (x, y)
    rotation = torch.eye(3, dtype=dtype)
    rotation[i, i], rotation[i, j], rotation[j, i], rotation[j, j] = c, -s, s, c
    return rotation


def keypoints_at(points: torch.Tensor, point_index: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Keypoints ``(K, 3)``: ``points (N, 3)`` at ``point_index (K,)`` where ``mask (K,)`` is set, 0 elsewhere."""
    return points[point_index.clamp(min=0)] * mask.unsqueeze(-1)


def _with_points(item: Item, points: torch.Tensor) -> Item:
    """Copy of ``item`` with new points and the keypoints taken from them."""
    return {**item, "points": points, "keypoints": keypoints_at(points, item["point_index"], item["mask"])}
