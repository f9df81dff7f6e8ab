"""The generic trainer and the supervised task, on a few real KeypointNet bathtubs."""
from __future__ import annotations

import csv
import math

import pytest
import torch
from keypointnet_subset import make_subset
from torch.utils.data import DataLoader

from pckeypoints.data import collate_keypoints
from pckeypoints.models import KeypointDetector
from pckeypoints.train.supervised import SupervisedTask
from pckeypoints.train.tasks import Task, get_task
from pckeypoints.train.checkpoint import load_checkpoint
from pckeypoints.config import TrainConfig
from pckeypoints.train.training import train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_subset(tmp_path_factory.mktemp("kpn"), "bathtub", {"train": 4, "val": 2, "test": 2})


def tiny_config(data_root, out, **changes) -> TrainConfig:
    values = dict(category="bathtub", method="sampling", num_samples=4, width=0.25, hidden_channels=16,
                  epochs=2, batch_size=2, lr=3e-3, data_root=str(data_root), out=str(out), name="run",
                  jitter=0.005, scale_lo=0.9, scale_hi=1.1)
    values.update(changes)
    return TrainConfig.from_fields(**values)


# ---------------------------------------------------------------------------------------------- config
def test_config_from_toml_with_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[loss]\nmethod = "soft"\n[optim]\nepochs = 3\n[model]\nbasis = "fixed"\nsigma = 0.01\n')
    config = TrainConfig.from_toml(path, epochs=5, lr=None)
    assert (config.loss.method, config.optim.epochs, config.model.sigma, config.optim.lr) == (
        "soft", 5, 0.01, TrainConfig().optim.lr)


@pytest.mark.parametrize("text, problem", [("[optim]\nepoch = 3\n", "unknown config field optim.epoch"),
                                            ('[model]\nbasis = "fixed"\nsigma = "wide"\n', "sigma"),
                                            ('[loss]\ntau_schedule = "zigzag"\n', "tau_schedule"),
                                            ("[optim]\nbatch_size = 0\n", "batch_size"),
                                            ("[optim]\nepochs = [\n", "invalid TOML")])
def test_config_rejects_bad_values(tmp_path, text, problem):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=problem):
        TrainConfig.from_toml(path)


def test_tasks_follow_the_protocol():
    assert isinstance(get_task("supervised"), Task)
    with pytest.raises(ValueError, match="mode"):
        get_task("semi")


# ---------------------------------------------------------------------------------------------- model
def test_detector_shapes_and_bad_input():
    torch.manual_seed(0)
    model = KeypointDetector(5, width=0.25, hidden_channels=16).eval()
    maps = model(torch.rand(2, 600, 3) - 0.5)
    assert maps.logits.shape == (2, 5, 600) and maps.keypoints.shape == (2, 5, 3)
    assert torch.allclose(maps.probabilities.sum(-1), torch.ones(2, 5))
    with pytest.raises(ValueError, match="NaN"):
        model(torch.full((1, 600, 3), float("nan")))
    with pytest.raises(ValueError, match=r"\(B, N, 3\)"):
        model(torch.rand(600, 3))


# ---------------------------------------------------------------------------------------------- training
def test_step_lr_schedule_halves_every_lr_step_epochs(data_root, tmp_path):
    config = tiny_config(data_root, tmp_path, method="soft", epochs=3, lr=4e-3, lr_schedule="step", lr_step_epochs=2,
                         max_models=2, eval_every=100)
    run = train(config, progress=False)
    rows = [r for r in csv.DictReader(open(run / "log.csv")) if r["split"] == "train"]
    assert [float(r["lr"]) for r in rows] == pytest.approx([4e-3, 4e-3, 2e-3])


def test_train_writes_logs_and_checkpoints(data_root, tmp_path):
    run = train(tiny_config(data_root, tmp_path, epochs=1), progress=False)
    assert {"last.pt", "best.pt", "log.csv", "tensorboard"} <= {p.name for p in run.iterdir()}
    rows = list(csv.DictReader(open(run / "log.csv")))
    assert [(r["epoch"], r["split"]) for r in rows] == [("0", "train"), ("0", "val")]
    assert math.isfinite(float(rows[0]["loss"])) and 0 <= float(rows[1]["pck@0.01"]) <= 1
    task, model, config, checkpoint = load_checkpoint(run)
    assert config.model.num_keypoints == task.dataset(config, "train", False).num_keypoints
    assert checkpoint["epoch"] == 1 and not model.training


def test_resume_continues_exactly(data_root, tmp_path):
    config = tiny_config(data_root, tmp_path / "a")
    uninterrupted = load_checkpoint(train(config, progress=False) / "last.pt")[1]
    run = train(tiny_config(data_root, tmp_path / "b"), progress=False, stop_after=1)
    assert torch.load(run / "last.pt", weights_only=False)["epoch"] == 1
    resumed = load_checkpoint(train(resume=run, progress=False) / "last.pt")[1]
    state_a, state_b = uninterrupted.state_dict(), resumed.state_dict()
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        assert torch.equal(state_a[name], state_b[name]), name
    rows = list(csv.DictReader(open(run / "log.csv")))
    assert [(r["epoch"], r["split"]) for r in rows] == [("0", "train"), ("0", "val"), ("1", "train"), ("1", "val")]


def test_training_fits_the_training_clouds(data_root, tmp_path):
    """A few epochs on 4 clouds must bring the soft-argmax keypoints much closer to the annotations. BatchNorm
    keeps its running statistics (freeze_norm) so that batches of one cloud train what eval mode runs."""
    config = tiny_config(data_root, tmp_path, method="soft", epochs=6, batch_size=1, lr=1e-2, jitter=0.0, freeze_norm=True,
                         scale_lo=1.0, scale_hi=1.0, eval_every=100, lr_schedule="constant")
    task = SupervisedTask()
    dataset = task.dataset(config, "train", train=False)
    loader = DataLoader(dataset, 4, collate_fn=collate_keypoints)
    torch.manual_seed(config.run.seed)
    before = task.evaluate(task.build_model(task.configure(config, dataset)), loader, config).headline.mean_error
    _, model, _, _ = load_checkpoint(train(config, progress=False) / "last.pt")
    after = task.evaluate(model, loader, config).headline.mean_error
    assert after < 0.75 * before, (after, before)


def test_predict_is_equivariant_to_translation_and_scale(data_root, tmp_path):
    task = SupervisedTask()
    config = task.configure(tiny_config(data_root, tmp_path), task.dataset(tiny_config(data_root, tmp_path), "train", False))
    torch.manual_seed(0)
    model = task.build_model(config).eval()
    points = task.dataset(config, "test", False)[0]["points"]
    a = task.predict(model, points, config)
    b = task.predict(model, points * 3 + torch.tensor([1.0, -2.0, 0.5]), config)
    assert len(a["keypoints"]) == config.model.num_keypoints == len(a["confidence"]) == len(a["semantic_ids"])
    expected = torch.tensor(a["keypoints"]) * 3 + torch.tensor([1.0, -2.0, 0.5])
    assert torch.allclose(torch.tensor(b["keypoints"]), expected, atol=1e-4)
    assert all(0 < c <= 1 for c in a["confidence"])
    with pytest.raises(ValueError, match="NaN"):
        task.predict(model, torch.full((100, 3), float("nan")), config)
    with pytest.raises(ValueError, match="more than"):
        task.predict(model, torch.rand(5, 3), config)


def test_the_sampling_variants_train_from_the_config(data_root, tmp_path):
    """[loss] gumbel / clipped_integral / sampling+js / tau_epochs and [model] learn_sigma reach the loss, the
    schedule and the model."""
    config = tiny_config(data_root, tmp_path, method="sampling+js", gumbel="official", learn_sigma=True, epochs=2,
                         sampler="naive", clipped_integral=True, tau_schedule="linear", tau_start=2.0, tau_end=0.5,
                         tau_epochs=1)
    run = train(config, progress=False)
    _, model, saved, _ = load_checkpoint(run)
    assert (saved.loss.method, saved.loss.gumbel, saved.loss.clipped_integral, saved.model.learn_sigma) == (
        "sampling+js", "official", True, True)
    assert model.head.sigma_head is not None
    with open(run / "log.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "train"]
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    assert [float(r["tau"]) for r in rows] == [2.0, 0.5]  # annealed over tau_epochs = 1, then held


def test_evaluation_rows_of_the_train_split_are_not_the_training_rows(data_root, tmp_path):
    run = train(tiny_config(data_root, tmp_path, epochs=1, eval_split="train", method="soft"), progress=False)
    with open(run / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["split"] for r in rows] == ["train", "train_eval"]
    assert rows[0]["loss"] and not rows[0]["pck@0.01"] and rows[1]["pck@0.01"] and not rows[1]["loss"]
