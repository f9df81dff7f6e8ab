"""Open3D visualisation of keypoints and probability maps, and matplotlib plots.

``render_keypoints`` draws a cloud with keypoints (spheres coloured by semantic id), predictions
with error lines, a probability map and sampled keypoints; it renders headless through Open3D's
legacy ``Visualizer`` in a hidden window (EGL without a display) or opens a window when a display exists.
"""
from viz.camera import PinholeCamera, look_at_bbox
from viz.colors import PALETTE, probability_colors, semantic_colors
from viz.plots import plot_calibration, plot_pck_curves, plot_training_curves, render_gallery
from viz.render import render_image, render_keypoints

__all__ = [
    "PALETTE", "PinholeCamera", "look_at_bbox", "plot_calibration", "plot_pck_curves", "plot_training_curves",
    "probability_colors", "render_gallery", "render_image", "render_keypoints", "semantic_colors",
]
