"""pointnet2.modules / pointnet2.pyg: backbone shapes, gradient flow, training signal, PyG adapter."""

from __future__ import annotations

import pytest
import torch

from pointnet2 import PointNet2Seg, SetAbstraction, reference
from pointnet2.modules import gather_points


def cloud(B: int, N: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(B, N, 3, generator=torch.Generator().manual_seed(seed)) - 0.5


@pytest.mark.parametrize("msg", [False, True])
def test_backbone_shape_and_gradient_flow(msg):
    torch.manual_seed(0)
    model = PointNet2Seg(in_channels=4, out_channels=16, msg=msg, width=0.25)
    xyz = cloud(2, 600)
    feats = torch.randn(2, 600, 4, requires_grad=True)
    out = model(xyz, feats)
    assert out.shape == (2, 600, 16) and torch.isfinite(out).all()
    out.square().mean().backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_backbone_small_cloud_and_bad_features():
    model = PointNet2Seg(width=0.25).eval()
    assert model(cloud(1, 5)).shape == (1, 5, 128)  # fewer points than the 512 FPS centres
    with pytest.raises(ValueError, match="in_channels=0"):
        model(cloud(1, 50), torch.randn(1, 50, 2))
    with pytest.raises(ValueError, match="features must be"):
        PointNet2Seg(in_channels=2)(cloud(1, 50), torch.randn(1, 49, 2))


def test_set_abstraction_pools_distinct_neighbours():
    torch.manual_seed(0)
    sa = SetAbstraction(16, [0.2], [8], 2, [[4, 6]]).eval()
    xyz, feats = cloud(2, 100), torch.randn(2, 2, 100)
    new_xyz, pooled = sa(xyz, feats)
    assert torch.equal(new_xyz, gather_points(xyz, reference.furthest_point_sample(xyz, 16)))
    idx, counts = reference.ball_query(xyz, new_xyz, 0.2, 8)
    for b, m in [(0, 0), (0, 7), (1, 15)]:
        nbr = idx[b, m, : counts[b, m]]
        x = torch.cat([xyz[b, nbr] - new_xyz[b, m], feats[b, :, nbr].T], dim=1)  # (count, 5)
        expected = sa.mlps[0](x).amax(dim=0)  # channels-last MLP over the distinct neighbours
        assert torch.allclose(pooled[b, :, m], expected, atol=1e-6)


def masked_pooling(sa: SetAbstraction, xyz: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """The pooling SetAbstraction had before: padding slots masked to -inf, amax, empty balls 0."""
    new_xyz = gather_points(xyz, reference.furthest_point_sample(xyz, sa.npoint))
    grouped, counts = reference.ball_query_group(xyz, new_xyz, feats, sa.radii[0], sa.nsamples[0])
    h = sa.mlps[0](grouped.permute(0, 2, 3, 1))
    valid = torch.arange(sa.nsamples[0]) < counts.unsqueeze(-1)
    h = h.masked_fill(~valid.unsqueeze(-1), float("-inf")).amax(dim=2)
    return torch.where(counts.unsqueeze(-1) > 0, h, 0.0).transpose(1, 2)


def test_set_abstraction_max_equals_the_masked_pooling_with_gradients():
    """Training mode (batch statistics), sparse balls with many padding slots, duplicated points (exact
    ties): outputs and every gradient equal the masked amax pooling's (a duplicate pair's gradient summed)."""
    torch.manual_seed(0)
    sa = SetAbstraction(24, [0.15], [16], 3, [[8, 8, 16]]).train()
    xyz = cloud(2, 120)
    xyz = torch.cat([xyz, xyz[:, :10]], dim=1)  # ten points twice
    feats = torch.randn(2, 3, 130)
    feats[:, :, 120:] = feats[:, :, :10]
    results = []
    for pool in (lambda x, f: sa(x, f)[1], lambda x, f: masked_pooling(sa, x, f)):
        f = feats.clone().requires_grad_()
        out = pool(xyz, f)
        sa.zero_grad()
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        # a duplicated point's gradient may go to either copy (max) or be split over both (amax): compare sums
        g = torch.cat([f.grad[:, :, :10] + f.grad[:, :, 120:], f.grad[:, :, 10:120]], dim=2)
        results.append([out, g] + [p.grad.clone() for p in sa.parameters()])
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(*results))


@pytest.fixture
def one_thread():
    """Tiny models run faster on one thread, and do not stall when the cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_backbone_learns(one_thread):
    torch.manual_seed(0)
    model = PointNet2Seg(out_channels=1, width=0.25)
    xyz = cloud(2, 128)
    target = xyz.norm(dim=-1, keepdim=True)  # distance to the origin, per point
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = (model(xyz) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]


def test_pyg_adapter_equals_dense():
    pyg = pytest.importorskip("pointnet2.pyg")
    torch.manual_seed(0)
    model = PointNet2Seg(in_channels=3, out_channels=8, width=0.25).eval()
    ragged = pyg.RaggedPointNet2(model)
    xyz, feats = cloud(3, 200), torch.randn(3, 200, 3)
    batch = torch.arange(3).repeat_interleave(200)
    with torch.no_grad():
        dense = model(xyz, feats)
        out = ragged(feats.reshape(-1, 3), xyz.reshape(-1, 3), batch)
    assert torch.equal(out, dense.reshape(-1, 8))


def test_pyg_adapter_unequal_sizes_equal_per_cloud():
    pyg = pytest.importorskip("pointnet2.pyg")
    torch.manual_seed(0)
    model = PointNet2Seg(out_channels=8, width=0.25).eval()
    sizes = [120, 80, 120, 30]
    clouds = [cloud(1, n, seed=i)[0] for i, n in enumerate(sizes)]
    batch = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    with torch.no_grad():
        out = pyg.RaggedPointNet2(model)(None, torch.cat(clouds), batch)
        alone = torch.cat([model(c[None])[0] for c in clouds])
    assert out.shape == (sum(sizes), 8)
    assert torch.allclose(out, alone, atol=1e-5)
    with pytest.raises(ValueError, match="sorted"):
        pyg.RaggedPointNet2(model)(None, torch.cat(clouds), batch.flip(0))
