"""Every error a user can cause is one line on stderr (exit 1) and is found before any data is loaded; a
command that fails early leaves no files (issue 11 defects 2, 3, 5, 6)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pckeypoints.train.checkpoint import save_checkpoint
from pckeypoints.cli import main
from pckeypoints.config import TrainConfig
from pckeypoints.train.tasks import get_task

CONFIG = TrainConfig.from_fields(num_keypoints=4, width=0.25, hidden_channels=16)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint({"model": get_task("supervised").build_model(CONFIG).state_dict(), "config": CONFIG.to_dict(),
                     "epoch": 1}, path)
    return path


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    path = tmp_path_factory.mktemp("cloud") / "cloud.xyz"
    np.savetxt(path, np.random.default_rng(0).uniform(-0.5, 0.5, (300, 3)))
    return path


def one_line_error(capsys, argv: list[str], *expected: str) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in err, err
    return err


def test_output_into_a_missing_folder_is_created(checkpoint, cloud, tmp_path):
    out = tmp_path / "new" / "deeper" / "kp.json"
    assert main(["predict", str(checkpoint), str(cloud), "-o", str(out)]) == 0
    assert len(json.loads(out.read_text())["keypoints"]) == 4


def test_output_paths_of_the_wrong_kind(checkpoint, cloud, tmp_path, capsys):
    one_line_error(capsys, ["predict", str(checkpoint), str(cloud), "-o", str(tmp_path)], "is a folder")
    (tmp_path / "file").write_text("x")
    one_line_error(capsys, ["eval", str(checkpoint), "--out", str(tmp_path / "file")], "is a file, not a folder")
    one_line_error(capsys, ["train", "--out", str(tmp_path / "file"), "--data-root", str(tmp_path / "none")],
                   "is a file, not a folder")


def test_bad_toml_value(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text(f'[optim]\nepochs = "three"\n[run]\nout = "{tmp_path / "runs"}"\n')
    one_line_error(capsys, ["train", "--config", str(config)], "c.toml", "epochs must be an integer")
    with pytest.raises(ValueError, match="epochs"):
        main(["--debug", "train", "--config", str(config)])
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_before_any_data(checkpoint, cloud, tmp_path, capsys):
    # the data root does not exist: the device error must come first
    one_line_error(capsys, ["train", "--device", "cuda", "--data-root", str(tmp_path / "none"),
                            "--out", str(tmp_path / "runs")], "device 'cuda' is unavailable")
    one_line_error(capsys, ["predict", str(checkpoint), str(cloud), "--device", "cuda"], "unavailable")
    one_line_error(capsys, ["eval", str(checkpoint), "--device", "cuda:0", "--out", str(tmp_path / "ev")],
                   "unavailable")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "ev").exists()


@pytest.mark.parametrize("flags, problem", [(["--method", "foo"], "method must be one of"),
                                            (["--max-models", "0"], "max_models must be >= 1"),
                                            (["--sampler", "fancy"], "sampler must be one of"),
                                            (["--name", "../x"], "name must be a folder name")])
def test_bad_flags_fail_before_loading_and_leave_nothing(tmp_path, capsys, flags, problem):
    one_line_error(capsys, ["train", "--data-root", str(tmp_path / "none"), "--out", str(tmp_path / "runs"),
                            *flags], problem)
    assert not (tmp_path / "runs").exists()


def test_eval_max_models_zero_leaves_nothing(checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["eval", str(checkpoint), "--max-models", "0", "--out", str(tmp_path / "ev")])
    assert "must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "ev").exists()


def test_damaged_checkpoints_are_one_line(cloud, tmp_path, capsys):
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "junk.pt").write_bytes(b"\x80\x04junk" * 50)
    for name, problem in (("empty.pt", "empty (0 bytes)"), ("junk.pt", "not a pckeypoints checkpoint")):
        path = str(tmp_path / name)
        one_line_error(capsys, ["predict", path, str(cloud)], path, problem)
        one_line_error(capsys, ["eval", path], path, problem)
        one_line_error(capsys, ["train", "--resume", path], path, problem)
        one_line_error(capsys, ["viz", str(cloud), "--checkpoint", path, "--png", str(tmp_path / "v.png")], path,
                       problem)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.pt", "junk.pt"]


def test_eval_into_a_folder_that_cannot_be_written(checkpoint, tmp_path, capsys):
    """Issue 21 item 8: one line naming the folder, before any data is loaded."""
    import os

    if os.geteuid() == 0:  # root writes through permissions; /sys refuses new entries
        if not os.path.isdir("/sys/kernel"):
            pytest.skip("needs /sys (Linux) when run as root")
        out = "/sys/kernel/pckeypoints-eval"
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
        out = str(tmp_path / "ro" / "eval")
    one_line_error(capsys, ["eval", str(checkpoint), "--out", out, "--data-root", str(tmp_path / "none")],
                   f"cannot write into {out}")


def test_predict_and_viz_bounds(checkpoint, cloud, tmp_path, capsys):
    """Issue 21 (low): -o the input file, --num-points / --samples / --width beyond what runs in reasonable time
    and memory, --png a folder: each one line naming the option."""
    import os

    before = cloud.read_bytes()
    one_line_error(capsys, ["predict", str(checkpoint), str(cloud), "-o", str(cloud)], "is the input file")
    os.link(cloud, tmp_path / "hard_link.json")  # issue 31 (low): a hard link of the input is the input
    one_line_error(capsys, ["predict", str(checkpoint), str(cloud), "-o", str(tmp_path / "hard_link.json")],
                   "is the input file")
    assert cloud.read_bytes() == before
    with pytest.raises(SystemExit):
        main(["predict", str(checkpoint), str(cloud), "--num-points", "200000"])
    assert "--num-points: must be in 1..16384, got 200000" in capsys.readouterr().err
    for flags, problem in ((["--png", str(tmp_path)], "--png must name a .png file"),
                           (["--png", str(tmp_path / "x.png"), "--width", "100000"], "--width must be in 16..8192"),
                           (["--png", str(tmp_path / "x.png"), "--checkpoint", str(checkpoint), "--map", "0",
                             "--samples", "100000000"], "--samples must be in 1..100000")):
        assert main(["viz", str(cloud), *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and problem in err, err


def test_predict_states_its_confidence_radius_and_scales_it_with_the_cloud(checkpoint, cloud, tmp_path):
    """Issue 21 (low): confidence is P(within confidence_radius) with the radius 0.01 x the bounding-box
    diagonal, so a cloud in millimetres gets the confidence it gets in metres."""
    points = np.loadtxt(cloud)
    np.savetxt(tmp_path / "mm.xyz", points * 1000)
    results = []
    for path in (cloud, tmp_path / "mm.xyz"):
        assert main(["predict", str(checkpoint), str(path), "-o", str(tmp_path / "kp.json")]) == 0
        results.append(json.loads((tmp_path / "kp.json").read_text()))
    diagonal = np.linalg.norm(points.max(0) - points.min(0))
    assert results[0]["confidence_radius"] == pytest.approx(0.01 * diagonal, rel=1e-12)
    assert results[1]["confidence_radius"] == pytest.approx(10 * diagonal, rel=1e-12)
    np.testing.assert_allclose(results[1]["confidence"], results[0]["confidence"], rtol=1e-4, atol=1e-7)


def test_the_readmes_commands_parse():
    """Issue 31 M8: every ``pckeypoints ...`` command line of README.md and of the documentation's pages is
    accepted by the parser (the train commands also build their config)."""
    import shlex
    from pathlib import Path

    from pckeypoints.cli import build_parser
    from pckeypoints.config import config_fields

    root = Path(__file__).resolve().parents[1]  # the README and the documentation pages it moved to
    pages = [root / "README.md", *sorted(p for p in (root / "docs").rglob("*.md")
                                         if not {"_build", "_generated"} & set(p.parts))]
    text = "\n".join(page.read_text() for page in pages).replace("\\\n", " ")
    commands = [shlex.split(line, comments=True)[1:] for line in text.splitlines() if line.startswith("pckeypoints ")]
    assert len(commands) > 10 and any("--mode" in args for args in commands)
    for args in commands:
        parsed = build_parser().parse_args(args)
        if parsed.command == "train" and parsed.resume is None:
            config = TrainConfig.from_toml(None, mode=parsed.mode, **{f.name: getattr(parsed, f.name)
                                                                     for f in config_fields()})
            assert config.mode == (parsed.mode or "supervised")


def test_seed_and_procs_are_bounded_before_anything_starts(tmp_path, capsys, monkeypatch):
    """Issue 31 M9, M10: a millisecond-timestamp seed, more processes than cores, or a batch the processes do
    not divide are one line each, before a run folder is claimed or a process started."""
    import os

    from pckeypoints.train import training

    monkeypatch.setattr(training, "spawn", lambda *args: pytest.fail("processes started"))
    out = str(tmp_path / "runs")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    common = ["train", "--out", out, "--data-root", str(tmp_path / "none"), "--device", "cpu"]
    one_line_error(capsys, [*common, "--seed", "1700000000000"], "run.seed must be <= 4294967295")
    one_line_error(capsys, [*common, "--procs", str(cores + 1)], f"more than the {cores} CPU cores")
    if cores >= 2:
        one_line_error(capsys, [*common, "--procs", "2", "--batch-size", "3"], "must be divisible by the 2")
    assert not (tmp_path / "runs").exists()


def test_pointnet2_bad_input_is_one_line_too(checkpoint, tmp_path, capsys, monkeypatch):
    """pointnet2's own InputError (it cannot import pckeypoints) is a user's error for the command line too."""
    import pointnet2.errors
    from pckeypoints.train import exported

    def bad_cloud(*args, **kwargs):
        raise pointnet2.errors.InputError("xyz contains NaN or infinite coordinates")

    monkeypatch.setattr(exported, "export_program", bad_cloud)
    one_line_error(capsys, ["export", str(checkpoint), "-o", str(tmp_path / "m.pt2")], "error: xyz contains NaN")
