"""``pckeypoints eval`` reports (issue 31 M1, M4 and a low): never the old model's report in a run that was
replaced meanwhile, one line on a full disk, no report written into the current folder by accident."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from keypointnet_subset import make_subset

from pckeypoints.train import supervised
from pckeypoints.train.checkpoint import read_checkpoint
from pckeypoints.config import TrainConfig
from pckeypoints.errors import PCKeypointsError
from pckeypoints.train.evaluate_checkpoint import evaluate_checkpoint
from pckeypoints.train.training import train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_subset(tmp_path_factory.mktemp("kpn"), "bathtub", {"train": 2, "val": 1, "test": 2})


def tiny(data_root, out, **changes) -> TrainConfig:
    values = dict(category="bathtub", method="sampling", num_samples=4, width=0.25, hidden_channels=16, epochs=1,
                  batch_size=2, lr=3e-3, data_root=str(data_root), out=str(out), name="run")
    return TrainConfig.from_fields(**{**values, **changes})


@pytest.fixture(scope="module")
def run(data_root, tmp_path_factory):
    return train(tiny(data_root, tmp_path_factory.mktemp("runs")), progress=False)


def test_the_report_names_its_checkpoint(run, tmp_path):
    evaluate_checkpoint(run, "test", out_dir=tmp_path / "ev")
    scored = json.loads((tmp_path / "ev" / "metrics.json").read_text())["checkpoint"]
    assert scored["sha256"] == hashlib.sha256((run / "best.pt").read_bytes()).hexdigest()
    assert scored["file"] == str(run / "best.pt") and scored["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ev"]  # no staging folder left


def test_eval_and_a_concurrent_overwrite_never_interleave(data_root, tmp_path, monkeypatch):
    """M1: eval loaded the old model; a train --overwrite of the run commits before eval writes its report: the
    old model's report must not land in the new run."""
    old = train(tiny(data_root, tmp_path), progress=False)
    (old / "eval_test").mkdir()
    (old / "eval_test" / "metrics.json").write_text("old run's report")
    report = supervised.SupervisedTask.report

    def overwritten_meanwhile(self, *args, **kwargs):
        train(tiny(data_root, tmp_path, lr=0.01), progress=False, overwrite=True)
        return report(self, *args, **kwargs)

    monkeypatch.setattr(supervised.SupervisedTask, "report", overwritten_meanwhile)
    with pytest.raises(PCKeypointsError, match="best.pt changed while it was evaluated"):
        evaluate_checkpoint(old, "test", out_dir=old / "eval_test")
    assert read_checkpoint(old / "best.pt")[1].optim.lr == 0.01  # the new run
    assert sorted(p.name for p in old.iterdir() if not p.name.startswith(".")) == ["best.pt", "last.pt", "log.csv",
                                                                                 "tensorboard"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_an_interrupted_report_leaves_the_old_one(run, tmp_path, monkeypatch):
    """Low: a report that fails half-way never mixes new tables with the old figures."""
    evaluate_checkpoint(run, "test", out_dir=tmp_path / "ev")
    before = {p.name: p.read_bytes() for p in (tmp_path / "ev").iterdir()}

    def torn(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(supervised, "save_records", torn)
    with pytest.raises(KeyboardInterrupt):
        evaluate_checkpoint(run, "test", out_dir=tmp_path / "ev")
    assert {p.name: p.read_bytes() for p in (tmp_path / "ev").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ev"]


def test_eval_onto_a_full_disk_is_one_line_and_leaves_nothing(run, tmp_path):
    """M4: a report write that fails (a 4 kB file-size limit, as a full disk fails it: records.pt is larger) prints
    one line, not torch's RuntimeError, and leaves no report folder, nor the parents it created."""
    import resource
    import signal

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write (EFBIG) instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (4000, 4000))

    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "full" / "new"
    child = subprocess.run([sys.executable, "-m", "pckeypoints", "eval", str(run), "--out", str(out)], env=env,
                           capture_output=True, text=True, timeout=600, preexec_fn=limit_file_size)
    assert child.returncode == 1, child.stderr
    lines = [line for line in child.stderr.strip().splitlines() if "pckeypoints" in line]  # not the loading bar
    assert len(lines) == 1 and "Traceback" not in child.stderr and "Error" not in child.stderr, child.stderr
    assert f"cannot write the report into {out}: File too large" in lines[0], child.stderr
    assert list(tmp_path.iterdir()) == []
