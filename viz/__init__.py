"""Open3D visualisation of keypoints and probability maps, and matplotlib plots.

``render_keypoints`` draws a cloud with keypoints (spheres coloured by semantic id), predictions
with error lines, a probability map and sampled keypoints; it renders headless through Open3D's
legacy ``Visualizer`` in a hidden window (EGL without a display) or opens a window when a display exists.
"""
import importlib

#: Public name -> its module, imported on first use (``pckeypoints viz`` renders without loading matplotlib's
#: figures, the reports plot without Open3D).
_EXPORTS = {
    "PALETTE": "viz.colors", "PinholeCamera": "viz.camera", "look_at_bbox": "viz.camera",
    "plot_calibration": "viz.plots", "plot_curve_grid": "viz.plots", "plot_pck_curves": "viz.plots",
    "plot_reliability_panels": "viz.plots", "plot_training_curves": "viz.plots",
    "probability_colors": "viz.colors", "render_gallery": "viz.plots", "render_image": "viz.render",
    "render_keypoints": "viz.render", "semantic_colors": "viz.colors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'viz' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
