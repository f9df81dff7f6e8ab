"""Supervised keypoint detector: a PointNet++ backbone with a :class:`~pckeypoints.head.KeypointHead`."""
from __future__ import annotations

from torch import Tensor, nn

from ..head import KeypointHead, KeypointMaps


class KeypointDetector(nn.Module):
    """K semantic keypoints of one category from a point cloud.

    A :class:`pointnet2.modules.PointNet2Seg` computes per-point features, a
    :class:`~pckeypoints.head.KeypointHead` turns them into K probability maps over the points and
    reads them out over a Gaussian point basis (soft-argmax keypoints).

    Args:
        num_keypoints: K.
        width: channel multiplier of the backbone.
        msg: multi-scale grouping in the backbone.
        radius_scale: multiplies the backbone's ball radii (2 for clouds of unit radius).
        feature_channels: per-point feature channels between backbone and head.
        hidden_channels: hidden width of the head's MLP.
        k: neighbours for each point's basis σ (unless ``sigma`` is given).
        sigma: fixed basis σ.
    """

    def __init__(
        self,
        num_keypoints: int,
        width: float = 1.0,
        msg: bool = False,
        radius_scale: float = 2.0,
        feature_channels: int = 128,
        hidden_channels: int = 128,
        k: int = 8,
        sigma: float | None = None,
    ):
        super().__init__()
        from pointnet2.modules import PointNet2Seg

        if num_keypoints < 1:
            raise ValueError(f"num_keypoints must be >= 1, got {num_keypoints}")
        self.backbone = PointNet2Seg(0, feature_channels, msg=msg, width=width, radius_scale=radius_scale)
        self.head = KeypointHead(feature_channels, num_keypoints, hidden_channels, k=k, sigma=sigma)

    @property
    def num_keypoints(self) -> int:
        return self.head.num_keypoints

    def forward(self, points: Tensor) -> KeypointMaps:
        """``points (B, N, 3)`` -> maps with ``logits (B, K, N)`` and ``keypoints (B, K, 3)``."""
        if points.dim() != 3 or points.shape[-1] != 3:
            raise ValueError(f"points must be (B, N, 3), got shape {tuple(points.shape)}")
        if not points.isfinite().all():
            raise ValueError("points contain NaN or infinite coordinates")
        return self.head(self.backbone(points), points)
