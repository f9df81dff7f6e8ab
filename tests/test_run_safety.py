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

from pckeypoints.train.checkpoint import read_checkpoint
from pckeypoints.errors import PCKeypointsError
from pckeypoints.config import TrainConfig
from pckeypoints.train.training import train

pytestmark = pytest.mark.slow

#: Runs training in a child process that SIGKILLs itself inside its ``KILL_AT``-th checkpoint write, after
#: writing half of the file (``partial``) or before writing anything (``before``).
KILLER = """
import io, json, os, signal, sys
import torch
from pckeypoints.config import TrainConfig
from pckeypoints.train.training import train

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
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # the same float sums as here
    child = subprocess.run([sys.executable, "-c", KILLER, str(kill_at), how, json.dumps(config.to_dict())],
                           env=env, capture_output=True, text=True, timeout=600)
    assert child.returncode == -9, child.stderr[-2000:]
    run = tmp_path / "run"
    if not list(run.glob("*.pt")):  # killed inside the first write: nothing to resume, a same-name rerun takes it
        assert kill_at == 1
        run = train(config, progress=False)
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
    from pckeypoints.train import supervised

    def broken(*args, **kwargs):
        raise ValueError("broken loss")

    monkeypatch.setattr(supervised.SupervisedTask, "loss", broken)
    with pytest.raises(ValueError, match="broken loss"):
        train(tiny(data_root, tmp_path), progress=False)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------- run folders, end to end
TINY_CLI = ["--width", "0.25", "--hidden-channels", "16", "--epochs", "1", "--method", "sampling", "--num-samples",
            "4", "--no-progress", "--no-test"]


@pytest.fixture(scope="module")
def boxes(tmp_path_factory):
    from box_folder import make_box_folder

    root = tmp_path_factory.mktemp("own") / "boxes"
    make_box_folder(root, num_models=10)
    return root


def cli(*args: str) -> subprocess.Popen:
    """``python3 -m pckeypoints ARGS`` started (not waited for), with this checkout first on the path."""
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "pckeypoints", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=600)
    return process.returncode, out, err


def assert_one_line(err: str, *expected: str) -> None:
    lines = [line for line in err.strip().splitlines() if not line.startswith("[W")]  # torch's C++ warnings
    assert len(lines) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in lines[0], err


def assert_one_run(run: Path, name: str) -> None:
    """``run`` holds one run: its marker, one TensorBoard file, checkpoints that name it."""
    from pckeypoints.train.run_folder import MARKER

    assert (run / MARKER).is_file() and len(list((run / "tensorboard").iterdir())) == 1
    assert read_checkpoint(run / "last.pt")[1].run.name == name


def test_concurrent_runs_never_share_a_folder(boxes, tmp_path):
    """Issue 21 item 1: two named runs started at once: one trains, the other gets one line; two unnamed runs
    get boxes_sampling and boxes_sampling_2."""
    out = str(tmp_path / "runs")
    named = [cli("train", "--data", str(boxes), "--out", out, "--name", "same", *TINY_CLI) for _ in range(2)]
    unnamed = [cli("train", "--data", str(boxes), "--out", out, *TINY_CLI) for _ in range(2)]
    results = [finish(p) for p in named + unnamed]
    codes = sorted(code for code, _, _ in results[:2])
    assert codes == [0, 1], results[:2]
    loser = next(err for code, _, err in results[:2] if code == 1)
    assert_one_line(loser, str(tmp_path / "runs" / "same"))
    assert_one_run(tmp_path / "runs" / "same", "same")
    assert [code for code, _, _ in results[2:]] == [0, 0], results[2:]
    printed = sorted(out.strip().splitlines()[-1] for _, out, _ in results[2:])
    assert printed == [f"run: {tmp_path / 'runs' / name}" for name in ("boxes_sampling", "boxes_sampling_2")]
    for name in ("boxes_sampling", "boxes_sampling_2"):
        assert_one_run(tmp_path / "runs" / name, name)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["boxes_sampling", "boxes_sampling_2", "same"]


def test_resume_from_a_loose_checkpoint_keeps_the_users_files(boxes, tmp_path):
    """Issue 21 item 2: --resume proj/mycheckpoint.pt continues in a new run folder; proj is left untouched."""
    run = train(TrainConfig.from_fields(data=str(boxes), out=str(tmp_path / "runs"), name="first", method="sampling",
                                        num_samples=4, width=0.25, hidden_channels=16, epochs=2, batch_size=4),
                progress=False, stop_after=1)
    proj = tmp_path / "proj"
    (proj / "eval_results").mkdir(parents=True)
    (proj / "eval_results" / "table.md").write_text("mine")
    (proj / "draft.tmp").write_text("draft")
    (proj / "log.csv").write_text("my,own\n")
    (proj / "mycheckpoint.pt").write_bytes((run / "last.pt").read_bytes())
    before = {p.relative_to(proj): p.read_bytes() for p in proj.rglob("*") if p.is_file()}
    code, out, err = finish(cli("train", "--resume", str(proj / "mycheckpoint.pt"), "--no-progress", "--no-test"))
    assert code == 0, err
    assert {p.relative_to(proj): p.read_bytes() for p in proj.rglob("*") if p.is_file()} == before
    new = tmp_path / "runs" / "first_2"
    assert out.strip().splitlines()[-1] == f"run: {new}"
    state, config = read_checkpoint(new / "last.pt")
    assert state["epoch"] == 2 and config.run.name == "first_2"
    assert read_checkpoint(run / "last.pt")[0]["epoch"] == 1  # the original run is not touched either


def test_resume_of_a_backup_with_a_log_never_trains_inside_it(data_root, tmp_path):
    """Issue 31 H1: a copy of a run's last.pt and log.csv without the marker is the user's backup: --resume of it
    continues in a new run folder and leaves every file of the backup as it was."""
    run = train(tiny(data_root, tmp_path / "runs"), progress=False, stop_after=1)
    backup = tmp_path / "b"
    (backup / "eval_test").mkdir(parents=True)
    (backup / "eval_test" / "notes.md").write_text("n")
    for name in ("last.pt", "log.csv"):
        (backup / name).write_bytes((run / name).read_bytes())
    (backup / "last.tmp").write_text("mine")
    (backup / "log.tmp").write_text("mine")
    before = {p.relative_to(backup): p.read_bytes() for p in backup.rglob("*") if p.is_file()}
    new = train(resume=backup / "last.pt", progress=False)
    assert new == tmp_path / "runs" / "run_2"
    assert {p.relative_to(backup): p.read_bytes() for p in backup.rglob("*") if p.is_file()} == before
    assert read_checkpoint(new / "last.pt")[0]["epoch"] == 2
    with pytest.raises(PCKeypointsError, match="not a pckeypoints run folder"):  # nor replaced by --overwrite
        train(tiny(data_root, tmp_path, name="b"), progress=False, overwrite=True)
    assert {p.relative_to(backup): p.read_bytes() for p in backup.rglob("*") if p.is_file()} == before


def test_resume_of_a_finished_loose_checkpoint_leaves_no_folder(data_root, reference, tmp_path):
    """Issue 31 M3: --resume of a finished checkpoint outside a run folder is one error, and no stub folder."""
    (tmp_path / "ck.pt").write_bytes((reference / "last.pt").read_bytes())
    for _ in range(2):
        with pytest.raises(PCKeypointsError, match="has finished its 2 epochs"):
            train(resume=tmp_path / "ck.pt", progress=False)
    assert sorted(p.name for p in reference.parent.iterdir()) == ["run"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]


def test_failing_overwrite_keeps_the_old_run(boxes, tmp_path):
    """Issue 21 item 3: --overwrite that diverges in its first epoch leaves the old run as it was; one that
    succeeds replaces it, leaving no hidden folders."""
    out = tmp_path / "runs"
    code, _, err = finish(cli("train", "--data", str(boxes), "--out", str(out), "--name", "same", *TINY_CLI))
    assert code == 0, err
    run = out / "same"
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    code, _, err = finish(cli("train", "--data", str(boxes), "--out", str(out), "--name", "same", "--overwrite",
                              "--lr", "1e30", "--batch-size", "1", *TINY_CLI))
    assert code == 1
    assert_one_line(err, "training diverged: loss is nan")  # the step no longer validates its clouds
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert [p.name for p in out.iterdir()] == ["same"]
    code, _, err = finish(cli("train", "--data", str(boxes), "--out", str(out), "--name", "same", "--overwrite",
                              "--seed", "1", *TINY_CLI))
    assert code == 0, err
    assert [p.name for p in out.iterdir()] == ["same"]
    assert read_checkpoint(run / "last.pt")[1].run.seed == 1
    assert_one_run(run, "same")
    assert len(list(csv.DictReader(open(run / "log.csv")))) == 2  # the new run's rows only


def test_claims_are_exclusive_locked_and_abandoned_without_trace(tmp_path):
    from pckeypoints.train.run_folder import claim, resume_target

    first = claim(tmp_path / "out" / "deeper", "a")
    with pytest.raises(PCKeypointsError, match="already exists; pass --overwrite"):
        claim(tmp_path / "out" / "deeper", "a")
    second = claim(tmp_path / "out" / "deeper", "a", numbered=True)
    assert second.path.name == "a_2"
    with pytest.raises(PCKeypointsError, match="a is in use by another pckeypoints process"):
        resume_target(first.path, str(tmp_path), "a")  # a second resume, or a replacement, of a running run
    with pytest.raises(PCKeypointsError, match="a is in use by another pckeypoints process"):
        claim(tmp_path / "out" / "deeper", "a", overwrite=True)
    first.close()
    (first.path / "notes.txt").write_text("mine")
    with pytest.raises(PCKeypointsError, match="holds 'notes.txt', which pckeypoints did not write"):
        claim(tmp_path / "out" / "deeper", "a", overwrite=True)
    second.abandon()
    (first.path / "notes.txt").unlink()
    first.abandon()  # released already: a run with no checkpoint is removed, and the folders it created
    assert not (tmp_path / "out").exists()
    (tmp_path / "empty").mkdir()  # an empty folder of the user's is taken, and left as it was found
    claim(tmp_path, "empty").abandon()
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    import time

    start = time.monotonic()
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() - start < timeout, f"{path} did not appear"
        time.sleep(0.02)


@pytest.mark.parametrize("signum, says", [(2, "interrupted"), (15, "terminated (SIGTERM)")])
def test_ctrl_c_and_sigterm_clean_up_and_print_one_line(boxes, tmp_path, signum, says):
    """Issue 21 items 8, 9: before the first checkpoint the run folder goes; after it the run is resumable. The
    process ends by the signal (exit status 128 + signum in a shell)."""
    from pckeypoints.train.run_folder import MARKER

    out, run = tmp_path / "runs", tmp_path / "runs" / "run"
    args = ["train", "--data", str(boxes), "--out", str(out), "--name", "run", *TINY_CLI, "--epochs", "50"]
    process = cli(*args)
    _wait_for(run / MARKER, process)  # claimed: data loading, the first epoch and its checkpoint are still ahead
    process.send_signal(signum)
    returncode, _, err = finish(process)
    assert returncode == -signum
    assert_one_line(err, f"pckeypoints train: {says}")
    assert not out.exists() or list(run.glob("*.pt")), "a folder without a checkpoint was left"
    process = cli(*args)
    _wait_for(run / "last.pt", process)
    process.send_signal(signum)
    returncode, _, err = finish(process)
    assert returncode == -signum
    assert_one_line(err, f"pckeypoints train: {says}")
    assert read_checkpoint(run)[0]["epoch"] >= 1 and not list(run.glob("*.tmp"))


def test_a_full_disk_while_writing_a_checkpoint_is_one_line(boxes, tmp_path):
    """Issue 21 item 8: a checkpoint write that fails (here: a 100 kB file-size limit, as a full disk fails it)."""
    import resource
    import signal

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write (EFBIG) instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
    child = subprocess.run([sys.executable, "-m", "pckeypoints", "train", "--data", str(boxes), "--out",
                            str(tmp_path / "runs"), "--name", "run", *TINY_CLI], env=env, capture_output=True,
                           text=True, timeout=600, preexec_fn=limit_file_size)
    assert child.returncode == 1
    assert_one_line(child.stderr, f"cannot write checkpoint {tmp_path / 'runs' / 'run' / 'best.pt'}: the write failed")
    assert not (tmp_path / "runs").exists()


def test_relative_data_overwrite_without_a_name_and_train_evaluation_rows(boxes, tmp_path, monkeypatch):
    """Issue 21 (low): the run stores the data folder's absolute path (eval works from anywhere); --overwrite
    without --name replaces <data>_<method>; with --eval-split train the evaluation rows are train_eval."""
    from pckeypoints.cli import main

    monkeypatch.chdir(boxes.parent)
    out = tmp_path / "runs"
    args = ["train", "--data", "boxes", "--out", str(out), *TINY_CLI]
    assert main(args) == 0
    run = out / "boxes_sampling"
    assert read_checkpoint(run)[1].data.folder == str(boxes)
    before = (run / "last.pt").read_bytes()
    assert main([*args, "--overwrite", "--eval-split", "train"]) == 0
    assert [p.name for p in out.iterdir()] == ["boxes_sampling"] and (run / "last.pt").read_bytes() != before
    with open(run / "log.csv", newline="") as f:
        assert [(r["epoch"], r["split"]) for r in csv.DictReader(f)] == [("0", "train"), ("0", "train_eval")]
    monkeypatch.chdir(tmp_path)
    assert main(["eval", str(run), "--split", "val", "--out", str(tmp_path / "val")]) == 0
