"""Clouds far from the origin: centred and scaled in float64 before the float32 model (issue 11 defect 4)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pckeypoints.train.checkpoint import save_checkpoint
from pckeypoints.cli import main
from pckeypoints.config import TrainConfig
from pckeypoints.data import read_points, transforms
from pckeypoints.train.tasks import get_task

CONFIG = TrainConfig.from_fields(num_keypoints=4, width=0.25, hidden_channels=16)


def cloud(n: int = 1024, seed: int = 0) -> np.ndarray:
    """A box surface of radius ~0.5 (float64)."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(-1, 1, (n, 3)) * [0.4, 0.15, 0.2]
    side = rng.integers(0, 3, n)
    points[np.arange(n), side] = np.sign(points[np.arange(n), side]) * [0.4, 0.15, 0.2][0]
    return points


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return get_task("supervised").build_model(CONFIG).eval()


def test_normalize_is_exact_far_from_the_origin():
    points = torch.from_numpy(cloud())
    item = {"points": points, "keypoints": torch.zeros(0, 3), "mask": torch.zeros(0, dtype=torch.bool),
            "point_index": torch.zeros(0, dtype=torch.long), "center": torch.zeros(3, dtype=torch.float64),
            "scale": torch.tensor(1.0, dtype=torch.float64)}
    near = transforms.Normalize(dtype=torch.float32)(item)
    far = transforms.Normalize(dtype=torch.float32)({**item, "points": points + 1e6})
    assert near["points"].dtype == torch.float32
    assert torch.equal(near["points"], far["points"]) or (near["points"] - far["points"]).abs().max() < 1e-6
    assert (far["center"] - near["center"] - 1e6).abs().max() < 1e-9


@pytest.mark.parametrize("offset", [1e4, 1e6])
def test_predictions_move_with_the_cloud(model, offset):
    task, points = get_task("supervised"), cloud()
    near = np.asarray(task.predict(model, points, CONFIG)["keypoints"])
    far = np.asarray(task.predict(model, points + offset, CONFIG)["keypoints"])
    radius = np.linalg.norm(points - points.mean(0), axis=1).max()
    assert np.abs(far - offset - near).max() < 1e-4 * radius


def test_predict_command_reads_and_centres_in_float64(model, tmp_path):
    """Through the files: ASCII PCD written with full precision at 1e6, predicted by `pckeypoints predict`."""
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"model": model.state_dict(), "config": CONFIG.to_dict()}, path)
    points = cloud()
    for name, shift in (("near", 0.0), ("far", 1e6)):
        with open(tmp_path / f"{name}.pcd", "w") as f:
            f.write(f"VERSION .7\nFIELDS x y z\nSIZE 8 8 8\nTYPE F F F\nCOUNT 1 1 1\nWIDTH {len(points)}\n"
                    f"HEIGHT 1\nPOINTS {len(points)}\nDATA ascii\n")
            np.savetxt(f, points + shift, fmt="%.17g")
        assert main(["predict", str(path), str(tmp_path / f"{name}.pcd"), "-o", str(tmp_path / f"{name}.json")]) == 0
    assert read_points(tmp_path / "far.pcd", dtype=np.float64)[0, 0] == points[0, 0] + 1e6
    near, far = (np.asarray(json.loads((tmp_path / f"{n}.json").read_text())["keypoints"]) for n in ("near", "far"))
    assert np.abs(far - 1e6 - near).max() < 1e-4 * 0.5
