"""Runs are never lost: kill -9 during any checkpoint write then resume ends as an uninterrupted run; a new
run never overwrites an old one; a run that fails before its first checkpoint leaves nothing behind."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from keypointnet_subset import make_subset

from pckeypoints.checkpoint import read_checkpoint
from pckeypoints.errors import PCKeypointsError
from pckeypoints.config import TrainConfig
from pckeypoints.training import train

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Runs here are compared bit for bit with runs in child processes of one thread (OMP_NUM_THREADS=1):
    train in one thread too (sums over several threads may add in another order)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

#: Runs training in a child process that SIGKILLs itself inside its ``KILL_AT``-th checkpoint write, after
#: writing half of the file (``partial``) or before writing anything (``before``).
KILLER = """
import io, json, os, signal, sys
import torch
from pckeypoints.config import TrainConfig
from pckeypoints.training import train

kill_at, how, values = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
real_save, calls = torch.save, [0]

def save(obj, f, *args, **kwargs):
    calls[0] += 1
    if calls[0] == kill_at:
        buffer = io.BytesIO()
        real_save(obj, buffer)
        with open(f, "wb") as out:
            out.write(buffer.getvalue()[: len(buffer.getvalue()) // 2] if how == "partial" else b"")
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)

torch.save = save
train(TrainConfig.from_dict(values), progress=False)
"""


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_subset(tmp_path_factory.mktemp("kpn"), "bathtub", {"train": 4, "val": 2, "test": 2})


def tiny(data_root, out, **changes) -> TrainConfig:
    values = dict(category="bathtub", method="sampling", num_samples=4, width=0.25, hidden_channels=16, epochs=2,
                  batch_size=2, lr=3e-3, data_root=str(data_root), out=str(out), name="run", max_models=4)
    return TrainConfig.from_fields(**{**values, **changes})


@pytest.fixture(scope="module")
def reference(data_root, tmp_path_factory):
    """An uninterrupted run: its folder."""
    return train(tiny(data_root, tmp_path_factory.mktemp("reference")), progress=False)


def assert_same_weights(path_a: Path, path_b: Path) -> None:
    a, b = read_checkpoint(path_a)[0], read_checkpoint(path_b)[0]
    assert a["epoch"] == b["epoch"] and a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name


@pytest.mark.parametrize("kill_at, how", [(1, "partial"), (2, "before"), (2, "partial"), (3, "partial")])
def test_kill_during_a_checkpoint_write_then_resume(data_root, reference, tmp_path, kill_at, how):
    """Writes: epoch 1 best.pt, last.pt; epoch 2 best.pt (if improved), last.pt."""
    config = tiny(data_root, tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.run([sys.executable, "-c", KILLER, str(kill_at), how, json.dumps(config.to_dict())],
                           env=env, capture_output=True, text=True, timeout=600)
    assert child.returncode == -9, child.stderr[-2000:]
    run = tmp_path / "run"
    if not list(run.glob("*.pt")):  # killed inside the first write: nothing to resume, start again
        assert kill_at == 1
        with pytest.raises(PCKeypointsError, match="already exists"):
            train(config, progress=False)
        run = train(config, progress=False, overwrite=True)
    else:
        train(resume=run, progress=False)
    assert not list(run.glob("*.tmp"))
    for name in ("last.pt", "best.pt"):
        assert_same_weights(run / name, reference / name)


def test_best_checkpoint_lost_under_the_old_write_order_is_rewritten(data_root, reference, tmp_path):
    """Issue 11 defect 1: last.pt names a best epoch whose best.pt write was killed (0-byte best.tmp)."""
    run = train(tiny(data_root, tmp_path), progress=False, stop_after=1)
    (run / "best.pt").unlink()
    (run / "best.tmp").write_bytes(b"")
    train(resume=run, progress=False)
    assert not (run / "best.tmp").exists()
    assert_same_weights(run / "best.pt", reference / "best.pt")
    assert_same_weights(run / "last.pt", reference / "last.pt")


def test_new_runs_never_overwrite(data_root, reference, tmp_path):
    """Issue 11 defect 2: retraining under a taken name, colliding default names, stale reports."""
    config = tiny(data_root, tmp_path, epochs=1)
    run = train(config, progress=False)
    (run / "eval_test").mkdir()
    before = (run / "last.pt").read_bytes()
    with pytest.raises(PCKeypointsError, match="already exists; pass --overwrite"):
        train(config, progress=False)
    assert (run / "last.pt").read_bytes() == before
    train(config, progress=False, overwrite=True)
    assert not (run / "eval_test").exists()
    unnamed = tiny(data_root, tmp_path, epochs=1, name=None)
    first, second = train(unnamed, progress=False), train(unnamed, progress=False)
    assert (first.name, second.name) == ("bathtub_sampling", "bathtub_sampling_2")
    assert read_checkpoint(second)[1].run.name == "bathtub_sampling_2"
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep")
    with pytest.raises(PCKeypointsError, match="not a pckeypoints run folder"):
        train(tiny(data_root, tmp_path, name="notes"), progress=False, overwrite=True)
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep"


def test_resume_removes_stale_reports_and_torn_log_rows(data_root, tmp_path):
    run = train(tiny(data_root, tmp_path), progress=False, stop_after=1)
    (run / "eval_test").mkdir()
    (run / "eval_test" / "metrics.json").write_text("{}")
    with open(run / "log.csv", "a") as f:
        f.write("1,tra")  # a row torn by a kill (log.csv itself is now replaced atomically)
    train(resume=run, progress=False)
    assert not (run / "eval_test").exists()
    with open(run / "log.csv", newline="") as f:
        rows = [(r["epoch"], r["split"]) for r in csv.DictReader(f)]
    assert rows == [("0", "train"), ("0", "val"), ("1", "train"), ("1", "val")]


def test_failure_before_the_first_checkpoint_leaves_nothing(data_root, tmp_path, monkeypatch):
    """Issue 11 defect 6: a run that fails in its first epoch leaves no stub folder."""
    from pckeypoints import supervised

    def broken(*args, **kwargs):
        raise ValueError("broken loss")

    monkeypatch.setattr(supervised.SupervisedTask, "loss", broken)
    with pytest.raises(ValueError, match="broken loss"):
        train(tiny(data_root, tmp_path), progress=False)
    assert not (tmp_path / "run").exists()
