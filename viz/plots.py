"""Matplotlib figures, headless: PCK curves, training curves, scores against training time, calibration, panels of
reliability diagrams and of curves, galleries, and the panels and saving that the experiments' figures use.

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


def panel_figure(nrows: int, ncols: int, panel_size: tuple[float, float]) -> tuple[Figure, np.ndarray]:
    """A figure of ``nrows x ncols`` panels of ``panel_size`` inches each, and its axes ``(nrows, ncols)``."""
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows))
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def save_figure(fig: Figure, path, dpi: int = DPI) -> Path:
    """Write ``fig`` to ``path`` (its folder created) at ``dpi``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
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
    return save_figure(fig, path)


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
    return save_figure(fig, path)


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
    return save_figure(fig, path)



def plot_calibration(confidence, correct, path, n_bins: int = 10, before=None) -> Path:
    """Reliability diagram: per-bin accuracy against mean confidence (marker area ~ bin size; empty bins
    not drawn), bins and ECE of :func:`pckeypoints.metrics.calibration.reliability_bins`.

    Args:
        confidence: (M,) predicted confidence in [0, 1].
        correct: (M,) whether each prediction was correct.
        before: (M,) the same predictions' confidence before calibration (T = 1), drawn beside it.
    """
    from pckeypoints.metrics.calibration import expected_calibration_error, reliability_bins

    series = {"calibrated": confidence, "before (T = 1)": before} if before is not None else {"bins": confidence}
    fig = Figure(figsize=FIGSIZE)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    eces = []
    for (label, values), marker in zip(reversed(series.items()), "os"):
        mean_confidence, accuracy, count = (column.numpy() for column in reliability_bins(values, correct, n_bins))
        used = count > 0
        mean_confidence, accuracy, count = mean_confidence[used], accuracy[used], count[used]
        ece = expected_calibration_error(values, correct, n_bins)
        eces.append(ece)
        ax.scatter(mean_confidence, accuracy, s=20 + 200 * count / count.max(), zorder=3, marker=marker,
                   alpha=0.7 if before is not None else 1, label=f"{label}, ECE {ece:.3f}" if before is not None else label)
    ece_text = f"ECE {eces[0]:.3f} -> {eces[1]:.3f}" if before is not None else f"ECE {eces[0]:.3f}"
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.02),
           title=f"Calibration ({ece_text}, {count.sum():.0f} predictions)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_reliability_panels(panels: Mapping[str, Mapping[str, tuple]], path, n_bins: int = 10,
                            xlabel: str = "confidence") -> Path:
    """Reliability diagrams side by side: per panel title, one line per series of per-bin accuracy against mean
    confidence (:func:`pckeypoints.metrics.calibration.reliability_bins`; empty bins are not drawn).

    Args:
        panels: title -> {series label -> (confidence (M,) in [0, 1], correct (M,))}; a panel may have no series.
        path: output PNG.
    """
    import torch

    from pckeypoints.metrics.calibration import reliability_bins

    if not panels:
        raise InputError("panels is empty")
    fig = Figure(figsize=(4.5 * len(panels), 4.2))
    for ax, (title, series) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels.items()):
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--")
        for label, (confidence, correct) in series.items():
            bins = reliability_bins(torch.as_tensor(confidence), torch.as_tensor(correct), n_bins)
            mean_confidence, accuracy, count = (column.numpy() for column in bins)
            ax.plot(mean_confidence[count > 0], accuracy[count > 0], marker="o", ms=4, label=label)
        ax.set(title=title, xlabel=xlabel, ylabel="fraction correct", xlim=(0, 1), ylim=(0, 1))
        if series:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_curve_grid(grid: Sequence[Sequence[tuple[str, Mapping[str, tuple]]]], path, xlabel: str, ylabel: str,
                    reference_x: float | None = None) -> Path:
    """Panels of lines in rows and columns, each with a dashed line at y = 0 (for differences from a baseline)
    and a thin vertical line at ``reference_x`` (e.g. the headline threshold); the first panel has the legend.

    Args:
        grid: rows of panels ``(title, {label -> (x (T,), y (T,))})``; a panel may have no lines.
        path: output PNG.
    """
    from matplotlib import colormaps

    if not grid or not all(grid):
        raise InputError("grid needs at least one row, each with at least one panel")
    nrows, ncols = len(grid), max(len(row) for row in grid)
    fig = Figure(figsize=(4.8 * ncols, 3.75 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for axes_row, row in zip(axes, grid):
        for ax, (title, curves) in zip(axes_row, row):
            ax.axhline(0, color="0.6", lw=1, ls="--")
            ax.set_prop_cycle(color=colormaps["tab20"].colors)
            for label, (x, y) in curves.items():
                ax.plot(x, y, lw=1.2, label=label)
            if reference_x is not None:
                ax.axvline(reference_x, color="0.8", lw=1)
            ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if grid[0][0][1]:
        axes[0, 0].legend(fontsize=6)
    fig.tight_layout()
    return save_figure(fig, path)


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
    return save_figure(fig, path)


def _gallery_legend() -> list:
    """Legend handles of :func:`viz.render.render_image`'s marks."""
    from matplotlib.lines import Line2D

    from viz.colors import ERROR_RED

    return [Line2D([], [], ls="", marker="o", color="0.3", label="truth (sphere)"),
            Line2D([], [], ls="", marker="D", color="0.3", label="prediction (diamond)"),
            Line2D([], [], color=ERROR_RED, label="error")]
