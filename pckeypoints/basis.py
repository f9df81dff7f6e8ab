"""Basis densities centred on points: the continuous reading of a probability map.

A probability map π over N locations y_i becomes the mixture p(y) = Σ_i π_i f_i(y), where f_i is a
basis density centred on y_i. On a point cloud the locations are the points and f_i is a Gaussian
whose σ_i comes from the point's k nearest neighbours; on an image or voxel grid the locations are
the cell centres and f_i may also be a uniform box (the map read as a histogram) or a triangular
(tent) density (the map read as its linear interpolation).

Every basis is stored densely: positions ``(B, N, D)`` with a validity mask ``(B, N)`` so that
ragged clouds (PyG ``(pos, batch)``) and regular grids share one code path. Grids use ``B = 1``
and broadcast over the batch of logits.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

KINDS = ("gaussian", "uniform", "triangular")

# Variance of the standard draw of each kind, in units of scale². A uniform box of width s has
# variance s²/12; the tent of half-width s (sum of two boxes) s²/6; the Gaussian's scale is σ.
_UNIT_VARIANCE = {"gaussian": 1.0, "uniform": 1.0 / 12.0, "triangular": 1.0 / 6.0}


class PointBasis:
    """Basis densities f_i centred on N points.

    Args:
        pos: centres y_i, ``(B, N, D)``.
        scale: per-point, per-axis scale, broadcastable to ``(B, N, D)``: σ for ``"gaussian"``,
            the cell width (grid spacing) for ``"uniform"`` and ``"triangular"``. Must be > 0.
        kind: ``"gaussian"``, ``"uniform"`` or ``"triangular"``.
        mask: ``(B, N)`` bool, True for real points (False marks padding of ragged clouds);
            ``None`` when every point is real.
        is_grid: the points are the cells of a regular grid (use :meth:`grid`). Uniform and
            triangular bases only make sense there.
    """

    def __init__(
        self,
        pos: Tensor,
        scale: Tensor | float,
        kind: str = "gaussian",
        mask: Tensor | None = None,
        is_grid: bool = False,
    ):
        if kind not in KINDS:
            raise ValueError(f"basis kind must be one of {KINDS}, got {kind!r}")
        if kind != "gaussian" and not is_grid:
            raise ValueError(f"a {kind!r} basis needs a regular grid (PointBasis.grid); point clouds use 'gaussian'")
        if pos.dim() != 3:
            raise ValueError(f"pos must be (B, N, D), got shape {tuple(pos.shape)}")
        if pos.shape[1] == 0:
            raise ValueError("empty cloud: pos has N = 0 points")
        if not torch.isfinite(pos).all():
            raise ValueError("pos contains NaN or infinite coordinates")
        scale = torch.as_tensor(scale, dtype=pos.dtype, device=pos.device).expand_as(pos)
        if not (scale > 0).all():
            raise ValueError("basis scale must be > 0 everywhere (and not NaN)")
        if mask is not None:
            if mask.shape != pos.shape[:2] or mask.dtype != torch.bool:
                raise ValueError(f"mask must be bool {tuple(pos.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}")
            if not mask.any(dim=1).all():
                raise ValueError("empty cloud: a batch element has no valid point")
        self.pos, self.scale, self.kind, self.mask, self.is_grid = pos, scale, kind, mask, is_grid

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_points(
        cls,
        pos: Tensor,
        batch: Tensor | None = None,
        k: int = 8,
        factor: float = 0.5,
        min_sigma: float = 1e-4,
        sigma: float | None = None,
    ) -> "PointBasis":
        """Gaussian basis on a point cloud, σ_i = max(factor · mean distance to the k nearest
        neighbours of point i, ``min_sigma``).

        Args:
            pos: dense ``(B, N, D)`` or ragged ``(N_total, D)`` with ``batch``.
            batch: ``(N_total,)`` cloud index of each point (sorted, as in PyG), for ragged input.
            k: neighbours used for σ (each cloud needs more than k points).
            factor: σ in units of the mean neighbour distance.
            min_sigma: floor for σ, so duplicated points (distance 0) never give σ = 0.
            sigma: if given, a fixed σ for every point and no neighbour search.

        σ is a constant of the cloud: no gradient flows through it.
        """
        if batch is not None:
            if pos.dim() != 2 or batch.shape != pos.shape[:1]:
                raise ValueError(f"ragged input needs pos (N, D) and batch (N,), got {tuple(pos.shape)} and {tuple(batch.shape)}")
            from torch_geometric.utils import to_dense_batch

            if pos.shape[0] == 0:
                raise ValueError("empty cloud: pos has 0 points")
            dense, mask = to_dense_batch(pos, batch)
        else:
            if pos.dim() != 3:
                raise ValueError(f"dense input needs pos (B, N, D), got shape {tuple(pos.shape)}")
            dense, mask = pos, None
        if not torch.isfinite(pos).all():
            raise ValueError("pos contains NaN or infinite coordinates")
        if sigma is not None:
            return cls(dense, float(sigma), "gaussian", mask)
        ragged = pos if batch is not None else pos.reshape(-1, pos.shape[-1])
        if batch is None:
            batch = torch.arange(pos.shape[0], device=pos.device).repeat_interleave(pos.shape[1])
        sig = knn_mean_distance(ragged, batch, k).mul_(factor).clamp_(min=min_sigma)
        if mask is None:
            sig_dense = sig.view(dense.shape[:2])
        else:
            sig_dense = torch.ones(dense.shape[:2], dtype=sig.dtype, device=sig.device)
            sig_dense[mask] = sig
        return cls(dense, sig_dense.unsqueeze(-1), "gaussian", mask)

    @classmethod
    def grid(
        cls,
        shape: Sequence[int],
        spacing: float | Sequence[float] = 1.0,
        origin: float | Sequence[float] = 0.0,
        kind: str = "uniform",
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> "PointBasis":
        """Basis on the cell centres of a regular 1D/2D/3D grid (an image or voxel heatmap).

        ``shape`` is the map's shape, e.g. ``(H, W)``; locations are ordered as ``map.flatten()``
        (row-major) and the coordinate of axis ``a`` is ``origin[a] + index[a] · spacing[a]``,
        in the axis order of ``shape``. ``scale`` is the spacing for every kind (so a
        ``"gaussian"`` grid basis has σ = spacing).
        """
        d = len(shape)
        if not 1 <= d <= 3 or any(s < 1 for s in shape):
            raise ValueError(f"grid shape must have 1 to 3 positive sizes, got {tuple(shape)}")
        spacing_t = torch.as_tensor(spacing, dtype=dtype, device=device).expand(d)
        origin_t = torch.as_tensor(origin, dtype=dtype, device=device).expand(d)
        axes = [torch.arange(s, dtype=dtype, device=device) for s in shape]
        idx = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(1, -1, d)
        return cls(origin_t + idx * spacing_t, spacing_t, kind, is_grid=True)

    # ------------------------------------------------------------------ properties
    @property
    def num_points(self) -> int:
        return self.pos.shape[1]

    @property
    def dim(self) -> int:
        return self.pos.shape[2]

    @property
    def variance(self) -> Tensor:
        """Per-point, per-axis variance of each basis density, ``(B, N, D)``."""
        return self.scale.square() * _UNIT_VARIANCE[self.kind]

    # ------------------------------------------------------------------ operations
    def check_logits(self, logits: Tensor) -> None:
        """Raise ValueError unless ``logits`` is a finite ``(B, K, N)`` map over these points."""
        if logits.dim() != 3:
            raise ValueError(f"logits must be (B, K, N), got shape {tuple(logits.shape)}")
        b, n = logits.shape[0], logits.shape[2]
        if n != self.num_points or self.pos.shape[0] not in (1, b):
            raise ValueError(
                f"logits {tuple(logits.shape)} do not match the basis of {self.pos.shape[0]} x {self.num_points} points"
            )
        valid = logits if self.mask is None else logits.masked_select(self.mask[:, None, :])
        if not torch.isfinite(valid).all():
            raise ValueError("logits contain NaN or infinite values")

    def mask_logits(self, logits: Tensor) -> Tensor:
        """``logits`` with padded points set to -inf, ``(B, K, N)``."""
        return logits if self.mask is None else logits.masked_fill(~self.mask[:, None, :], float("-inf"))

    def probabilities(self, logits: Tensor) -> Tensor:
        """Softmax of ``logits`` over the points of each cloud, ``(B, K, N)``."""
        self.check_logits(logits)
        return self.mask_logits(logits).softmax(dim=-1)

    def unit_noise(self, shape: Sequence[int], generator: torch.Generator | None = None) -> Tensor:
        """Standard draws of this kind (zero mean; multiply by ``scale``), of ``shape``."""
        opts = dict(dtype=self.pos.dtype, device=self.pos.device, generator=generator)
        if self.kind == "gaussian":
            return torch.randn(*shape, **opts)
        if self.kind == "uniform":
            return torch.rand(*shape, **opts) - 0.5
        return torch.rand(*shape, **opts) - torch.rand(*shape, **opts)

    def density(self, y: Tensor, probs: Tensor) -> Tensor:
        """Mixture density Σ_i π_i f_i(y) at query points.

        Args:
            y: ``(B, K, Q, D)`` query points.
            probs: ``(B, K, N)`` mixture weights π.
        Returns:
            ``(B, K, Q)`` density.
        """
        u = (y[:, :, :, None, :] - self.pos[:, None, None]) / self.scale[:, None, None]  # (B, K, Q, N, D)
        if self.kind == "gaussian":
            f = torch.exp(-0.5 * u.square()) / math.sqrt(2 * math.pi)
        elif self.kind == "uniform":
            f = (u.abs() < 0.5).to(u.dtype)
        else:
            f = (1 - u.abs()).clamp(min=0)
        f = f.prod(dim=-1) / self.scale.prod(dim=-1)[:, None, None]  # (B, K, Q, N)
        return (f * probs[:, :, None, :]).sum(dim=-1)


def knn_mean_distance(pos: Tensor, batch: Tensor, k: int) -> Tensor:
    """Mean Euclidean distance of each point to its k nearest other points of the same cloud.

    Args:
        pos: ``(N, D)`` points of all clouds; batch: ``(N,)`` sorted cloud index.
    Returns:
        ``(N,)`` distances (0 for a point with k duplicates).
    """
    from torch_cluster import knn

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    counts = torch.bincount(batch)
    counts = counts[counts > 0]
    if (counts <= k).any():
        raise ValueError(f"every cloud needs more than k={k} points for the neighbour σ, smallest has {int(counts.min())}")
    with torch.no_grad():
        # The k+1 nearest include a zero distance (the point itself or an exact duplicate of it),
        # so their sum equals the sum over the k nearest *other* points, ties included.
        row, col = knn(pos, pos, k + 1, batch, batch)
        dist = (pos[row] - pos[col]).norm(dim=-1)
        return torch.zeros(pos.shape[0], dtype=pos.dtype, device=pos.device).index_add_(0, row, dist) / k
