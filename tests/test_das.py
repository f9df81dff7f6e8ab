import itertools

import pytest
import torch

from pckeypoints.metrics import dual_alignment_score, keypoint_miou
from pckeypoints.metrics.das import alignment_votes, das_from_votes, keypoint_matches


def _annotation(xyz, ids):
    return torch.tensor(xyz, dtype=torch.float64), torch.tensor(ids)


def _three_shapes():
    """Three shapes with id 0 at (0,0,0) and id 1 at (1,0,0); two predictions each.

    Labels (nearest annotation of each prediction): A (0.1, 0.9) -> [0, 1]; B (0.9, 0.8) -> [1, 1]; C like A.
    Forward: p0 labels [0, 1, 0] agree on 2 of 6 ordered pairs, p1 labels [1, 1, 1] on 6 of 6: (2 + 6) / 12 = 2/3.
    Backward (nearest prediction of each id): id 0 -> [0, 1, 0], id 1 -> [1, 0, 1]: 2/6 each, mean 1/3.
    DAS = (2/3 + 1/3) / 2 = 1/2.
    """
    pred = torch.tensor([[[0.1, 0, 0], [0.9, 0, 0]], [[0.9, 0, 0], [0.8, 0, 0]], [[0.1, 0, 0], [0.9, 0, 0]]])
    annotations = [_annotation([[0, 0, 0], [1, 0, 0]], [0, 1])] * 3
    return pred, annotations


def test_das_hand_case():
    result = dual_alignment_score(*_three_shapes())
    assert result.forward == pytest.approx(2 / 3)
    assert result.backward == pytest.approx(1 / 3)
    assert result.das == pytest.approx(1 / 2)


def test_das_ids_on_one_shape_leave_backward():
    # A has ids {0, 1}, B has {0, 2}; one prediction each. Forward: labels 0 (A) and 2 (B) disagree -> 0.
    # Backward: only id 0 is on both shapes, and both pick prediction 0 -> 1. DAS = 1/2.
    pred = torch.tensor([[[0.1, 0, 0]], [[0, 0.9, 0]]])
    annotations = [_annotation([[0, 0, 0], [1, 0, 0]], [0, 1]), _annotation([[0, 0, 0], [0, 1, 0]], [0, 2])]
    result = dual_alignment_score(pred, annotations)
    assert (result.forward, result.backward, result.das) == (0.0, 1.0, 0.5)


def test_das_is_one_for_a_consistent_permutation():
    torch.manual_seed(0)
    shapes, ids = 5, 6
    permutation = torch.randperm(ids)
    annotations = [(torch.rand(ids, 3), torch.randperm(ids)) for _ in range(shapes)]
    # prediction p of every shape sits on that shape's keypoint with semantic id permutation[p]
    pred = torch.stack([xyz[torch.argsort(order)[permutation]] for xyz, order in annotations])
    result = dual_alignment_score(pred, annotations)
    assert (result.forward, result.backward, result.das) == (1.0, 1.0, 1.0)


def test_das_self_pairs_hand_case():
    # The shapes of _three_shapes with every shape also paired with itself (3 x 3 ordered pairs).
    # Forward: p0 labels [0, 1, 0] agree on 2*2 + 1*1 = 5 of 9 pairs, p1 labels [1, 1, 1] on 9 of 9: 14/18 = 7/9.
    # Backward: id 0 -> predictions [0, 1, 0] and id 1 -> [1, 0, 1] agree on 5 of 9 each: 5/9. DAS = 2/3.
    result = dual_alignment_score(*_three_shapes(), self_pairs=True)
    assert result.forward == pytest.approx(7 / 9)
    assert result.backward == pytest.approx(5 / 9)
    assert result.das == pytest.approx(2 / 3)


def test_das_self_pairs_ids_on_one_shape_count_one():
    # A has ids {0, 1} at x = 0 and x = 1, B has {0, 2} at the origin and y = 1; two predictions each.
    # Labels: A (0.1, 0, 0), (0.9, 0, 0) -> [0, 1]; B (0, 0.9, 0), (0, 0.1, 0) -> [2, 0].
    # Nearest prediction: A id 0 -> 0, id 1 -> 1; B id 0 -> 1, id 2 -> 0.
    # Strict: forward 0 (no label agrees across A, B); backward: only id 0 is shared, and it disagrees -> 0.
    # Self-pairs (2 x 2 pairs): forward p0 [0, 2] and p1 [1, 0] agree on the 2 self-pairs each -> 1/2;
    #   backward id 0 [0, 1] -> 2/4, ids 1 and 2 seen on one shape -> 1 each: (1/2 + 1 + 1) / 3 = 5/6. DAS = 2/3.
    pred = torch.tensor([[[0.1, 0, 0], [0.9, 0, 0]], [[0, 0.9, 0], [0, 0.1, 0]]])
    annotations = [_annotation([[0, 0, 0], [1, 0, 0]], [0, 1]), _annotation([[0, 0, 0], [0, 1, 0]], [0, 2])]
    strict = dual_alignment_score(pred, annotations)
    assert (strict.forward, strict.backward, strict.das) == (0.0, 0.0, 0.0)
    published = dual_alignment_score(pred, annotations, self_pairs=True)
    assert published.forward == pytest.approx(1 / 2)
    assert published.backward == pytest.approx(5 / 6)
    assert published.das == pytest.approx(2 / 3)


def test_das_self_pairs_single_shape_is_one():
    pred, annotations = _three_shapes()
    result = dual_alignment_score(pred[1:2], annotations[1:2], self_pairs=True)
    assert (result.forward, result.backward, result.das) == (1.0, 1.0, 1.0)


def test_das_ignores_min_max_normalisation():
    # Skeleton Merger maps each shape (cloud, keypoints, predictions) by (x - min) / (max - min) * 2 - 1.
    pred, annotations = _random_case(0)
    normalised_pred, normalised = [], []
    for shape_pred, (xyz, ids) in zip(pred, annotations):
        low, high = xyz.min(), xyz.max() + 1

        def normalise(x):
            return (x - low) / (high - low) * 2 - 1

        normalised_pred.append(normalise(shape_pred))
        normalised.append((normalise(xyz), ids))
    for self_pairs in (False, True):
        expected = dual_alignment_score(pred, annotations, self_pairs=self_pairs)
        result = dual_alignment_score(torch.stack(normalised_pred), normalised, self_pairs=self_pairs)
        assert result.das == pytest.approx(expected.das)


def _reference_das(pred, annotations, self_pairs=False):
    """Loop over pairs, straight from the definition (with self_pairs, as Skeleton Merger's eval_keypointnet.py)."""
    labels, nearest = [], []
    for shape_pred, (xyz, ids) in zip(pred, annotations):
        distances = torch.cdist(shape_pred.double(), xyz.double())
        labels.append([int(ids[j]) for j in distances.argmin(1)])
        nearest.append({int(i): int(p) for i, p in zip(ids, distances.argmin(0))})
    def ordered_pairs(shapes):
        return itertools.product(shapes, repeat=2) if self_pairs else itertools.permutations(shapes, 2)

    pairs = list(ordered_pairs(range(len(pred))))
    forward = sum(labels[s][p] == labels[t][p] for s, t in pairs for p in range(pred.shape[1]))
    forward /= len(pairs) * pred.shape[1]
    scores = []
    for i in sorted(set().union(*nearest)):
        having = [s for s in range(len(pred)) if i in nearest[s]]
        if len(having) >= (1 if self_pairs else 2):
            agree = [nearest[s][i] == nearest[t][i] for s, t in ordered_pairs(having)]
            scores.append(sum(agree) / len(agree))
    backward = sum(scores) / len(scores)
    return forward, backward


def _random_case(seed, shapes=7, num_pred=5, num_ids=6):
    generator = torch.Generator().manual_seed(seed)
    pred = torch.rand(shapes, num_pred, 3, generator=generator)
    annotations = []
    for _ in range(shapes):
        ids = torch.randperm(num_ids, generator=generator)[:int(torch.randint(1, num_ids + 1, (), generator=generator))]
        annotations.append((torch.rand(len(ids), 3, generator=generator), ids))
    return pred, annotations


@pytest.mark.parametrize("self_pairs", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_das_matches_reference_and_ignores_shape_order(seed, self_pairs):
    pred, annotations = _random_case(seed)
    result = dual_alignment_score(pred, annotations, self_pairs=self_pairs)
    forward, backward = _reference_das(pred, annotations, self_pairs)
    assert result.forward == pytest.approx(forward)
    assert result.backward == pytest.approx(backward)
    order = torch.randperm(len(pred), generator=torch.Generator().manual_seed(100 + seed))
    shuffled = dual_alignment_score(pred[order], [annotations[i] for i in order], self_pairs=self_pairs)
    assert shuffled.das == pytest.approx(result.das)


@pytest.mark.parametrize("self_pairs", [False, True])
def test_weighted_votes_equal_the_score_of_repeated_shapes(self_pairs):
    # A bootstrap resample weights shapes: weights (2, 1, 0, 3, 1, 0, 1) must score like the list that repeats them.
    pred, annotations = _random_case(3)
    weights = torch.tensor([2.0, 1, 0, 3, 1, 0, 1], dtype=torch.float64)
    repeated = [s for s, w in enumerate(weights.long().tolist()) for _ in range(w)]
    want = dual_alignment_score(pred[repeated], [annotations[s] for s in repeated], self_pairs=self_pairs)
    votes = alignment_votes(pred, annotations)
    got = das_from_votes(torch.einsum("s,spi->pi", weights, votes.forward),
                         torch.einsum("s,sip->ip", weights, votes.backward), weights.sum(), self_pairs)
    assert [float(v) for v in got] == pytest.approx([want.das, want.forward, want.backward])
    # batched over resamples: (2, S) weights give both scores at once
    both = das_from_votes(torch.einsum("ds,spi->dpi", torch.stack([weights, torch.ones(7)]), votes.forward),
                          torch.einsum("ds,sip->dip", torch.stack([weights, torch.ones(7)]), votes.backward),
                          torch.tensor([weights.sum(), 7.0]), self_pairs)
    assert float(both[0][0]) == pytest.approx(want.das)
    assert float(both[0][1]) == pytest.approx(dual_alignment_score(pred, annotations, self_pairs=self_pairs).das)


def test_keypoint_matches_weighted_equal_the_miou_of_repeated_shapes():
    pred, annotations = _random_case(4)
    gt = [xyz for xyz, _ in annotations]
    counts = keypoint_matches(pred, gt, None, [0.2, 0.4])  # (S, T, 3)
    weights = torch.tensor([0.0, 2, 1, 1, 0, 3, 1], dtype=torch.float64)
    repeated = [s for s, w in enumerate(weights.long().tolist()) for _ in range(w)]
    pooled = torch.einsum("s,stc->tc", weights, counts)
    torch.testing.assert_close((pooled[:, 0] / (pooled[:, 2] + pooled[:, 1])).float(),
                               keypoint_miou(pred[repeated], [gt[s] for s in repeated], None, [0.2, 0.4]))


def test_das_bad_input():
    pred, annotations = _three_shapes()
    with pytest.raises(ValueError, match="S >= 2"):
        dual_alignment_score(pred[:1], annotations[:1])
    with pytest.raises(ValueError, match="S >= 1"):
        dual_alignment_score(pred[:0], annotations[:0], self_pairs=True)
    with pytest.raises(ValueError, match="distinct"):
        dual_alignment_score(pred, [_annotation([[0, 0, 0], [1, 0, 0]], [0, 0])] * 3)
    with pytest.raises(ValueError, match="3 annotations for 2 shapes"):
        dual_alignment_score(pred[:2], annotations)
    with pytest.raises(ValueError, match="NaN"):
        dual_alignment_score(torch.full_like(pred, torch.nan), annotations)
    with pytest.raises(ValueError, match="two or more shapes"):
        dual_alignment_score(pred[:2], [_annotation([[0, 0, 0]], [0]), _annotation([[0, 0, 0]], [1])])


def test_miou_hand_case_pools_counts_over_shapes():
    # Shape 1: gt at x = 0 and 1; predictions at x = 0.05, 0.5, 1.2 (distances to nearest gt 0.05, 0.5, 0.2).
    #   t = 0:   TP 0, FP 3, FN 2 -> 0
    #   t = 0.1: gt0 matched; predictions 0.5 and 1.2 unmatched -> TP 1, FP 2, FN 1 -> 1/4
    #   t = 0.3: both gt matched; prediction 0.5 unmatched -> TP 2, FP 1, FN 0 -> 2/3
    #   t = 0.6: everything matched -> 1
    # Shape 2: gt at the origin and no prediction: FN 1. Pooled at t = 0.3: 2 / (2 + 1 + 1) = 1/2 (not the mean 1/3).
    pred = [torch.tensor([[0.05, 0, 0], [0.5, 0, 0], [1.2, 0, 0]]), torch.zeros(0, 3)]
    gt = [torch.tensor([[0.0, 0, 0], [1, 0, 0]]), torch.zeros(1, 3)]
    thresholds = [0.0, 0.1, 0.3, 0.6]
    torch.testing.assert_close(keypoint_miou(pred[:1], gt[:1], None, thresholds),
                               torch.tensor([0, 1 / 4, 2 / 3, 1.0]))
    torch.testing.assert_close(keypoint_miou(pred, gt, None, thresholds), torch.tensor([0, 1 / 5, 2 / 4, 2 / 3]))


def test_miou_geodesic_uses_the_surface():
    # A U-shaped path: its ends are 1 apart in space, 3 along the curve.
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    zeros, ones = torch.zeros(11, dtype=torch.float64), torch.ones(11, dtype=torch.float64)
    points = torch.cat([torch.stack([t, zeros, zeros], 1), torch.stack([ones, t, zeros], 1)[1:],
                        torch.stack([t.flip(0), ones, zeros], 1)[1:]])
    pred, gt = points[None, [30]], [points[[0]]]
    assert keypoint_miou(pred, gt, None, 1.5).item() == 1.0
    assert keypoint_miou(pred, gt, points[None], 1.5, k=2).item() == 0.0
    assert keypoint_miou(pred, gt, points[None], 3.1, k=2).item() == 1.0


def test_miou_bad_input():
    with pytest.raises(ValueError, match="same positive number"):
        keypoint_miou(torch.zeros(2, 1, 3), [torch.zeros(1, 3)], None, 0.1)
    with pytest.raises(ValueError, match="no keypoints"):
        keypoint_miou(torch.zeros(1, 1, 3), [torch.zeros(0, 3)], None, 0.1)
    with pytest.raises(ValueError, match=r"pred of shape 0 must be \(N, 3\)"):  # check_cloud's message
        keypoint_miou(torch.zeros(1, 1, 2), [torch.zeros(1, 3)], None, 0.1)
