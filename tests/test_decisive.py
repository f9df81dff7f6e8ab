"""experiments/decisive.py: the pre-registered rule's verdict and the per-seed comparison on hand-made records."""
import numpy as np
import pytest

from experiments import decisive


@pytest.mark.parametrize("mean, ci, answer", [
    (1.0, [0.2, 1.8], "sampling wins"),
    (-1.0, [-1.8, -0.1], "soft-argmax + JS wins"),
    (1.0, [-0.2, 2.0], "no difference shown"),
    (-0.5, [-1.5, 0.5], "no difference shown"),
])
def test_the_rule(mean, ci, answer):
    pooled = {"n": 16, "mean": mean, "ci": ci}
    assert decisive.verdict(pooled, complete=True).startswith(answer)
    assert decisive.verdict({}, complete=False) == "no seed pairs yet"
    interim = decisive.verdict({"n": 2, "mean": mean, "ci": ci}, complete=False)
    assert interim == "interim (2 of 16 seed pairs): the rule is applied when all are scored"


def records(hits: list[bool]) -> dict:
    """Per-keypoint records of one run: 0.005 where the keypoint is hit, 0.02 where missed; one test model per
    two keypoints."""
    d = np.where(hits, 0.005, 0.02)
    return {"geo/expectation": d, "dist/expectation": d, "cloud": np.arange(len(hits)) // 2}


def test_comparison_per_seed_pair_category_and_pooled():
    """Bed: B hits 2 more of 4 keypoints in both seed pairs (+50 points each); bathtub: B hits one more, then one
    fewer (+25, −25). Pooled mean +25 over 4 pairs; the seed-pair differences are the rule's inputs."""
    miss, one, two = records([False] * 4), records([True, False, False, False]), records([True, True, False, False])
    pairs = {"bed": [(100, miss, two), (101, one, records([True, True, True, False]))],
             "bathtub": [(100, miss, one), (101, one, miss)]}
    out = decisive.comparison(pairs, geodesic=True)
    assert out["pairs"] == {"bed": {100: 50.0, 101: 50.0}, "bathtub": {100: 25.0, 101: -25.0}}
    assert out["bed"]["mean"] == 50.0 and out["bathtub"]["mean"] == 0.0 and out["pooled"]["mean"] == 25.0
    assert 0 <= out["bed"]["ci"][0] <= 50 <= out["bed"]["ci"][1] <= 100
    assert out["bathtub"]["ci"][0] < 0 < out["bathtub"]["ci"][1]
    assert 0 < out["pooled"]["t_p"] < 1
