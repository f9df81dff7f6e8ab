"""PyG's point ops on pointnet2's kernels equal torch-cluster's on ragged batches."""
import pytest
import torch

from pckeypoints import PCKeypointsError
from pckeypoints.ops.pyg import fps, knn, knn_graph, knn_interpolate, radius, radius_graph

torch_cluster = pytest.importorskip("torch_cluster")

SIZES = [40, 7, 63, 25]  # unequal clouds; the second smaller than some k below


def ragged(sizes, dim=3, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(sum(sizes), dim, generator=g, dtype=dtype) * 2 - 1
    batch = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    return x, batch


def edge_set(edge_index):
    return sorted(map(tuple, edge_index.t().tolist()))


@pytest.mark.parametrize("dim", [3, 2])
@pytest.mark.parametrize("ratio", [0.5, 0.3])
def test_fps_equals_torch_cluster_from_the_first_point(dim, ratio):
    x, batch = ragged(SIZES, dim)
    got = fps(x, batch, ratio, random_start=False)
    assert torch.equal(got, torch_cluster.fps(x, batch, ratio, random_start=False))  # same order too


def test_fps_with_a_random_start_equals_torch_cluster_from_that_start():
    x, batch = ragged(SIZES, seed=1)
    torch.manual_seed(3)
    got = fps(x, batch, 0.4)
    starts = [int(got[int((batch[got] < b).sum())]) for b in range(len(SIZES))]  # each cloud's first pick
    assert any(s != int((batch < b).sum()) for b, s in enumerate(starts))  # not all at the clouds' first points
    # torch-cluster from index 0 on the clouds rotated to start there picks the same points
    ptr = [0, *torch.tensor(SIZES).cumsum(0).tolist()]
    order = torch.cat([torch.arange(s, e).roll(-(st - s)) for s, e, st in zip(ptr, ptr[1:], starts)])
    want = order[torch_cluster.fps(x[order], batch, 0.4, random_start=False)]
    assert torch.equal(got, want)


def test_fps_keeps_ceil_of_the_ratio_per_cloud_and_skips_empty_clouds():
    x, _ = ragged([10, 3])
    batch = torch.tensor([0] * 10 + [2] * 3)  # cloud 1 is empty
    got = fps(x, batch, 0.5, random_start=False)
    assert batch[got].tolist() == [0] * 5 + [2] * 2
    assert fps(x[:10], ratio=1.0, random_start=False).sort().values.tolist() == list(range(10))


@pytest.mark.parametrize("dim", [3, 2, 1])
def test_radius_equals_torch_cluster_on_ragged_batches(dim):
    x, batch_x = ragged(SIZES, dim, seed=2)
    y, batch_y = ragged([5, 9, 0, 12], dim, seed=3)  # the third cloud has no centres
    got = radius(x, y, 0.8, batch_x, batch_y, max_num_neighbors=100)  # every ball complete
    want = torch_cluster.radius(x, y, 0.8, batch_x, batch_y, max_num_neighbors=100)
    assert got.shape[1] > 50 and edge_set(got) == edge_set(want)
    assert torch.equal(got[0], got[0].sort().values)  # grouped by centre


def test_radius_keeps_the_first_neighbours_by_index():
    x, batch = ragged(SIZES, seed=4)
    full = radius(x, x, 0.8, batch, batch, max_num_neighbors=100)
    cut = radius(x, x, 0.8, batch, batch, max_num_neighbors=4)
    for i in range(x.shape[0]):
        assert cut[1, cut[0] == i].tolist() == full[1, full[0] == i].sort().values[:4].tolist()


@pytest.mark.parametrize("dim", [3, 6])
def test_knn_equals_torch_cluster_on_ragged_batches(dim):
    x, batch_x = ragged(SIZES, dim, seed=5)
    y, batch_y = ragged([6, 4, 10, 3], dim, seed=6)
    got = knn(x, y, 9, batch_x, batch_y)  # cloud 1 holds 7 < 9 points: all 7
    want = torch_cluster.knn(x, y, 9, batch_x, batch_y)
    assert edge_set(got) == edge_set(want) and got.shape[1] == 9 * (6 + 10 + 3) + 7 * 4
    d = (x[got[1]] - y[got[0]]).norm(dim=-1).view(-1)
    first = torch.cat([torch.tensor([True]), got[0, 1:] != got[0, :-1]])
    assert bool(((d[1:] >= d[:-1]) | first[1:]).all())  # nearest first


@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize("flow", ["source_to_target", "target_to_source"])
def test_graphs_equal_torch_cluster(loop, flow):
    x, batch = ragged(SIZES, seed=7)
    got = knn_graph(x, 5, batch, loop, flow)
    assert edge_set(got) == edge_set(torch_cluster.knn_graph(x, 5, batch, loop, flow))
    got = radius_graph(x, 0.5, batch, loop, 100, flow)
    assert edge_set(got) == edge_set(torch_cluster.radius_graph(x, 0.5, batch, loop, 100, flow))


def test_knn_interpolate_is_pygs_inverse_distance_mean():
    x, batch_x = ragged(SIZES, seed=8)
    y, batch_y = ragged([3, 5, 4, 6], seed=9)
    feats = torch.randn(x.shape[0], 4, generator=torch.Generator().manual_seed(0), requires_grad=True)
    got = knn_interpolate(feats, x, y, batch_x, batch_y, k=3)
    row, col = torch_cluster.knn(x, y, 3, batch_x, batch_y)
    w = 1 / (x[col] - y[row]).square().sum(-1, keepdim=True).clamp(min=1e-16)
    want = torch.zeros(y.shape[0], 4).index_add(0, row, feats[col] * w) / torch.zeros(y.shape[0], 1).index_add(0, row, w)
    assert torch.allclose(got, want, atol=1e-6)
    got.sum().backward()  # the weights of each target sum to 1
    assert torch.allclose(feats.grad.sum(), torch.tensor(float(y.shape[0] * 4)), atol=1e-4)


def test_bad_input_is_one_line_error():
    x, batch = ragged([5, 5])
    with pytest.raises(PCKeypointsError, match="sorted"):
        knn(x, x, 2, batch.flip(0), batch)
    with pytest.raises(PCKeypointsError, match="max_num_neighbors"):
        radius(x, x, 0.5, max_num_neighbors=0)
    with pytest.raises(PCKeypointsError, match="NaN"):
        radius(x, torch.full((1, 3), float("nan")), 0.5)
    with pytest.raises(PCKeypointsError, match="ratio"):
        fps(x, batch, ratio=0)


def test_radius_graph_truncates_to_torch_clusters_degrees():
    """Bug 2: the point itself is left out before counting max_num_neighbors (was 17 of 16 for most points)."""
    x = torch.rand(2000, 3, generator=torch.Generator().manual_seed(0))
    got = radius_graph(x, 0.3, max_num_neighbors=16)
    want = torch_cluster.radius_graph(x, 0.3, max_num_neighbors=16)
    assert got[1].bincount().max() == 16
    assert torch.equal(got[1].bincount(minlength=2000), want[1].bincount(minlength=2000))
    x, batch = ragged(SIZES, seed=10)
    full = radius_graph(x, 0.6, batch, max_num_neighbors=None)
    got = radius_graph(x, 0.6, batch, max_num_neighbors=5)
    assert bool((got[0] != got[1]).all())
    # min(ball, 5) others everywhere, as pyg-lib's ignore_same_index (torch-cluster 1.6.3 drops the point after
    # truncating: where its k-d tree's subset misses the point itself, 6 remain: points 67, 72, 75, 78 here)
    degree = got[1].bincount(minlength=x.shape[0])
    assert torch.equal(degree, full[1].bincount(minlength=x.shape[0]).clamp(max=5))
    with_loops = radius_graph(x, 0.6, batch, True, max_num_neighbors=5)
    want = torch_cluster.radius_graph(x, 0.6, batch, True, max_num_neighbors=5)
    assert torch.equal(with_loops[1].bincount(minlength=x.shape[0]), want[1].bincount(minlength=x.shape[0]))
    # the kept neighbours are the first others by index
    for i in range(x.shape[0]):
        assert got[0, got[1] == i].tolist() == full[0, full[1] == i].sort().values[:5].tolist()


def brute_radius(x, y, r, batch_x, batch_y):
    d = torch.cdist(y.double(), x.double())
    inside = (d < r) & (batch_y[:, None] == batch_x[None])
    return inside.nonzero().t()


@pytest.mark.parametrize("dim", [3, 5])
def test_radius_without_a_neighbour_limit_keeps_whole_balls(dim):
    """Bug 9: max_num_neighbors=None (PyG's advice for unbiased balls) keeps every point within r."""
    x, batch_x = ragged([300, 40, 500], dim, seed=11)
    y, batch_y = ragged([20, 5, 30], dim, seed=12)
    r = 1.4 if dim == 5 else 0.7
    got = radius(x, y, r, batch_x, batch_y, max_num_neighbors=None)
    want = brute_radius(x, y, r, batch_x, batch_y)
    assert got[0].bincount().max() > 64 and edge_set(got) == edge_set(want)  # balls beyond the first 64 slots
    assert edge_set(radius_graph(x, r, batch_x, max_num_neighbors=None)) == edge_set(
        torch_cluster.radius_graph(x, r, batch_x, max_num_neighbors=10**6))


@pytest.mark.parametrize("dim", [4, 7])
def test_fps_and_radius_take_more_than_three_dimensions(dim):
    """Bug 9: positions (or features) of any dimension, as PyG's ops take them."""
    x, batch = ragged(SIZES, dim, seed=13)
    assert torch.equal(fps(x, batch, 0.4, random_start=False), torch_cluster.fps(x, batch, 0.4, random_start=False))
    y, batch_y = ragged([5, 9, 0, 12], dim, seed=14)
    r = 1.0 if dim == 4 else 1.5
    got = radius(x, y, r, batch, batch_y, max_num_neighbors=100)
    assert edge_set(got) == edge_set(torch_cluster.radius(x, y, r, batch, batch_y, max_num_neighbors=100))
    assert edge_set(got) == edge_set(brute_radius(x, y, r, batch, batch_y)) and got.shape[1] > 20
    cut = radius(x, y, r, batch, batch_y, max_num_neighbors=3)
    for i in range(y.shape[0]):
        assert cut[1, cut[0] == i].tolist() == got[1, got[0] == i][:3].tolist()
