"""Run folders left by kills (issue 31 M11, M12 and a low): a stub that holds only the marker, hidden
``.NAME.new-PID`` / ``.NAME.old-PID`` folders, and a folder that another process (rank 0) wrote and swapped in."""
from __future__ import annotations

import os

import pytest

from pckeypoints.errors import PCKeypointsError
from pckeypoints.train.run_folder import MARKER, _lock, _unlock, claim


def make_run(path, *files: str):
    path.mkdir(parents=True)
    for name in (MARKER, *files):
        (path / name).write_text("x")
    return path


def test_a_stub_left_by_a_kill_is_taken_by_a_same_name_run(tmp_path):
    make_run(tmp_path / "T", "log.csv", "last.tmp")  # kill -9 before the first checkpoint
    folder = claim(tmp_path, "T")
    assert sorted(p.name for p in folder.path.iterdir()) == [MARKER]
    with pytest.raises(PCKeypointsError, match="already exists"):  # held: its run is still starting
        claim(tmp_path, "T")
    folder.abandon()
    assert not (tmp_path / "T").exists()
    make_run(tmp_path / "A", "last.pt")  # a run
    make_run(tmp_path / "B", "notes.txt")  # a file of the user's
    for name in "AB":
        with pytest.raises(PCKeypointsError, match="already exists"):
            claim(tmp_path, name)
    assert (tmp_path / "A" / "last.pt").is_file() and (tmp_path / "B" / "notes.txt").is_file()


def test_hidden_folders_of_killed_overwrites_are_cleaned(tmp_path):
    make_run(tmp_path / ".T.new-99999", "last.pt")  # a replacement killed before its swap
    make_run(tmp_path / ".U.old-99999", "last.pt")  # killed between the swap's renames: U is missing
    make_run(tmp_path / ".V.old-99999", "last.pt")  # killed while deleting the replaced run
    make_run(tmp_path / "V", "best.pt")
    held = make_run(tmp_path / ".W.new-99999", "last.pt")  # a replacement that is still running
    (tmp_path / ".Z.new-1").mkdir()  # the user's
    lock = _lock(held)
    try:
        claim(tmp_path, "X").close()
    finally:
        _unlock(lock)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".W.new-99999", ".Z.new-1", "U", "V", "X"]
    assert (tmp_path / "U" / "last.pt").is_file() and (tmp_path / "V" / "best.pt").is_file()


@pytest.mark.parametrize("stage", ["nothing", "checkpoint", "first rename", "swapped"])
def test_the_parent_settles_what_rank_0_did(tmp_path, stage):
    """The process that claimed an ``overwrite`` run learns from the disk how far rank 0 got before it was
    killed: the old run stays unless the new one was swapped in."""
    make_run(tmp_path / "T", "last.pt")
    parent = claim(tmp_path, "T", overwrite=True)
    rank0 = parent.for_process()
    if stage != "nothing":
        (rank0.path / "last.pt").write_text("new")
    if stage == "first rename":
        os.rename(rank0.target, rank0.old)
    if stage == "swapped":
        rank0.commit()
    parent.settle()
    parent.abandon()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["T"]
    assert (tmp_path / "T" / "last.pt").read_text() == ("new" if stage == "swapped" else "x")
