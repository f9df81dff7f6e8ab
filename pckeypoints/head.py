"""A keypoint head for any point backbone: per-point features -> K probability maps -> keypoints."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .argmax import soft_argmax
from .basis import PointBasis


@dataclass
class KeypointMaps:
    """Output of :class:`KeypointHead`.

    logits: ``(B, K, N)`` map logits (padded points of ragged clouds are masked in ``basis``).
    basis: the points with their basis densities.
    keypoints: ``(B, K, D)`` soft-argmax keypoints.
    """

    logits: Tensor
    basis: PointBasis
    keypoints: Tensor

    @property
    def probabilities(self) -> Tensor:
        """``(B, K, N)`` softmax of the logits over each cloud."""
        return self.basis.probabilities(self.logits)


class KeypointHead(nn.Module):
    """Per-point MLP producing K map logits, read out over a Gaussian point basis.

    Accepts dense features ``x (B, N, C)`` with ``pos (B, N, D)``, or PyG-style ragged
    ``x (N_total, C)``, ``pos (N_total, D)``, ``batch (N_total,)``; the softmax runs over the
    points of each cloud. Train with :class:`~pckeypoints.losses.KeypointLoss` on the returned
    logits and basis; the keypoints are the soft-argmax (the test-time estimate).

    Args:
        in_channels: C.
        num_keypoints: K.
        hidden_channels: width of the MLP's hidden layer.
        k: neighbours for each point's σ (ignored if ``sigma`` is given).
        sigma: fixed basis σ instead of the neighbour estimate.
    """

    def __init__(
        self,
        in_channels: int,
        num_keypoints: int,
        hidden_channels: int = 128,
        k: int = 8,
        sigma: float | None = None,
    ):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_channels, hidden_channels),
            nn.LayerNorm(hidden_channels),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_channels, num_keypoints),
        )
        self.in_channels, self.num_keypoints, self.k, self.sigma = in_channels, num_keypoints, k, sigma

    def forward(self, x: Tensor, pos: Tensor, batch: Tensor | None = None, basis: PointBasis | None = None) -> KeypointMaps:
        if x.shape[:-1] != pos.shape[:-1] or x.shape[-1] != self.in_channels:
            raise ValueError(
                f"features {tuple(x.shape)} must be {tuple(pos.shape[:-1]) + (self.in_channels,)} to match pos {tuple(pos.shape)}"
            )
        if basis is None:
            basis = PointBasis.from_points(pos, batch, k=self.k, sigma=self.sigma)
        out = self.mlp(x)
        if batch is not None:
            from torch_geometric.utils import to_dense_batch

            out, _ = to_dense_batch(out, batch)
        logits = out.transpose(1, 2)  # (B, K, N)
        return KeypointMaps(logits, basis, soft_argmax(logits, basis))
