"""Adapter from PyG ragged batches ``(x, pos, batch)`` to the dense PointNet++ backbone and back.

Clouds of unequal size are never padded into the ops (padding points would be sampled by FPS and found by
ball queries): clouds are bucketed by size and each bucket runs as one dense batch, so every cloud gets
exactly the features it would get alone (in eval mode; in train mode BatchNorm statistics are per bucket).
Equal-size clouds, the common case, form a single dense batch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.utils import to_dense_batch

from pointnet2.errors import InputError

__all__ = ["RaggedPointNet2"]


class RaggedPointNet2(nn.Module):
    """Runs a dense backbone ``(B, N, 3), (B, N, C) or None -> (B, N, D)`` on ragged point batches.

    Args:
        backbone: e.g. :class:`pointnet2.modules.PointNet2Seg`.
    """

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: Tensor | None, pos: Tensor, batch: Tensor | None = None) -> Tensor:
        """x (P, C) or None, pos (P, 3), batch (P,) sorted cloud ids (None: one cloud) -> (P, D)."""
        if pos.dim() != 2 or pos.shape[1] != 3:
            raise InputError(f"pos must be (P, 3), got {tuple(pos.shape)}")
        if batch is None:
            batch = pos.new_zeros(pos.shape[0], dtype=torch.long)
        if batch.shape != pos.shape[:1] or (x is not None and x.shape[0] != pos.shape[0]):
            raise InputError("x, pos and batch must have the same number of points")
        if batch.numel() and bool((batch[1:] < batch[:-1]).any()):
            raise InputError("batch must be sorted (PyG convention)")
        dense_pos, mask = to_dense_batch(pos, batch)
        dense_x = None if x is None else to_dense_batch(x, batch)[0]
        sizes = mask.sum(dim=1)
        out = None
        for size in sizes.unique().tolist():
            if size == 0:
                continue
            clouds = (sizes == size).nonzero().squeeze(1)
            feats = None if dense_x is None else dense_x[clouds, :size]
            result = self.backbone(dense_pos[clouds, :size], feats)
            if out is None:
                out = result.new_zeros(*mask.shape, result.shape[-1])
            out[clouds, :size] = result
        if out is None:
            raise InputError("no points in the batch")
        return out[mask]
