"""The sampling-argmax keypoint head on PyG backbones: DGCNN (``DynamicEdgeConv``) and Point Transformer
(``PointTransformerConv``), trained on KeypointNet bathtubs.

Both take PyG-ragged clouds ``(pos, batch)``; the head returns PyG-native maps (logits ``(N_total, K)``),
which the loss takes as they are. The k-NN graphs come from pckeypoints' ops (PyG's ``DynamicEdgeConv``
through :func:`pckeypoints.use_as_pyg_backend`, the Point Transformer's from :func:`pckeypoints.knn_graph`), so
neither torch-cluster nor pyg-lib is needed; the Point Transformer's graph also sets the head's basis σ.

    python examples/pyg_backbones.py --model dgcnn --steps 200
"""
from __future__ import annotations

import argparse

import torch
from torch import Tensor, nn
from torch_geometric.nn import MLP, DynamicEdgeConv, PointTransformerConv

import pckeypoints as pk

pk.use_as_pyg_backend()  # PyG's DynamicEdgeConv runs its k-NN search on pckeypoints' ops where pyg-lib is absent


class DGCNNKeypoints(nn.Module):
    """Two dynamic EdgeConv layers, then the keypoint head on the concatenated per-point features."""

    def __init__(self, num_keypoints: int, channels: int = 64, k: int = 16):
        super().__init__()
        self.conv1 = DynamicEdgeConv(MLP([2 * 3, channels, channels]), k)
        self.conv2 = DynamicEdgeConv(MLP([2 * channels, channels, channels]), k)
        self.head = pk.KeypointHead(2 * channels, num_keypoints, hidden_channels=channels)

    def forward(self, pos: Tensor, batch: Tensor) -> pk.RaggedKeypointMaps:
        x1 = self.conv1(pos, batch)
        x2 = self.conv2(x1, batch)
        return self.head(torch.cat([x1, x2], dim=-1), pos, batch)


class PointTransformerKeypoints(nn.Module):
    """Two Point Transformer layers on the k-NN graph of the points; the head's σ from the same graph."""

    def __init__(self, num_keypoints: int, channels: int = 64, k: int = 16):
        super().__init__()
        self.k = k
        self.lin = nn.Linear(3, channels)
        self.conv1 = PointTransformerConv(channels, channels, pos_nn=MLP([3, channels, channels], norm=None))
        self.conv2 = PointTransformerConv(channels, channels, pos_nn=MLP([3, channels, channels], norm=None))
        self.head = pk.KeypointHead(channels, num_keypoints, hidden_channels=channels)

    def forward(self, pos: Tensor, batch: Tensor) -> pk.RaggedKeypointMaps:
        edge_index = pk.knn_graph(pos, self.k, batch)
        x = self.conv1(self.lin(pos).relu(), pos, edge_index).relu()
        x = self.conv2(x, pos, edge_index).relu()
        return self.head(x, pos, batch, edge_index=edge_index)


MODELS = {"dgcnn": DGCNNKeypoints, "transformer": PointTransformerKeypoints}


def bathtubs(root=None, num_clouds: int = 4, num_points: int = 512, seed: int = 0) -> dict[str, Tensor]:
    """``num_clouds`` normalised training bathtubs of ``num_points`` random points each, PyG-ragged:
    ``pos (N_total, 3)``, ``batch (N_total,)``, ``keypoints (B, K, 3)``, ``mask (B, K)``."""
    from pckeypoints.data import KeypointNet

    dataset = KeypointNet(root, "bathtub", "train", normalize=True)
    g = torch.Generator().manual_seed(seed)
    items = [dataset[i] for i in range(min(num_clouds, len(dataset)))]
    pos = [item["points"][torch.randperm(len(item["points"]), generator=g)[:num_points]] for item in items]
    return {
        "pos": torch.cat(pos),
        "batch": torch.cat([torch.full((len(p),), i) for i, p in enumerate(pos)]),
        "keypoints": torch.stack([item["keypoints"] for item in items]),
        "mask": torch.stack([item["mask"] for item in items]),
    }


def train(model: nn.Module, data: dict[str, Tensor], steps: int, lr: float = 3e-3, tau: float = 0.3,
          seed: int = 0) -> list[float]:
    """Sampling-argmax training on one batch; returns the soft-argmax keypoint error before each step
    and after the last (L1, normalised units)."""
    loss_fn = pk.KeypointLoss("sampling", num_samples=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    errors = []
    for _ in range(steps + 1):
        maps = model(data["pos"], data["batch"])
        errors.append(float((maps.keypoints.detach() - data["keypoints"]).abs().sum(-1)[data["mask"]].mean()))
        if len(errors) > steps:
            break
        loss = loss_fn(maps, data["keypoints"], data["mask"], generator=generator, tau=tau)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return errors


def main(argv: list[str] | None = None, models: dict | None = None, description: str = __doc__) -> None:
    """Train one of ``models`` (name -> class of ``num_keypoints``; default :data:`MODELS`) on the bathtubs."""
    models = models or MODELS
    parser = argparse.ArgumentParser(description=description.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(models), default=next(iter(models)))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--clouds", type=int, default=8)
    parser.add_argument("--points", type=int, default=1024)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    data = bathtubs(num_clouds=args.clouds, num_points=args.points)
    model = models[args.model](data["keypoints"].shape[1])
    errors = train(model, data, args.steps)
    print(f"{args.model}: mean L1 keypoint error {errors[0]:.3f} -> {errors[-1]:.3f} after {args.steps} steps")


if __name__ == "__main__":
    main()
