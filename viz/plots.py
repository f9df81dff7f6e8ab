"""Matplotlib figures, headless: PCK curves, training curves, scores against training time, calibration, galleries.

Figures are built with matplotlib's object API (``Figure``, no pyplot), so importing this module
never changes the global matplotlib backend or touches a caller's pyplot state.
"""
from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from pckeypoints.errors import InputError

FIGSIZE = (6.4, 4.8)
DPI = 100


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def plot_pck_curves(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], path,
                    title: str = "PCK") -> Path:
    """One PCK-vs-threshold line per method.

    Args:
        curves: method name -> (thresholds (T,), PCK values (T,) in [0, 1]).
        path: output PNG, ``FIGSIZE * DPI`` pixels.
    """
    if not curves:
        raise InputError("curves is empty")
    fig = Figure(figsize=FIGSIZE)
    ax = fig.subplots()
    for name, (thresholds, values) in curves.items():
        thresholds, values = np.asarray(thresholds, float), np.asarray(values, float)
        if thresholds.ndim != 1 or thresholds.shape != values.shape or len(thresholds) == 0:
            raise InputError(f"curve {name!r}: thresholds {thresholds.shape} and values {values.shape} "
                             "must be equally long non-empty 1-D arrays")
        ax.plot(thresholds, values, marker="o", markersize=3, label=name)
    ax.set(xlabel="distance threshold", ylabel="PCK", title=title, ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def _read_numeric_columns(csv_path) -> tuple[dict[str, dict[str, list[tuple[float, float]]]], list[str]]:
    """CSV log -> ({column: {split: [(epoch, value), ...]}}, column order); blank cells are skipped."""
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise InputError(f"{csv_path}: no rows")
    if "epoch" not in rows[0]:
        raise InputError(f"{csv_path}: no 'epoch' column (columns: {list(rows[0])})")
    series: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for row in rows:
        epoch = float(row["epoch"])
        split = row.get("split") or "all"
        for column, cell in row.items():
            if column in ("epoch", "split") or cell in (None, ""):
                continue
            try:
                value = float(cell)
            except ValueError:
                continue
            series.setdefault(column, {}).setdefault(split, []).append((epoch, value))
    if not series:
        raise InputError(f"{csv_path}: no numeric column besides 'epoch'")
    return series, list(series)


def plot_training_curves(csv_path, path) -> Path:
    """One panel per numeric column of a training log (columns: epoch, split, loss, pck, ...).

    Each split (e.g. train/val) is a line; a log without a ``split`` column has one line per panel.
    """
    series, columns = _read_numeric_columns(csv_path)
    ncols = min(3, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    fig = Figure(figsize=FIGSIZE)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, column in zip(axes.flat, columns):
        for split, points in series[column].items():
            epochs, values = zip(*sorted(points))
            ax.plot(epochs, values, label=split)
        ax.set(title=column, xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in axes.flat[len(columns):]:
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, path)


def plot_time_curves(panels: Mapping[str, Sequence[Mapping]], path, xlabel: str, ylabel: str,
                     references: Mapping[str, Sequence[tuple[float, str]]] | None = None) -> Path:
    """A score against training time, one panel per key of ``panels``, side by side (e.g. time to accuracy).

    Args:
        panels: title -> lines, each ``{"x": (N,), "y": (N,), "label": str or None, "color": int (index into the
            colour cycle), "dotted": bool, "end": (x, y) or None}``; ``end`` marks a final score with a star.
        references: title -> ``[(y, text)]``: dashed horizontal lines (targets) with their text.
        path: output PNG, ``6 x len(panels)`` by 4.2 inches at ``DPI``.
    """
    if not panels:
        raise InputError("panels is empty")
    from matplotlib import rcParams

    colors = rcParams["axes.prop_cycle"].by_key()["color"]
    fig = Figure(figsize=(6 * len(panels), 4.2))
    for ax, (title, lines) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels.items()):
        for line in lines:
            x, y = np.asarray(line["x"], float), np.asarray(line["y"], float)
            if x.ndim != 1 or x.shape != y.shape or len(x) == 0:
                raise InputError(f"panel {title!r}: x {x.shape} and y {y.shape} must be equally long non-empty "
                                 "1-D arrays")
            color = colors[line.get("color", 0) % len(colors)]
            ax.plot(x, y, color=color, linestyle=":" if line.get("dotted") else "-", marker=".", alpha=0.8,
                    label=line.get("label"))
            if line.get("end") is not None:
                ax.plot([line["end"][0]], [line["end"][1]], marker="*", markersize=10, color=color)
        for value, text in (references or {}).get(title, ()):
            ax.axhline(value, color="gray", linestyle="--", linewidth=1)
            ax.annotate(text, (0, value), fontsize=7, color="gray", va="bottom")
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        ax.grid(alpha=0.3)
        if any(line.get("label") for line in lines):
            ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def reliability_bins(confidence, correct, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bin predictions by confidence into ``n_bins`` equal-width bins of [0, 1].

    Args:
        confidence: (M,) values in [0, 1].
        correct: (M,) booleans.
    Returns:
        (B,) mean confidence, (B,) accuracy and (B,) count of the B non-empty bins.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct)
    if confidence.ndim != 1 or confidence.shape != correct.shape or len(confidence) == 0:
        raise InputError(f"confidence {confidence.shape} and correct {correct.shape} must be equally long "
                         "non-empty 1-D arrays")
    if not np.isfinite(confidence).all() or confidence.min() < 0 or confidence.max() > 1:
        raise InputError("confidence must be finite and within [0, 1]")
    bins = np.minimum((confidence * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    used = count > 0
    mean_confidence = np.bincount(bins, confidence, n_bins)[used] / count[used]
    accuracy = np.bincount(bins, correct.astype(np.float64), n_bins)[used] / count[used]
    return mean_confidence, accuracy, count[used]


def plot_calibration(confidence, correct, path, n_bins: int = 10, before=None) -> Path:
    """Reliability diagram: per-bin accuracy against mean confidence (marker area ~ bin size).

    Args:
        confidence: (M,) predicted confidence in [0, 1].
        correct: (M,) whether each prediction was correct.
        before: (M,) the same predictions' confidence before calibration (T = 1), drawn beside it.
    """
    series = {"calibrated": confidence, "before (T = 1)": before} if before is not None else {"bins": confidence}
    fig = Figure(figsize=FIGSIZE)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    eces = []
    for (label, values), marker in zip(reversed(series.items()), "os"):
        mean_confidence, accuracy, count = reliability_bins(values, correct, n_bins)
        ece = float(np.sum(count * np.abs(accuracy - mean_confidence)) / count.sum())
        eces.append(ece)
        ax.scatter(mean_confidence, accuracy, s=20 + 200 * count / count.max(), zorder=3, marker=marker,
                   alpha=0.7 if before is not None else 1, label=f"{label}, ECE {ece:.3f}" if before is not None else label)
    ece_text = f"ECE {eces[0]:.3f} -> {eces[1]:.3f}" if before is not None else f"ECE {eces[0]:.3f}"
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.02),
           title=f"Calibration ({ece_text}, {count.sum()} predictions)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    return _save(fig, path)


def render_gallery(items: Sequence[Mapping], path, ncols: int = 4, width: int = 320, height: int = 240,
                   title: str | None = None, legend: bool = False, if_available: bool = False) -> Path | None:
    """Tile Open3D renders of several predictions (ground truth vs prediction) into one PNG.

    Args:
        items: dicts with ``points (N, 3)``, ``keypoints (K, 3)`` and optionally ``pred (K, 3)``,
            ``semantic_ids (K,)`` and ``title``.
        ncols: tiles per row.
        width, height: size of each tile's render in pixels.
        title: of the figure (e.g. the model and split), in a header band above the tiles.
        legend: explain the marks in that band: sphere the truth, diamond the prediction, red line the error.
        if_available: where Open3D cannot render (not installed, no GL), warn and return None
            instead of raising.
    """
    from viz.offscreen import offscreen_status
    from viz.render import render_image

    if not items:
        raise InputError("items is empty")
    ok, reason = offscreen_status()
    if not ok and if_available:
        warnings.warn(f"{path} not written: {reason}", stacklevel=2)
        return None
    ncols = min(ncols, len(items))
    nrows = math.ceil(len(items) / ncols)
    header = 24 * (title is not None) + 20 * legend  # pixels above the tiles
    tile_inches = (width / DPI, (height + 24) / DPI)
    fig = Figure(figsize=(ncols * tile_inches[0], nrows * tile_inches[1] + header / DPI))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, item in zip(axes.flat, items):
        image = render_image(item["points"], item.get("keypoints"), item.get("semantic_ids"),
                             pred=item.get("pred"), width=width, height=height, legend=False)
        ax.imshow(image)
        ax.set_title(item.get("title", ""), fontsize=8)
    total = nrows * (height + 24) + header
    if title is not None:
        fig.suptitle(title, y=1 - 4 / total, va="top", fontsize=10)
    if legend:
        top = 1 - 24 * (title is not None) / total
        fig.legend(handles=_gallery_legend(), loc="upper center", bbox_to_anchor=(0.5, top), ncols=3, fontsize=8,
                   frameon=False, handlelength=1.5)
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1 - (20 + header) / total, wspace=0.02, hspace=0.1)
    return _save(fig, path)


def _gallery_legend() -> list:
    """Legend handles of :func:`viz.render.render_image`'s marks."""
    from matplotlib.lines import Line2D

    from viz.colors import ERROR_RED

    return [Line2D([], [], ls="", marker="o", color="0.3", label="truth (sphere)"),
            Line2D([], [], ls="", marker="D", color="0.3", label="prediction (diamond)"),
            Line2D([], [], color=ERROR_RED, label="error")]
