import math
import sys

import numpy as np
import pytest
import torch

from pckeypoints import PCKeypointsError
from pckeypoints.core.argmax import soft_argmax
from pckeypoints.core.basis import PointBasis, knn_mean_distance


def test_knn_sigma_hand_computed_on_a_line():
    # Points at x = 0, 1, 3, 7: with k = 2 the two nearest other points of each are
    # 0 -> {1, 3}: mean 2; 1 -> {1, 2}: 1.5; 3 -> {2, 3}: 2.5; 7 -> {4, 6}: 5.
    pos = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [3, 0, 0], [7, 0, 0]]])
    basis = PointBasis.from_points(pos, k=2, factor=1.0)
    assert torch.allclose(basis.bandwidth[0, :, 0], torch.tensor([2.0, 1.5, 2.5, 5.0]))
    half = PointBasis.from_points(pos, k=2, factor=0.5)
    assert torch.allclose(half.bandwidth, basis.bandwidth / 2)


def test_duplicates_get_the_sigma_floor_never_zero_or_nan():
    pos = torch.zeros(1, 10, 3)
    pos[0, 5:] = 1.0  # two clumps of 5 exact duplicates
    basis = PointBasis.from_points(pos, k=4, min_sigma=1e-3)
    assert torch.isfinite(basis.bandwidth).all()
    assert torch.allclose(basis.bandwidth, torch.full_like(basis.bandwidth, 1e-3))
    # k = 5 reaches the other clump: distances 0,0,0,0,sqrt(3) over 5 neighbours.
    wider = PointBasis.from_points(pos, k=5, factor=1.0)
    assert torch.allclose(wider.bandwidth, torch.full_like(wider.bandwidth, 3**0.5 / 5))


def test_ragged_sigma_equals_per_cloud_dense():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(30, 3, generator=g), torch.rand(20, 3, generator=g)
    ragged = PointBasis.from_points(torch.cat([a, b]), torch.cat([torch.zeros(30), torch.ones(20)]).long(), k=4)
    assert ragged.pos.shape == (2, 30, 3) and ragged.mask.sum().item() == 50
    for i, cloud in enumerate([a, b]):
        dense = PointBasis.from_points(cloud[None], k=4)
        n = cloud.shape[0]
        assert torch.allclose(ragged.bandwidth[i, :n], dense.bandwidth[0])
        assert torch.equal(ragged.pos[i, :n], cloud)


def test_knn_mean_distance_matches_brute_force():
    g = torch.Generator().manual_seed(1)
    pos = torch.rand(64, 3, generator=g)
    d = torch.cdist(pos, pos)
    d.fill_diagonal_(float("inf"))
    expected = d.topk(6, largest=False).values.mean(-1)
    assert torch.allclose(knn_mean_distance(pos[None], 6)[0], expected, atol=1e-6)


def test_grid_positions_and_kinds():
    basis = PointBasis.grid((2, 3), spacing=(0.5, 2.0), origin=(1.0, -1.0), kind="triangular")
    expected = torch.tensor([[1.0, -1.0], [1, 1], [1, 3], [1.5, -1], [1.5, 1], [1.5, 3]])
    assert torch.equal(basis.pos[0], expected)
    assert torch.allclose(basis.variance[0, 0], torch.tensor([0.25, 4.0]) / 6)
    assert torch.allclose(PointBasis.grid((4,), kind="uniform").variance, torch.full((1, 4, 1), 1 / 12))


def test_uniform_and_triangular_need_a_grid():
    with pytest.raises(ValueError, match="grid"):
        PointBasis(torch.rand(1, 5, 3), 0.1, kind="uniform")
    with pytest.raises(ValueError, match="kind"):
        PointBasis.grid((4,), kind="box")


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: PointBasis.from_points(torch.rand(1, 5, 3), k=8), "more than k=8"),
        (lambda: PointBasis.from_points(torch.rand(2, 0, 3)), "empty"),
        (lambda: PointBasis.from_points(torch.rand(0, 3), torch.zeros(0, dtype=torch.long)), "empty"),
        (lambda: PointBasis.from_points(torch.tensor([[[0.0, float("nan"), 0]] * 20])), "NaN"),
        (lambda: PointBasis.from_points(torch.rand(20, 3)), r"\(B, N, D\)"),
        (lambda: PointBasis.from_points(torch.rand(20, 3), torch.zeros(19, dtype=torch.long)), "batch must be"),
        (lambda: PointBasis(torch.rand(1, 5, 3), 0.0), "> 0"),
        (lambda: PointBasis.grid((0, 3)), "grid shape"),
    ],
)
def test_bad_input_raises_clear_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_triangular_density_is_linear_interpolation_of_the_map():
    probs = torch.tensor([[[0.1, 0.4, 0.2, 0.3]]])
    basis = PointBasis.grid((4,), spacing=0.5, origin=1.0, kind="triangular")
    y = torch.linspace(0.0, 3.0, 301)
    dens = basis.density(y.view(1, 1, -1, 1), probs)[0, 0]
    nodes = np.concatenate([[0.5], basis.pos[0, :, 0].numpy(), [3.0]])
    values = np.concatenate([[0.0], probs[0, 0].numpy() / 0.5, [0.0]])
    assert np.allclose(dens.numpy(), np.interp(y.numpy(), nodes, values), atol=1e-6)


def test_bilinear_density_on_a_2d_grid():
    probs = torch.tensor([[[0.1, 0.2, 0.3, 0.4]]])
    basis = PointBasis.grid((2, 2), kind="triangular")
    y = torch.tensor([[[[0.25, 0.5]]]])  # inside the unit cell: bilinear weights
    w = torch.tensor([0.75 * 0.5, 0.75 * 0.5, 0.25 * 0.5, 0.25 * 0.5])
    assert torch.allclose(basis.density(y, probs)[0, 0, 0], (w * probs[0, 0]).sum())


def test_sigma_is_the_same_with_and_without_torch_cluster(monkeypatch):
    g = torch.Generator().manual_seed(2)
    pos, sizes = torch.rand(60, 3, generator=g), [25, 35]
    batch = torch.tensor([0] * sizes[0] + [1] * sizes[1])
    tc = pytest.importorskip("torch_cluster")
    row, col = tc.knn(pos, pos, 6, batch, batch)  # the old σ: torch-cluster's 5 nearest others
    expected = torch.zeros(60).index_add_(0, row, (pos[row] - pos[col]).norm(dim=-1)) / 5 * 0.5
    monkeypatch.setitem(sys.modules, "torch_cluster", None)  # `import torch_cluster` now fails
    with pytest.raises(ImportError):
        import torch_cluster  # noqa: F401
    ragged = PointBasis.from_points(pos, batch, k=5)
    assert torch.allclose(ragged.bandwidth[ragged.mask][:, 0], expected, atol=1e-6)
    dense = PointBasis.from_points(pos[None, : sizes[0]], k=5)
    assert torch.allclose(dense.bandwidth[0, :, 0], expected[: sizes[0]], atol=1e-6)


def test_knn_backends_agree_with_brute_force():
    from pckeypoints.ops import neighbors

    g = torch.Generator().manual_seed(3)
    points, query = torch.rand(2, 300, 3, generator=g, dtype=torch.float64), torch.rand(2, 40, 3, generator=g, dtype=torch.float64)
    d = torch.cdist(query, points)
    expected = d.topk(4, largest=False)
    for dim in (3, 2):  # the pointnet2 op and the PyTorch brute force
        got = neighbors.knn_points(query[..., :dim], points[..., :dim], 4)
        ref = torch.cdist(query[..., :dim], points[..., :dim]).topk(4, largest=False)
        assert torch.equal(got.index, ref.indices) and torch.allclose(got.distance, ref.values)
    tree = neighbors._kdtree(query, points, 4)  # large CPU searches
    assert torch.equal(tree.index, expected.indices) and torch.allclose(tree.distance, expected.values)


@pytest.mark.parametrize("loop", [False, True])
def test_knn_graph_is_pygs_graph_per_cloud(loop):
    from pckeypoints.ops.pyg import knn_graph

    g = torch.Generator().manual_seed(4)
    sizes = [30, 12, 21]
    x = torch.rand(sum(sizes), 5, generator=g)  # any dimension (DGCNN features)
    x[3] = x[2]  # an exact duplicate
    batch = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    edge_index = knn_graph(x, 4, batch, loop=loop)
    assert edge_index.shape == (2, 4 * sum(sizes))
    for i in range(len(x)):
        source = edge_index[0, edge_index[1] == i]
        same = (batch == batch[i]).nonzero().squeeze(1)
        d = (x[same] - x[i]).norm(dim=-1)
        if not loop:
            d[same == i] = float("inf")
        expected = d.topk(4, largest=False).values
        assert torch.allclose((x[source] - x[i]).norm(dim=-1), expected, atol=1e-6)
        assert bool((batch[source] == batch[i]).all()) and (loop or i not in source.tolist())


def test_grid_xy_normalized_soft_argmax_is_kornias_spatial_expectation():
    """kornia.geometry.subpix.spatial_expectation2d(softmax, normalized_coordinates=True): (x, y), centres
    linspace(-1, 1) along each axis; without kornia, its formula by hand."""
    logits = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    probs = logits.flatten(2).softmax(-1).view_as(logits)
    got = soft_argmax(logits.flatten(2), PointBasis.grid((5, 7), order="xy", normalized=True))
    x, y = torch.linspace(-1, 1, 7), torch.linspace(-1, 1, 5)
    by_hand = torch.stack([(probs * x).sum((2, 3)), (probs * y[:, None]).sum((2, 3))], dim=-1)
    assert torch.allclose(got, by_hand, atol=1e-6)
    try:
        from kornia.geometry.subpix import spatial_expectation2d
    except ImportError:
        return
    assert torch.allclose(got, spatial_expectation2d(probs, normalized_coordinates=True), atol=1e-6)


def test_grid_normalized_without_align_corners_is_dsntnns_and_xy_reverses_the_axes():
    basis = PointBasis.grid((4, 3, 2), kind="triangular", order="xy", normalized=True, align_corners=False)
    ij = PointBasis.grid((4, 3, 2), kind="triangular", normalized=True, align_corners=False)
    assert torch.equal(basis.pos, ij.pos.flip(-1)) and torch.equal(basis.bandwidth, ij.bandwidth.flip(-1))
    for axis, size in enumerate((4, 3, 2)):  # dsntnn's normalized_linspace: (2 i + 1) / S - 1, cell width 2 / S
        centres = ij.pos[0, :, axis].unique()
        assert torch.allclose(centres, (2 * torch.arange(size) + 1) / size - 1)
        assert torch.allclose(ij.bandwidth[0, 0, axis], torch.tensor(2 / size))
    assert PointBasis.grid((1, 3), normalized=True).pos[0, :, 0].tolist() == [0.0] * 3  # a size-1 axis is 0
    with pytest.raises(PCKeypointsError, match="leave spacing and origin out"):
        PointBasis.grid((4, 4), spacing=0.5, normalized=True)
    with pytest.raises(PCKeypointsError, match="order"):
        PointBasis.grid((4, 4), order="yx")


def test_gaussian_and_uniform_densities_by_hand():
    basis = PointBasis(torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]], dtype=torch.float64), 0.1)
    probs = torch.tensor([[[0.25, 0.75]]], dtype=torch.float64)
    y = torch.tensor([[[[0.1, 0.0, 0.0]]]], dtype=torch.float64)  # 1 σ from the first point, 9 σ from the second
    norm = (2 * math.pi * 0.1**2) ** -1.5
    want = 0.25 * norm * math.exp(-0.5) + 0.75 * norm * math.exp(-0.5 * 81)
    assert float(basis.density(y, probs)) == pytest.approx(want, rel=1e-12)
    assert float(basis.log_density(y, probs)) == pytest.approx(math.log(want), rel=1e-12)
    assert basis.log_components(y, torch.tensor([[[1.0, 0.0]]], dtype=torch.float64))[0, 0, 0, 1] == -math.inf
    boxes = PointBasis.grid((2,), spacing=0.5, kind="uniform")  # cells [-0.25, 0.25) and [0.25, 0.75) of height 2
    at = torch.tensor([0.0, 0.3, 0.8]).view(1, 1, 3, 1)
    assert boxes.density(at, torch.tensor([[[0.4, 0.6]]]))[0, 0].tolist() == pytest.approx([0.8, 1.2, 0.0])
