"""Open3D geometries for a cloud with keypoints, predictions, a probability map and samples."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pckeypoints.errors import InputError
from pckeypoints.extras import require
from viz.camera import check_points
from viz.colors import CLOUD_GREY, ERROR_RED, SAMPLE_MAGENTA, probability_colors, semantic_colors

o3d = require("open3d", "drawing scenes")


@dataclass
class SceneGeometry:
    """One named geometry, with the pixel size of its points or lines (0: not a cloud or line set)."""

    name: str
    geometry: o3d.geometry.Geometry3D
    point_size: float = 0.0
    line_width: float = 0.0


def _cloud(points: np.ndarray, colors: np.ndarray) -> o3d.geometry.PointCloud:
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    cloud.colors = o3d.utility.Vector3dVector(np.broadcast_to(colors, points.shape).astype(np.float64))
    return cloud


def _markers(centers: np.ndarray, colors: np.ndarray, radius: float, shape: str) -> o3d.geometry.TriangleMesh:
    """One mesh with a sphere (or octahedron) of the given colour at each centre."""
    merged = o3d.geometry.TriangleMesh()
    for center, color in zip(centers, colors):
        if shape == "sphere":
            marker = o3d.geometry.TriangleMesh.create_sphere(radius, resolution=12)
        else:
            marker = o3d.geometry.TriangleMesh.create_octahedron(radius)
        marker.translate(center)
        marker.paint_uniform_color(color)
        merged += marker
    return merged


def build_scene(points, keypoints=None, semantic_ids=None, pred=None, probs=None, samples=None,
                point_size: float = 4.0, keypoint_radius: float | None = None) -> list[SceneGeometry]:
    """Geometries for :func:`viz.render_keypoints`.

    Args:
        points: (N, 3) cloud, painted grey, or by ``probs`` when given.
        keypoints: (K, 3) ground-truth keypoints, drawn as spheres coloured by semantic id.
        semantic_ids: (K,) ids; default ``arange(K)``.
        pred: (K, 3) predicted keypoints (row k predicts ``keypoints[k]``), drawn as octahedra of
            the same colour, joined to the ground truth by red error lines.
        probs: (N,) one keypoint's probability over the points, painted with viridis.
        samples: (S, 3) keypoints sampled by sampling-argmax, drawn as small magenta points.
        point_size: cloud point size in pixels.
        keypoint_radius: sphere radius; default 2.5% of the cloud's bounding-box diagonal.
    """
    points = check_points("points", points)
    diagonal = float(np.linalg.norm(points.max(0) - points.min(0)))
    radius = keypoint_radius if keypoint_radius is not None else 0.025 * max(diagonal, 1e-6)
    point_colors = np.asarray(CLOUD_GREY)
    if probs is not None:
        probs = np.asarray(probs)
        if probs.shape != (len(points),):
            raise InputError(f"probs must have shape ({len(points)},) like the points, got {probs.shape}")
        point_colors = probability_colors(probs)
    scene = [SceneGeometry("cloud", _cloud(points, point_colors), point_size=point_size)]

    if keypoints is None:
        if pred is not None or semantic_ids is not None:
            raise InputError("pred and semantic_ids need the ground-truth keypoints")
    else:
        keypoints = check_points("keypoints", keypoints, allow_empty=True)
        ids = np.arange(len(keypoints)) if semantic_ids is None else np.asarray(semantic_ids)
        if ids.shape != (len(keypoints),):
            raise InputError(f"semantic_ids must have shape ({len(keypoints)},), got {ids.shape}")
        colors = semantic_colors(ids) / 255.0
        if len(keypoints):
            scene.append(SceneGeometry("keypoints", _markers(keypoints, colors, radius, "sphere")))
        if pred is not None:
            pred = check_points("pred", pred, allow_empty=True)
            if pred.shape != keypoints.shape:
                raise InputError(f"pred must have the keypoints' shape {keypoints.shape}, got {pred.shape}")
            if len(pred):
                scene.append(SceneGeometry("pred", _markers(pred, colors, radius, "octahedron")))
                lines = o3d.geometry.LineSet(
                    o3d.utility.Vector3dVector(np.concatenate([keypoints, pred])),
                    o3d.utility.Vector2iVector(np.stack([np.arange(len(pred)), np.arange(len(pred)) + len(pred)], 1)))
                lines.paint_uniform_color(ERROR_RED)
                scene.append(SceneGeometry("errors", lines, line_width=3.0))

    if samples is not None:
        samples = check_points("samples", samples)
        scene.append(SceneGeometry("samples", _cloud(samples, np.asarray(SAMPLE_MAGENTA)), point_size=point_size))
    return scene
