import pytest
import torch

from pckeypoints.head import KeypointHead
from pckeypoints.schedules import make_schedule


def test_ragged_and_dense_heads_agree_on_equal_clouds():
    torch.manual_seed(0)
    head = KeypointHead(16, 5, hidden_channels=32, k=4)
    x, pos = torch.randn(3, 40, 16), torch.rand(3, 40, 3)
    dense = head(x, pos)
    ragged = head(x.reshape(-1, 16), pos.reshape(-1, 3), torch.arange(3).repeat_interleave(40))
    assert torch.allclose(dense.logits, ragged.logits, atol=1e-6)
    assert torch.allclose(dense.keypoints, ragged.keypoints, atol=1e-6)
    assert torch.allclose(dense.basis.scale, ragged.basis.scale)


def test_ragged_head_softmax_is_per_cloud_on_unequal_clouds():
    torch.manual_seed(1)
    head = KeypointHead(8, 2, k=3)
    sizes = [25, 11, 17]
    xs, ps = [torch.randn(n, 8) for n in sizes], [torch.rand(n, 3) for n in sizes]
    batch = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    ragged = head(torch.cat(xs), torch.cat(ps), batch)
    assert ragged.probabilities.sum(-1).allclose(torch.ones(3, 2))
    for i, n in enumerate(sizes):
        single = head(xs[i][None], ps[i][None])
        assert torch.allclose(ragged.keypoints[i], single.keypoints[0], atol=1e-6)
        assert ragged.probabilities[i, :, n:].abs().sum() == 0


def test_head_gradients_reach_the_features():
    head = KeypointHead(8, 3, k=3)
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
