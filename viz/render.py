"""Render a point cloud with keypoints to an image (offscreen) or show it in a window."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from viz.camera import PinholeCamera, look_at_bbox
from viz.colors import ERROR_RED, SAMPLE_MAGENTA, probability_colors, semantic_colors
from viz.offscreen import has_display, render_scene

LEGEND_WIDTH = 120
PROBS_LABEL = "prob: low - high"


def _rgb255(color) -> tuple[int, int, int]:
    return tuple(int(round(255 * c)) for c in color)


def draw_legend(image: np.ndarray, semantic_ids, pred: bool = False, probs: bool = False,
                samples: bool = False, probs_label: str = PROBS_LABEL) -> np.ndarray:
    """Append a white strip of ``LEGEND_WIDTH`` pixels on the right listing id -> colour.

    Args:
        image: (H, W, 3) uint8 render; its pixels are left unchanged.
        semantic_ids: ids shown in the scene (duplicates are listed once).
        probs_label: caption of the probability colour bar.
    Returns:
        (H, W + LEGEND_WIDTH, 3) uint8.
    """
    height = image.shape[0]
    strip = Image.new("RGB", (LEGEND_WIDTH, height), "white")
    draw = ImageDraw.Draw(strip)
    notes = []
    if pred:
        notes += [("sphere: truth", (0, 0, 0)), ("diamond: pred", (0, 0, 0)), ("line: error", _rgb255(ERROR_RED))]
    if samples:
        notes.append(("samples", _rgb255(SAMPLE_MAGENTA)))
    if probs:
        notes.append((probs_label, (0, 0, 0)))
    ids = np.unique(np.asarray(semantic_ids, dtype=np.int64))
    row = max(8, min(18, (height - 8) // max(1, len(ids) + len(notes) + probs)))
    font = ImageFont.load_default(size=row - 4)
    y = 4
    for text, color in notes:
        draw.text((6, y), text, fill=color, font=font)
        y += row
    if probs:  # colour bar under its note
        bar = np.round(probability_colors(np.linspace(0, 1, LEGEND_WIDTH - 12)) * 255).astype(np.uint8)
        strip.paste(Image.fromarray(np.repeat(bar[None], row - 6, axis=0)), (6, y))
        y += row
    for semantic_id, color in zip(ids, semantic_colors(ids)):
        draw.ellipse((6, y + 2, 6 + row - 5, y + row - 3), fill=tuple(int(c) for c in color))
        draw.text((6 + row, y), f"id {semantic_id}", fill=(0, 0, 0), font=font)
        y += row
    return np.concatenate([image, np.asarray(strip)], axis=1)


def render_image(points, keypoints=None, semantic_ids=None, pred=None, probs=None, samples=None,
                 width: int = 640, height: int = 480, camera: PinholeCamera | None = None,
                 legend: bool = True, probs_label: str = PROBS_LABEL) -> np.ndarray:
    """Render offscreen (see :func:`render_keypoints` for the arguments).

    Args:
        camera: view to render; default :func:`viz.camera.look_at_bbox` of everything drawn, so
            ``camera.project(keypoints)`` gives the keypoints' pixels in the returned image.
        legend: append the legend strip (``LEGEND_WIDTH`` pixels) on the right when keypoints,
            probs or samples are drawn.
        probs_label: caption of the legend's probability colour bar.
    Returns:
        (H, W, 3) uint8 RGB, or (H, W + LEGEND_WIDTH, 3) with the legend.
    """
    from viz.scene import build_scene  # Open3D is needed to render, not to import viz

    scene = build_scene(points, keypoints, semantic_ids, pred, probs, samples)
    if camera is None:
        framed = [np.asarray(a, dtype=np.float64).reshape(-1, 3) for a in (points, keypoints, pred, samples)
                  if a is not None]
        camera = look_at_bbox(np.concatenate(framed), width, height)
    image = render_scene(scene, camera)
    if legend and any(a is not None for a in (keypoints, probs, samples)):
        ids = semantic_ids if semantic_ids is not None else np.arange(0 if keypoints is None else len(keypoints))
        image = draw_legend(image, ids, pred=pred is not None, probs=probs is not None, samples=samples is not None,
                            probs_label=probs_label)
    return image


def render_keypoints(points, keypoints=None, semantic_ids=None, png=None, pred=None, probs=None, samples=None,
                     width: int = 640, height: int = 480, probs_label: str = PROBS_LABEL) -> np.ndarray | None:
    """Draw a cloud with its keypoints, in a window or into a PNG.

    Args:
        points: (N, 3) cloud, grey, or painted by ``probs``.
        keypoints: (K, 3) ground truth, spheres coloured by semantic id (fixed palette).
        semantic_ids: (K,) ids of the keypoints; default ``arange(K)``.
        png: output path. Without it, a window opens when a display exists (returns None);
            otherwise the image is only rendered and returned.
        pred: (K, 3) predictions for the same ids: octahedra joined to the truth by red error lines.
        probs: (N,) one keypoint's probability over the points, painted with viridis (min-max normalised).
        samples: (S, 3) keypoints sampled by sampling-argmax, small magenta points.
        width, height: size of the 3D view in pixels (a legend strip is appended on the right).
        probs_label: caption of the legend's probability colour bar (e.g. when ``probs`` is a log).
    Returns:
        (H, W', 3) uint8 RGB image, or None when shown interactively.
    """
    if png is None and has_display():
        from viz.scene import build_scene, o3d

        scene = build_scene(points, keypoints, semantic_ids, pred, probs, samples)
        o3d.visualization.draw_geometries([item.geometry for item in scene], width=width, height=height)
        return None
    image = render_image(points, keypoints, semantic_ids, pred, probs, samples, width, height,
                         probs_label=probs_label)
    if png is not None:
        Path(png).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(png)
    return image
