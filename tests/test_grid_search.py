"""The grid search (pckeypoints.ops.grid_search) gives exactly pointnet2's brute-force results."""
import pytest
import torch

from pckeypoints.ops import grid_search

from pckeypoints.ops import pyg

pytestmark = pytest.mark.skipif(not grid_search.available(), reason="the grid kernel did not build")


def ragged(sizes, seed, dtype=torch.float32, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(sum(sizes), 3, generator=g, dtype=dtype) * 2 - 1) * scale
    return x, torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)]).long()


def both(monkeypatch, fn):
    """fn() on the grid and on the brute-force kernels."""
    monkeypatch.setattr(grid_search, "MIN_PAIRS", 0)
    grid = fn()
    monkeypatch.setattr(grid_search, "MIN_PAIRS", 1 << 62)
    return grid, fn()


CASES = [(seed, dtype) for seed in range(4) for dtype in (torch.float32, torch.float64)]


def clouds(seed, dtype):
    """Unequal clouds (one empty, one of 7), queries partly outside the points' box; odd seeds: exact duplicates;
    seed 2: flat (z = 0)."""
    x, batch_x = ragged([400, 7, 0, 630, 250], seed, dtype)
    y, batch_y = ragged([50, 9, 4, 0, 120], seed + 100, dtype, scale=1.5)
    if seed % 2:
        x[20:60] = x[:40].clone()
    if seed == 2:
        x[:, 2], y[:, 2] = 0, 0
    return x, batch_x, y, batch_y


@pytest.mark.parametrize("seed, dtype", CASES)
def test_grid_radius_equals_brute_force(monkeypatch, seed, dtype):
    x, batch_x, y, batch_y = clouds(seed, dtype)
    for r, limit in ((0.3, 16), (0.5, None), (0.05, 3), (0.8, 5), (1.0, 2)):
        grid, brute = both(monkeypatch, lambda: pyg.radius(x, y, r, batch_x, batch_y, limit, batch_size=5))
        assert torch.equal(grid, brute), (r, limit)
    for limit in (10, 3, None):
        grid, brute = both(monkeypatch, lambda: pyg.radius_graph(x, 0.6, batch_x, max_num_neighbors=limit))
        assert torch.equal(grid, brute), limit


@pytest.mark.parametrize("seed, dtype", CASES)
def test_grid_knn_and_knn_graph_equal_brute_force(monkeypatch, seed, dtype):
    x, batch_x, y, batch_y = clouds(seed, dtype)
    for k in (1, 5, 16, 40):
        grid, brute = both(monkeypatch, lambda: pyg.knn(x, y, k, batch_x, batch_y, batch_size=5))
        assert torch.equal(grid, brute), k
        for loop in (False, True):
            grid, brute = both(monkeypatch, lambda: pyg.knn_graph(x, k, batch_x, loop))
            assert torch.equal(grid, brute), (k, loop)
    flat_x, flat_y = torch.nn.functional.pad(x[:, :2], (0, 1)), torch.nn.functional.pad(y[:, :2], (0, 1))
    grid, _ = both(monkeypatch, lambda: pyg.knn(x[:, :2], y[:, :2], 6, batch_x, batch_y, batch_size=5))
    _, brute = both(monkeypatch, lambda: pyg.knn(flat_x, flat_y, 6, batch_x, batch_y, batch_size=5))
    assert torch.equal(grid, brute)  # 2-D: pointnet2's kernel on the points padded to 3-D (not cdist's rounding)


def test_large_searches_take_the_grid_and_equal_torch_cluster(monkeypatch):
    torch_cluster = pytest.importorskip("torch_cluster")
    calls = []
    for name in ("radius", "knn"):
        counted = lambda *a, _f=getattr(grid_search, name), **k: calls.append(1) or _f(*a, **k)  # noqa: E731
        monkeypatch.setattr(grid_search, name, counted)
    x = torch.rand(20000, 3, generator=torch.Generator().manual_seed(0))
    batch = torch.arange(2).repeat_interleave(10000)
    edges = pyg.radius_graph(x, 0.04, batch, max_num_neighbors=None)
    want = torch_cluster.radius_graph(x, 0.04, batch, max_num_neighbors=10**6)
    assert edges.shape[1] > 50000 and set(map(tuple, edges.t().tolist())) == set(map(tuple, want.t().tolist()))
    edges = pyg.knn(x, x[::7], 12, batch, batch[::7])
    want = torch_cluster.knn(x, x[::7], 12, batch, batch[::7])
    assert set(map(tuple, edges.t().tolist())) == set(map(tuple, want.t().tolist()))
    assert len(calls) == 2
