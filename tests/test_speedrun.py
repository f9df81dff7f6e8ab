"""experiments/speedrun.py: the CPU-time and wall-clock budgets, the curve and test scores of a cell, resuming the grid."""
import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from keypointnet_subset import make_subset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))  # speedrun imports its siblings (stats), as when run as a script
spec = importlib.util.spec_from_file_location("speedrun", ROOT / "experiments" / "speedrun.py")
speedrun = importlib.util.module_from_spec(spec)
spec.loader.exec_module(speedrun)

TINY = {"method": "soft+js", "basis": "fixed", "sigma": 0.01, "width": 0.25, "hidden_channels": 16, "batch_size": 2, "lr": 1e-3}


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    return make_subset(tmp_path_factory.mktemp("kpn"), sizes={"train": 4, "val": 2, "test": 2})


def test_a_cell_stops_before_its_budget_and_scores_the_test_split(subset):
    record = speedrun.train_cell("tiny", {**TINY, "epochs": 1000}, "bathtub", 0, 3.0, str(subset))
    assert record["cut_by_budget"] and record["epochs"] < 1000
    assert record["train_cpu_s"] <= 3.0 and record["steps"] >= 2
    cpu = [p["budget_s"] for p in record["curve"]]
    assert cpu == sorted(cpu) and len(cpu) == speedrun.MARKS  # one validation per tenth of the budget
    assert all(0 <= v <= 100 for v in record["test"].values()) and record["threads"] == 1
    assert record["procs"] == 1 and record["clock"] == "cpu" and record["train_cpu_s"] == pytest.approx(cpu[-1], abs=0.5)


def test_two_processes_share_a_wall_clock_budget(subset, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))  # the processes import the module by name
    from speedrun import train_cell

    from pckeypoints.distributed import spawn

    record = spawn(train_cell, 2, "tiny", {**TINY, "epochs": 1000}, "bathtub", 0, 3.0, str(subset))
    assert record["procs"] == 2 and record["clock"] == "wall" and record["cut_by_budget"] and record["threads"] == 1
    clock = [p["budget_s"] for p in record["curve"]]  # one validation per tenth passed (a slow step may pass two)
    assert clock == sorted(clock) and 2 <= len(clock) <= speedrun.MARKS and clock[-1] <= 3.0 * 1.5
    assert record["steps"] >= 2 * record["epochs"] >= 2  # 2 clouds of the train split, one per process and step


def test_a_recipe_that_fits_runs_all_its_epochs(subset):
    record = speedrun.train_cell("tiny", {**TINY, "epochs": 2}, "bathtub", 0, 600.0, str(subset))
    assert not record["cut_by_budget"] and record["epochs"] == 2 and record["steps"] == 4
    assert record["curve"][-1]["step"] == 4  # validated at the end


def test_finished_cells_are_skipped_and_tables_rebuilt(tmp_path, monkeypatch):
    cell = {"recipe": "quickstart", "fields": {"width": 0.25}, "category": "bed", "seed": 0, "procs": 1, "clock": "cpu",
            "budget_s": 300.0, "train_cpu_s": 299.0, "train_wall_s": 400.0, "epochs": 3, "of_epochs": 3,
            "curve": [{"budget_s": 299.0, "val_pck": 40.0}],
            "test": {"pck_snapped_geodesic": 50.0, "pck_snapped_euclidean": 52.0, "pck_expectation_euclidean": 49.0}}
    (tmp_path / "speedrun.json").write_text(json.dumps({"cells": {"quickstart/bed/s0": cell}}))
    monkeypatch.setattr(speedrun.subprocess, "run", lambda *a, **k: pytest.fail("a finished cell ran again"))
    args = argparse.Namespace(results=tmp_path, recipes=["quickstart"], categories=["bed"], seeds=[0], jobs=1,
                              budget=None, data_root=None, procs=1)
    speedrun.run(args)
    table = (tmp_path / "speedrun.md").read_text()
    assert "| quickstart | bed | CPU time, 1 process (1 thread) | 0 | 300 | 400 | 299 |" in table and "yes (+1.3)" in table
    assert (tmp_path / "speedrun.png").is_file()
