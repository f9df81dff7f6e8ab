"""Unsupervised keypoints by reconstruction: a Skeleton Merger style autoencoder (Shi et al., CVPR 2021).

The encoder (PointNet++ per-point features, then a :class:`~pckeypoints.core.head.KeypointHead`) proposes K
keypoint maps over the input points and, from the max-pooled features, an activation strength in (0, 1)
for each of the K(K-1)/2 keypoint pairs. The decoder rebuilds the cloud as a skeleton: for each pair
(i < j) it places M points at fixed positions t along the segment k_i -> k_j and adds a learned offset per
pair and position (free parameters shared by every shape, Skeleton Merger's composite deformation).
Training compares the skeleton with the input under the composite Chamfer distance
(:func:`~pckeypoints.ops.chamfer.composite_chamfer_distance`), with no keypoint labels.

Keypoints are read from the maps by soft-argmax, or, for training with sampling-argmax, as Ns
differentiable samples per keypoint, each sample set decoded into its own skeleton
(:meth:`SkeletonOutput.sample`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pointnet2.modules import PointNet2Seg

from pckeypoints.core.argmax import sampling_argmax
from pckeypoints.ops.chamfer import CompositeChamfer, composite_chamfer_distance
from pckeypoints.core.head import KeypointHead, KeypointMaps
from pckeypoints.validation import check_cloud
from pckeypoints.errors import InputError


def keypoint_pairs(num_keypoints: int) -> Tensor:
    """The K(K-1)/2 pairs (i, j), i < j, in row-major order, ``(P, 2)`` long."""
    return torch.triu_indices(num_keypoints, num_keypoints, offset=1).T


class SkeletonDecoder(nn.Module):
    """Keypoints -> one point cloud per keypoint pair: M points along the segment plus learned offsets.

    Args:
        num_keypoints: K.
        points_per_edge: M positions t = 0, 1/(M-1), ..., 1 per segment.
        offset_init: std of the initial offsets (Skeleton Merger: 0.002).
    """

    def __init__(self, num_keypoints: int, points_per_edge: int = 32, offset_init: float = 0.002):
        super().__init__()
        if num_keypoints < 2 or points_per_edge < 2:
            raise InputError(f"need num_keypoints >= 2 and points_per_edge >= 2, got {num_keypoints}, {points_per_edge}")
        pairs = keypoint_pairs(num_keypoints)
        self.register_buffer("pairs", pairs, persistent=False)
        self.register_buffer("t", torch.linspace(0, 1, points_per_edge).unsqueeze(-1), persistent=False)
        self.offsets = nn.Parameter(torch.randn(len(pairs), points_per_edge, 3) * offset_init)
        self.num_keypoints = num_keypoints

    @property
    def num_pairs(self) -> int:
        return self.pairs.shape[0]

    def forward(self, keypoints: Tensor) -> Tensor:
        """``keypoints (..., K, 3)`` -> parts ``(..., P, M, 3)``."""
        if keypoints.dim() < 2 or keypoints.shape[-2:] != (self.num_keypoints, 3):
            raise InputError(f"keypoints must be (..., K={self.num_keypoints}, 3), got shape {tuple(keypoints.shape)}")
        start = keypoints[..., self.pairs[:, 0], None, :]  # (..., P, 1, 3)
        end = keypoints[..., self.pairs[:, 1], None, :]
        return torch.lerp(start, end, self.t) + self.offsets


@dataclass
class SkeletonOutput:
    """Output of :class:`SkeletonAutoencoder`.

    Attributes:
        maps: K keypoint maps over the input points (``maps.keypoints`` is the soft-argmax, ``(B, K, 3)``).
        activations: ``(B, P)`` strength in (0, 1) of each keypoint pair, P = K(K-1)/2.
        decoded: ``(B, S, K, 3)`` the keypoint sets the decoder consumed: the soft-argmax (S = 1) or S
            sampling-argmax samples.
        parts: ``(B, S, P, M, 3)`` the skeleton of each decoded set.
        offsets: ``(P, M, 3)`` the decoder's learned offsets (for their regulariser).
        decoder: the model's decoder (for :meth:`sample`).
    """

    maps: KeypointMaps
    activations: Tensor
    decoded: Tensor
    parts: Tensor
    offsets: Tensor
    decoder: SkeletonDecoder

    def sample(self, num_samples: int, tau: float, generator: torch.Generator | None = None) -> "SkeletonOutput":
        """This output decoding ``num_samples`` differentiable sampling-argmax samples of its maps at temperature
        ``tau`` instead of the soft-argmax: ``decoded (B, Ns, K, 3)``, ``parts (B, Ns, P, M, 3)``."""
        # no value check: the logits are the model's own, from points it checked (or was told are clean)
        samples = sampling_argmax(self.maps.logits, self.maps.basis, num_samples=num_samples, tau=tau,
                                  generator=generator, validate=False).transpose(1, 2)  # (B, Ns, K, 3)
        return dataclasses.replace(self, decoded=samples, parts=self.decoder(samples))

    @property
    def keypoints(self) -> Tensor:
        """``(B, K, 3)`` soft-argmax keypoints (the test-time estimate)."""
        return self.maps.keypoints

    @property
    def probabilities(self) -> Tensor:
        """``(B, K, N)`` keypoint maps as probabilities over the points."""
        return self.maps.probabilities


class SkeletonAutoencoder(nn.Module):
    """Skeleton Merger style keypoint autoencoder.

    ``forward(points (B, N, 3))`` proposes keypoints and pair activations and decodes the soft-argmax
    keypoints into a skeleton; the output's :meth:`~SkeletonOutput.sample` decodes Ns sampling-argmax
    samples instead (training with sampling-argmax). Train with :func:`skeleton_loss`.

    Args:
        num_keypoints: K.
        width: channel multiplier of the PointNet++ backbone.
        feature_channels: per-point feature channels fed to the keypoint head and the activation MLP.
        hidden_channels: hidden width of the keypoint head and of the activation MLP.
        points_per_edge: decoder points per keypoint pair.
        knn_k: neighbours for each point's basis σ; fixed_sigma: a fixed σ instead; learn_sigma: σ_i times a
            learned per-point factor (:class:`~pckeypoints.core.head.KeypointHead`); knn_factor: the neighbour σ in units
            of the mean neighbour distance (``None``: the basis' default).
        msg: multi-scale grouping in the backbone.
        radius_scale: multiplies the backbone's ball radii (1 suits clouds of radius ~0.5, 2 unit radius).
    """

    def __init__(
        self,
        num_keypoints: int = 10,
        width: float = 1.0,
        feature_channels: int = 128,
        hidden_channels: int = 128,
        points_per_edge: int = 32,
        knn_k: int = 8,
        fixed_sigma: float | None = None,
        learn_sigma: bool = False,
        msg: bool = False,
        radius_scale: float = 1.0,
        knn_factor: float | None = None,
    ):
        super().__init__()
        self.encoder = PointNet2Seg(0, feature_channels, msg=msg, width=width, radius_scale=radius_scale)
        self.head = KeypointHead(feature_channels, num_keypoints, hidden_channels=hidden_channels, knn_k=knn_k, fixed_sigma=fixed_sigma, learn_sigma=learn_sigma,
                                 validate=False, knn_factor=knn_factor)  # forward validates the points once
        self.decoder = SkeletonDecoder(num_keypoints, points_per_edge)
        self.activation_mlp = nn.Sequential(
            nn.Linear(feature_channels, hidden_channels),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_channels, self.decoder.num_pairs),
        )
        self.num_keypoints = num_keypoints

    def forward(self, points: Tensor, *, validate: bool = True) -> SkeletonOutput:
        """``points (B, N, 3)`` -> the soft-argmax skeleton; ``validate``: check that the points are finite
        (shapes are always checked; the trainer's steps pass False: their data were checked when read)."""
        check_cloud(points, batched=True, validate=validate)
        features = self.encoder(points)  # (B, N, C)
        maps = self.head(features, points)
        activations = self.activation_mlp(features.amax(dim=1)).sigmoid()
        decoded = maps.keypoints.unsqueeze(1)
        return SkeletonOutput(maps, activations, decoded, self.decoder(decoded), self.decoder.offsets, self.decoder)


def skeleton_loss(points: Tensor, output: SkeletonOutput, uncovered_penalty: float = 20.0, *,
                  validate: bool = True) -> CompositeChamfer:
    """Composite Chamfer distance between ``points (B, N, 3)`` and the skeletons of ``output``, averaged
    over its S decoded keypoint sets (a Monte Carlo estimate of the expected distance when they are
    sampling-argmax samples); each direction ``(B,)``. ``validate``: the value checks of
    :func:`~pckeypoints.ops.chamfer.composite_chamfer_distance`."""
    b, s, p, m, _ = output.parts.shape
    if points.dim() != 3 or points.shape[0] != b:
        raise InputError(f"points must be (B={b}, N, 3), got shape {tuple(points.shape)}")
    repeated = points.unsqueeze(1).expand(-1, s, -1, -1).reshape(b * s, *points.shape[1:])
    activations = output.activations.unsqueeze(1).expand(-1, s, -1).reshape(b * s, p)
    dist = composite_chamfer_distance(repeated, output.parts.reshape(b * s, p, m, 3), activations, uncovered_penalty,
                                      validate=validate)
    return CompositeChamfer(*(d.view(b, s).mean(1) for d in dist))
