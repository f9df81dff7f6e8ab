"""Cheap lows of issue 31: each a one-line error or a bounded cost instead of a silent surprise."""
from __future__ import annotations

import pytest
import torch

from pckeypoints.core.basis import PointBasis
from pckeypoints.cli import main
from pckeypoints.config import TrainConfig
from pckeypoints.errors import ConfigError, PCKeypointsError


def test_an_empty_out_is_refused():
    """``out = ""`` trained into the current folder."""
    for out in ("", "  "):
        with pytest.raises(ConfigError, match="run.out must name a folder"):
            TrainConfig.from_fields(out=out)
    assert TrainConfig.from_fields(out=".").run.out == "."


def test_a_grid_of_fractional_sizes_is_refused():
    """``grid((2.5, 3))`` was truncated silently."""
    with pytest.raises(PCKeypointsError, match="grid shape must be integer sizes"):
        PointBasis.grid((2.5, 3))
    with pytest.raises(PCKeypointsError, match="grid shape must be integer sizes"):
        PointBasis.grid((True, 3))
    assert PointBasis.grid((torch.tensor(2), 3)).pos.shape == (1, 6, 2)


def test_radius_with_a_huge_neighbour_count_is_bounded():
    """``radius(max_num_neighbors=1e9)`` tried a 72 GB allocation: no ball holds more points than the cloud."""
    from pckeypoints.ops.pyg import radius

    x = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0]])
    batch_x, batch_y = torch.tensor([0, 0, 0, 1, 1]), torch.tensor([0, 1])
    expected = radius(x, x[[1, 3]], 1.5, batch_x, batch_y)
    assert torch.equal(radius(x, x[[1, 3]], 1.5, batch_x, batch_y, max_num_neighbors=10**9), expected)


def test_eval_of_a_shipped_model_needs_out(tmp_path, monkeypatch, capsys):
    """``eval bathtub`` without ``--out`` wrote ./eval_test into whatever folder the shell was in."""
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "bathtub"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bathtub is a shipped model" in err and "--out" in err, err
    assert list(tmp_path.iterdir()) == []
