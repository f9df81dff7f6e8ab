import pytest
import torch
from torch import nn

from pckeypoints.core.basis import PointBasis
from pckeypoints.core.head import KeypointHead, KeypointReadout
from pckeypoints.core.losses import KeypointLoss
from pckeypoints.ops.neighbors import knn_points
from pckeypoints.core.schedules import make_schedule


def ragged(sizes, channels, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(n, channels, generator=g) for n in sizes]
    ps = [torch.rand(n, 3, generator=g) for n in sizes]
    batch = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    return xs, ps, batch


def test_ragged_and_dense_heads_agree_on_equal_clouds():
    torch.manual_seed(0)
    head = KeypointHead(16, 5, hidden_channels=32, knn_k=4)
    x, pos = torch.randn(3, 40, 16), torch.rand(3, 40, 3)
    dense = head(x, pos)
    maps = head(x.reshape(-1, 16), pos.reshape(-1, 3), torch.arange(3).repeat_interleave(40))
    assert maps.logits.shape == (120, 5) and dense.logits.shape == (3, 5, 40)
    assert torch.allclose(dense.logits, maps.logits.view(3, 40, 5).transpose(1, 2), atol=1e-6)
    assert torch.allclose(dense.keypoints, maps.keypoints, atol=1e-6)
    assert torch.allclose(dense.probabilities, maps.probabilities.view(3, 40, 5).transpose(1, 2), atol=1e-6)
    assert torch.allclose(dense.basis.bandwidth, maps.basis.bandwidth, atol=1e-6)


def test_ragged_head_is_per_cloud_without_padding_on_unequal_clouds():
    torch.manual_seed(1)
    head = KeypointHead(8, 2, knn_k=3)
    sizes = [25, 11, 17]
    xs, ps, batch = ragged(sizes, 8)
    maps = head(torch.cat(xs), torch.cat(ps), batch)
    probs = maps.probabilities  # (N_total, K), no padding
    assert probs.shape == (53, 2)
    assert torch.allclose(torch.zeros(3, 2).index_add_(0, batch, probs), torch.ones(3, 2))
    padded = maps.to_dense()
    for i, n in enumerate(sizes):
        single = head(xs[i][None], ps[i][None])
        assert torch.allclose(maps.keypoints[i], single.keypoints[0], atol=1e-6)
        assert torch.allclose(probs[batch == i].T, single.probabilities[0], atol=1e-6)
        assert torch.isneginf(padded.logits[i, :, n:]).all()  # a plain softmax of padded logits is right
        assert torch.allclose(padded.logits[i].softmax(-1)[:, :n], single.probabilities[0], atol=1e-6)


def test_ragged_maps_train_with_the_dense_loss():
    head = KeypointHead(8, 2, knn_k=3)
    xs, ps, batch = ragged([20, 12], 8, seed=2)
    maps = head(torch.cat(xs), torch.cat(ps), batch).to_dense()
    loss = KeypointLoss("sampling", num_samples=3)(maps, torch.rand(2, 2, 3), tau=0.5)
    loss.backward()
    assert torch.isfinite(loss) and head.mlp[0].weight.grad.abs().sum() > 0


def test_unsorted_batch_is_a_clear_error():
    head = KeypointHead(8, 2, knn_k=3)
    xs, ps, batch = ragged([10, 10], 8)
    with pytest.raises(ValueError, match="batch must be sorted"):
        head(torch.cat(xs), torch.cat(ps), batch.flip(0))


def test_basis_from_the_callers_graph_equals_the_knn_basis_on_the_knn_graph():
    pos = torch.rand(2, 30, 3, generator=torch.Generator().manual_seed(3))
    index = knn_points(pos, pos, 5).index + torch.arange(2)[:, None, None] * 30  # (B, N, k) into pos.reshape(-1, 3)
    edge_index = torch.stack([index.reshape(-1), torch.arange(60).repeat_interleave(5)])  # neighbour -> point
    head = KeypointHead(4, 3, knn_k=4)
    x = torch.randn(2, 30, 4)
    from_graph, from_knn = head(x, pos, edge_index=edge_index), head(x, pos)
    assert torch.allclose(from_graph.basis.bandwidth, from_knn.basis.bandwidth, atol=1e-6)
    assert torch.allclose(from_graph.keypoints, from_knn.keypoints, atol=1e-6)


def test_the_mlp_is_pluggable_and_resettable():
    torch.manual_seed(4)
    mlp = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    head = KeypointHead(None, 3, mlp=mlp, fixed_sigma=0.05)
    assert head.mlp is mlp and "fixed_sigma=0.05" in repr(head) and "Linear(in_features=6" in repr(head)
    maps = head(torch.randn(2, 10, 6), torch.rand(2, 10, 3))
    assert maps.logits.shape == (2, 3, 10) and torch.all(maps.basis.bandwidth == 0.05)
    before = mlp[0].weight.clone()
    head.reset_parameters()
    assert not torch.equal(before, mlp[0].weight)
    with pytest.raises(ValueError, match=r"mlp must map features to \(\.\.\., K=4\)"):
        KeypointHead(None, 4, mlp=mlp)(torch.randn(2, 10, 6), torch.rand(2, 10, 3))


def test_readout_has_no_parameters():
    assert list(KeypointReadout().parameters()) == []


def test_head_gradients_reach_the_features():
    head = KeypointHead(8, 3, knn_k=3)
    x = torch.randn(2, 20, 8, requires_grad=True)
    head(x, torch.rand(2, 20, 3)).keypoints.sum().backward()
    assert x.grad.abs().sum() > 0


def test_head_rejects_mismatched_features():
    head = KeypointHead(8, 3)
    with pytest.raises(ValueError, match="features"):
        head(torch.randn(2, 20, 7), torch.rand(2, 20, 3))
    with pytest.raises(ValueError, match="features"):
        head(torch.randn(2, 19, 8), torch.rand(2, 20, 3))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("constant", [2.0, 2.0, 2.0, 2.0, 2.0]),
        ("linear", [2.0, 1.55, 1.1, 0.65, 0.2]),
        ("exponential", [2.0, 2.0 * 0.1**0.25, 2.0 * 0.1**0.5, 2.0 * 0.1**0.75, 0.2]),
        ("cosine", [2.0, 0.2 + 0.9 * (1 + 0.5**0.5), 1.1, 0.2 + 0.9 * (1 - 0.5**0.5), 0.2]),
    ],
)
def test_schedules_anneal_from_start_to_end(name, expected):
    s = make_schedule(name, 2.0, 0.2, epochs=5)
    values = []
    for _ in range(6):
        values.append(s.value)
        s.step()
    assert values == pytest.approx(expected + [0.2 if name != "constant" else 2.0])
    resumed = make_schedule(name, 2.0, 0.2, epochs=5)
    resumed.load_state_dict({"epoch": 2})
    assert resumed.value == pytest.approx(expected[2])
