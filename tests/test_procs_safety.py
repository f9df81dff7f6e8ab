"""Issue 31 M11, M12, Deliver 3: training in 2 processes (``--procs 2``) is as safe as in one. SIGTERM to the
process group (what ``timeout`` sends), Ctrl-C to it, and ``kill -9`` of one rank leave a resumable run or
nothing, print one line, and leave no process behind; a same-name rerun and ``--resume`` work."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pckeypoints.train.checkpoint import read_checkpoint
from pckeypoints.train.run_folder import MARKER
from pckeypoints.train.training import train

pytestmark = pytest.mark.slow

TINY_CLI = ["--width", "0.25", "--hidden-channels", "16", "--method", "sampling", "--num-samples", "4",
            "--batch-size", "2", "--max-models", "4", "--no-progress", "--no-test", "--procs", "2"]


@pytest.fixture(scope="module")
def boxes(tmp_path_factory):
    from box_folder import make_box_folder

    root = tmp_path_factory.mktemp("own") / "boxes"
    make_box_folder(root, num_models=8)
    return root


def start(*args: str, timeout: bool = False) -> subprocess.Popen:
    """``[timeout 600] python -m pckeypoints ARGS`` in a new process group (as a shell starts a job)."""
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "pckeypoints", *args]
    return subprocess.Popen((["timeout", "600"] if timeout else []) + command, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def train_args(boxes: Path, out: Path, epochs: int = 50) -> list[str]:
    return ["train", "--data", str(boxes), "--out", str(out), "--name", "T", "--epochs", str(epochs), *TINY_CLI]


def group(pgid: int) -> list[int]:
    """The live (not zombie) processes of the process group ``pgid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z" and int(fields[2]) == pgid:
                found.append(int(entry.name))
    return found


def ranks(process: subprocess.Popen, timeout: float = 300) -> list[int]:
    """The pids of the training processes that ``process`` (pckeypoints, or timeout running it) started."""
    start_time = time.monotonic()
    while True:
        found = []
        for pid in group(process.pid):
            try:
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
            except OSError:
                pass
        if len(found) == 2:
            return sorted(found)
        assert process.poll() is None, process.communicate()
        assert time.monotonic() - start_time < timeout, "the training processes did not start"
        time.sleep(0.05)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    start_time = time.monotonic()
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() - start_time < timeout, f"{path} did not appear"
        time.sleep(0.02)


def finish(process: subprocess.Popen) -> tuple[int, str]:
    """Wait for ``process``; its exit status and stderr, once no process of its group is left."""
    _, err = process.communicate(timeout=300)
    deadline = time.monotonic() + 20
    while group(process.pid):
        assert time.monotonic() < deadline, f"processes left behind: {group(process.pid)}"
        time.sleep(0.1)
    return process.returncode, err


def assert_one_line(err: str, *expected: str) -> None:
    lines = [line for line in err.strip().splitlines() if not line.startswith("[W")]  # torch's C++ warnings
    assert len(lines) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in lines[0], err


def assert_resumable_or_nothing(out: Path) -> bool:
    """Either no run folder (and no hidden one) or a run with a checkpoint; whether there is a run."""
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert left in ([], ["T"]), left
    if left:
        assert read_checkpoint(out / "T")[0]["epoch"] >= 1
        assert not list((out / "T").glob("*.tmp"))
    return bool(left)


def test_timeout_sigterm_to_the_group_leaves_nothing_or_a_resumable_run(boxes, tmp_path):
    """M12: ``timeout`` relays SIGTERM to the process group; before the first checkpoint nothing is left and a
    same-name rerun starts, after it the run is resumed."""
    out = tmp_path / "runs"
    process = start(*train_args(boxes, out), timeout=True)
    wait_for(out / "T" / MARKER, process)  # claimed: the processes are starting
    os.kill(process.pid, signal.SIGTERM)  # timeout signals pckeypoints, then the group
    code, err = finish(process)
    assert code == -signal.SIGTERM  # timeout itself ends by the signal it relayed
    assert_one_line(err, "pckeypoints train: terminated (SIGTERM)")
    assert not out.exists()
    process = start(*train_args(boxes, out), timeout=True)  # the same name again
    wait_for(out / "T" / "last.pt", process)
    os.kill(process.pid, signal.SIGTERM)
    code, err = finish(process)
    assert code == -signal.SIGTERM
    assert_one_line(err, "pckeypoints train: terminated (SIGTERM)")
    assert assert_resumable_or_nothing(out)
    epoch = read_checkpoint(out / "T")[0]["epoch"]
    if epoch < 50:
        assert train(resume=out / "T", progress=False, stop_after=epoch + 1) == out / "T"
        assert read_checkpoint(out / "T" / "last.pt")[0]["epoch"] == epoch + 1


def test_ctrl_c_to_the_group_while_the_processes_start(boxes, tmp_path):
    """Ctrl-C in a shell signals the whole group, here while the training processes import and load data."""
    out = tmp_path / "runs"
    process = start(*train_args(boxes, out))
    ranks(process)
    os.killpg(process.pid, signal.SIGINT)
    code, err = finish(process)
    assert code == -signal.SIGINT
    assert_one_line(err, "pckeypoints train: interrupted")
    assert not assert_resumable_or_nothing(out)


@pytest.mark.parametrize("rank, when", [(1, "starting"), (0, "checkpointed")])
def test_kill_9_of_one_rank_is_one_line_and_leaves_nothing_or_a_resumable_run(boxes, tmp_path, rank, when):
    """M11: the other rank is stopped, the error is one line (no ProcessExitedException traceback)."""
    out = tmp_path / "runs"
    process = start(*train_args(boxes, out))
    pids = ranks(process)
    if when == "checkpointed":
        wait_for(out / "T" / "last.pt", process)
    os.kill(pids[rank], signal.SIGKILL)
    code, err = finish(process)
    assert code == 1
    assert_one_line(err, f"pckeypoints train: error: training process {rank} of 2 was killed by SIGKILL")
    if when == "starting":
        assert not assert_resumable_or_nothing(out)
    else:
        assert assert_resumable_or_nothing(out)
    process = start(*train_args(boxes, out, epochs=1), *(["--overwrite"] if when == "checkpointed" else []))
    code, err = finish(process)
    assert code == 0, err
    assert read_checkpoint(out / "T" / "last.pt")[0]["epoch"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["T"]


def test_kill_9_of_the_parent_ends_the_ranks_and_a_rerun_takes_the_stub(boxes, tmp_path):
    """The training processes end with the process that started them; the folder it left (only the marker, no
    process holding it) is taken by a same-name rerun."""
    out = tmp_path / "runs"
    process = start(*train_args(boxes, out))
    ranks(process)
    os.kill(process.pid, signal.SIGKILL)
    code, _ = finish(process)  # and no rank left in the group
    assert code == -signal.SIGKILL
    code, err = finish(start(*train_args(boxes, out, epochs=1)))
    assert code == 0, err
    assert read_checkpoint(out / "T" / "last.pt")[0]["epoch"] == 1
