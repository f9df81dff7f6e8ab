"""Confidence temperature (issue 30, item 4): the fit, its effect on the confidence alone, ``pckeypoints calibrate``."""
from __future__ import annotations

import math

import pytest
import torch
from keypointnet_subset import make_subset
from test_training import tiny_config
from torch.utils.data import DataLoader

from pckeypoints.train.checkpoint import load_checkpoint, save_checkpoint
from pckeypoints.cli import main
from pckeypoints.data import collate_keypoints
from pckeypoints.errors import InputError
from pckeypoints.evaluation.inference import evaluate_model, predict_keypoints
from pckeypoints.metrics.calibration import (expected_calibration_error, fit_temperature, mixture_within,
                                             within_radius_probability)
from pckeypoints.train.supervised import SupervisedTask


def _synthetic_maps(count: int, true_temperature: float, seed: int):
    """``count`` maps over 64 random points whose targets are drawn from the mixture with its components at
    ``true_temperature``: ``(probs, distance, sigma, radius, correct)`` as :func:`fit_temperature` takes them."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(count, 64, 3, generator=g, dtype=torch.float64) * 0.03
    probs = (torch.randn(count, 64, generator=g, dtype=torch.float64) * 2).softmax(-1)
    sigma = torch.full((count, 64), 0.01, dtype=torch.float64)
    center = (probs[:, None] @ pos)[:, 0]  # (M, 3) the expectation
    component = torch.multinomial(probs, 1, generator=g)[:, 0]
    noise = torch.randn(count, 3, generator=g, dtype=torch.float64) * 0.01 * math.sqrt(true_temperature)
    target = pos[torch.arange(count), component] + noise
    radius = torch.full((count,), 0.01, dtype=torch.float64)
    correct = (target - center).norm(dim=-1) <= radius
    return probs, (pos - center[:, None]).norm(dim=-1), sigma, radius, correct


def test_fit_temperature_recovers_a_miscalibration_and_lowers_held_out_ece():
    """Targets drawn with components at T = 0.1: the map at T = 1 is underconfident; T fitted on one half is near
    0.1, and on the other half the ECE drops below 0.03 from well above it."""
    fit_half, held_out = _synthetic_maps(3000, 0.1, seed=0), _synthetic_maps(3000, 0.1, seed=1)
    temperature = fit_temperature(*fit_half)
    assert 0.07 < temperature < 0.14
    *maps, correct = held_out
    before = expected_calibration_error(mixture_within(1.0, *maps), correct)
    after = expected_calibration_error(mixture_within(temperature, *maps), correct)
    assert before > 0.1 and after < 0.03


def test_mixture_within_matches_the_closed_form_at_any_temperature():
    g = torch.Generator().manual_seed(2)
    pos, center = torch.rand(1, 30, 3, generator=g) * 0.05, torch.rand(1, 2, 3, generator=g) * 0.05
    probs, sigma = torch.rand(1, 2, 30, generator=g).softmax(-1), torch.rand(1, 30, generator=g) * 0.01 + 0.005
    for t in (1.0, 0.3):
        expected = within_radius_probability(center, probs, pos, sigma, 0.01, t)[0]
        distance = torch.cdist(center.double(), pos.double())[0]
        got = mixture_within(t, probs[0].double(), distance, sigma.double().expand(2, -1), torch.full((2,), 0.01,
                                                                                                       dtype=torch.float64))
        torch.testing.assert_close(got, expected)
    narrow = within_radius_probability(center, probs, pos, sigma, 0.01, 1e-12)
    inside = (torch.cdist(center.double(), pos.double()) < 0.01).double()  # T -> 0: the map's mass within the radius
    torch.testing.assert_close(narrow, (probs.double() * inside).sum(-1), atol=1e-6, rtol=0)


def test_fit_temperature_rejects_bad_shapes():
    probs, distance, sigma, radius, correct = _synthetic_maps(5, 1.0, seed=3)
    with pytest.raises(InputError, match="need probs"):
        fit_temperature(probs, distance[:, :3], sigma, radius, correct)
    with pytest.raises(InputError, match="no keypoints"):
        fit_temperature(probs[:0], distance[:0], sigma[:0], radius[:0], correct[:0])


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """(checkpoint of an untrained detector on a small KeypointNet subset, the subset's root)."""
    tmp = tmp_path_factory.mktemp("calibrate")
    data = make_subset(tmp / "kpn", "bathtub", {"train": 2, "val": 3, "test": 3})
    task = SupervisedTask()
    config = tiny_config(data, tmp / "runs", method="soft+js")
    config = task.configure(config, task.dataset(config, "train", train=False))
    torch.manual_seed(0)
    model = task.build_model(config)
    state = {"model": model.state_dict(), "config": config.to_dict(), "epoch": 0}
    save_checkpoint(state, tmp / "model.pt")
    del state["config"]["eval"]["temperature"]  # a checkpoint written before the field existed
    save_checkpoint(state, tmp / "old.pt")
    return tmp / "model.pt", data


def test_temperature_changes_the_confidence_only(detector):
    """Keypoints, PCK and every readout are the same at any temperature; only the within-radius confidence moves."""
    task, model, config, _ = load_checkpoint(detector[0])
    loader = DataLoader(task.dataset(config, "test", train=False), 2, collate_fn=collate_keypoints)
    plain, tempered = (evaluate_model(model, loader, config.eval.readout, temperature=t) for t in (1.0, 50.0))
    for readout, pred in plain.predictions["pred"].items():
        torch.testing.assert_close(tempered.predictions["pred"][readout], pred, rtol=0, atol=0)
        hot, cold = tempered.metrics.readouts[readout], plain.metrics.readouts[readout]
        assert hot.pck == cold.pck and hot.geo_pck == cold.geo_pck
        torch.testing.assert_close(tempered.records[f"within_raw/{readout}"], plain.records[f"within/{readout}"])
        assert not torch.equal(tempered.records[f"within/{readout}"], plain.records[f"within/{readout}"])
        assert hot.ece_raw == cold.ece
    points = task.dataset(config, "test", train=False)[0]["points"]
    one, other = (predict_keypoints(model, points, config.replace(confidence_temperature=t)) for t in (1.0, 50.0))
    assert one["keypoints"] == other["keypoints"] and one["snapped"] == other["snapped"]
    assert one["confidence"] != other["confidence"]


def test_calibrate_command_stores_the_temperature(detector, tmp_path, capsys):
    checkpoint, data = detector
    assert load_checkpoint(checkpoint.with_name("old.pt"))[2].eval.temperature == 1.0  # old checkpoints: T = 1
    out = tmp_path / "calibrated.pt"
    assert main(["calibrate", str(checkpoint), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "temperature" in printed and "ECE" in printed and str(out) in printed
    _, before, config_before, state_before = load_checkpoint(checkpoint)
    _, after, config, state = load_checkpoint(out)
    assert config.eval.temperature != 1.0 and config_before.eval.temperature == 1.0
    assert config.replace(confidence_temperature=1.0) == config_before
    for name, value in state_before["model"].items():
        assert torch.equal(state["model"][name], value)
    assert main(["eval", str(out), "--split", "test", "--out", str(tmp_path / "eval")]) == 0
    printed = capsys.readouterr().out
    assert "ece (T = 1)" in printed and f"T = {config.eval.temperature:.3g}" in printed
