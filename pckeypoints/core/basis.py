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
import torch.utils._pytree
from torch import Tensor

from pckeypoints.errors import InputError
from pckeypoints.ops.neighbors import knn_points
from pckeypoints.ops.pyg import knn_graph
from pckeypoints.validation import check_batch_index, check_cloud, check_finite

KINDS = ("gaussian", "uniform", "triangular")

# Variance of the standard draw of each kind, in units of bandwidth². A uniform box of width s has
# variance s²/12; the tent of half-width s (sum of two boxes) s²/6; the Gaussian's bandwidth is σ.
_UNIT_VARIANCE = {"gaussian": 1.0, "uniform": 1.0 / 12.0, "triangular": 1.0 / 6.0}
#: σ of the k-NN basis in units of the mean distance to the k nearest neighbours (``factor`` of
#: :meth:`PointBasis.from_points`). At k = 8 it puts σ at 2.5-2.8x the fixed 0.01 on KeypointNet's normalised
#: clouds (median; ``experiments/results/knn_sigma``); a factor of about 0.2 puts the median at 0.01.
KNN_FACTOR = 0.5


class PointBasis:
    """Basis densities f_i centred on N points.

    Args:
        pos: centres y_i, ``(B, N, D)``.
        bandwidth: per-point, per-axis width, broadcastable to ``(B, N, D)``: σ for ``"gaussian"``,
            the cell width (grid spacing) for ``"uniform"`` and ``"triangular"``. Must be > 0.
        kind: ``"gaussian"``, ``"uniform"`` or ``"triangular"``.
        mask: ``(B, N)`` bool, True for real points (False marks padding of ragged clouds);
            ``None`` when every point is real.
        is_grid: the points are the cells of a regular grid (use :meth:`grid`). Uniform and
            triangular bases only make sense there.
        validate: check the values (finite ``pos``, ``bandwidth`` > 0, no empty cloud); shapes are
            always checked.

    Shapes:
        - pos, bandwidth: ``(B, N, D)``; mask: ``(B, N)``; grids have ``B = 1`` and broadcast.

    Examples:
        >>> basis = PointBasis(torch.zeros(2, 5, 3), bandwidth=0.1)
        >>> basis.num_points, basis.dim, tuple(basis.variance.shape)
        (5, 3, (2, 5, 3))
    """

    def __init__(
        self,
        pos: Tensor,
        bandwidth: Tensor | float,
        kind: str = "gaussian",
        mask: Tensor | None = None,
        is_grid: bool = False,
        validate: bool = True,
    ):
        if kind not in KINDS:
            raise InputError(f"basis kind must be one of {KINDS}, got {kind!r}")
        if kind != "gaussian" and not is_grid:
            raise InputError(f"a {kind!r} basis needs a regular grid (PointBasis.grid); point clouds use 'gaussian'")
        check_cloud(pos, "pos", batched=True, dim=None, validate=validate and mask is None)
        bandwidth = torch.as_tensor(bandwidth, dtype=pos.dtype, device=pos.device).expand_as(pos)
        if mask is not None:
            if mask.shape != pos.shape[:2] or mask.dtype != torch.bool:
                raise InputError(f"mask must be bool {tuple(pos.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}")
            if validate and not torch.compiler.is_compiling() and not mask.any(dim=1).all():
                raise InputError("empty cloud: a batch element has no valid point")
            if validate:
                check_finite(pos[mask], "pos", "coordinates")
        if validate and not torch.compiler.is_compiling() and not (bandwidth > 0).all():
            raise InputError("basis bandwidth must be > 0 everywhere (and not NaN)")
        self.pos, self.bandwidth, self.kind, self.mask, self.is_grid = pos, bandwidth, kind, mask, is_grid

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_points(
        cls,
        pos: Tensor,
        batch: Tensor | None = None,
        k: int = 8,
        factor: float = KNN_FACTOR,
        min_sigma: float = 1e-4,
        fixed_sigma: float | None = None,
        validate: bool = True,
        *,
        mask: Tensor | None = None,
    ) -> "PointBasis":
        """Gaussian basis on a point cloud, σ_i = max(factor · mean distance to the k nearest
        neighbours of point i, ``min_sigma``), from :func:`pckeypoints.ops.neighbors.knn_points`.

        Args:
            pos: dense ``(B, N, D)`` or ragged ``(N_total, D)`` with ``batch``.
            batch: ``(N_total,)`` cloud index of each point (sorted, as in PyG), for ragged input.
            mask: for dense ``pos`` padded by the caller, ``(B, N)`` bool, False at padding: padded
                points get no probability and are nobody's neighbours.
            k: neighbours used for σ (each cloud needs more than k points).
            factor: σ in units of the mean neighbour distance.
            min_sigma: floor for σ, so duplicated points (distance 0) never give σ = 0.
            fixed_sigma: if given, this σ for every point and no neighbour search.
            validate: check the values (finite ``pos``, sorted ``batch``, cloud sizes).

        σ is a constant of the cloud: no gradient flows through it.

        Examples:
            >>> pos = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [3, 0, 0], [7, 0, 0]]])
            >>> PointBasis.from_points(pos, k=2, factor=1.0).bandwidth[0, :, 0].tolist()
            [2.0, 1.5, 2.5, 5.0]
        """
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}")
        if mask is not None:
            return cls._from_padded_points(pos, mask, batch, k, factor, min_sigma, fixed_sigma, validate)
        dense, mask = _dense_points(pos, batch, validate)
        if fixed_sigma is not None:
            return cls(dense, float(fixed_sigma), "gaussian", mask, validate=validate)
        if batch is None:
            smallest = pos.shape[1]
        else:  # a value check: counting the clouds' points reads batch
            checks = validate and not torch.compiler.is_compiling()
            smallest = int(torch.bincount(batch)[batch.unique_consecutive()].min()) if checks else k + 1
        if smallest <= k:
            raise InputError(f"every cloud needs more than k={k} points for the neighbour σ, smallest has {smallest}")
        if batch is not None:
            return cls.from_graph(pos, knn_graph(pos, k, batch), batch, factor, min_sigma, validate=False)
        sig = knn_mean_distance(pos, k).mul_(factor).clamp_(min=min_sigma)
        return cls(dense, sig.unsqueeze(-1), "gaussian", mask, validate=False)

    @classmethod
    def _from_padded_points(cls, pos: Tensor, mask: Tensor, batch: Tensor | None, k: int, factor: float,
                            min_sigma: float, fixed_sigma: float | None, validate: bool) -> "PointBasis":
        """:meth:`from_points` of dense ``pos (B, N, D)`` whose points are real where ``mask (B, N)``."""
        if batch is not None:
            raise InputError("mask marks the padding of dense pos (B, N, D); ragged pos with batch has none")
        check_cloud(pos, "pos", batched=True, dim=None, validate=False)
        if mask.shape != pos.shape[:2] or mask.dtype != torch.bool:
            raise InputError(f"mask must be bool {tuple(pos.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}")
        if validate and not bool(mask.any(dim=1).all()):
            raise InputError(f"mask leaves cloud {int((~mask.any(dim=1)).nonzero()[0])} without a point")
        sizes = mask.sum(dim=1)
        ragged = cls.from_points(pos[mask], torch.arange(len(sizes), device=pos.device).repeat_interleave(sizes), k,
                                 factor, min_sigma, fixed_sigma, validate)
        real = ragged.bandwidth[ragged.mask]  # (N_real, 1 or D), in the order of pos[mask]
        bandwidth = real.new_ones(*mask.shape, real.shape[-1]).masked_scatter_(mask[..., None], real)
        return cls(pos, bandwidth, "gaussian", mask, validate=False)

    @classmethod
    def from_graph(
        cls,
        pos: Tensor,
        edge_index: Tensor,
        batch: Tensor | None = None,
        factor: float = KNN_FACTOR,
        min_sigma: float = 1e-4,
        validate: bool = True,
    ) -> "PointBasis":
        """Gaussian basis with σ_i from the caller's own neighbour graph (e.g. the k-NN graph of a
        DGCNN or Point Transformer layer): σ_i = max(factor · mean length of the edges j -> i, ``min_sigma``).

        Args:
            pos: dense ``(B, N, D)`` or ragged ``(N_total, D)`` with ``batch``.
            edge_index: ``(2, E)`` PyG edges (source, target) into the rows of ``pos`` (dense: into
                ``pos.reshape(-1, D)``); self-loops are ignored, every point needs an incoming edge.
            batch, factor, min_sigma, validate: as in :meth:`from_points`.

        Examples:
            >>> pos = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
            >>> edges = torch.tensor([[1, 0, 2, 1], [0, 1, 1, 2]])  # 1->0, 0->1, 2->1, 1->2
            >>> PointBasis.from_graph(pos, edges, torch.zeros(3, dtype=torch.long), factor=1.0).bandwidth[0, :, 0].tolist()
            [1.0, 1.5, 2.0]
        """
        dense, mask = _dense_points(pos, batch, validate)
        flat = pos.detach().reshape(-1, pos.shape[-1])
        if edge_index.dim() != 2 or edge_index.shape[0] != 2 or edge_index.dtype != torch.long:
            raise InputError(f"edge_index must be (2, E) long, got {edge_index.dtype} {tuple(edge_index.shape)}")
        src, dst = edge_index
        other = (src != dst).to(flat.dtype)  # self-loops count neither length nor degree
        length = (flat[src] - flat[dst]).norm(dim=-1) * other
        total = torch.zeros(flat.shape[0], dtype=flat.dtype, device=flat.device).index_add_(0, dst, length)
        degree = torch.zeros_like(total).index_add_(0, dst, other)
        if validate and not torch.compiler.is_compiling() and (degree == 0).any():
            raise InputError(f"point {int((degree == 0).nonzero()[0])} has no incoming edge in edge_index")
        sig = (total / degree.clamp(min=1)).mul_(factor).clamp_(min=min_sigma)
        if mask is None:
            sig = sig.view(dense.shape[:2])
        else:
            sig = torch.ones(dense.shape[:2], dtype=sig.dtype, device=sig.device).masked_scatter_(mask, sig)
        return cls(dense, sig.unsqueeze(-1), "gaussian", mask, validate=False)
    @classmethod
    def grid(
        cls,
        shape: Sequence[int],
        spacing: float | Sequence[float] | None = None,
        origin: float | Sequence[float] | None = None,
        kind: str = "uniform",
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        *,
        order: str = "ij",
        normalized: bool = False,
        align_corners: bool = True,
    ) -> "PointBasis":
        """Basis on the cell centres of a regular 1D/2D/3D grid (an image or voxel heatmap).

        ``shape`` is the map's shape, e.g. ``(H, W)``; locations are ordered as ``map.flatten()``
        (row-major, so ``(B, K, H, W)`` heatmaps are passed as ``logits.flatten(2)``). The
        bandwidth is the spacing for every kind (so a ``"gaussian"`` grid basis has σ = spacing).

        Args:
            shape: the map's shape.
            spacing, origin: the coordinate of axis ``a`` is ``origin[a] + index[a] · spacing[a]``
                (default 1 and 0: pixel indices).
            kind: ``"uniform"``, ``"triangular"`` or ``"gaussian"``.
            order: ``"ij"``: coordinates in the axis order of ``shape``, (row, column) for ``(H, W)``;
                ``"xy"``: reversed, (x, y) = (column, row), as kornia, dsntnn and OpenCV.
            normalized: cell centres in [-1, 1] instead of ``spacing``/``origin``, as
                ``torch.nn.functional.grid_sample``: with ``align_corners`` (kornia's
                ``normalized_coordinates=True``) the first and last centres are at ±1, without it
                (dsntnn) the outer cell edges are, centres at ``(2 i + 1) / S - 1``. A size-1 axis is 0.

        Examples:
            >>> PointBasis.grid((2, 3), kind="triangular").pos[0, :4].tolist()
            [[0.0, 0.0], [0.0, 1.0], [0.0, 2.0], [1.0, 0.0]]
            >>> PointBasis.grid((2, 3), order="xy", normalized=True).pos[0, :4].tolist()
            [[-1.0, -1.0], [0.0, -1.0], [1.0, -1.0], [-1.0, 1.0]]
        """
        if any(isinstance(s, bool) or not hasattr(s, "__index__") for s in shape):
            raise InputError(f"grid shape must be integer sizes, got {tuple(shape)}")
        shape = tuple(s.__index__() for s in shape)
        d = len(shape)
        if not 1 <= d <= 3 or any(s < 1 for s in shape):
            raise InputError(f"grid shape must have 1 to 3 positive sizes, got {tuple(shape)}")
        if order not in ("ij", "xy"):
            raise InputError(f"grid order must be 'ij' (axis order of shape) or 'xy' (reversed), got {order!r}")
        if normalized:
            if spacing is not None or origin is not None:
                raise InputError("normalized=True places the cells in [-1, 1]: leave spacing and origin out")
            spacing, origin = _normalized_layout(shape, align_corners)
        spacing_t = torch.as_tensor(1.0 if spacing is None else spacing, dtype=dtype, device=device).expand(d)
        origin_t = torch.as_tensor(0.0 if origin is None else origin, dtype=dtype, device=device).expand(d)
        axes = [torch.arange(s, dtype=dtype, device=device) for s in shape]
        idx = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(1, -1, d)
        pos = origin_t + idx * spacing_t
        if order == "xy":
            pos, spacing_t = pos.flip(-1), spacing_t.flip(-1)
        return cls(pos, spacing_t, kind, is_grid=True)

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
        return self.bandwidth.square() * _UNIT_VARIANCE[self.kind]

    # ------------------------------------------------------------------ operations
    def check_logits(self, logits: Tensor, validate: bool = True) -> None:
        """Raise unless ``logits`` is a ``(B, K, N)`` map over these points of the basis' dtype, finite
        at real points, every cloud with a point (the value checks only with ``validate``; ops inside
        a training step pass False)."""
        if logits.dim() == 2 and self.mask is not None:
            raise InputError(f"logits must be (B, K, N), got ragged {tuple(logits.shape)}: pass the head's maps, "
                                   "or maps.to_dense().logits with maps.to_dense().basis")
        if self.is_grid and self.dim > 1 and logits.dim() == 2 + self.dim:
            raise InputError(f"logits must be (B, K, N), got heatmaps {tuple(logits.shape)}: pass "
                                   "logits.flatten(2), row-major as PointBasis.grid orders its cells")
        if logits.dim() != 3:
            raise InputError(f"logits must be (B, K, N), got shape {tuple(logits.shape)}")
        b, n = logits.shape[0], logits.shape[2]
        if n != self.num_points or self.pos.shape[0] not in (1, b):
            raise InputError(
                f"logits {tuple(logits.shape)} do not match the basis of {self.pos.shape[0]} x {self.num_points} points"
            )
        if logits.dtype != self.pos.dtype:
            raise InputError(f"logits are {logits.dtype} but the basis is {self.pos.dtype}: "
                                   "build the basis from pos of the logits' dtype, or convert the logits")
        if validate and not torch.compiler.is_compiling():  # value checks: not while compiling
            if self.mask is not None and not bool(self.mask.any(dim=1).all()):
                empty = int((~self.mask.any(dim=1)).nonzero()[0])
                raise InputError(f"cloud {empty} of the basis has no point (an empty cloud): drop it from the batch")
            check_finite(logits if self.mask is None else logits.masked_select(self.mask[:, None, :]), "logits")

    def mask_logits(self, logits: Tensor) -> Tensor:
        """``logits`` with padded points set to -inf, ``(B, K, N)``."""
        return logits if self.mask is None else logits.masked_fill(~self.mask[:, None, :], float("-inf"))

    def probabilities(self, logits: Tensor) -> Tensor:
        """Softmax of ``logits`` over the points of each cloud, ``(B, K, N)`` (0 at padding)."""
        self.check_logits(logits, validate=False)
        return self.mask_logits(logits).softmax(dim=-1)

    def unit_noise(self, shape: Sequence[int], generator: torch.Generator | None = None) -> Tensor:
        """Standard draws of this kind (zero mean; multiply by ``bandwidth``), of ``shape``."""
        opts = dict(dtype=self.pos.dtype, device=self.pos.device, generator=generator)
        if self.kind == "gaussian":
            return torch.randn(*shape, **opts)
        if self.kind == "uniform":
            return torch.rand(*shape, **opts) - 0.5
        return torch.rand(*shape, **opts) - torch.rand(*shape, **opts)

    def log_components(self, y: Tensor, probs: Tensor) -> Tensor:
        """log π_i f_i(y) of every component of the mixture: the one mixture density of the package.

        Args:
            y: ``(B, K, Q, D)`` query points.
            probs: ``(B, K, N)`` mixture weights π.
        Returns:
            ``(B, K, Q, N)``, -inf where π_i = 0 (padding) or y lies outside the support of f_i.
        """
        u = (y[:, :, :, None, :] - self.pos[:, None, None]) / self.bandwidth[:, None, None]  # (B, K, Q, N, D)
        if self.kind == "gaussian":
            log_f = -0.5 * u.square() - 0.5 * math.log(2 * math.pi)
        elif self.kind == "uniform":
            log_f = torch.zeros_like(u).masked_fill(u.abs() >= 0.5, -math.inf)
        else:
            log_f = (1 - u.abs()).clamp(min=0).log()
        log_norm = self.bandwidth.log().sum(dim=-1)  # (B, N)
        return probs.log()[:, :, None] + log_f.sum(dim=-1) - log_norm[:, None, None]

    def log_density(self, y: Tensor, probs: Tensor) -> Tensor:
        """log p(y) = log Σ_i π_i f_i(y) at ``y (B, K, Q, D)`` for ``probs (B, K, N)``: ``(B, K, Q)``."""
        return self.log_components(y, probs).logsumexp(dim=-1)

    def density(self, y: Tensor, probs: Tensor) -> Tensor:
        """Mixture density Σ_i π_i f_i(y) at ``y (B, K, Q, D)`` for ``probs (B, K, N)``: ``(B, K, Q)``."""
        return self.log_density(y, probs).exp()


def _flatten_basis(basis: PointBasis) -> tuple[list, tuple[str, bool]]:
    return [basis.pos, basis.bandwidth, basis.mask], (basis.kind, basis.is_grid)


def _unflatten_basis(children, context: tuple[str, bool]) -> PointBasis:
    basis = PointBasis.__new__(PointBasis)  # the tensors of a checked basis: no second check
    (basis.pos, basis.bandwidth, basis.mask), (basis.kind, basis.is_grid) = children, context
    return basis


# a pytree node, so that torch.compile, torch.export and tree_map see through bases (and the maps holding them)
torch.utils._pytree.register_pytree_node(PointBasis, _flatten_basis, _unflatten_basis,
                                         serialized_type_name="pckeypoints.core.basis.PointBasis")


def knn_mean_distance(pos: Tensor, k: int) -> Tensor:
    """Mean Euclidean distance of each point to its k nearest other points of its cloud.

    Args:
        pos: ``(B, N, D)`` clouds with N > k, finite (not checked here: :meth:`PointBasis.from_points` checks
            them, or was told they are clean).
    Returns:
        ``(B, N)`` distances (0 for a point with k duplicates), without gradient.

    Examples:
        >>> knn_mean_distance(torch.tensor([[[0.0], [1.0], [3.0]]]), k=1).tolist()
        [[1.0, 1.0, 2.0]]
    """
    # The k+1 nearest include a zero distance (the point itself or an exact duplicate of it), so
    # their sum equals the sum over the k nearest *other* points, ties included.
    return knn_points(pos, pos, k + 1, validate=False).distance.sum(-1) / k


def _dense_points(pos: Tensor, batch: Tensor | None, validate: bool) -> tuple[Tensor, Tensor | None]:
    """Dense ``(B, N, D)`` positions and padding mask (``None`` for dense input) of dense or ragged ``pos``."""
    if batch is None:
        check_cloud(pos, "pos", batched=True, dim=None, validate=validate)
        return pos, None
    check_cloud(pos, "pos", dim=None, validate=validate)
    check_batch_index(batch, pos.shape[0], validate=validate)
    if validate and not torch.compiler.is_compiling() and not bool(torch.bincount(batch).all()):
        empty = int((torch.bincount(batch) == 0).nonzero()[0])
        raise InputError(f"batch holds no point of cloud {empty} (an empty cloud): drop it and renumber the clouds")
    from torch_geometric.utils import to_dense_batch

    dense, mask = to_dense_batch(pos, batch)
    if torch.compiler.is_compiling():  # B and N_max are data-dependent (unbacked) sizes there: at least 1 each
        torch._check(dense.shape[0] >= 1)
        torch._check(dense.shape[1] >= 1)
    return dense, mask


def _normalized_layout(shape: tuple[int, ...], align_corners: bool) -> tuple[list[float], list[float]]:
    """Spacing and origin per axis that put a grid's cells in [-1, 1] (:meth:`PointBasis.grid`, ``normalized``)."""
    if align_corners:
        return [2 / (s - 1) if s > 1 else 2.0 for s in shape], [-1.0 if s > 1 else 0.0 for s in shape]
    return [2 / s for s in shape], [1 / s - 1 for s in shape]
