import math

import numpy as np
import pytest
import torch
from scipy.sparse.csgraph import floyd_warshall

from pckeypoints.metrics import (calibration_correlation, cloud_geodesics, geodesic_distance, geodesic_pck,
                                 knn_distance_graph, mean_error, pck, pck_auc, pck_curve, pck_from_distances,
                                 snap_to_points)


def _one_shape_case():
    """Errors 0, 0.5 and 2 on three present keypoints, a huge one on a missing keypoint."""
    target = torch.zeros(1, 4, 3)
    pred = torch.tensor([[[0.0, 0, 0], [0, 0.5, 0], [0, 0, 2], [9, 9, 9]]])
    mask = torch.tensor([[True, True, True, False]])
    return pred, target, mask


def test_pck_hand_case():
    pred, target, mask = _one_shape_case()
    # distances 0, 0.5, 2 (inclusive): t=0 -> 1/3, t=0.5 -> 2/3, t=1 -> 2/3, t=2 -> 1
    got = pck(pred, target, mask, [0.0, 0.5, 1.0, 2.0])
    torch.testing.assert_close(got, torch.tensor([1 / 3, 2 / 3, 2 / 3, 1.0]))
    torch.testing.assert_close(mean_error(pred, target, mask), torch.tensor(2.5 / 3))


def test_pck_and_mean_error_of_2d_keypoints():
    pred = torch.tensor([[[3.0, 4.0], [1.0, 0.0], [0.0, 0.0]]])  # distances 5, 1 and 0 from the origin
    mask = torch.tensor([[True, True, False]])
    torch.testing.assert_close(pck(pred, torch.zeros_like(pred), mask, [0.5, 1.0, 5.0]),
                               torch.tensor([0.0, 0.5, 1.0]))
    torch.testing.assert_close(mean_error(pred, torch.zeros_like(pred), mask), torch.tensor(3.0))
    with pytest.raises(ValueError, match=r"\(B, K, 2\) or \(B, K, 3\)"):
        pck(torch.zeros(1, 3, 4), torch.zeros(1, 3, 4), mask, 1.0)


def test_pck_pools_over_batch():
    pred, target, mask = _one_shape_case()
    # second shape: one present keypoint, error 1 -> at t=1: (2 + 1) / 4 present keypoints
    pred2 = torch.cat([pred, torch.tensor([[[1.0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]]])])
    mask2 = torch.cat([mask, torch.tensor([[True, False, False, False]])])
    assert pck(pred2, torch.zeros_like(pred2), mask2, 1.0).item() == pytest.approx(3 / 4)


def test_pck_curve_default_thresholds():
    torch.manual_seed(0)
    target = torch.rand(5, 7, 3)
    pred = target + 0.05 * torch.randn(5, 7, 3)
    mask = torch.rand(5, 7) > 0.3
    thresholds, values = pck_curve(pred, target, mask)
    torch.testing.assert_close(thresholds, torch.linspace(0, 0.1, 11, dtype=torch.float64))
    assert (values.diff() >= 0).all() and values[0] == 0
    distances = (pred - target).norm(dim=-1)[mask]
    assert values[5].item() == pytest.approx((distances <= 0.05).float().mean().item())


def test_pck_auc_hand_case():
    # distances 0 and 0.05 on thresholds 0, 0.1: the curve is 0.5 -> 1, area (0.5 + 1) / 2
    assert pck_auc(torch.tensor([0.0, 0.05]), [0.0, 0.1]) == pytest.approx(0.75)
    # on the default 0, 0.01, ..., 0.1: 0.5 up to t = 0.04, 1 from t = 0.05: (4 x 0.5 + 0.75 + 5 x 1) / 10
    assert pck_auc(torch.tensor([0.0, 0.045])) == pytest.approx(0.775)
    # strict (the geodesic metric's d < t): the keypoint at 0 counts from t = 0.01 on, 0.25 less on [0, 0.01]
    assert pck_auc(torch.tensor([0.0, 0.045]), inclusive=False) == pytest.approx(0.75)
    assert pck_auc(torch.tensor([0.5, math.inf])) == 0.0
    with pytest.raises(ValueError, match="two increasing thresholds"):
        pck_auc(torch.tensor([0.0]), [0.1, 0.0])


def test_pck_bad_input():
    pred, target, mask = _one_shape_case()
    with pytest.raises(ValueError, match="NaN"):
        pck(torch.where(mask[..., None], torch.nan, pred), target, mask, 0.1)
    pred_nan_missing = pred.clone()
    pred_nan_missing[0, 3] = torch.nan  # missing keypoints may hold anything
    assert pck(pred_nan_missing, target, mask, 0.5).item() == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="no keypoints"):
        pck(pred, target, torch.zeros_like(mask), 0.1)
    with pytest.raises(ValueError, match="shape"):
        pck(pred[:, :3], target, mask, 0.1)
    with pytest.raises(ValueError, match="non-negative"):
        pck(pred, target, mask, [-0.1])


def _u_shaped_path():
    """Points every 0.1 along a U: (0,0) -> (1,0) -> (1,1) -> (0,1). Ends 1 apart in space, 3 along the curve."""
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    zeros, ones = torch.zeros(11, dtype=torch.float64), torch.ones(11, dtype=torch.float64)
    bottom = torch.stack([t, zeros, zeros], 1)
    side = torch.stack([ones, t, zeros], 1)[1:]
    top = torch.stack([t.flip(0), ones, zeros], 1)[1:]
    return torch.cat([bottom, side, top])  # 31 points, index 0 = (0,0), index 30 = (0,1)


def test_geodesic_follows_the_surface():
    points = _u_shaped_path()[None]
    pred = torch.tensor([[[0.0, 1.02, 0.0], [0.98, 0.0, 0.0]]], dtype=torch.float64)  # snap to index 30 and 10
    target_index = torch.tensor([[0, 0]])
    mask = torch.tensor([[True, True]])
    distances = geodesic_distance(pred, points, target_index, mask, k=2)
    torch.testing.assert_close(distances, torch.tensor([[3.0, 1.0]], dtype=torch.float64))
    # Euclidean errors are ~1.0 and 0.98, so Euclidean PCK at t=1.5 would be 1; geodesically only the second is in.
    torch.testing.assert_close(geodesic_pck(pred, points, target_index, mask, [0.5, 1.5, 3.5], k=2),
                               torch.tensor([0.0, 0.5, 1.0]))
    assert pck(pred, points[:, [0, 0]], mask, 1.5).item() == 1.0


def test_geodesic_pck_defaults_to_keypointnets_metric():
    # strictly below the threshold: the distances 3 and 1 of the U path at t = 3 count once (Euclidean PCK: d <= t)
    points = _u_shaped_path()[None]
    pred = torch.tensor([[[0.0, 1.02, 0.0], [0.98, 0.0, 0.0]]], dtype=torch.float64)
    args = (pred, points, torch.tensor([[0, 0]]), torch.tensor([[True, True]]))
    assert geodesic_pck(*args, [3.0, 3.01], k=2).tolist() == [0.5, 1.0]
    assert pck_from_distances(torch.tensor([3.0, 1.0]), 3.0).item() == 1.0
    # the 20-NN graph: two clusters of 11 points are apart in the 10-NN graph, joined in the default one
    cloud = torch.cat([torch.rand(11, 3, generator=torch.Generator().manual_seed(0)), 3 + torch.rand(11, 3)])
    assert math.isinf(cloud_geodesics(cloud, [0], k=10)[0, -1])
    assert math.isfinite(cloud_geodesics(cloud, [0])[0, -1])


def test_geodesic_disconnected_is_inf_and_missing_is_nan():
    points = torch.tensor([[[0.0, 0, 0], [0.1, 0, 0], [5, 0, 0], [5.1, 0, 0]]])
    pred = torch.tensor([[[5.05, 0, 0], [0, 0, 0]]])
    mask = torch.tensor([[True, False]])
    distances = geodesic_distance(pred, points, torch.tensor([[0, 0]]), mask, k=1)
    assert math.isinf(distances[0, 0]) and math.isnan(distances[0, 1])
    assert geodesic_pck(pred, points, torch.tensor([[0, 0]]), mask, 100.0, k=1).item() == 0.0


def test_duplicate_points_stay_connected():
    # Zero-length edges between duplicates must count as edges (csgraph drops implicit zeros, keeps explicit ones).
    points = torch.tensor([[0.0, 0, 0], [0, 0, 0], [1, 0, 0]])
    torch.testing.assert_close(cloud_geodesics(points, torch.tensor([0, 1]), k=1),
                               torch.tensor([[0.0, 0, 1], [0, 0, 1]], dtype=torch.float64))


def test_cloud_geodesics_against_floyd_warshall():
    rng = np.random.default_rng(0)
    points = rng.random((60, 3))
    k = 4
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
    neighbours = np.argsort(distances, axis=1)[:, 1:k + 1]
    adjacency = np.full((60, 60), np.inf)
    for i in range(60):
        adjacency[i, neighbours[i]] = distances[i, neighbours[i]]
        adjacency[neighbours[i], i] = distances[i, neighbours[i]]  # symmetric: either end's neighbour
    reference = floyd_warshall(np.where(np.isinf(adjacency), 0, adjacency), directed=False)
    sources = np.array([0, 17, 59])
    np.testing.assert_allclose(cloud_geodesics(torch.from_numpy(points), sources, k=k).numpy(), reference[sources])
    assert knn_distance_graph(points, k).nnz == 60 * k


def test_snap_to_points_matches_brute_force():
    generator = torch.Generator().manual_seed(0)
    points, query = torch.rand(2, 3, 40, 3, generator=generator), torch.rand(2, 3, 5, 3, generator=generator)
    brute_force = ((query[..., :, None, :] - points[..., None, :, :]) ** 2).sum(-1).argmin(-1)
    assert torch.equal(snap_to_points(query, points), brute_force)
    assert torch.equal(snap_to_points(query[1, 2], points[1, 2]), brute_force[1, 2])
    with pytest.raises(ValueError, match="leading dimensions"):
        snap_to_points(query[0], points[1:])


def test_geodesic_bad_input():
    points = _u_shaped_path()[None]
    mask = torch.tensor([[True]])
    with pytest.raises(ValueError, match="source indices"):
        geodesic_distance(points[:, :1], points, torch.tensor([[99]]), mask)
    with pytest.raises(ValueError, match="points must have shape"):
        geodesic_distance(points[:, :1], points[0], torch.tensor([[0]]), mask)
    with pytest.raises(ValueError, match="k must be positive"):
        cloud_geodesics(points[0], [0], k=0)


def test_calibration_hand_case():
    # deviations (0.4, 0.3, -0.3, -0.4) and (0.5, 0.5, -0.5, -0.5): r = 0.7 / (sqrt(0.5) * 1)
    r = calibration_correlation(torch.tensor([0.9, 0.8, 0.2, 0.1]), torch.tensor([True, True, False, False]))
    assert r == pytest.approx(0.7 / math.sqrt(0.5))
    assert calibration_correlation(torch.tensor([0.1, 0.9]), torch.tensor([1, 0])) == pytest.approx(-1.0)


def test_calibration_matches_numpy():
    rng = np.random.default_rng(1)
    confidence = rng.random(200)
    correct = rng.random(200) < confidence
    assert calibration_correlation(torch.from_numpy(confidence), torch.from_numpy(correct)) == pytest.approx(
        np.corrcoef(confidence, correct)[0, 1])


def test_calibration_degenerate_and_bad_input():
    assert math.isnan(calibration_correlation(torch.rand(5), torch.ones(5, dtype=torch.bool)))
    assert math.isnan(calibration_correlation(torch.full((5,), 0.3), torch.tensor([0, 1, 0, 1, 1])))
    with pytest.raises(ValueError, match="differ in size"):
        calibration_correlation(torch.rand(5), torch.ones(4))
    with pytest.raises(ValueError, match="finite"):
        calibration_correlation(torch.tensor([0.1, math.nan]), torch.tensor([0, 1]))
