"""Image heatmaps are the grid special case: 2-D landmark regression with sampling-argmax on a regular
grid, with uniform, triangular and Gaussian bases, all trained by the same :class:`pckeypoints.KeypointLoss`.

The synthetic task: a 32 x 32 image holds one blurred spot at a random sub-pixel position in noise; a
small CNN outputs one heatmap whose cells are the points of ``PointBasis.grid``. Only the basis kind
changes between the three runs (how a sample spreads inside its cell: a box, a tent or a Gaussian).

    python examples/grid_heatmaps.py --steps 300
"""
from __future__ import annotations

import argparse

import torch
from torch import Tensor, nn

import pckeypoints as pk

SIZE = 32


def spots(num: int, generator: torch.Generator, size: int = SIZE, blur: float = 0.04, noise: float = 0.1):
    """``num`` images ``(num, 1, size, size)`` and their spot centres ``(num, 1, 2)`` (row, column) in
    [0.2, 0.8], in image units (the image spans [0, 1] on both axes)."""
    centre = 0.2 + 0.6 * torch.rand(num, 1, 2, generator=generator)
    axis = (torch.arange(size) + 0.5) / size
    rows, cols = axis[None, :, None], axis[None, None, :]
    sq = (rows - centre[:, :, :1]).square() + (cols - centre[:, :, 1:]).square()  # (num, size, size)
    image = torch.exp(-sq / (2 * blur**2)) + noise * torch.randn(num, size, size, generator=generator)
    return image[:, None], centre


class HeatmapNet(nn.Module):
    """A fully convolutional net: image ``(B, 1, H, W)`` -> heatmap logits ``(B, 1, H·W)`` (row-major)."""

    def __init__(self, channels: int = 16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, channels, 5, padding=2), nn.ReLU(),
            nn.Conv2d(channels, channels, 5, padding=2), nn.ReLU(),
            nn.Conv2d(channels, 1, 1),
        )

    def forward(self, image: Tensor) -> Tensor:
        return self.net(image).flatten(2)


def grid_basis(kind: str, size: int = SIZE) -> pk.PointBasis:
    """The heatmap's cells as basis points: centres ``(i + 0.5) / size``, bandwidth one cell."""
    return pk.PointBasis.grid((size, size), spacing=1 / size, origin=0.5 / size, kind=kind)


def train(kind: str, steps: int, batch_size: int = 16, lr: float = 3e-3, tau: float = 1.0,
          seed: int = 0) -> list[float]:
    """Train a fresh net with a ``kind`` grid basis; returns the soft-argmax error (L1, image units) of a
    fixed validation batch before each of ``steps`` steps and after the last. τ is held (at 1 by default:
    on grids a τ annealed towards 0 quantises the estimate to cell centres, ``experiments/grid_subpixel.py``)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model, basis = HeatmapNet(), grid_basis(kind)
    loss_fn = pk.KeypointLoss("sampling", num_samples=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    val_images, val_centres = spots(64, torch.Generator().manual_seed(seed + 1))
    errors = []
    for step in range(steps + 1):
        with torch.no_grad():
            pred = pk.soft_argmax(model(val_images), basis)
            errors.append(float((pred - val_centres).abs().sum(-1).mean()))
        if step == steps:
            break
        images, centres = spots(batch_size, generator)
        optimizer.zero_grad()
        loss_fn(model(images), centres, basis=basis, generator=generator, tau=tau).backward()  # same loss, any basis kind
        optimizer.step()
    return errors


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    for kind in ("uniform", "triangular", "gaussian"):
        errors = train(kind, args.steps)
        print(f"{kind:>10}: validation L1 error {errors[0]:.4f} -> {errors[-1]:.4f} ({SIZE} px = 1)")


if __name__ == "__main__":
    main()
