import math

import pytest
import torch

import pckeypoints.ops.chamfer as chamfer
from pckeypoints.ops.chamfer import (
    chamfer_distance,
    composite_chamfer_distance,
    greedy_coverage,
)

EPS = 1e-4


@pytest.fixture(params=["kernel", "dense"])
def search(request, monkeypatch):
    """Runs a test with the C++ nearest-neighbour kernel and with the dense torch.cdist search."""
    if request.param == "dense":
        monkeypatch.setattr(chamfer, "_kernel_or_warn", lambda: None)
    else:
        chamfer._kernel()  # a build failure fails the test instead of falling back
    return request.param


def dist(a, b):
    return math.sqrt(sum((float(u) - float(v)) ** 2 for u, v in zip(a, b)) + EPS)


def brute_chamfer(x, y):
    """Python loops over one pair of clouds."""
    fwd = sum(min(dist(p, q) for q in y) for p in x) / len(x)
    bwd = sum(min(dist(q, p) for p in x) for q in y) / len(y)
    return fwd + bwd


def brute_composite(points, parts, act, penalty):
    """Skeleton Merger's composite Chamfer distance for one cloud, written with loops."""
    num_parts = len(parts)
    rec_to_input = 0.0
    for p in range(num_parts):
        mean = sum(min(dist(r, x) for x in points) for r in parts[p]) / len(parts[p])
        rec_to_input += float(act[p]) * mean
    rec_to_input /= num_parts
    input_to_rec = 0.0
    for x in points:
        per_part = [(min(dist(x, r) for r in parts[p]), p) for p in range(num_parts)]
        remaining = 1.0
        for d, p in sorted(per_part):
            w = min(remaining, float(act[p]))
            input_to_rec += w * d
            remaining -= w
        input_to_rec += penalty * remaining
    return rec_to_input, input_to_rec / len(points)


def test_chamfer_distance_against_loops(search):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(2, 9, 3, generator=g), torch.randn(2, 13, 3, generator=g)
    got = chamfer_distance(x, y)
    for b in range(2):
        assert got[b].item() == pytest.approx(brute_chamfer(x[b], y[b]), rel=1e-5)
    # Identical clouds: every nearest distance is the smoothing floor sqrt(eps).
    assert chamfer_distance(x, x)[0].item() == pytest.approx(2 * math.sqrt(EPS), rel=1e-5)


@pytest.mark.parametrize("scale", [0.2, 0.5, 1.0])
def test_composite_chamfer_against_loops(scale, search):
    # scale varies the activations: small ones leave points uncovered (penalty), large ones saturate at 1.
    g = torch.Generator().manual_seed(2)
    points = torch.randn(2, 12, 3, generator=g)
    parts = torch.randn(2, 5, 4, 3, generator=g)
    act = torch.rand(2, 5, generator=g) * scale
    got = composite_chamfer_distance(points, parts, act, uncovered_penalty=7.0)
    for b in range(2):
        ref = brute_composite(points[b], parts[b], act[b], 7.0)
        assert got.reconstruction_to_input[b].item() == pytest.approx(ref[0], rel=1e-5)
        assert got.input_to_reconstruction[b].item() == pytest.approx(ref[1], rel=1e-5)


def test_greedy_coverage_hand_case():
    # Parts sorted by distance: 1 (a=0.5), 2 (a=0.3), 0 (a=0.6): weights 0.5, 0.3, then 0.2 of part 0.
    w, missing = greedy_coverage(torch.tensor([[[3.0, 1.0, 2.0]]]), torch.tensor([[0.6, 0.5, 0.3]]))
    torch.testing.assert_close(w, torch.tensor([[[0.2, 0.5, 0.3]]]))
    assert missing.item() == pytest.approx(0.0)
    w, missing = greedy_coverage(torch.tensor([[[3.0, 1.0, 2.0]]]), torch.tensor([[0.1, 0.5, 0.3]]))
    torch.testing.assert_close(w, torch.tensor([[[0.1, 0.5, 0.3]]]))
    assert missing.item() == pytest.approx(0.1)


def test_composite_chamfer_gradients_match_finite_differences(search):
    g = torch.Generator().manual_seed(3)
    points = torch.randn(1, 6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    parts = torch.randn(1, 3, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    act = (torch.rand(1, 3, generator=g, dtype=torch.float64) * 0.6 + 0.2).requires_grad_()

    def total(points, parts, act):
        d = composite_chamfer_distance(points, parts, act, uncovered_penalty=3.0)
        return d.reconstruction_to_input + d.input_to_reconstruction

    # Generic random clouds: no ties in any min or sort, so the loss is smooth around this input.
    assert torch.autograd.gradcheck(total, (points, parts, act))


def test_composite_chamfer_bad_input():
    points, parts = torch.randn(2, 8, 3), torch.randn(2, 3, 4, 3)
    with pytest.raises(ValueError, match="activations"):
        composite_chamfer_distance(points, parts, torch.full((2, 3), 1.5))
    with pytest.raises(ValueError, match="activations"):
        composite_chamfer_distance(points, parts, torch.full((2, 3), float("nan")))
    with pytest.raises(ValueError, match="one per part"):
        composite_chamfer_distance(points, parts, torch.rand(2, 4), validate=False)  # shapes: always checked
    with pytest.raises(ValueError, match="NaN"):
        composite_chamfer_distance(points.clone().fill_(float("nan")), parts, torch.rand(2, 3))
    with pytest.raises(ValueError, match="empty"):
        chamfer_distance(torch.zeros(2, 0, 3), points)
    with pytest.raises(ValueError, match="parts"):
        composite_chamfer_distance(points, parts[:1], torch.rand(1, 3))


def test_chunked_search_matches_single_pass(monkeypatch):
    g = torch.Generator().manual_seed(4)
    points, parts, act = torch.randn(3, 20, 3, generator=g), torch.randn(3, 4, 5, 3, generator=g), torch.rand(3, 4, generator=g)
    monkeypatch.setattr(chamfer, "_kernel_or_warn", lambda: None)
    whole = composite_chamfer_distance(points, parts, act)
    monkeypatch.setattr(chamfer, "_CHUNK_ENTRIES", 1)  # one batch element per cdist
    chunked = composite_chamfer_distance(points, parts, act)
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("groups", [1, 7])
def test_nearest_kernel_matches_dense_search(dtype, groups):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 300, 3, generator=g, dtype=dtype)
    y = torch.randn(3, groups * 40, 3, generator=g, dtype=dtype)
    y[:, 5] = y[:, 3]  # exact ties: both searches keep the lower index
    x[:, 9] = x[:, 2]
    got = chamfer._nearest_indices(x, y, groups, backend="kernel")
    want = chamfer._nearest_indices(x, y, groups, backend="dense")
    assert got[0].shape == (3, 300, groups) and got[1].shape == (3, groups * 40)
    group_of = got[0] // 40
    assert torch.equal(group_of, torch.arange(groups).expand_as(group_of))
    if dtype == torch.float64:  # torch.cdist's rounding may break near-ties differently in float32
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    # Either way the chosen neighbours are nearest: equal distances, to rounding.
    torch.testing.assert_close(chamfer._squared_distance(x, y, got[0]), chamfer._squared_distance(x, y, want[0]))
    torch.testing.assert_close(chamfer._squared_distance(y, x, got[1][..., None]),
                               chamfer._squared_distance(y, x, want[1][..., None]))


@pytest.mark.parametrize("scale", [0.05, 0.3, 1.0])
def test_coverage_kernel_matches_pytorch(scale, monkeypatch):
    # scale 0.05: every point uncovered (penalty), 0.3: a few parts per point, 1.0: mostly the nearest part alone.
    g = torch.Generator().manual_seed(6)
    inputs = (torch.randn(3, 200, 3, generator=g, dtype=torch.float64), torch.randn(3, 10, 6, 3, generator=g,
              dtype=torch.float64), torch.rand(3, 10, generator=g, dtype=torch.float64) * scale)

    def value_and_grads():
        leaves = [t.clone().requires_grad_() for t in inputs]
        d = composite_chamfer_distance(*leaves, uncovered_penalty=4.0)
        (d.input_to_reconstruction * torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)).sum().backward()
        return [d.input_to_reconstruction] + [t.grad for t in leaves]

    chamfer._kernel()
    fused = value_and_grads()
    monkeypatch.setattr(chamfer, "_kernel_or_warn", lambda: None)
    for got, want in zip(fused, value_and_grads()):
        torch.testing.assert_close(got, want)
