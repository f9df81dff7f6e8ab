"""A keypoint head for any point backbone: per-point features -> K probability maps -> keypoints.

Two parts, as in PyG's ``PointNetConv`` (a pluggable sub-network around a fixed operator):

- :class:`KeypointReadout` has no parameters: it builds the basis (σ from k-NN, a fixed σ, or the
  caller's own neighbour graph) and reads K map logits out as soft-argmax keypoints; the maps also
  give sampling-argmax samples for training (:meth:`KeypointMaps.sample`).
- :class:`KeypointHead` puts a per-point network ``mlp`` (features ``C`` -> ``K`` logits) in front
  of the readout; the default is Linear-LayerNorm-ReLU-Linear and any module can replace it.

Dense clouds ``(B, N, C)`` give :class:`KeypointMaps` with logits ``(B, K, N)``. PyG-ragged clouds
``(N_total, C)`` with ``batch`` give :class:`RaggedKeypointMaps` with logits ``(N_total, K)`` and a
per-cloud softmax (``torch_geometric.utils.softmax``), no padding; ``to_dense()`` pads them with
-inf for the losses.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pckeypoints.core.argmax import sampling_argmax, soft_argmax
from pckeypoints.core.basis import KNN_FACTOR, PointBasis
from pckeypoints.errors import InputError
from pckeypoints.validation import check_finite

__all__ = ["KeypointHead", "KeypointMaps", "KeypointReadout", "RaggedKeypointMaps"]


@dataclass
class KeypointMaps:
    """K maps over dense (or padded) clouds.

    Attributes:
        logits: ``(B, K, N)`` map logits, -inf at the padding of ragged clouds.
        basis: the points with their basis densities.
        keypoints: ``(B, K, D)`` soft-argmax keypoints (the test-time estimate).
    """

    logits: Tensor
    basis: PointBasis
    keypoints: Tensor

    @property
    def probabilities(self) -> Tensor:
        """``(B, K, N)`` softmax of the logits over each cloud (0 at padding)."""
        return self.basis.probabilities(self.logits)

    def sample(self, num_samples: int, tau: float, *, generator: torch.Generator | None = None) -> Tensor:
        """``(B, K, Ns, D)`` differentiable sampling-argmax samples at temperature ``tau``."""
        return sampling_argmax(self.logits, self.basis, num_samples, tau, generator=generator)


@dataclass
class RaggedKeypointMaps:
    """K maps over PyG-ragged clouds, without padding.

    Attributes:
        logits: ``(N_total, K)`` map logits of every point.
        batch: ``(N_total,)`` sorted cloud index of each point.
        basis: the points with their basis densities (stored padded, with a mask).
        keypoints: ``(B, K, D)`` soft-argmax keypoints.
    """

    logits: Tensor
    batch: Tensor
    basis: PointBasis
    keypoints: Tensor

    @property
    def probabilities(self) -> Tensor:
        """``(N_total, K)`` softmax of the logits over the points of each cloud."""
        from torch_geometric.utils import softmax

        return softmax(self.logits, self.batch, num_nodes=self.basis.pos.shape[0], dim=0)

    def to_dense(self) -> KeypointMaps:
        """The same maps padded to ``(B, K, N_max)`` logits, -inf at padding (for the losses)."""
        from torch_geometric.utils import to_dense_batch

        b, n = self.basis.mask.shape
        dense, _ = to_dense_batch(self.logits, self.batch, float("-inf"), n, b)
        return KeypointMaps(dense.transpose(1, 2), self.basis, self.keypoints)

    def sample(self, num_samples: int, tau: float, *, generator: torch.Generator | None = None) -> Tensor:
        """``(B, K, Ns, D)`` differentiable sampling-argmax samples at temperature ``tau``."""
        return self.to_dense().sample(num_samples, tau, generator=generator)


# pytree nodes (their fields), so that torch.compile and torch.export return and take maps
torch.export.register_dataclass(KeypointMaps, serialized_type_name="pckeypoints.core.head.KeypointMaps")
torch.export.register_dataclass(RaggedKeypointMaps, serialized_type_name="pckeypoints.core.head.RaggedKeypointMaps")


class KeypointReadout(nn.Module):
    """Reads K map logits over the points of each cloud out as keypoints; no parameters.

    The basis is the caller's ``basis``, else built from ``edge_index`` (σ from the caller's
    neighbour graph, :meth:`PointBasis.from_graph`), else from ``pos`` (σ from the ``knn_k``
    nearest neighbours, or ``fixed_sigma``, :meth:`PointBasis.from_points`).

    Args:
        knn_k: neighbours of each point's σ.
        fixed_sigma: a fixed σ for every point instead.
        knn_factor: σ in units of the mean neighbour distance (k-NN and ``edge_index`` σ; default
            :data:`~pckeypoints.core.basis.KNN_FACTOR`).

    Shapes:
        - **input:** logits ``(B, K, N)`` with pos ``(B, N, D)`` (and ``mask (B, N)``, False at padding:
          no probability there, no neighbour for σ), or ragged logits ``(N_total, K)`` with pos
          ``(N_total, D)`` and batch ``(N_total,)``
        - **output:** :class:`KeypointMaps` (dense) or :class:`RaggedKeypointMaps` (ragged)

    Examples:
        >>> readout = KeypointReadout(knn_k=4)
        >>> maps = readout(torch.randn(2, 5, 100), torch.rand(2, 100, 3))
        >>> tuple(maps.keypoints.shape), tuple(maps.sample(8, tau=0.5).shape)
        ((2, 5, 3), (2, 5, 8, 3))
    """

    def __init__(self, knn_k: int = 8, *, fixed_sigma: float | None = None, knn_factor: float = KNN_FACTOR):
        super().__init__()
        if isinstance(knn_k, bool) or not isinstance(knn_k, int) or knn_k < 1:
            raise InputError(f"knn_k must be an integer >= 1, got {knn_k!r}")
        if fixed_sigma is not None and not fixed_sigma > 0:
            raise InputError(f"fixed_sigma must be > 0, got {fixed_sigma!r}")
        if isinstance(knn_factor, bool) or not isinstance(knn_factor, (int, float)) or not 0 < knn_factor < math.inf:
            raise InputError(f"knn_factor must be a finite number > 0, got {knn_factor!r}")
        self.knn_k, self.fixed_sigma, self.knn_factor = knn_k, fixed_sigma, float(knn_factor)

    def basis(
        self, pos: Tensor, batch: Tensor | None = None, *, edge_index: Tensor | None = None, validate: bool = True,
        mask: Tensor | None = None,
    ) -> PointBasis:
        """The basis this readout uses for ``pos`` (see the class doc)."""
        if edge_index is not None:
            if mask is not None:
                raise InputError("edge_index= takes ragged clouds (pos, batch), not padded ones with mask=")
            return PointBasis.from_graph(pos, edge_index, batch, factor=self.knn_factor, validate=validate)
        return PointBasis.from_points(pos, batch, k=self.knn_k, factor=self.knn_factor, fixed_sigma=self.fixed_sigma,
                                      validate=validate, mask=mask)

    def forward(self, logits: Tensor, pos: Tensor, batch: Tensor | None = None, *, mask: Tensor | None = None,
                edge_index: Tensor | None = None, basis: PointBasis | None = None,
                validate: bool = True) -> KeypointMaps | RaggedKeypointMaps:
        if basis is None:
            basis = self.basis(pos, batch, edge_index=edge_index, validate=validate, mask=mask)
        elif mask is not None:
            raise InputError("mask= builds the basis: give it to the basis instead (PointBasis.from_points(..., mask=))")
        if batch is None:
            return KeypointMaps(logits, basis, soft_argmax(logits, basis))
        if logits.dim() != 2 or logits.shape[0] != pos.shape[0]:
            raise InputError(f"ragged logits must be (N_total={pos.shape[0]}, K), got {tuple(logits.shape)}")
        maps = RaggedKeypointMaps(logits, batch, basis, logits.new_empty(0))
        probs = maps.probabilities  # (N_total, K)
        weighted = probs[:, :, None] * pos.to(probs.dtype)[:, None, :]  # (N_total, K, D)
        maps.keypoints = weighted.new_zeros(basis.pos.shape[0], *weighted.shape[1:]).index_add_(0, batch, weighted)
        return maps

    def extra_repr(self) -> str:
        if self.fixed_sigma is not None:
            return f"fixed_sigma={self.fixed_sigma}"
        return f"knn_k={self.knn_k}" + (f", knn_factor={self.knn_factor:g}" if self.knn_factor != KNN_FACTOR else "")


class KeypointHead(nn.Module):
    """Per-point network producing K map logits, read out over a Gaussian point basis.

    Train with :class:`~pckeypoints.core.losses.KeypointLoss` on the maps, ``loss(maps, target, mask, tau=...)``
    (dense or ragged); ``maps.keypoints`` is the soft-argmax (the test-time estimate).

    Args:
        in_channels: C (``None`` with a custom ``mlp``: not checked).
        num_keypoints: K.
        hidden_channels: width of the default MLP's hidden layer.
        mlp: a module mapping features ``(..., C)`` to logits ``(..., K)`` instead of the default
            Linear-LayerNorm-ReLU-Linear.
        knn_k: neighbours of each point's σ (ignored with ``fixed_sigma``).
        fixed_sigma: fixed basis σ instead of the neighbour estimate.
        knn_factor: the neighbour σ in units of the mean neighbour distance (``None``:
            :data:`~pckeypoints.core.basis.KNN_FACTOR`).
        learn_sigma: a heteroscedastic basis: σ_i = (k-NN or fixed σ_i) · softplus(s_i), with s_i from
            a per-point ``Linear(in_channels, 1)`` (``sigma_head``, initialised to softplus(s) = 1),
            shared by the K maps and trained through the sampling loss (soft-argmax ignores σ).
        validate: check the input values (finite features and coordinates, sorted ``batch``, no
            empty cloud) on every call; shapes are always checked. Set to False once the data are
            known to be clean.

    Shapes:
        - **input:** x ``(B, N, C)``, pos ``(B, N, D)``, optional mask ``(B, N)`` (False at the
          caller's padding); or x ``(N_total, C)``, pos ``(N_total, D)``, batch ``(N_total,)``;
          optional edge_index ``(2, E)``
        - **output:** :class:`KeypointMaps` (logits ``(B, K, N)``) or :class:`RaggedKeypointMaps`
          (logits ``(N_total, K)``); keypoints ``(B, K, D)``

    Examples:
        >>> head = KeypointHead(in_channels=16, num_keypoints=4, knn_k=3)
        >>> head
        KeypointHead(
          in_channels=16, num_keypoints=4
          (mlp): Sequential(
            (0): Linear(in_features=16, out_features=128, bias=True)
            (1): LayerNorm((128,), ...)
            (2): ReLU(inplace=True)
            (3): Linear(in_features=128, out_features=4, bias=True)
          )
          (readout): KeypointReadout(knn_k=3)
        )
        >>> maps = head(torch.randn(2, 50, 16), torch.rand(2, 50, 3))
        >>> tuple(maps.logits.shape), tuple(maps.keypoints.shape)
        ((2, 4, 50), (2, 4, 3))
    """

    def __init__(
        self,
        in_channels: int | None,
        num_keypoints: int,
        *,
        hidden_channels: int = 128,
        mlp: nn.Module | None = None,
        knn_k: int | None = None,
        fixed_sigma: float | None = None,
        validate: bool = True,
        learn_sigma: bool = False,
        knn_factor: float | None = None,
    ):
        super().__init__()
        for name, value in (("num_keypoints", num_keypoints), ("hidden_channels", hidden_channels),
                            ("in_channels", 1 if in_channels is None else in_channels)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise InputError(f"{name} must be an integer >= 1, got {value!r}")
        num_keypoints, hidden_channels = int(num_keypoints), int(hidden_channels)  # NumPy integers too
        in_channels = None if in_channels is None else int(in_channels)
        if mlp is None:
            if in_channels is None:
                raise InputError("in_channels is needed for the default MLP")
            mlp = nn.Sequential(
                nn.Linear(in_channels, hidden_channels),
                nn.LayerNorm(hidden_channels),
                nn.ReLU(inplace=True),
                nn.Linear(hidden_channels, num_keypoints),
            )
        self.in_channels, self.num_keypoints, self.validate = in_channels, num_keypoints, validate
        self.mlp = mlp
        self.readout = KeypointReadout(8 if knn_k is None else knn_k, fixed_sigma=fixed_sigma,
                                       knn_factor=KNN_FACTOR if knn_factor is None else knn_factor)
        self.sigma_head = None
        if learn_sigma:
            if in_channels is None:
                raise InputError("learn_sigma needs in_channels (its σ head is Linear(in_channels, 1))")
            self.sigma_head = nn.Linear(in_channels, 1)
            self._reset_sigma_head()

    @property
    def knn_k(self) -> int:
        return self.readout.knn_k

    @property
    def fixed_sigma(self) -> float | None:
        return self.readout.fixed_sigma

    def _reset_sigma_head(self) -> None:
        nn.init.zeros_(self.sigma_head.weight)
        nn.init.constant_(self.sigma_head.bias, math.log(math.e - 1))  # softplus(bias) = 1: the k-NN σ

    def reset_parameters(self) -> None:
        """Re-initialise ``mlp`` (its own ``reset_parameters`` if it has one, a PyG ``MLP``, else its
        layers') and ``sigma_head``."""
        if self.sigma_head is not None:
            self._reset_sigma_head()
        if hasattr(self.mlp, "reset_parameters"):
            self.mlp.reset_parameters()
            return
        for module in self.mlp.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, x: Tensor, pos: Tensor, batch: Tensor | None = None, *, mask: Tensor | None = None,
                edge_index: Tensor | None = None, basis: PointBasis | None = None) -> KeypointMaps | RaggedKeypointMaps:
        expected = pos.shape[:-1] + (() if self.in_channels is None else (self.in_channels,))
        if x.shape[:-1] != pos.shape[:-1] or (self.in_channels is not None and x.shape[-1] != self.in_channels):
            raise InputError(f"features {tuple(x.shape)} must be {tuple(expected)} to match pos {tuple(pos.shape)}")
        if batch is None and pos.dim() != 3:
            raise InputError(f"dense pos must be (B, N, D), got shape {tuple(pos.shape)} (ragged input needs batch)")
        if self.validate:
            check_finite(x if mask is None else x[mask], "features")
        out = self.mlp(x)
        if out.shape[:-1] != x.shape[:-1] or out.shape[-1] != self.num_keypoints:
            raise InputError(f"mlp must map features to (..., K={self.num_keypoints}) logits, got {tuple(out.shape)}")
        logits = out if batch is not None else out.transpose(1, 2)  # ragged (N_total, K) or dense (B, K, N)
        if self.sigma_head is not None:
            if basis is None:
                basis = self.readout.basis(pos, batch, edge_index=edge_index, validate=self.validate, mask=mask)
            basis = self._learned_sigma(basis, F.softplus(self.sigma_head(x)), batch)
        return self.readout(logits, pos, batch, mask=mask, edge_index=edge_index, basis=basis, validate=self.validate)

    @staticmethod
    def _learned_sigma(basis: PointBasis, factor: Tensor, batch: Tensor | None) -> PointBasis:
        """``basis`` with σ_i multiplied by ``factor`` (dense ``(B, N, 1)`` or ragged ``(N_total, 1)``)."""
        if basis.kind != "gaussian":
            raise InputError(f"learn_sigma needs a Gaussian basis, got {basis.kind!r}")
        if batch is not None:
            from torch_geometric.utils import to_dense_batch

            b, n = basis.mask.shape
            factor = to_dense_batch(factor, batch, 1.0, n, b)[0]
        return PointBasis(basis.pos, basis.bandwidth * factor, "gaussian", basis.mask, basis.is_grid, validate=False)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, num_keypoints={self.num_keypoints}" + (
            ", learn_sigma=True" if self.sigma_head is not None else "")
