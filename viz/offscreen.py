"""Headless rendering with Open3D's legacy ``Visualizer`` in a hidden window.

Without a display the hidden window is an EGL offscreen context (on a machine without a GPU, Mesa's
llvmpipe: Debian's libegl1 and libgl1-mesa-dri); with one, a hidden GLFW window. Lighting is off, so
every pixel has exactly its geometry's colour. A render takes a fraction of a second, context included,
where ``rendering.OffscreenRenderer`` first spends seconds starting its Filament engine on Vulkan
(``experiments/bench_viz.md``). Where no context can be created, rendering raises a clear
``RuntimeError`` (Open3D then fails cleanly instead of crashing).
"""
from __future__ import annotations

import functools
import os
import tempfile

import numpy as np

from viz.camera import PinholeCamera


def _open3d():
    from pckeypoints.extras import require

    return require("open3d", "rendering")


def has_display() -> bool:
    """Whether an X11 or Wayland display is available for interactive windows."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


@functools.cache
def _load_triton_first() -> None:
    """Import Triton (if installed) before Mesa's OpenGL driver loads: both carry LLVM, and a Triton loaded
    after Mesa crashes the process (Triton comes with torch; torch's optimizers and compiler import it)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        pass


def _hidden_window(o3d, width: int, height: int):
    """A hidden legacy ``Visualizer`` window of ``width`` x ``height``, or ``None`` when none can be created."""
    _load_triton_first()
    if not has_display():  # GLFW probes Wayland first; without this it prints an error about XDG_RUNTIME_DIR
        os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
    visualizer = o3d.visualization.Visualizer()
    with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
        created = visualizer.create_window(visible=False, width=width, height=height)
    return visualizer if created else None


@functools.cache
def offscreen_status() -> tuple[bool, str]:
    """(True, "") when Open3D can render offscreen here, else (False, why); checked once per process."""
    try:
        o3d = _open3d()
    except ValueError as err:  # MissingExtraError
        return False, str(err)
    window = _hidden_window(o3d, 32, 24)
    if window is None:
        return False, ("Open3D could not create an offscreen OpenGL context (headless: install libegl1 and "
                       "libgl1-mesa-dri, or a GPU driver with EGL)")
    window.destroy_window()
    return True, ""


def render_scene(scene, camera: PinholeCamera, background=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Render ``viz.scene.SceneGeometry`` items through ``camera`` -> (H, W, 3) uint8 RGB.

    The points of every cloud take the largest ``point_size`` of the scene (one size per render).
    """
    ok, reason = offscreen_status()
    if not ok:
        raise RuntimeError(f"Open3D offscreen rendering is unavailable: {reason}")
    o3d = _open3d()
    window = _hidden_window(o3d, camera.width, camera.height)
    if window is None:
        raise RuntimeError(f"Open3D could not create a {camera.width}x{camera.height} offscreen context")
    try:
        option = window.get_render_option()
        option.background_color = np.asarray(background, dtype=np.float64)
        option.light_on = False
        option.point_size = max([item.point_size for item in scene if item.point_size] or [1.0])
        option.line_width = max([item.line_width for item in scene if item.line_width] or [1.0])
        for item in scene:
            window.add_geometry(item.geometry)
        parameters = o3d.camera.PinholeCameraParameters()
        parameters.intrinsic = o3d.camera.PinholeCameraIntrinsic(camera.width, camera.height, camera.intrinsic)
        parameters.extrinsic = camera.extrinsic
        if not window.get_view_control().convert_from_pinhole_camera_parameters(parameters, allow_arbitrary=True):
            raise RuntimeError("Open3D rejected the camera parameters")
        image = np.asarray(window.capture_screen_float_buffer(do_render=True))
        return np.round(image * 255).astype(np.uint8)
    finally:
        window.destroy_window()
