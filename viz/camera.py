"""A pinhole camera looking at a point cloud's bounding box, with a known projection to pixels."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pckeypoints.errors import InputError
from pckeypoints.validation import check_cloud


@dataclass(frozen=True)
class PinholeCamera:
    """OpenCV-convention pinhole camera (x right, y down, z forward).

    Attributes:
        intrinsic: (3, 3) matrix ``[[f, 0, cx], [0, f, cy], [0, 0, 1]]`` in pixels.
        extrinsic: (4, 4) world-to-camera transform.
        width, height: image size in pixels.
    """

    intrinsic: np.ndarray
    extrinsic: np.ndarray
    width: int
    height: int

    def to_camera(self, points) -> np.ndarray:
        """(M, 3) world points -> (M, 3) camera coordinates; column 2 is the depth."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        return p @ self.extrinsic[:3, :3].T + self.extrinsic[:3, 3]

    def project(self, points) -> np.ndarray:
        """(M, 3) world points -> (M, 2) pixel coordinates ``(column, row)``."""
        cam = self.to_camera(points)
        uvw = cam @ self.intrinsic.T
        return uvw[:, :2] / uvw[:, 2:3]


def check_points(name: str, value, allow_empty: bool = False) -> np.ndarray:
    """``value`` as a float64 array, checked by :func:`pckeypoints.validation.check_cloud` to be finite
    ``(M, 3)`` points (M >= 1 unless ``allow_empty``), else a ValueError naming it."""
    points = np.asarray(value, dtype=np.float64)
    check_cloud(points, name, min_points=0 if allow_empty else 1)
    return points


def look_at_bbox(points, width: int, height: int, azimuth: float = 35.0, elevation: float = 25.0,
                 fov: float = 40.0, margin: float = 1.05) -> PinholeCamera:
    """Camera that frames the bounding sphere of ``points`` (y is up).

    Args:
        points: (N, 3) points to frame.
        width, height: image size in pixels.
        azimuth: degrees around the y axis, 0 looks from +z towards -z.
        elevation: degrees above the xz plane, within [-89, 89].
        fov: field of view in degrees along the image's shorter side.
        margin: >= 1, extra room around the bounding sphere.
    """
    p = check_points("points", points)
    if width < 1 or height < 1:
        raise InputError(f"image size must be positive, got {width}x{height}")
    if not -89.0 <= elevation <= 89.0:
        raise InputError(f"elevation must be within [-89, 89] degrees, got {elevation}")
    lo, hi = p.min(0), p.max(0)
    center = (lo + hi) / 2
    radius = max(np.linalg.norm(hi - lo) / 2, 1e-6)
    half_fov = np.radians(fov) / 2
    focal = min(width, height) / 2 / np.tan(half_fov)
    distance = margin * radius / np.sin(half_fov)

    az, el = np.radians(azimuth), np.radians(elevation)
    eye = center + distance * np.array([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)])
    forward = (center - eye) / distance
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    extrinsic = np.eye(4)
    extrinsic[:3, :3] = rotation
    extrinsic[:3, 3] = -rotation @ eye
    intrinsic = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]])
    return PinholeCamera(intrinsic, extrinsic, int(width), int(height))
