"""Readouts (mixture mode vs brute force), the closed-form within-radius probability (vs Monte Carlo),
ECE/Brier, the KeypointNet geodesic PCK and the eval summary tables on hand-built cases."""
import math

import pytest
import torch

from pckeypoints.core.basis import PointBasis
from pckeypoints.config import TrainConfig
from pckeypoints.metrics import (brier_score, calibration_correlation, expected_calibration_error, reliability_bins,
                                 within_radius_probability)
from pckeypoints.metrics.das import DualAlignment
from pckeypoints.metrics.results import AlignmentEvaluation
from pckeypoints.metrics.summary import keypoint_records, records_metrics
from pckeypoints.core.readouts import READOUTS, mixture_mode, read_out
from pckeypoints.ops.neighbors import far_coordinate, pad_far
from pckeypoints.train.supervised import SupervisedTask
from pckeypoints.train.unsupervised import UnsupervisedTask


def small_mixture(seed=0, n=6):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(1, n, 3, generator=g, dtype=torch.float64) * 0.03
    sigma = torch.rand(1, n, 1, generator=g, dtype=torch.float64) * 0.01 + 0.008
    probs = torch.rand(1, 2, n, generator=g, dtype=torch.float64).softmax(-1)
    return PointBasis(pos, sigma), probs


@pytest.mark.parametrize("seed", range(4))
def test_mixture_mode_is_the_brute_force_density_maximum(seed):
    basis, probs = small_mixture(seed)
    mode = mixture_mode(probs, basis, candidates=6, steps=200)  # (1, 2, 3)
    # brute force: the best of a fine grid around the points, then a local grid around the best
    lo, hi = basis.pos.min(1).values - 0.02, basis.pos.max(1).values + 0.02
    axes = [torch.linspace(float(lo[0, d]), float(hi[0, d]), 41, dtype=torch.float64) for d in range(3)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(1, 1, -1, 3).expand(1, 2, -1, 3)
    best = grid.gather(2, basis.log_density(grid, probs).argmax(-1)[..., None, None].expand(-1, -1, 1, 3))
    step = (hi - lo) / 40
    local = torch.linspace(-1, 1, 21, dtype=torch.float64)
    offsets = torch.stack(torch.meshgrid(local, local, local, indexing="ij"), -1).reshape(-1, 3) * step
    fine = best + offsets[None, None]
    brute = basis.log_density(fine, probs).amax(-1)
    found = basis.log_density(mode[:, :, None], probs)[..., 0]
    assert (found >= brute - 1e-6).all(), (found, brute)


def test_readouts_on_a_two_point_map():
    pos = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0], [0.0, 0.5, 0]]])
    basis = PointBasis(pos, 0.05)
    probs = torch.tensor([[[0.5, 0.3, 0.2]]])
    assert torch.allclose(read_out(probs, basis, "expectation"), torch.tensor([[[0.3, 0.1, 0.0]]]))
    assert torch.equal(read_out(probs, basis, "top"), pos[:, :1])
    assert torch.equal(read_out(probs, basis, "snapped"), pos[:, :1])  # (0.3, 0.1) is nearest the origin
    # well separated narrow components: the highest mode is (almost exactly) the most probable point
    assert torch.allclose(read_out(probs, basis, "mode"), pos[:, :1], atol=1e-6)
    with pytest.raises(ValueError, match="readout"):
        read_out(probs, basis, "median")
    assert READOUTS == ("expectation", "snapped", "top", "mode")


def test_mode_ignores_padding():
    pos = torch.tensor([[[0.0, 0, 0], [0.2, 0, 0], [9.0, 9, 9]]])
    basis = PointBasis(pos, 0.05, mask=torch.tensor([[True, True, False]]))
    probs = torch.tensor([[[0.4, 0.6, 0.0]]])
    assert torch.allclose(read_out(probs, basis, "mode"), pos[:, 1:2], atol=1e-3)  # pulled ~5e-5 by the other
    assert torch.equal(read_out(probs, basis, "snapped"), pos[:, 1:2])


@pytest.mark.parametrize("radius", [0.004, 0.012, 0.03])
def test_within_radius_probability_matches_monte_carlo(radius):
    basis, probs = small_mixture(1, n=5)
    sigma = basis.bandwidth[..., 0]
    center = torch.tensor([[[0.01, 0.0, -0.01], [0.0, 0.02, 0.0]]], dtype=torch.float64)
    closed = within_radius_probability(center, probs, basis.pos, sigma, radius)[0]
    g = torch.Generator().manual_seed(0)
    samples = 400_000
    for k in range(2):
        component = torch.multinomial(probs[0, k], samples, replacement=True, generator=g)
        y = basis.pos[0, component] + torch.randn(samples, 3, generator=g, dtype=torch.float64) * sigma[0, component, None]
        monte_carlo = ((y - center[0, k]).norm(dim=-1) < radius).double().mean()
        assert closed[k] == pytest.approx(float(monte_carlo), abs=4e-3)


def test_within_radius_probability_at_a_component_centre_is_the_chi_cdf():
    pos = torch.zeros(1, 1, 3, dtype=torch.float64)
    p = within_radius_probability(pos, torch.ones(1, 1, 1, dtype=torch.float64), pos, torch.tensor([[0.01]]), 0.02)
    x = 2.0  # r / σ: P(χ_3 < x) = erf(x/√2) - √(2/π) x exp(-x²/2)
    assert float(p) == pytest.approx(math.erf(x / math.sqrt(2)) - math.sqrt(2 / math.pi) * x * math.exp(-x * x / 2))


def test_ece_brier_and_bins_by_hand():
    confidence = torch.tensor([0.05, 0.15, 0.95, 0.85])
    correct = torch.tensor([False, True, True, True])
    mean_conf, accuracy, count = reliability_bins(confidence, correct, num_bins=2)
    assert count.tolist() == [2, 2] and accuracy.tolist() == [0.5, 1.0]
    assert mean_conf.tolist() == pytest.approx([0.1, 0.9])
    assert expected_calibration_error(confidence, correct, num_bins=2) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    assert brier_score(confidence, correct) == pytest.approx((0.05**2 + 0.85**2 + 0.05**2 + 0.15**2) / 4)
    with pytest.raises(ValueError, match="within"):
        reliability_bins(torch.tensor([1.5]), torch.tensor([True]))


def test_reliability_bins_keep_empty_bins_in_place():
    """Every bin in order (empty ones: count 0, NaN means), 1.0 in the last; lists and arrays are taken too."""
    mean_conf, accuracy, count = reliability_bins([0.05, 0.15, 0.12, 0.95, 1.0], [False, True, False, True, True],
                                                  num_bins=10)
    assert count.tolist() == [1, 2, 0, 0, 0, 0, 0, 0, 0, 2]
    used = count > 0
    assert mean_conf[used].tolist() == pytest.approx([0.05, 0.135, 0.975])
    assert accuracy[used].tolist() == [0.0, 0.5, 1.0]
    assert mean_conf[~used].isnan().all() and accuracy[~used].isnan().all()
    assert expected_calibration_error([0.05, 0.15, 0.12, 0.95, 1.0], [False, True, False, True, True]) == \
        pytest.approx((0.05 + 2 * 0.365 + 2 * 0.025) / 5)


def line_predictions():
    """One cloud on a line (spacing 0.004), 3 keypoints, expectations off by 0.004, 0.008 and 0.016."""
    points = torch.zeros(1, 100, 3, dtype=torch.float64)
    points[0, :, 0] = torch.arange(100) * 0.004
    index = torch.tensor([[10, 40, 70]])
    target = points[0, index[0]][None]
    pred = target + torch.tensor([[[0.004, 0, 0], [0.008, 0, 0], [0.016, 0, 0]]], dtype=torch.float64)
    within = torch.tensor([[0.9, 0.5, 0.1]], dtype=torch.float64)
    return {"pred": {"expectation": pred}, "within": {"expectation": within}, "peak": torch.tensor([[0.9, 0.5, 0.1]]),
            "target": target, "mask": torch.ones(1, 3, dtype=torch.bool), "points": points, "point_index": index,
            "model_id": ["m"]}


def test_keypoint_metrics_against_hand_computed_values():
    metrics = records_metrics(keypoint_records(line_predictions()))
    scores = metrics.readouts["expectation"]
    assert metrics.monitored == pytest.approx(2 / 3) == scores.pck == metrics.curve[0.01]
    assert metrics.curve[0.0] == 0 and metrics.curve[0.02] == pytest.approx(1.0)
    # geodesic along the line == Euclidean; strict: the 0.008 one counts, 0.016 does not
    assert scores.geo_pck == pytest.approx(2 / 3)
    assert scores.mean_error == pytest.approx((0.004 + 0.008 + 0.016) / 3)
    c, y = torch.tensor([0.9, 0.5, 0.1]), torch.tensor([1.0, 1.0, 0.0])
    assert metrics.calibration_r == pytest.approx(calibration_correlation(c, y))
    assert scores.brier == pytest.approx((0.1**2 + 0.5**2 + 0.1**2) / 3)
    assert scores.r_within == pytest.approx(calibration_correlation(c, y))  # within = peak here
    assert scores.ece_raw is None  # no within_raw in the predictions
    flat = metrics.to_dict()  # the names of metrics.json and log.csv
    assert flat["pck@0.01"] == flat["pck@0.01/expectation"] == scores.pck and flat["geo_pck@0.01"] == scores.geo_pck
    assert flat["brier/expectation"] == scores.brier and "ece_raw/expectation" not in flat


def test_official_geodesic_pck_is_strict_on_the_20nn_graph():
    # a U-shaped cloud: two parallel rows 0.006 apart joined at one end; spacing 0.002 along each row.
    # Euclidean neighbours across the gap exist only beyond 20 nearest, so geodesics go round the bend.
    row = torch.arange(50, dtype=torch.float64) * 0.002
    a = torch.stack([row, torch.zeros(50), torch.zeros(50)], -1)
    b = torch.stack([row, torch.full((50,), 0.06), torch.zeros(50)], -1)
    bend = torch.stack([torch.full((29,), -0.002), torch.arange(1, 30, dtype=torch.float64) * 0.002, torch.zeros(29)], -1)
    points = torch.cat([a, b, bend])[None]
    target_index = torch.tensor([[0, 49]])
    # prediction 1 exactly 0.01 along the row from its target (not < 0.01: wrong); prediction 2 on the other row
    pred = torch.stack([points[0, 5], points[0, 99]])[None]
    predictions = {"pred": {"top": pred}, "within": {"top": torch.zeros(1, 2, dtype=torch.float64)},
                   "peak": torch.zeros(1, 2), "target": points[0, target_index[0]][None],
                   "mask": torch.ones(1, 2, dtype=torch.bool), "points": points, "point_index": target_index,
                   "model_id": ["u"]}
    records = keypoint_records(predictions)
    assert records["geo/top"][0] == pytest.approx(0.01)
    assert records["geo/top"][1] > 0.06  # around the bend, not across the gap
    metrics = records_metrics(records, default="top")
    assert metrics.readouts["top"].geo_pck == 0.0 and metrics.readouts["top"].pck == 0.5  # Euclidean d <= t counts


def test_per_readout_coarse_pck_mean_error_and_the_summary_table():
    predictions = line_predictions()
    predictions["pred"]["top"] = predictions["target"] + torch.tensor([[[0.0, 0, 0], [0.03, 0, 0], [0.06, 0, 0]]],
                                                                      dtype=torch.float64)
    predictions["within"]["top"] = predictions["within"]["expectation"]
    predictions["within_raw"] = {r: within / 2 for r, within in predictions["within"].items()}
    metrics = records_metrics(keypoint_records(predictions))
    top, expectation = metrics.readouts["top"], metrics.readouts["expectation"]
    assert expectation.pck_coarse == 1.0 and top.pck_coarse == pytest.approx(2 / 3)
    assert top.mean_error == pytest.approx(0.03) and metrics.to_dict()["mean_error"] == expectation.mean_error
    config = TrainConfig.from_fields(readout="top")
    lines = SupervisedTask().summary(metrics, config).splitlines()
    assert lines[0].split("|")[1].strip() == "readout" and len(lines) == 2 + 2 + 2  # header, rule, rows, note
    top = [cell.strip() for cell in lines[3].split("|")[1:-1]]
    assert top == ["top*", "0.3333", "0.3333", "0.6667", "0.0300", f"{metrics.readouts['top'].ece:.4f}",
                   f"{metrics.readouts['top'].ece_raw:.4f}"]
    alignment = AlignmentEvaluation(2.0, DualAlignment(0.5, 0.4, 0.6), 0.25, 0.1, DualAlignment(0.75, 0.7, 0.8), 9)
    unsupervised = UnsupervisedTask().summary(alignment, TrainConfig.from_fields(mode="unsupervised"))
    assert [c.strip() for c in unsupervised.splitlines()[2].split("|")[1:-1]] == ["0.5000", "0.7500", "0.2500", "2.0000"]
    assert "over 9 shapes" in unsupervised


def test_far_coordinate_and_pad_far_by_hand():
    corners = torch.tensor([[-1.0, 0.0], [1.0, 2.0], [-1.0, 2.0], [1.0, 0.0]])
    far = far_coordinate(corners.amax(0), corners.amin(0), reach=0.5)
    assert float(far) == pytest.approx(2 + 2 * math.sqrt(2) + 0.5 + 1)  # top coordinate + widest side · √D + reach + 1
    gap = (corners - far).norm(dim=1).min()
    assert gap > torch.cdist(corners, corners).max() and gap > 0.5
    dense, mask = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]]), torch.tensor([[True, True, False]])
    padded = pad_far(dense, mask)
    assert torch.equal(padded[0, :2], dense[0, :2]) and padded[0, 2].tolist() == pytest.approx([2 + math.sqrt(2)] * 2)
