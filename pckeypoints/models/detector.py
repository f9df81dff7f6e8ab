"""Supervised keypoint detector: a PointNet++ backbone with a :class:`~pckeypoints.core.head.KeypointHead`."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from pckeypoints.core.head import KeypointHead, KeypointMaps
from pckeypoints.validation import check_cloud


class KeypointDetector(nn.Module):
    """K semantic keypoints of one category from a point cloud.

    A :class:`pointnet2.modules.PointNet2Seg` computes per-point features, a
    :class:`~pckeypoints.core.head.KeypointHead` turns them into K probability maps over the points and
    reads them out over a Gaussian point basis (soft-argmax keypoints).

    Args:
        num_keypoints: K.
        width: channel multiplier of the backbone (0.5, the config's default; 1 is the shipped models').
        msg: multi-scale grouping in the backbone.
        radius_scale: multiplies the backbone's ball radii (2 for clouds of unit radius).
        feature_channels: per-point feature channels between backbone and head.
        hidden_channels: hidden width of the head's MLP.
        knn_k: neighbours for each point's basis σ (unless ``fixed_sigma`` is given).
        fixed_sigma: fixed basis σ.
        knn_factor: the neighbour σ in units of the mean neighbour distance (``None``: the basis' default).
        learn_sigma: σ_i times a learned per-point factor (:class:`~pckeypoints.core.head.KeypointHead`).
        validate: check that the points are finite on every call (shapes are always checked); a call's
            ``validate=`` overrides it (the trainer's steps pass False: their data were checked when read).

    Examples:
        >>> detector = KeypointDetector(num_keypoints=5, width=0.25)
        >>> maps = detector(torch.rand(2, 256, 3))
        >>> tuple(maps.logits.shape), tuple(maps.keypoints.shape)
        ((2, 5, 256), (2, 5, 3))
    """

    def __init__(
        self,
        num_keypoints: int,
        width: float = 0.5,
        msg: bool = False,
        radius_scale: float = 2.0,
        feature_channels: int = 128,
        hidden_channels: int = 128,
        knn_k: int | None = None,
        fixed_sigma: float | None = None,
        learn_sigma: bool = False,
        validate: bool = True,
        knn_factor: float | None = None,
    ):
        super().__init__()
        from pointnet2.modules import PointNet2Seg

        self.backbone = PointNet2Seg(0, feature_channels, msg=msg, width=width, radius_scale=radius_scale)
        # The head checks num_keypoints; it skips its own value checks because the detector validates its
        # input once.
        self.head = KeypointHead(feature_channels, num_keypoints, hidden_channels=hidden_channels, knn_k=knn_k,
                                 fixed_sigma=fixed_sigma, learn_sigma=learn_sigma, validate=False,
                                 knn_factor=knn_factor)
        self.validate = validate

    @property
    def num_keypoints(self) -> int:
        return self.head.num_keypoints

    def forward(self, points: Tensor, *, validate: bool | None = None) -> KeypointMaps:
        """``points (B, N, 3)`` -> maps with ``logits (B, K, N)`` and ``keypoints (B, K, 3)``; ``validate``:
        check the values of this call (``None``: the detector's ``validate``)."""
        check_cloud(points, batched=True, validate=self.validate if validate is None else validate)
        return self.head(self.backbone(points), points)
