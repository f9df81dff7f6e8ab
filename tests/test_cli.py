"""``pckeypoints train | eval | predict | viz`` end to end on a few real KeypointNet bathtubs."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import trimesh
from keypointnet_subset import make_subset

from pckeypoints.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run trained by ``pckeypoints train`` on 4 clouds for 1 epoch (then evaluated on test)."""
    tmp = tmp_path_factory.mktemp("cli")
    data_root = make_subset(tmp / "kpn", "bathtub", {"train": 4, "val": 2, "test": 2})
    config = tmp / "tiny.toml"
    config.write_text(f'[data]\ncategory = "bathtub"\nroot = "{data_root}"\n[model]\nwidth = 0.25\nhidden_channels = 16\n'
                      f'[optim]\nbatch_size = 2\n[run]\nout = "{tmp / "runs"}"\nname = "tiny"\n')
    code = main(["train", "--config", str(config), "--epochs", "1", "--method", "sampling", "--num-samples", "4",
                 "--no-progress"])
    assert code == 0
    return tmp / "runs" / "tiny", data_root


def test_train_writes_checkpoints_and_test_report(run):
    run_dir, _ = run
    assert (run_dir / "best.pt").is_file() and (run_dir / "log.csv").is_file()
    metrics = json.loads((run_dir / "eval_test" / "metrics.json").read_text())
    assert metrics["config"]["optim"]["epochs"] == 1 and metrics["config"]["loss"]["method"] == "sampling"  # flags win
    assert 0 <= metrics["metrics"]["pck@0.01"] <= metrics["metrics"]["pck@0.10"] <= 1


def test_eval_writes_tables_and_figures(run, tmp_path, capsys):
    run_dir, _ = run
    assert main(["eval", str(run_dir), "--split", "val", "--out", str(tmp_path / "ev")]) == 0
    for name in ("metrics.md", "metrics.json", "pck_curve.png", "calibration.png", "gallery.png"):
        assert (tmp_path / "ev" / name).stat().st_size > 0, name
    table = (tmp_path / "ev" / "metrics.md").read_text()
    assert "| pck@0.01 |" in table and "| geo_pck@0.01 |" in table
    assert "pck@0.01" in capsys.readouterr().out
    assert (tmp_path / "ev" / "pck_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _check_prediction(path, num_keypoints):
    result = json.loads(path.read_text())
    keypoints = np.asarray(result["keypoints"])
    assert keypoints.shape == (num_keypoints, 3) and np.isfinite(keypoints).all()
    assert result["semantic_ids"] == list(range(num_keypoints))
    assert all(0 < c <= 1 for c in result["confidence"])
    return keypoints


def test_predict_pcd(run, tmp_path):
    run_dir, data_root = run
    num_keypoints = torch.load(run_dir / "last.pt", weights_only=False)["config"]["model"]["num_keypoints"]
    pcd = next((data_root / "pcds").rglob("*.pcd"))
    assert main(["predict", str(run_dir), str(pcd), "-o", str(tmp_path / "kp.json")]) == 0
    keypoints = _check_prediction(tmp_path / "kp.json", num_keypoints)
    from pckeypoints.data import read_points

    points = read_points(pcd)
    assert (keypoints.min(0) >= points.min(0) - 1e-3).all() and (keypoints.max(0) <= points.max(0) + 1e-3).all()


@pytest.mark.parametrize("suffix", [".obj", ".ply"])
def test_predict_mesh(run, tmp_path, suffix):
    run_dir, _ = run
    num_keypoints = torch.load(run_dir / "last.pt", weights_only=False)["config"]["model"]["num_keypoints"]
    mesh = trimesh.creation.box(extents=(0.8, 0.3, 0.4))
    mesh.export(tmp_path / f"box{suffix}")
    assert main(["predict", str(run_dir), str(tmp_path / f"box{suffix}"), "-o", str(tmp_path / "kp.json"),
                 "--num-points", "1024"]) == 0
    keypoints = _check_prediction(tmp_path / "kp.json", num_keypoints)
    assert (np.abs(keypoints) <= np.array([0.4, 0.15, 0.2]) + 1e-3).all()  # inside the box's hull


def test_errors_are_reported_not_raised(run, tmp_path, capsys):
    run_dir, _ = run
    assert main(["predict", str(run_dir), str(tmp_path / "missing.pcd")]) == 1
    assert main(["eval", str(tmp_path / "nothing")]) == 1
    assert main(["train", "--resume", str(run_dir), "--epochs", "3"]) == 1
    err = capsys.readouterr().err
    assert "missing.pcd" in err and "nothing" in err and "--resume" in err


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "pckeypoints", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and all(c in result.stdout for c in ("train", "eval", "predict", "viz"))
