"""PyG 2.8's own point layers run on pckeypoints' ops without pyg-lib (pk.use_as_pyg_backend)."""
import subprocess
import sys

import pytest
import torch

import pckeypoints as pk
from pckeypoints.ops import pyg as pyg_ops

pyg = pytest.importorskip("torch_geometric")
import torch_geometric.nn as gnn  # noqa: E402
import torch_geometric.transforms as T  # noqa: E402
from torch_geometric.data import Data  # noqa: E402

SIZES = [40, 7, 63, 25]


@pytest.fixture(scope="module", autouse=True)
def backend():
    import torch_geometric.typing as pyg_typing

    if pyg_typing.WITH_PYG_LIB and not pk.use_as_pyg_backend():
        pytest.skip("pyg-lib provides the ops")
    pk.use_as_pyg_backend()


def ragged(sizes, dim=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(sum(sizes), dim, generator=g) * 2 - 1
    return x, torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])


def edge_set(edge_index):
    return sorted(map(tuple, edge_index.t().tolist()))


@pytest.mark.parametrize("dim", [3, 2, 5])
def test_pyg_fps_knn_radius_equal_the_toolkits(dim):
    x, batch = ragged(SIZES, dim)
    y, batch_y = ragged([5, 9, 0, 12], dim, seed=1)
    assert torch.equal(gnn.fps(x, batch, 0.3, random_start=False), pyg_ops.fps(x, batch, 0.3, random_start=False))
    assert torch.equal(gnn.fps(x, ratio=0.3, random_start=False), pyg_ops.fps(x, ratio=0.3, random_start=False))
    assert torch.equal(gnn.knn(x, y, 6, batch, batch_y), pyg_ops.knn(x, y, 6, batch, batch_y))
    assert torch.equal(gnn.knn(x, y, 6), pyg_ops.knn(x, y, 6))
    assert torch.equal(gnn.radius(x, y, 0.7, batch, batch_y, 8), pyg_ops.radius(x, y, 0.7, batch, batch_y, 8))
    for loop in (False, True):
        for flow in ("source_to_target", "target_to_source"):
            assert torch.equal(gnn.knn_graph(x, 5, batch, loop, flow), pyg_ops.knn_graph(x, 5, batch, loop, flow))
            assert torch.equal(gnn.radius_graph(x, 0.6, batch, loop, 9, flow),
                               pyg_ops.radius_graph(x, 0.6, batch, loop, 9, flow))
    assert torch.equal(gnn.nearest(x, y), pyg_ops.knn(x, y, 1)[1])


def test_pyg_knn_interpolate_and_transforms_equal_the_toolkits():
    x, batch = ragged(SIZES, seed=2)
    y, batch_y = ragged([3, 5, 4, 6], seed=3)
    feats = torch.randn(x.shape[0], 4)
    got = gnn.knn_interpolate(feats, x, y, batch, batch_y, k=3)
    assert torch.allclose(got, pk.knn_interpolate(feats, x, y, batch, batch_y, k=3), atol=1e-6)
    assert torch.equal(T.KNNGraph(k=4)(Data(pos=x, batch=batch)).edge_index, pyg_ops.knn_graph(x, 4, batch))
    data = T.KNNGraph(k=4, force_undirected=True)(Data(pos=x))
    want = pyg_ops.knn_graph(x, 4)
    assert edge_set(data.edge_index) == sorted(set(edge_set(torch.cat([want, want.flip(0)], 1))))
    data = T.RadiusGraph(0.4, max_num_neighbors=100)(Data(pos=x))
    assert edge_set(data.edge_index) == edge_set(pyg_ops.radius_graph(x, 0.4, max_num_neighbors=100))


def test_dynamic_edge_conv_equals_edge_conv_on_the_toolkits_knn_graph():
    x, batch = ragged(SIZES, dim=6, seed=4)
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8))
    dynamic, static = gnn.DynamicEdgeConv(mlp, k=5), gnn.EdgeConv(mlp)  # each resets the shared mlp once
    got = dynamic(x, batch)
    want = static(x, pk.knn_graph(x, 5, batch, loop=True))
    assert torch.equal(got, want)
    got.sum().backward()  # gradients flow through the layer (not the search)
    assert mlp[0].weight.grad is not None


def test_pyg_ops_equal_torch_clusters():
    torch_cluster = pytest.importorskip("torch_cluster")
    x, batch = ragged(SIZES, seed=5)
    y, batch_y = ragged([6, 4, 10, 3], seed=6)
    assert torch.equal(gnn.fps(x, batch, 0.5, False), torch_cluster.fps(x, batch, 0.5, False))
    assert edge_set(gnn.knn(x, y, 9, batch, batch_y)) == edge_set(torch_cluster.knn(x, y, 9, batch, batch_y))
    assert edge_set(gnn.radius(x, y, 0.8, batch, batch_y, 100)) == edge_set(
        torch_cluster.radius(x, y, 0.8, batch, batch_y, max_num_neighbors=100))
    assert edge_set(gnn.knn_graph(x, 5, batch)) == edge_set(torch_cluster.knn_graph(x, 5, batch))
    assert edge_set(gnn.radius_graph(x, 0.5, batch, max_num_neighbors=100)) == edge_set(
        torch_cluster.radius_graph(x, 0.5, batch, max_num_neighbors=100))
    cut = gnn.radius_graph(x, 0.5, batch, max_num_neighbors=4)
    full = gnn.radius_graph(x, 0.5, batch, max_num_neighbors=None)
    assert torch.equal(cut[1].bincount(minlength=x.shape[0]), full[1].bincount(minlength=x.shape[0]).clamp(max=4))


PRESENT = """
import torch, torch_geometric.typing as t
t.WITH_PYG_LIB = True
for flag in {flags}:
    setattr(t, flag, True)  # pyg-lib (simulated) provides these
import pckeypoints as pk
served = pk.use_as_pyg_backend()
print(served, [hasattr(torch.ops.pyg, n) for n in ("fps", "knn", "radius", "nearest")], t.WITH_FPS, t.WITH_KNN)
"""


@pytest.mark.parametrize("flags, want", [
    (["WITH_FPS", "WITH_KNN", "WITH_RADIUS", "WITH_NEAREST"], "[] [False, False, False, False] True True"),
    (["WITH_KNN"], "['fps', 'radius', 'nearest'] [True, False, True, True] True True"),  # an older pyg-lib
])
def test_nothing_changes_where_pyg_lib_provides_the_ops(flags, want):
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", PRESENT.format(flags=flags)], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == want
