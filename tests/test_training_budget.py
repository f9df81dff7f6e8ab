"""The trainer's time budget and callbacks (pckeypoints.train.budget, pckeypoints.train.callbacks)."""
from __future__ import annotations

import csv
import math
import time

import pytest
import torch
from keypointnet_subset import make_subset

from pckeypoints.config import TrainConfig
from pckeypoints.distributed import World
from pckeypoints.errors import ConfigError
from pckeypoints.train.budget import TimeBudget
from pckeypoints.train.callbacks import Callback
from pckeypoints.train.checkpoint import read_checkpoint
from pckeypoints.train.tasks import get_task
from pckeypoints.train.training import TrainState, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_subset(tmp_path_factory.mktemp("kpn"), "bathtub", {"train": 4, "val": 2, "test": 2})


def tiny_config(data_root, out, name, **changes) -> TrainConfig:
    values = dict(category="bathtub", method="soft", width=0.25, hidden_channels=16, epochs=2, batch_size=2,
                  lr=3e-3, data_root=str(data_root), out=str(out), name=name, device="cpu")
    return TrainConfig.from_fields(**{**values, **changes})


class Evaluating(Callback):
    """Evaluates the model after every step (eval mode) and records what it sees."""

    def __init__(self):
        self.steps, self.epochs, self.validations, self.paused = [], [], [], []

    def on_step(self, session):
        self.steps.append(session.step)
        self.epochs.append(session.epochs)
        self.paused.append(not session.budget.running)
        session.state.model.eval()

    def on_validation(self, session, metrics):
        self.validations.append((session.state.epoch, metrics.monitored))


def weights(run_dir):
    return read_checkpoint(run_dir / "last.pt")[0]["model"]


def test_callbacks_see_every_step_and_validation_and_leave_training_as_it_was(data_root, tmp_path):
    plain = weights(train(tiny_config(data_root, tmp_path, "plain"), progress=False))
    seen = Evaluating()
    run_dir = train(tiny_config(data_root, tmp_path, "hooked"), progress=False, callbacks=[seen])
    hooked = weights(run_dir)
    assert all(torch.equal(plain[k], hooked[k]) for k in plain)  # back in training mode after each on_step
    assert seen.steps == [1, 2, 3, 4] and seen.epochs == [0.5, 1.0, 1.5, 2.0] and all(seen.paused)
    with open(run_dir / "log.csv", newline="") as f:
        logged = [(int(r["epoch"]) + 1, float(r["pck@0.01"])) for r in csv.DictReader(f) if r["split"] == "val"]
    assert seen.validations == pytest.approx(logged) and len(logged) == 2


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")  # no step fitted
def test_a_budget_ends_the_run_before_the_step_that_would_pass_it(data_root, tmp_path):
    budget = TimeBudget(1e-6)  # less than loading the first batch: no step fits
    run_dir = train(tiny_config(data_root, tmp_path, "cut", epochs=5), progress=False, budget=budget)
    assert budget.cut and 0 < budget.cpu_s < 1.0 and budget.spent == budget.cpu_s
    checkpoint, config = read_checkpoint(run_dir / "last.pt")
    assert checkpoint["epoch"] == 1  # the cut epoch is the last one, checkpointed
    task = get_task(config.mode)
    initial = TrainState.create(task, config, torch.device("cpu")).model.state_dict()
    assert all(torch.equal(initial[k], checkpoint["model"][k]) for k in initial)  # no step taken
    with open(run_dir / "log.csv", newline="") as f:
        assert [r["split"] for r in csv.DictReader(f)] == ["train", "val"]  # validated at the cut


def test_a_budget_keeps_its_clock_only_while_running():
    budget = TimeBudget(math.inf, clock="wall")
    budget.start()
    time.sleep(0.05)
    with budget.paused():
        time.sleep(0.2)
        assert not budget.running
    budget.stop()
    assert 0.04 < budget.wall_s < 0.2 and budget.spent == budget.wall_s
    assert budget.allows_step(World(), torch.device("cpu")) and not budget.cut


@pytest.mark.parametrize("seconds, clock, problem", [(0, "cpu", "positive"), (-1.0, "cpu", "positive"),
                                                     (float("nan"), "cpu", "positive"), (1.0, "gpu", "clock")])
def test_a_bad_budget_is_a_clear_error(seconds, clock, problem):
    with pytest.raises(ConfigError, match=problem):
        TimeBudget(seconds, clock)
