"""Colours: a fixed qualitative palette for semantic ids and colour maps for probabilities."""
from __future__ import annotations

import numpy as np

from pckeypoints.errors import InputError

CLOUD_GREY = (0.62, 0.62, 0.62)
ERROR_RED = (0.85, 0.0, 0.0)
SAMPLE_MAGENTA = (1.0, 0.0, 1.0)

# Qualitative palette: matplotlib's tab20 without its two greys, then ColorBrewer Set1 without
# its grey. No entry is grey, so keypoints always stand out from the grey cloud.
_PALETTE_HEX = (
    "1f77b4", "aec7e8", "ff7f0e", "ffbb78", "2ca02c", "98df8a", "d62728", "ff9896", "9467bd",
    "c5b0d5", "8c564b", "c49c94", "e377c2", "f7b6d2", "bcbd22", "dbdb8d", "17becf", "9edae5",
    "e41a1c", "377eb8", "4daf4a", "984ea3", "ff7f00", "ffff33", "a65628", "f781bf",
)
PALETTE = np.array([[int(h[i:i + 2], 16) for i in (0, 2, 4)] for h in _PALETTE_HEX], np.uint8)
"""(P, 3) uint8 RGB colours; semantic id ``s`` gets ``PALETTE[s % P]``."""


def semantic_colors(semantic_ids) -> np.ndarray:
    """(K,) non-negative integer ids -> (K, 3) uint8 RGB colours from :data:`PALETTE`."""
    ids = np.asarray(semantic_ids)
    if ids.size == 0:
        ids = ids.astype(np.int64)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"semantic_ids must be a 1-D integer array, got shape {ids.shape} dtype {ids.dtype}")
    if ids.size and ids.min() < 0:
        raise InputError(f"semantic_ids must be non-negative, got {ids.min()}")
    return PALETTE[ids.astype(np.int64) % len(PALETTE)]


def probability_colors(probs, cmap: str = "viridis") -> np.ndarray:
    """Paint per-point values with a matplotlib colour map after min-max normalisation.

    Args:
        probs: (N,) finite values, e.g. one keypoint's probability over the N points.
        cmap: matplotlib colour map name.
    Returns:
        (N, 3) float64 RGB in [0, 1]: the minimum maps to ``cmap(0)``, the maximum to ``cmap(1)``;
        a constant map is painted ``cmap(0)`` everywhere.
    """
    from matplotlib import colormaps

    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise InputError(f"probs must be a non-empty 1-D array, got shape {p.shape}")
    if not np.isfinite(p).all():
        raise InputError("probs contains NaN or infinite values")
    span = p.max() - p.min()
    normalised = (p - p.min()) / span if span > 0 else np.zeros_like(p)
    return colormaps[cmap](normalised)[:, :3]
