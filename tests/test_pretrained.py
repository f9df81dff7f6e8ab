"""Pretrained models: export, the registry, names in place of checkpoints, and the shipped detectors' cards."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from box_folder import make_box_folder
from keypointnet_subset import make_subset, shared_data_root

import pckeypoints.pretrained as pretrained
from experiments import ship_pretrained
from pckeypoints.train.checkpoint import MAX_EXPORT_BYTES, export_model, load_checkpoint
from pckeypoints.cli import main
from pckeypoints.data import KeypointNet, read_points
from pckeypoints.errors import CheckpointError
from pckeypoints.train.evaluate_checkpoint import evaluate_checkpoint
from pckeypoints.metrics import dual_alignment_score

SHIPPED = pretrained.REGISTRY.parent


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """(run folder, box folder) of a 1-epoch detector of width 0.25 on generated boxes."""
    tmp = tmp_path_factory.mktemp("tiny")
    make_box_folder(tmp / "boxes", num_models=10)
    assert main(["train", "--data", str(tmp / "boxes"), "--out", str(tmp / "runs"), "--name", "tiny", "--width",
                 "0.25", "--hidden-channels", "16", "--batch-size", "4", "--epochs", "1", "--num-samples", "4",
                 "--no-progress", "--no-test"]) == 0
    return tmp / "runs" / "tiny", tmp / "boxes"


@pytest.fixture
def registry(tmp_path, monkeypatch, tiny_run):
    """A registry in ``tmp_path`` that ships the tiny run as ``"boxes"``."""
    run, _ = tiny_run
    assert export_model(run, tmp_path / "boxes.pt") == torch.float32
    (tmp_path / "boxes.md").write_text("# boxes\n")
    (tmp_path / "registry.json").write_text(json.dumps({"boxes": {"file": "boxes.pt", "card": "boxes.md",
                                                                  "category": "boxes"}}))
    monkeypatch.setattr(pretrained, "REGISTRY", tmp_path / "registry.json")
    return tmp_path


def _keypoints(checkpoint, points):
    task, model, config, _ = load_checkpoint(checkpoint)
    return np.asarray(task.predict(model, torch.as_tensor(points), config)["keypoints"])


def test_a_name_loads_the_exported_weights(registry, tiny_run):
    run, boxes = tiny_run
    exported = torch.load(registry / "boxes.pt", weights_only=True)
    assert set(exported) == {"model", "config", "epoch", "format", "format_version"}  # no optimizer state
    assert exported["config"]["data"]["root"] is None and (registry / "boxes.pt").stat().st_size < MAX_EXPORT_BYTES
    points = read_points(boxes / "models" / "box00.npy")
    np.testing.assert_array_equal(_keypoints("boxes", points), _keypoints(run, points))
    assert pretrained.model_card("boxes") == "# boxes\n"


def test_float16_export_when_float32_is_too_large(tmp_path, tiny_run):
    run, boxes = tiny_run
    assert export_model(run, tmp_path / "full.pt") == torch.float32
    float32_bytes = (tmp_path / "full.pt").stat().st_size
    assert export_model(run, tmp_path / "half.pt", max_bytes=float32_bytes - 1) == torch.float16
    assert (tmp_path / "half.pt").stat().st_size < float32_bytes
    assert next(iter(torch.load(tmp_path / "half.pt", weights_only=True)["model"].values())).dtype == torch.float16
    points = read_points(boxes / "models" / "box02.pcd")
    np.testing.assert_allclose(_keypoints(tmp_path / "half.pt", points), _keypoints(run, points), atol=2e-3)
    with pytest.raises(CheckpointError, match="even in float16, over the limit of 1000"):
        export_model(run, tmp_path / "tiny.pt", max_bytes=1000)
    assert not (tmp_path / "tiny.pt").exists()


def test_commands_take_a_name(registry, tiny_run, tmp_path, monkeypatch, capsys):
    run, boxes = tiny_run
    out = tmp_path / "kp.json"
    assert main(["predict", "boxes", str(boxes / "models" / "box01.xyz"), "-o", str(out)]) == 0
    assert np.asarray(json.loads(out.read_text())["keypoints"]).shape == (8, 3)
    assert main(["eval", "boxes", "--split", "test", "--out", str(tmp_path / "eval")]) == 0
    assert "pck@0.01" in (tmp_path / "eval" / "metrics.md").read_text()
    # A local folder that holds no run does not hide the name (issue 21); an unknown name is a missing checkpoint.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "boxes").mkdir()
    assert load_checkpoint("boxes")[2].data.label == "boxes"
    with pytest.raises(CheckpointError, match="checkpoint bathtubb does not exist"):
        load_checkpoint("bathtubb")
    (registry / "boxes.pt").unlink()
    monkeypatch.chdir(registry.parent)
    with pytest.raises(CheckpointError, match="pretrained model 'boxes' is registered but .*boxes.pt is not installed"):
        load_checkpoint("boxes")


def test_viz_renders_a_named_models_predictions(registry, tiny_run, tmp_path):
    from viz.offscreen import offscreen_status

    ok, reason = offscreen_status()
    if not ok:
        pytest.skip(f"no offscreen rendering: {reason}")
    _, boxes = tiny_run
    png = tmp_path / "boxes.png"
    assert main(["viz", str(boxes / "models" / "box04.obj"), "--model", "boxes", "--png", str(png),
                 "--width", "320", "--height", "240"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ship_an_unsupervised_run(tmp_path, monkeypatch, capsys):
    """ship_pretrained.py ships an unsupervised run (trained for seconds) into a registry of its own: weights, card
    with the DAS / mIoU metrics, entry; ``predict NAME`` prints its 10 keypoints, indices 0..9."""
    from test_training import tiny_config

    from pckeypoints.train.training import train

    data = make_subset(tmp_path / "kpn", "bathtub", {"train": 4, "val": 2, "test": 3})
    torch.manual_seed(0)
    run = train(tiny_config(data, tmp_path / "runs", mode="unsupervised", method="soft", epochs=1,
                            readout="expectation"), progress=False)
    (tmp_path / "shipped").mkdir()
    (tmp_path / "shipped" / "registry.json").write_text("{}")
    monkeypatch.setattr(pretrained, "REGISTRY", tmp_path / "shipped" / "registry.json")
    monkeypatch.setenv("PCKP_DATA", str(data))  # the shipped config names no data folder
    ship_pretrained.main([str(run / "last.pt"), "--name", "tub-unsup", "--protocol", "1 epoch", "--seeds", "0"])
    entry = pretrained.pretrained_models()["tub-unsup"]
    assert (entry["category"], entry["test_models"], entry["das_sm_shapes"]) == ("bathtub", 3, 9)
    for key in ("test_das", "first20_das", "test_miou@0.1", "das_sm"):
        assert 0 <= entry[key] <= 1, key
    assert entry["first20_das"] == entry["test_das"]  # the test split has fewer than 20 models
    card = pretrained.model_card("tub-unsup")
    for field in ("Protocol", "Seeds", "Test DAS", "DAS (Skeleton Merger's protocol)", "Test keypoint mIoU@0.1"):
        assert f"**{field}**" in card, field
    assert "10 keypoints (indices 0..9" in card
    metrics = evaluate_checkpoint("tub-unsup", "test").metrics  # the shipped file is the whole autoencoder
    assert metrics.das.das == pytest.approx(entry["test_das"])
    capsys.readouterr()
    assert main(["predict", "tub-unsup", str(next((data / "pcds").rglob("*.pcd")))]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert np.asarray(printed["keypoints"]).shape == (10, 3) and printed["semantic_ids"] == list(range(10))


# ---------------------------------------------------------------------------------------------- shipped models
@pytest.mark.parametrize("name", ["bathtub", "bed"])
def test_shipped_model_reproduces_its_card(name):
    """``predict NAME`` on the first 20 shared test models gives the card's PCK@0.01 within 1 point."""
    if not (SHIPPED / f"{name}.pt").is_file():
        pytest.skip(f"the {name} weights are not shipped yet")
    entry = pretrained.pretrained_models()[name]
    assert (SHIPPED / entry["file"]).stat().st_size < MAX_EXPORT_BYTES
    card = pretrained.model_card(name)
    for field in ("Protocol", "Seeds", "Test PCK@0.01", "Date"):
        assert f"**{field}**" in card, field
    if not (shared_data_root() / "annotations" / f"{entry['category']}.json").is_file():
        pytest.skip("KeypointNet data not found")
    task, model, config, _ = load_checkpoint(name)
    test = KeypointNet(shared_data_root(), entry["category"], "test")
    correct = []
    for i in range(20):
        item = test[i]
        pred = torch.tensor(task.predict(model, item["points"], config)["keypoints"])
        correct.append(((pred - item["keypoints"]).norm(dim=-1) <= 0.01)[item["mask"]])
    assert abs(float(torch.cat(correct).double().mean()) - entry["first20_pck"]) <= 0.01


@pytest.mark.parametrize("name", ["bathtub-unsup", "bed-unsup"])
def test_shipped_unsupervised_model_reproduces_its_card(name):
    """The strict DAS of ``predict NAME``'s soft-argmax keypoints on the first 20 shared test models is the card's
    within 1 point."""
    if not (SHIPPED / f"{name}.pt").is_file():
        pytest.skip(f"the {name} weights are not shipped yet")
    entry = pretrained.pretrained_models()[name]
    assert (SHIPPED / entry["file"]).stat().st_size < MAX_EXPORT_BYTES
    card = pretrained.model_card(name)
    for field in ("Protocol", "Seeds", "Test DAS", "DAS (Skeleton Merger's protocol)", "Date"):
        assert f"**{field}**" in card, field
    if not (shared_data_root() / "annotations" / f"{entry['category']}.json").is_file():
        pytest.skip("KeypointNet data not found")
    task, model, config, _ = load_checkpoint(name)
    config = config.replace(readout="expectation")  # what DAS scores
    test = KeypointNet(shared_data_root(), entry["category"], "test")
    pred, annotations = [], []
    for i in range(20):
        item = test[i]
        pred.append(torch.tensor(task.predict(model, item["points"], config)["keypoints"]))
        annotations.append((item["keypoints"][item["mask"]], item["mask"].nonzero().squeeze(-1)))
    assert abs(dual_alignment_score(torch.stack(pred), annotations).das - entry["first20_das"]) <= 0.01


def test_ship_a_detector_calibrates_its_confidence(tmp_path, monkeypatch):
    """Shipping a detector fits its confidence temperature on val (``pckeypoints calibrate``) and writes it, with the
    test ECE before and after, to the registry and the card; the shipped file carries it."""
    from test_training import tiny_config

    from pckeypoints.train.checkpoint import load_checkpoint
    from pckeypoints.train.training import train

    data = make_subset(tmp_path / "kpn", "bathtub", {"train": 4, "val": 3, "test": 3})
    torch.manual_seed(0)
    run = train(tiny_config(data, tmp_path / "runs", method="soft+js", epochs=1), progress=False)
    (tmp_path / "shipped").mkdir()
    (tmp_path / "shipped" / "registry.json").write_text("{}")
    monkeypatch.setattr(pretrained, "REGISTRY", tmp_path / "shipped" / "registry.json")
    monkeypatch.setenv("PCKP_DATA", str(data))
    ship_pretrained.main([str(run / "last.pt"), "--name", "tub", "--protocol", "1 epoch", "--seeds", "0"])
    entry = pretrained.pretrained_models()["tub"]
    config = load_checkpoint(tmp_path / "shipped" / "tub.pt")[2]
    assert entry["confidence_temperature"] == pytest.approx(config.eval.temperature) and entry["confidence_temperature"] > 0
    assert 0 <= entry["test_ece"] <= 1 and 0 <= entry["test_ece_before"] <= 1
    assert f"T = {entry['confidence_temperature']:.3g}" in pretrained.model_card("tub")
