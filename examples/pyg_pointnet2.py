"""PyG's PointNet++ with the keypoint head, trained on KeypointNet bathtubs.

The layers are PyG's own (``PointNetConv``, ``MLP``, ``global_max_pool``), arranged as in PyG's
``examples/pointnet2_segmentation.py``: set abstraction (farthest point sampling, a radius graph to
the samples, ``PointNetConv``) and feature propagation (k-NN interpolation back to the finer level).
The point ops come from :mod:`pckeypoints.ops.pyg` with PyG's signatures, so neither pyg-lib nor
torch-cluster is needed.

    python examples/pyg_pointnet2.py --steps 100
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn import MLP, PointNetConv, global_max_pool

import pckeypoints as pk
from pckeypoints.ops.pyg import fps, knn_interpolate, radius
from pyg_backbones import bathtubs, train
from pyg_backbones import main as run_example


class SAModule(nn.Module):
    """Set abstraction: ``ratio`` of the points by FPS, each pooling its neighbours within ``r``."""

    def __init__(self, ratio: float, r: float, nn: nn.Module, max_num_neighbors: int = 64):
        super().__init__()
        self.ratio, self.r, self.max_num_neighbors = ratio, r, max_num_neighbors
        self.conv = PointNetConv(nn, add_self_loops=False)

    def forward(self, x: Tensor | None, pos: Tensor, batch: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        idx = fps(pos, batch, ratio=self.ratio)
        row, col = radius(pos, pos[idx], self.r, batch, batch[idx], max_num_neighbors=self.max_num_neighbors)
        edge_index = torch.stack([col, row], dim=0)
        x_dst = None if x is None else x[idx]
        return self.conv((x, x_dst), (pos, pos[idx]), edge_index), pos[idx], batch[idx]


class GlobalSAModule(nn.Module):
    """One feature per cloud: ``nn`` on every point, then max-pooled."""

    def __init__(self, nn: nn.Module):
        super().__init__()
        self.nn = nn

    def forward(self, x: Tensor, pos: Tensor, batch: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = global_max_pool(self.nn(torch.cat([x, pos], dim=1)), batch)
        return x, pos.new_zeros(x.shape[0], 3), torch.arange(x.shape[0], device=batch.device)


class FPModule(nn.Module):
    """Feature propagation: features of the coarse level interpolated from its ``k`` nearest points,
    concatenated with the finer level's (skip) features, then ``nn``."""

    def __init__(self, k: int, nn: nn.Module):
        super().__init__()
        self.k, self.nn = k, nn

    def forward(self, x: Tensor, pos: Tensor, batch: Tensor, x_skip: Tensor | None, pos_skip: Tensor,
                batch_skip: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = knn_interpolate(x, pos, pos_skip, batch, batch_skip, k=self.k)
        if x_skip is not None:
            x = torch.cat([x, x_skip], dim=1)
        return self.nn(x), pos_skip, batch_skip


class PointNet2Keypoints(nn.Module):
    """PointNet++ (two set abstractions, a global one, three feature propagations), then the head."""

    def __init__(self, num_keypoints: int, channels: int = 64):
        super().__init__()
        c = channels
        self.sa1 = SAModule(0.25, 0.2, MLP([3, c, c]))
        self.sa2 = SAModule(0.25, 0.4, MLP([c + 3, c, 2 * c]))
        self.sa3 = GlobalSAModule(MLP([2 * c + 3, 2 * c, 4 * c]))
        self.fp3 = FPModule(1, MLP([4 * c + 2 * c, 2 * c]))
        self.fp2 = FPModule(3, MLP([2 * c + c, c]))
        self.fp1 = FPModule(3, MLP([c, c, c]))
        self.head = pk.KeypointHead(c, num_keypoints, hidden_channels=c)

    def forward(self, pos: Tensor, batch: Tensor) -> pk.RaggedKeypointMaps:
        sa0 = (None, pos, batch)
        sa1 = self.sa1(*sa0)
        sa2 = self.sa2(*sa1)
        sa3 = self.sa3(*sa2)
        x = self.fp1(*self.fp2(*self.fp3(*sa3, *sa2), *sa1), *sa0)[0]
        return self.head(x, pos, batch)


def main(argv: list[str] | None = None) -> None:
    run_example(argv, {"pointnet2": PointNet2Keypoints}, __doc__)


if __name__ == "__main__":
    main()
