"""The one checkpoint loader: every damaged or foreign file is one CheckpointError naming the file and problem."""
from __future__ import annotations

import argparse
import pickle

import pytest
import torch

from pckeypoints.train.checkpoint import FORMAT_VERSION, load_checkpoint, read_checkpoint, save_checkpoint
from pckeypoints.config import TrainConfig
from pckeypoints.errors import CheckpointError
from pckeypoints.train.tasks import get_task

CONFIG = TrainConfig.from_fields(num_keypoints=3, width=0.25, hidden_channels=16, epochs=2)


def checkpoint_state(config: TrainConfig = CONFIG) -> dict:
    torch.manual_seed(0)
    model = get_task(config.mode).build_model(config)
    return {"model": model.state_dict(), "config": config.to_dict(), "epoch": 1, "best": 0.5, "best_epoch": 1,
            "optimizer": {}, "lr_schedule": {}, "tau_schedule": {"epoch": 1}}


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.pt"
    save_checkpoint(checkpoint_state(), path)
    return path


def test_round_trip_and_run_folder(good, tmp_path):
    task, model, config, checkpoint = load_checkpoint(good)
    assert config == CONFIG and checkpoint["format_version"] == FORMAT_VERSION and not model.training
    reference = get_task("supervised").build_model(CONFIG)
    reference.load_state_dict(checkpoint_state()["model"])
    for name, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    assert not list(tmp_path.glob("*.tmp"))
    (tmp_path / "run").mkdir()
    good.rename(tmp_path / "run" / "last.pt")
    assert load_checkpoint(tmp_path / "run")[2] == CONFIG  # a run folder without best.pt falls back to last.pt


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _pickled(path, value):
    torch.save(value, path)
    return path


@pytest.mark.parametrize("make, problem", [
    (lambda d, good: d / "missing.pt", "does not exist"),
    (lambda d, good: d, "has no best.pt or last.pt"),
    (lambda d, good: _write(d / "empty.pt", b""), r"empty \(0 bytes\)"),
    (lambda d, good: _write(d / "cut.pt", good.read_bytes()[: good.stat().st_size // 2]), "truncated or damaged"),
    (lambda d, good: _write(d / "junk.pt", b"\x00garbage" * 100), "not a pckeypoints checkpoint"),
    (lambda d, good: _write(d / "text.pt", b"hello\n"), "not a pckeypoints checkpoint"),
    (lambda d, good: _pickled(d / "code.pt", argparse.Namespace(model={}, config={})), "holds Python objects"),
    (lambda d, good: _write(d / "pickle.pt", pickle.dumps({"model": {}})), "not a pckeypoints checkpoint"),
])
def test_damaged_files(tmp_path, good, make, problem):
    folder = tmp_path / "files"
    folder.mkdir()
    path = make(folder, good)
    with pytest.raises(CheckpointError, match=problem) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("change, problem", [
    (lambda s: {"weights": s["model"]}, r"not a pckeypoints checkpoint \(no model weights and config\)"),
    (lambda s: {**s, "config": None}, "no model weights and config"),
    (lambda s: [s], "no model weights and config"),
    (lambda s: {**s, "config": {**s["config"], "colour": "red"}}, "config this version .* cannot use: unknown config key 'colour'"),
    (lambda s: {**s, "config": {**s["config"], "optim": {"epochs": "three"}}}, "cannot use: config field optim.epochs"),
    (lambda s: {**s, "config": {**s["config"], "model": {"num_keypoints": None}}}, "cannot build the supervised model"),
    (lambda s: {**s, "format_version": FORMAT_VERSION + 1}, "written by a newer pckeypoints"),
    (lambda s: {**s, "format_version": FORMAT_VERSION - 1}, "written by an older pckeypoints"),
    (lambda s: {k: v for k, v in s.items() if k != "format"}, r"not a pckeypoints checkpoint \(format None\)"),
    (lambda s: {**s, "format": "other"}, "not a pckeypoints checkpoint"),
    (lambda s: {**s, "model": {**s["model"], "extra": torch.zeros(1)}}, "do not fit the supervised model"),
    (lambda s: {**s, "config": {**s["config"], "model": {**s["config"]["model"], "num_keypoints": 4}}},
     "weight .* has shape"),
])
def test_foreign_contents(tmp_path, change, problem):
    path = tmp_path / "foreign.pt"
    torch.save(change({**checkpoint_state(), "format": "pckeypoints", "format_version": FORMAT_VERSION}), path)
    with pytest.raises(CheckpointError, match=problem) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_weights_of_the_other_mode_are_named(tmp_path):
    unsupervised = checkpoint_state(TrainConfig.from_fields(mode="unsupervised", method="soft", num_keypoints=3,
                                                            width=0.25, hidden_channels=16, epochs=2))
    path = tmp_path / "swapped.pt"
    save_checkpoint({**checkpoint_state(), "model": unsupervised["model"]}, path)
    with pytest.raises(CheckpointError, match="written by the unsupervised mode, but its config says supervised"):
        load_checkpoint(path)
    save_checkpoint(unsupervised, path)
    assert load_checkpoint(path)[2].mode == "unsupervised"
    with pytest.raises(CheckpointError, match="written by the unsupervised mode; a supervised checkpoint is needed"):
        load_checkpoint(path, mode="supervised")


def test_resume_needs_the_training_state(tmp_path):
    path = tmp_path / "weights_only.pt"
    state = checkpoint_state()
    save_checkpoint({"model": state["model"], "config": state["config"]}, path)
    assert load_checkpoint(path)[2] == CONFIG
    with pytest.raises(CheckpointError, match="cannot resume training: it has no optimizer"):
        read_checkpoint(path, training_state=True)


# ---------------------------------------------------------------------------------------------- issue 21 (low)
def test_random_bytes_nan_weights_and_a_damaged_last_checkpoint(tmp_path, good, recwarn):
    import numpy as np

    (tmp_path / "noise.pt").write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(CheckpointError, match=r"noise.pt is not a pckeypoints checkpoint \(not a file written by "
                                              r"torch.save\)"):
        read_checkpoint(tmp_path / "noise.pt")
    state = checkpoint_state()
    name = next(iter(state["model"]))
    state["model"][name] = torch.full_like(state["model"][name], float("nan"))
    save_checkpoint(state, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match=rf"nan.pt is damaged: weight {name} holds NaN or infinite values"):
        load_checkpoint(tmp_path / "nan.pt")
    from pckeypoints.train.training import _resume_state

    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(checkpoint_state(), run / "best.pt")
    (run / "last.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.warns(UserWarning, match=r"last.pt is truncated or damaged .*; resuming from the other checkpoint, "
                                         r"of epoch 1"):
        assert _resume_state(run)[0]["epoch"] == 1


def test_a_local_folder_does_not_hide_a_shipped_model_silently(tmp_path, monkeypatch, good):
    from pckeypoints.train.checkpoint import resolve_checkpoint
    from pckeypoints.pretrained import pretrained_path

    shipped = pretrained_path("bathtub")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bathtub").mkdir()  # e.g. a data folder
    assert resolve_checkpoint("bathtub") == shipped
    (tmp_path / "bathtub" / "last.pt").write_bytes(good.read_bytes())  # a run of that name: used, and said so
    with pytest.warns(UserWarning, match="the local bathtub hides the shipped model 'bathtub'; using the local one"):
        assert resolve_checkpoint("bathtub").resolve() == tmp_path / "bathtub" / "last.pt"
