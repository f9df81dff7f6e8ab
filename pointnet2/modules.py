"""PointNet++ building blocks and a per-point feature backbone (dense layout).

Set abstraction (single- and multi-scale grouping), feature propagation and :class:`PointNet2Seg`.
Between blocks features are channels-first ``(B, C, N)`` like the ops; the pointwise MLPs run channels-last
(``nn.Linear`` on ``(..., C)``, faster on the CPU than 1x1 convolutions); :class:`PointNet2Seg` takes and
returns channels-last ``(B, N, C)``. Default radii assume clouds normalised to a sphere of radius ~0.5 (KeypointNet);
``radius_scale`` rescales them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pointnet2.errors import InputError
from pointnet2.ops import ball_query_group, furthest_point_sample, three_nn_interpolate

__all__ = ["FeaturePropagation", "GlobalSetAbstraction", "PointNet2Seg", "SetAbstraction", "SharedMLP"]


class SharedMLP(nn.Sequential):
    """Pointwise MLP on channels-last features ``(..., C_in) -> (..., C_out)``: Linear (no bias), BatchNorm
    over the channels and ReLU after every layer.

    Loads the state dicts of the former 1x1-convolution layers (weights ``(out, in, 1[, 1])``).
    """

    def __init__(self, channels: Sequence[int]):
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [nn.Linear(c_in, c_out, bias=False), nn.BatchNorm1d(c_out), nn.ReLU(inplace=True)]
        super().__init__(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).view(*x.shape[:-1], -1)


def gather_points(xyz: Tensor, idx: Tensor) -> Tensor:
    """xyz (B, N, 3) at idx (B, M) -> (B, M, 3)."""
    return xyz.gather(1, idx.unsqueeze(-1).expand(-1, -1, xyz.shape[-1]))


class SetAbstraction(nn.Module):
    """FPS ``npoint`` centres, then per scale: ball query + grouping, shared MLP, max pool over the ball.

    One radius is single-scale grouping (SSG); several radii are multi-scale grouping (MSG), the scales'
    features concatenated. The centres are cloud points, so no ball is empty.

    Args:
        npoint: number of centres M.
        radii, nsamples: ball radius and slot count per scale.
        in_channels: C of the input features (0 for none).
        mlps: hidden/output channels of each scale's MLP; its input is 3 + in_channels.
    """

    def __init__(
        self,
        npoint: int,
        radii: Sequence[float],
        nsamples: Sequence[int],
        in_channels: int,
        mlps: Sequence[Sequence[int]],
    ):
        super().__init__()
        if not (len(radii) == len(nsamples) == len(mlps) >= 1):
            raise InputError("radii, nsamples and mlps need one entry per scale")
        self.npoint, self.radii, self.nsamples = npoint, list(radii), list(nsamples)
        self.mlps = nn.ModuleList(SharedMLP([3 + in_channels, *mlp]) for mlp in mlps)
        self.out_channels = sum(mlp[-1] for mlp in mlps)

    def forward(self, xyz: Tensor, features: Tensor | None) -> tuple[Tensor, Tensor]:
        """xyz (B, N, 3), features (B, C, N) or None -> centres (B, M, 3), features (B, out_channels, M)."""
        new_xyz = gather_points(xyz, furthest_point_sample(xyz, self.npoint, validate=False))
        pooled = []
        for radius, nsample, mlp in zip(self.radii, self.nsamples, self.mlps):
            grouped, _ = ball_query_group(xyz, new_xyz, features, radius, nsample, validate=False)
            h = mlp(grouped.permute(0, 2, 3, 1))  # (B, M, S, C')
            # Every ball holds its centre (a cloud point) and its padding slots repeat its first neighbour,
            # so the plain max over the slots is the max over the distinct neighbours. max, not amax: its
            # backward routes each gradient to one slot (an index scatter) instead of splitting it over ties
            # (mask tensors of h's size); the ties are padding copies of one point or ReLU zeros, which pass
            # no gradient, so the gradients are the same.
            pooled.append(h.max(dim=2).values)
        return new_xyz, torch.cat(pooled, dim=-1).transpose(1, 2)


class GlobalSetAbstraction(nn.Module):
    """Groups the whole cloud into one centre at the origin: MLP on [xyz, features], max over all points."""

    def __init__(self, in_channels: int, mlp: Sequence[int]):
        super().__init__()
        self.mlp = SharedMLP([3 + in_channels, *mlp])
        self.out_channels = mlp[-1]

    def forward(self, xyz: Tensor, features: Tensor | None) -> tuple[Tensor, Tensor]:
        """xyz (B, N, 3), features (B, C, N) or None -> centre (B, 1, 3), features (B, out_channels, 1)."""
        h = xyz.transpose(1, 2) if features is None else torch.cat([xyz.transpose(1, 2), features], dim=1)
        return xyz.new_zeros(xyz.shape[0], 1, 3), self.mlp(h.transpose(1, 2)).amax(dim=1).unsqueeze(-1)


class FeaturePropagation(nn.Module):
    """Interpolates coarse features onto finer points (3-NN inverse distance), concatenates skip features, MLP."""

    def __init__(self, in_channels: int, mlp: Sequence[int]):
        super().__init__()
        self.mlp = SharedMLP([in_channels, *mlp])
        self.out_channels = mlp[-1]

    def forward(self, xyz: Tensor, coarse_xyz: Tensor, skip: Tensor | None, coarse_features: Tensor) -> Tensor:
        """xyz (B, n, 3), coarse_xyz (B, m, 3), skip (B, C1, n) or None, coarse_features (B, C2, m) -> (B, C', n)."""
        h = three_nn_interpolate(xyz, coarse_xyz, coarse_features, validate=False)
        h = h if skip is None else torch.cat([h, skip], dim=1)
        return self.mlp(h.transpose(1, 2)).transpose(1, 2)


class PointNet2Seg(nn.Module):
    """PointNet++ per-point feature backbone: SA(512) -> SA(128) -> global SA, then three feature propagations.

    Small enough to train on CPU; ``width`` scales every channel count. The last layer is linear.

    Args:
        in_channels: per-point input feature channels (0: coordinates only).
        out_channels: per-point output feature channels.
        msg: multi-scale grouping in the two local set abstractions instead of single-scale.
        width: channel multiplier.
        radius_scale: multiplies the ball radii (defaults suit clouds of radius ~0.5).
    """

    def __init__(
        self, in_channels: int = 0, out_channels: int = 128, msg: bool = False, width: float = 1.0,
        radius_scale: float = 1.0,
    ):
        super().__init__()
        if in_channels < 0 or out_channels < 1 or width <= 0 or radius_scale <= 0:
            raise InputError("need in_channels >= 0, out_channels >= 1, width > 0 and radius_scale > 0")
        self.in_channels = in_channels

        def ch(*channels: int) -> list[int]:
            return [max(8, round(c * width)) for c in channels]

        r = radius_scale
        if msg:
            self.sa1 = SetAbstraction(512, [0.05 * r, 0.1 * r], [16, 32], in_channels, [ch(16, 16, 32), ch(32, 32, 64)])
            self.sa2 = SetAbstraction(
                128, [0.1 * r, 0.2 * r], [16, 32], self.sa1.out_channels, [ch(64, 64, 128), ch(64, 96, 128)]
            )
        else:
            self.sa1 = SetAbstraction(512, [0.1 * r], [32], in_channels, [ch(32, 32, 64)])
            self.sa2 = SetAbstraction(128, [0.2 * r], [32], self.sa1.out_channels, [ch(64, 64, 128)])
        self.sa3 = GlobalSetAbstraction(self.sa2.out_channels, ch(128, 256))
        self.fp3 = FeaturePropagation(self.sa3.out_channels + self.sa2.out_channels, ch(128, 128))
        self.fp2 = FeaturePropagation(self.fp3.out_channels + self.sa1.out_channels, ch(128, 128))
        self.fp1 = FeaturePropagation(self.fp2.out_channels + 3 + in_channels, ch(128, 128))
        self.head = nn.Linear(self.fp1.out_channels, out_channels)

    def forward(self, xyz: Tensor, features: Tensor | None = None) -> Tensor:
        """xyz (B, N, 3), features (B, N, in_channels) or None -> (B, N, out_channels)."""
        if (features is None) != (self.in_channels == 0):
            raise InputError(f"model built for in_channels={self.in_channels}, got features={features is not None}")
        if features is not None and (features.dim() != 3 or features.shape[:2] != xyz.shape[:2]
                                     or features.shape[2] != self.in_channels):
            raise InputError(
                f"features must be (B, N, {self.in_channels}) matching xyz {tuple(xyz.shape)}, got {tuple(features.shape)}"
            )
        f0 = None if features is None else features.transpose(1, 2)
        xyz1, f1 = self.sa1(xyz, f0)
        xyz2, f2 = self.sa2(xyz1, f1)
        xyz3, f3 = self.sa3(xyz2, f2)
        h = self.fp3(xyz2, xyz3, f2, f3)
        h = self.fp2(xyz1, xyz2, f1, h)
        skip0 = xyz.transpose(1, 2) if f0 is None else torch.cat([xyz.transpose(1, 2), f0], dim=1)
        h = self.fp1(xyz, xyz1, skip0, h)
        return self.head(h.transpose(1, 2))
