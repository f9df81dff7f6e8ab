"""DistributedDataParallel training (``run.procs = 2``: 2 CPU processes, gloo) equals single-process training.

Equivalent setups: ``batch_size`` is the global batch (2 processes x 1 cloud vs 1 process x 2 clouds,
the same clouds per step thanks to DistributedSampler's interleaving); BatchNorm is frozen (batch
statistics of 1 cloud differ from those of 2); every cloud has the same number of annotated keypoints
(each process normalises its masked mean by its own count); method "soft" has no sampling noise; SGD,
because the maps are invariant to some parameter directions (softmax shifts, LayerNorm scales) whose
gradients are zero up to rounding, which Adam would rescale into lr-sized, run-dependent steps.
"""
from __future__ import annotations

import pytest
import torch
from keypointnet_subset import make_subset

from pckeypoints.train.tasks import get_task
from pckeypoints.train.checkpoint import load_checkpoint
from pckeypoints.config import TrainConfig
from pckeypoints.distributed import init_world, spawn
from pckeypoints.errors import ConfigError, TrainingError
from pckeypoints.train.training import train

pytestmark = pytest.mark.slow


def test_two_processes_match_one(tmp_path):
    data_root = make_subset(tmp_path / "kpn", "bathtub", {"train": 4, "val": 1, "test": 1}, num_keypoints=16)
    base = dict(category="bathtub", method="soft", width=0.25, hidden_channels=16, epochs=2, batch_size=2,
                lr=0.05, optimizer="sgd", data_root=str(data_root), freeze_norm=True, name="run",
                jitter=0.0, scale_lo=1.0, scale_hi=1.0)  # no augmentation: each rank draws its own noise
    single = load_checkpoint(train(TrainConfig.from_fields(**base, out=str(tmp_path / "single")), progress=False) / "last.pt")[1]
    run_dir = train(TrainConfig.from_fields(**base, procs=2, out=str(tmp_path / "ddp")), progress=False)
    assert run_dir == tmp_path / "ddp" / "run"
    _, ddp, config, checkpoint = load_checkpoint(run_dir / "last.pt")
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


def _join_the_group() -> tuple[int, int, int]:
    world = init_world(torch.device("cpu"))
    return world.rank, world.world_size, torch.get_num_threads()


def _fail(kind: str) -> None:
    raise ConfigError("config field optim.lr is wrong") if kind == "config" else ValueError("not a toolkit error")


def test_spawn_returns_rank_0s_result_and_raises_the_processes_errors():
    assert spawn(_join_the_group, 2) == (0, 2, max(1, torch.get_num_threads() // 2))
    assert init_world(torch.device("cpu")).world_size == 1  # this process joined nothing
    with pytest.raises(ConfigError, match="optim.lr is wrong"):
        spawn(_fail, 2, "config")
    with pytest.raises(TrainingError, match="a training process failed:(.|\n)*not a toolkit error"):
        spawn(_fail, 2, "crash")
