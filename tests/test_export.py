"""``pckeypoints export RUN -o model.pt2``: a torch.export program of the detector, equal to eager, that
``predict`` loads (issue 22 item 5)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pckeypoints.checkpoint import load_checkpoint, save_checkpoint
from pckeypoints.cli import main
from pckeypoints.config import TrainConfig
from pckeypoints.exported import load_program
from pckeypoints.tasks import get_task


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    config = TrainConfig.from_fields(num_keypoints=4, width=0.25, hidden_channels=16)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("export")
    save_checkpoint({"model": get_task("supervised").build_model(config).state_dict(), "config": config.to_dict(),
                     "epoch": 1}, folder / "model.pt")
    assert main(["export", str(folder / "model.pt"), "-o", str(folder / "model.pt2"), "--max-points", "1024"]) == 0
    return folder / "model.pt", folder / "model.pt2"


@pytest.mark.parametrize("n", [9, 300, 1024])
def test_program_equals_eager_at_every_size(exported, n):
    checkpoint, program = exported
    _, eager, config, _ = load_checkpoint(checkpoint)
    _, detector, program_config = load_program(program)
    assert program_config == config
    points = torch.rand(1, n, 3, generator=torch.Generator().manual_seed(n))
    with torch.no_grad():
        want, got = eager(points), detector.eval()(points)
    torch.testing.assert_close(got.logits, want.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.keypoints, want.keypoints, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.basis.bandwidth, want.basis.bandwidth)


def test_predict_with_the_program_equals_the_checkpoint(exported, tmp_path):
    checkpoint, program = exported
    cloud = tmp_path / "cloud.xyz"
    np.savetxt(cloud, np.random.default_rng(0).uniform(-0.5, 0.5, (700, 3)) + 10.0)
    for source, name in ((checkpoint, "eager.json"), (program, "program.json")):
        assert main(["predict", str(source), str(cloud), "-o", str(tmp_path / name), "--num-points", "512"]) == 0
    eager, exported_result = (json.loads((tmp_path / n).read_text()) for n in ("eager.json", "program.json"))
    assert exported_result.keys() == eager.keys() and exported_result["readout"] == eager["readout"]
    np.testing.assert_allclose(exported_result["keypoints"], eager["keypoints"], atol=1e-5)
    np.testing.assert_allclose(exported_result["confidence"], eager["confidence"], atol=1e-4)


def test_program_errors_are_one_line(exported, tmp_path, capsys):
    _, program = exported
    cloud = tmp_path / "cloud.xyz"
    np.savetxt(cloud, np.zeros((5, 3)))
    assert main(["predict", str(program), str(cloud), "--num-points", "2048"]) == 1
    assert "takes up to 1024 points" in capsys.readouterr().err
    (tmp_path / "other.pt2").write_bytes(b"not a program")
    assert main(["predict", str(tmp_path / "other.pt2"), str(cloud)]) == 1
    assert "is not a torch.export program" in capsys.readouterr().err
    with pytest.raises(Exception, match="cannot be trained"):
        load_program(program)[1].train()
