"""One progress bar for a run: with ``run.procs = 2`` only rank 0 prints (data loading and epochs), and the epoch
bar shows the epoch's mean loss and the last validation score."""
from __future__ import annotations

import pytest
from keypointnet_subset import make_subset

from pckeypoints.config import TrainConfig
from pckeypoints.distributed import is_main_process
from pckeypoints.train.training import train

pytestmark = pytest.mark.slow


def test_two_processes_print_one_bar(tmp_path, capfd):
    data_root = make_subset(tmp_path / "kpn", "bathtub", {"train": 4, "val": 1, "test": 1})
    train(TrainConfig.from_fields(category="bathtub", method="soft", width=0.25, hidden_channels=16, epochs=2,
                                  batch_size=2, data_root=str(data_root), name="run", out=str(tmp_path / "runs"),
                                  procs=2), progress=True)
    err = capfd.readouterr().err
    # rank 0 loads the training and the validation clouds; rank 1's training clouds load silently
    assert err.count("KeypointNet bathtub:   0%") == 2, err
    assert "epoch 1/2" in err and "epoch 2/2" in err and "loss=" in err
    assert "val pck@0.01=" in err.split("epoch 2/2", 1)[1]  # epoch 2's bar shows epoch 1's validation
    assert "Traceback" not in err and "Warning" not in err, err


def test_rank_gating_follows_the_process_group_variables(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    assert is_main_process()  # outside any run
    monkeypatch.setenv("RANK", "1")
    assert not is_main_process()
    monkeypatch.setenv("RANK", "0")
    assert is_main_process()
