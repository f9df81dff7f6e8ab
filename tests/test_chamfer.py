import math

import pytest
import torch

from pckeypoints.chamfer import (
    chamfer_distance,
    composite_chamfer_distance,
    greedy_coverage,
)

EPS = 1e-4


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


def test_chamfer_distance_against_loops():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(2, 9, 3, generator=g), torch.randn(2, 13, 3, generator=g)
    got = chamfer_distance(x, y)
    for b in range(2):
        assert got[b].item() == pytest.approx(brute_chamfer(x[b], y[b]), rel=1e-5)
    # Identical clouds: every nearest distance is the smoothing floor sqrt(eps).
    assert chamfer_distance(x, x)[0].item() == pytest.approx(2 * math.sqrt(EPS), rel=1e-5)


@pytest.mark.parametrize("scale", [0.2, 0.5, 1.0])
def test_composite_chamfer_against_loops(scale):
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


def test_composite_chamfer_gradients_match_finite_differences():
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
    with pytest.raises(ValueError, match="one per part"):
        composite_chamfer_distance(points, parts, torch.rand(2, 4))
    with pytest.raises(ValueError, match="NaN"):
        composite_chamfer_distance(points.clone().fill_(float("nan")), parts, torch.rand(2, 3))
    with pytest.raises(ValueError, match="empty"):
        chamfer_distance(torch.zeros(2, 0, 3), points)
    with pytest.raises(ValueError, match="parts"):
        composite_chamfer_distance(points, parts[:1], torch.rand(1, 3))


def test_chunked_search_matches_single_pass(monkeypatch):
    import pckeypoints.chamfer as chamfer

    g = torch.Generator().manual_seed(4)
    points, parts, act = torch.randn(3, 20, 3, generator=g), torch.randn(3, 4, 5, 3, generator=g), torch.rand(3, 4, generator=g)
    whole = composite_chamfer_distance(points, parts, act)
    monkeypatch.setattr(chamfer, "_CHUNK_ENTRIES", 1)  # one batch element per cdist
    chunked = composite_chamfer_distance(points, parts, act)
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b)
