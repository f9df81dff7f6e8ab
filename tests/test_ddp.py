"""DistributedDataParallel training (2 CPU processes, gloo) equals single-process training.

Equivalent setups: ``batch_size`` is the global batch (2 processes x 1 cloud vs 1 process x 2 clouds,
the same clouds per step thanks to DistributedSampler's interleaving); BatchNorm is frozen (batch
statistics of 1 cloud differ from those of 2); every cloud has the same number of annotated keypoints
(each process normalises its masked mean by its own count); method "soft" has no sampling noise; SGD,
because the maps are invariant to some parameter directions (softmax shifts, LayerNorm scales) whose
gradients are zero up to rounding, which Adam would rescale into lr-sized, run-dependent steps.
"""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from keypointnet_subset import make_subset

from pckeypoints.tasks import get_task
from pckeypoints.checkpoint import load_checkpoint
from pckeypoints.config import TrainConfig
from pckeypoints.training import train

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, config: TrainConfig) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        train(config, progress=False)
    finally:
        torch.distributed.destroy_process_group()


def test_two_processes_match_one(tmp_path):
    data_root = make_subset(tmp_path / "kpn", "bathtub", {"train": 4, "val": 1, "test": 1}, num_keypoints=16)
    base = dict(category="bathtub", method="soft", width=0.25, hidden_channels=16, epochs=2, batch_size=2,
                lr=0.05, optimizer="sgd", data_root=str(data_root), freeze_norm=True, name="run",
                jitter=0.0, scale_lo=1.0, scale_hi=1.0)  # no augmentation: each rank draws its own noise
    single = load_checkpoint(train(TrainConfig.from_fields(**base, out=str(tmp_path / "single")), progress=False) / "last.pt")[1]
    mp.spawn(_worker, args=(2, _free_port(), TrainConfig.from_fields(**base, out=str(tmp_path / "ddp"))), nprocs=2, join=True)
    _, ddp, config, checkpoint = load_checkpoint(tmp_path / "ddp" / "run" / "last.pt")
    assert checkpoint["world_size"] == 2 and checkpoint["epoch"] == 2
    for (name, a), b in zip(single.state_dict().items(), ddp.state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), name
    task = get_task("supervised")
    points = torch.stack([item["points"] for item in task.dataset(config, "train", train=False)])
    with torch.no_grad():
        maps_single, maps_ddp = single(points), ddp(points)
    assert torch.allclose(maps_single.probabilities, maps_ddp.probabilities, rtol=1e-3, atol=1e-7)
    assert torch.allclose(maps_single.keypoints, maps_ddp.keypoints, atol=1e-5)
    torch.manual_seed(config.run.seed)
    initial = task.build_model(config)
    assert any(not torch.allclose(p, q, atol=1e-4) for p, q in zip(initial.parameters(), ddp.parameters()))
