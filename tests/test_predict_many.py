"""``pckeypoints predict RUN FILE... | DIR``: many clouds with one model load, each the same as alone (issue 22
item 7); a bad input is skipped with a line naming it and the command ends with status 1."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import pckeypoints.train.checkpoint
from pckeypoints.train.checkpoint import save_checkpoint
from pckeypoints.cli import main
from pckeypoints.config import TrainConfig
from pckeypoints.train.tasks import get_task


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    config = TrainConfig.from_fields(num_keypoints=3, width=0.25, hidden_channels=16)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint({"model": get_task("supervised").build_model(config).state_dict(), "config": config.to_dict(),
                     "epoch": 1}, path)
    return path


@pytest.fixture
def clouds(tmp_path):
    """A folder of three clouds (two formats) and a file that is no cloud."""
    folder = tmp_path / "clouds"
    folder.mkdir()
    rng = np.random.default_rng(0)
    np.savetxt(folder / "a.xyz", rng.uniform(-0.5, 0.5, (300, 3)))
    np.save(folder / "b.npy", rng.normal(size=(400, 3)))
    np.savetxt(folder / "c.xyz", rng.uniform(0, 2, (250, 3)) + 100.0)
    (folder / "notes.txt").write_text("not a cloud")
    return folder


def alone(checkpoint, path, tmp_path) -> dict:
    out = tmp_path / f"alone_{path.name}.json"
    assert main(["predict", str(checkpoint), str(path), "-o", str(out)]) == 0
    return json.loads(out.read_text())


def test_files_print_json_lines_equal_to_single_predictions(checkpoint, clouds, tmp_path, capsys, monkeypatch):
    loads = []
    load = pckeypoints.train.checkpoint.load_checkpoint
    monkeypatch.setattr(pckeypoints.train.checkpoint, "load_checkpoint", lambda *a, **k: loads.append(a) or load(*a, **k))
    files = [clouds / "c.xyz", clouds / "a.xyz"]
    assert main(["predict", str(checkpoint), *map(str, files)]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert len(loads) == 1 and [line["file"] for line in lines] == list(map(str, files))
    assert "predict" in captured.err  # the progress bar
    for line, path in zip(lines, files):
        expected = alone(checkpoint, path, tmp_path)
        assert {k: v for k, v in line.items() if k != "file"} == expected


def test_folder_into_output_folder(checkpoint, clouds, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", str(checkpoint), str(clouds), "-o", str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "b.json", "c.json"]  # notes.txt is no input
    assert "3 predictions" in capsys.readouterr().out
    written = json.loads((out / "b.json").read_text())
    assert written.pop("file") == str(clouds / "b.npy")
    assert written == alone(checkpoint, clouds / "b.npy", tmp_path)


def test_bad_input_is_skipped_and_fails_the_command(checkpoint, clouds, tmp_path, capsys):
    (clouds / "broken.xyz").write_text("1 2 3\n4 five 6\n")
    out = tmp_path / "out"
    assert main(["predict", str(checkpoint), str(clouds), "-o", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "skipped" in err[0] and str(clouds / "broken.xyz") in err[0]
    assert "1 of 4 inputs failed" in err[1] and "Traceback" not in "".join(err)
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "b.json", "c.json"]


def test_output_problems_are_found_before_the_model_loads(checkpoint, clouds, tmp_path, capsys):
    np.savetxt(clouds / "a.pcd.xyz", np.zeros((10, 3)))  # stem "a.pcd": no clash
    np.save(clouds / "a.npy", np.zeros((10, 3)))
    assert main(["predict", str(checkpoint), str(clouds), "-o", str(tmp_path / "out")]) == 1
    assert "a.npy and" in capsys.readouterr().err and not (tmp_path / "out").exists()
    (tmp_path / "file.json").write_text("{}")
    assert main(["predict", str(checkpoint), str(clouds / "b.npy"), str(clouds / "c.xyz"), "-o",
                 str(tmp_path / "file.json")]) == 1
    assert "several inputs need a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(checkpoint), str(tmp_path / "empty")]) == 1
    assert "has no point cloud or mesh files" in capsys.readouterr().err
