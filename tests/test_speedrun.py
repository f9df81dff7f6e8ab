"""experiments/speedrun.py: the CPU-time and wall-clock budgets, the curve and test scores of a cell, the weights of
``pckeypoints train``, the grid through the runner and resuming it."""
import argparse
import json
import sys

import pytest
import torch
from keypointnet_subset import make_subset

from experiments import speedrun
from pckeypoints.config import TrainConfig
from pckeypoints.distributed import spawn
from pckeypoints.train.checkpoint import read_checkpoint
from pckeypoints.train.training import train

TINY = {"method": "soft+js", "basis": "fixed", "sigma": 0.01, "width": 0.25, "hidden_channels": 16, "batch_size": 2, "lr": 1e-3}


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    return make_subset(tmp_path_factory.mktemp("kpn"), sizes={"train": 4, "val": 2, "test": 2})


@pytest.fixture(scope="module")
def fitting_cell(subset, tmp_path_factory):
    """A cell whose 2 epochs fit its budget (BatchNorm frozen: the trainer's ``freeze_norm``), and its runs folder."""
    runs = tmp_path_factory.mktemp("runs")
    fields = {**TINY, "epochs": 2, "freeze_norm": True}
    return speedrun.train_cell("tiny", fields, "bathtub", 0, 600.0, str(subset), runs), runs


def test_a_cell_stops_before_its_budget_and_scores_the_test_split(subset, tmp_path):
    record = speedrun.train_cell("tiny", {**TINY, "epochs": 1000}, "bathtub", 0, 3.0, str(subset), tmp_path)
    assert record["cut_by_budget"] and record["epochs"] < 1000
    assert record["train_cpu_s"] <= 3.0 and record["steps"] >= 2
    cpu = [p["budget_s"] for p in record["curve"]]
    assert cpu == sorted(cpu) and len(cpu) == speedrun.MARKS  # one validation per tenth of the budget
    assert all(0 <= v <= 100 for v in record["test"].values()) and record["threads"] == 1
    assert record["procs"] == 1 and record["clock"] == "cpu" and record["train_cpu_s"] == pytest.approx(cpu[-1], abs=0.5)
    last = read_checkpoint(tmp_path / "tiny_bathtub_s0" / "last.pt")[0]
    assert last["epoch"] == record["epochs"] + 1  # the epoch cut short is the run's last


def test_two_processes_share_a_wall_clock_budget(subset, tmp_path):
    record = spawn(speedrun.train_cell, 2, "tiny", {**TINY, "epochs": 1000}, "bathtub", 0, 3.0, str(subset), tmp_path)
    assert record["procs"] == 2 and record["clock"] == "wall" and record["cut_by_budget"] and record["threads"] == 1
    clock = [p["budget_s"] for p in record["curve"]]  # one validation per tenth passed (a slow step may pass two)
    assert clock == sorted(clock) and 2 <= len(clock) <= speedrun.MARKS and clock[-1] <= 3.0 * 1.5
    assert record["steps"] >= 2 * record["epochs"] >= 2  # 2 clouds of the train split, one per process and step


def test_a_recipe_that_fits_runs_all_its_epochs(fitting_cell):
    record, _ = fitting_cell
    assert not record["cut_by_budget"] and record["epochs"] == 2 and record["steps"] == 4
    assert record["curve"][-1]["step"] == 4  # validated at the end


def test_a_cell_trains_the_weights_of_pckeypoints_train(fitting_cell, subset, tmp_path):
    record, runs = fitting_cell
    config = TrainConfig.from_fields(**record["fields"], category="bathtub", seed=0, device="cpu",
                                     data_root=str(subset), out=str(tmp_path), name="plain")
    plain = read_checkpoint(train(config, progress=False) / "last.pt")[0]["model"]
    cell = read_checkpoint(runs / "tiny_bathtub_s0" / "last.pt")[0]["model"]
    assert plain.keys() == cell.keys() and any("running_mean" in k for k in plain)
    assert all(torch.equal(plain[k], cell[k]) for k in plain)


def test_the_grid_runs_its_cells_through_the_runner(subset, tmp_path, monkeypatch):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "tiny.toml").write_text('[model]\nwidth = 0.25\nhidden_channels = 16\n'
                                                    '[loss]\nmethod = "soft"\n[optim]\nepochs = 1\nbatch_size = 2\n')
    ran = []

    def run_commands(commands, jobs, log_dir):  # the cells in this process: `python -m experiments.speedrun ...`
        for name, command in commands:
            assert command[:4] == [sys.executable, "-m", "experiments.speedrun", "cell"]
            ran.append(name)
            speedrun.main(command[3:])
        return []

    monkeypatch.setattr(speedrun.runner, "run_commands", run_commands)
    args = argparse.Namespace(results=tmp_path / "results", runs=tmp_path / "runs", recipes_dir=tmp_path / "recipes",
                              recipes=["tiny"], categories=["bathtub"], seeds=[3], jobs=1, budget=60.0,
                              data_root=str(subset), procs=1)
    speedrun.run(args)
    cells = json.loads((tmp_path / "results" / "speedrun.json").read_text())["cells"]
    assert ran == ["tiny_bathtub_s3"] and list(cells) == ["tiny/bathtub/s3"]
    assert cells["tiny/bathtub/s3"]["fields"] == {"width": 0.25, "hidden_channels": 16, "method": "soft", "epochs": 1,
                                                  "batch_size": 2}
    assert "| tiny | bathtub |" in (tmp_path / "results" / "speedrun.md").read_text()


def test_finished_cells_are_skipped_and_tables_rebuilt(tmp_path, monkeypatch):
    cell = {"recipe": "quickstart", "fields": {"width": 0.25}, "category": "bed", "seed": 0, "procs": 1, "clock": "cpu",
            "budget_s": 300.0, "train_cpu_s": 299.0, "train_wall_s": 400.0, "epochs": 3, "of_epochs": 3,
            "curve": [{"budget_s": 299.0, "val_pck": 40.0}],
            "test": {"pck_snapped_geodesic": 50.0, "pck_snapped_euclidean": 52.0, "pck_expectation_euclidean": 49.0}}
    (tmp_path / "speedrun.json").write_text(json.dumps({"cells": {"quickstart/bed/s0": cell}}))
    monkeypatch.setattr(speedrun.runner, "run_commands", lambda *a, **k: pytest.fail("a finished cell ran again"))
    args = argparse.Namespace(results=tmp_path, runs=tmp_path / "runs", recipes_dir=speedrun.RECIPES,
                              recipes=["quickstart"], categories=["bed"], seeds=[0], jobs=1, budget=None,
                              data_root=None, procs=1)
    speedrun.run(args)
    table = (tmp_path / "speedrun.md").read_text()
    assert "| quickstart | bed | CPU time, 1 process (1 thread) | 0 | 300 | 400 | 299 |" in table and "yes (+1.3)" in table
    assert (tmp_path / "speedrun.png").is_file()


def test_an_unknown_recipe_stops_the_grid_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(speedrun.runner, "run_commands", lambda *a, **k: pytest.fail("trained an unknown recipe"))
    args = argparse.Namespace(results=tmp_path, runs=tmp_path / "runs", recipes_dir=speedrun.RECIPES,
                              recipes=["no-such-recipe"], categories=["bed"], seeds=[0], jobs=1, budget=None,
                              data_root=None, procs=1)
    with pytest.raises(SystemExit, match="unknown recipe 'no-such-recipe'.*w05-e100"):
        speedrun.run(args)
