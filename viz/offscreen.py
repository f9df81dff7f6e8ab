"""Headless rendering with Open3D's OffscreenRenderer (EGL), probed in a subprocess first.

A machine without a working EGL set-up makes ``OffscreenRenderer(...)`` crash the process
(``eglInitialize failed`` then a segmentation fault), so the first render in a process checks in a
child process that rendering works and raises a clear ``RuntimeError`` if it does not.
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys

import numpy as np

from viz.camera import PinholeCamera

_PROBE = """
import numpy as np
from open3d.visualization import rendering
renderer = rendering.OffscreenRenderer(32, 24)
image = np.asarray(renderer.render_to_image())
assert image.shape == (24, 32, 3), image.shape
"""


@functools.cache
def offscreen_status() -> tuple[bool, str]:
    """(True, "") when Open3D can render offscreen here, else (False, why); probed once per process."""
    try:
        child = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return False, "the OffscreenRenderer probe did not finish within 120 s"
    if child.returncode == 0:
        return True, ""
    output = (child.stdout + child.stderr).strip().splitlines()
    return False, f"the OffscreenRenderer probe exited with code {child.returncode}: " + " | ".join(output[-4:])


def has_display() -> bool:
    """Whether an X11 or Wayland display is available for interactive windows."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


_live: dict[tuple[int, int], object] = {}  # at most one renderer: two alive at once abort the process on exit


def _renderer(width: int, height: int):
    if (width, height) not in _live:
        ok, reason = offscreen_status()
        if not ok:
            raise RuntimeError(f"Open3D offscreen rendering is unavailable: {reason}")
        from open3d.visualization import rendering

        _live.clear()
        renderer = rendering.OffscreenRenderer(width, height)
        # Unlit materials need no lights, shadows or anti-aliasing; turning them off keeps colours exact
        # and makes software (llvmpipe) renders about ten times faster on a busy CPU.
        view = renderer.scene.view
        view.set_post_processing(False)
        view.set_antialiasing(False)
        view.set_sample_count(1)
        view.set_ambient_occlusion(False)
        view.set_shadowing(False)
        renderer.scene.scene.enable_sun_light(False)
        renderer.scene.scene.enable_indirect_light(False)
        renderer.scene.show_skybox(False)
        _live[width, height] = renderer
    return _live[width, height]


def render_scene(scene, camera: PinholeCamera, background=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Render ``viz.scene.SceneGeometry`` items through ``camera`` -> (H, W, 3) uint8 RGB.

    The renderer is kept for the next call of the same size (creating one takes seconds).
    """
    renderer = _renderer(camera.width, camera.height)
    renderer.scene.set_background([*background, 1.0])
    try:
        for item in scene:
            renderer.scene.add_geometry(item.name, item.geometry, item.material)
        renderer.setup_camera(camera.intrinsic, camera.extrinsic, camera.width, camera.height)
        return np.array(renderer.render_to_image())
    finally:  # remove_geometry: clear_geometry() would slow every later render down
        for item in scene:
            renderer.scene.remove_geometry(item.name)
