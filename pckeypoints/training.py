"""The training loop shared by every :mod:`~pckeypoints.tasks` task.

:func:`train` runs AdamW (or SGD) with a per-epoch learning-rate schedule and temperature schedule, logs to
``log.csv`` and TensorBoard, and checkpoints every epoch (``last.pt``, plus ``best.pt`` by the task's
monitored validation metric). Each epoch reseeds every random number generator from ``(seed, epoch,
rank)``, so a run resumed from ``last.pt`` continues exactly as an uninterrupted one.

Under ``torchrun`` (``WORLD_SIZE > 1``) it trains with DistributedDataParallel: gloo on CPU, nccl on
CUDA; ``batch_size`` is the global batch, split evenly over the processes; only rank 0 logs, evaluates
and writes checkpoints.
"""
from __future__ import annotations

import csv
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from .config import TrainConfig, config_fields
from .data import collate_keypoints
from .schedules import make_schedule
from .tasks import Task, get_task

__all__ = ["TrainConfig", "config_fields", "train", "load_checkpoint", "resolve_checkpoint"]


# ---------------------------------------------------------------------------------------------- distributed
@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: torch.device) -> _Dist:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return _Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _resolve_device(name: str) -> torch.device:
    """``"auto"``, ``"cpu"`` or ``"cuda"`` (this process's ``LOCAL_RANK`` GPU), or an explicit device."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(name)


def _seed(seed: int, epoch: int, rank: int) -> None:
    """Reseed torch, NumPy and ``random`` for ``epoch`` on ``rank`` (different noise on every rank)."""
    value = (seed * 100_003 + epoch) * 1_009 + rank
    torch.manual_seed(value)
    np.random.seed(value % 2**32)
    random.seed(value)


# ---------------------------------------------------------------------------------------------- checkpoints
def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[Task, nn.Module, TrainConfig, dict]:
    """``(task, model in eval mode, config, checkpoint dict)`` from a checkpoint file or a run folder
    (its ``best.pt`` if present, else ``last.pt``)."""
    path = resolve_checkpoint(path, prefer_best=True)
    checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    config = TrainConfig(**checkpoint["config"])
    task = get_task(config.mode)
    model = task.build_model(config)
    model.load_state_dict(checkpoint["model"])
    return task, model.eval(), config, checkpoint


def resolve_checkpoint(path: str | Path, prefer_best: bool = False) -> Path:
    """A checkpoint file: ``path`` itself, or ``best.pt``/``last.pt`` inside the run folder ``path``."""
    path = Path(path)
    if path.is_dir():
        names = ("best.pt", "last.pt") if prefer_best else ("last.pt",)
        for name in names:
            if (path / name).is_file():
                return path / name
        raise ValueError(f"run folder {path} has no {' or '.join(names)}")
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    return path


# ---------------------------------------------------------------------------------------------- logging
class _CsvLog:
    """``log.csv``: one row per (epoch, split) with the union of all logged columns."""

    def __init__(self, path: Path, keep_before_epoch: int):
        self.path, self.rows = path, []
        if keep_before_epoch > 0 and path.is_file():
            with open(path, newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["epoch"]) < keep_before_epoch]

    def write(self, epoch: int, split: str, values: dict[str, float]) -> None:
        self.rows.append({"epoch": epoch, "split": split, **values})
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(self.rows)


# ---------------------------------------------------------------------------------------------- loop
def train(config: TrainConfig | None = None, resume: str | Path | None = None, progress: bool = True,
          stop_after: int | None = None) -> Path:
    """Train ``config`` (or continue the run at ``resume``, a run folder or checkpoint, with its own
    config) and return the run folder. ``stop_after`` ends the run after that many epochs in total (of
    ``config.epochs``, schedules unchanged) so that it can be resumed later."""
    if (config is None) == (resume is None):
        raise ValueError("give either a config or a run to resume")
    checkpoint = None
    if resume is not None:
        checkpoint = torch.load(resolve_checkpoint(resume), map_location="cpu", weights_only=False)
        config = TrainConfig(**checkpoint["config"])
    device = _resolve_device(config.device)
    world = _init_distributed(device)
    if config.batch_size % world.world_size:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by the {world.world_size} processes")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    task = get_task(config.mode)

    train_set = task.dataset(config, "train", train=True)
    config = task.configure(config, train_set)
    eval_set = task.dataset(config, config.eval_split, train=False) if world.is_main else None
    sampler = DistributedSampler(train_set, world.world_size, world.rank, shuffle=True, seed=config.seed)
    loader = DataLoader(train_set, config.batch_size // world.world_size, sampler=sampler,
                        num_workers=config.num_workers, collate_fn=collate_keypoints)

    torch.manual_seed(config.seed)
    model = task.build_model(config).to(device)
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if config.lr_schedule == "cosine":
        lr_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs, eta_min=config.lr * 0.01)
    else:
        lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
    tau_schedule = make_schedule(config.tau_schedule, config.tau_start, config.tau_end, config.epochs)
    start_epoch, best = 0, -math.inf
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        lr_schedule.load_state_dict(checkpoint["lr_schedule"])
        tau_schedule.load_state_dict(checkpoint["tau_schedule"])
        start_epoch, best = checkpoint["epoch"], checkpoint["best"]
    trained = DistributedDataParallel(model) if world.world_size > 1 else model

    if resume is None:
        run_dir = Path(config.out) / config.run_name
    else:
        run_dir = Path(resume) if Path(resume).is_dir() else Path(resume).parent
    log = writer = None
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        log = _CsvLog(run_dir / "log.csv", start_epoch)
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"))

    end_epoch = config.epochs if stop_after is None else min(stop_after, config.epochs)
    for epoch in range(start_epoch, end_epoch):
        _seed(config.seed, epoch, world.rank)
        sampler.set_epoch(epoch)
        tau, lr = tau_schedule.value, optimizer.param_groups[0]["lr"]
        train_stats = _train_epoch(task, trained, loader, optimizer, config, tau, device, world,
                                   desc=f"epoch {epoch + 1}/{config.epochs}", progress=progress and world.is_main)
        lr_schedule.step()
        tau_schedule.step()
        if world.is_main:
            train_stats.update(tau=tau, lr=lr)
            log.write(epoch, "train", train_stats)
            for key, value in train_stats.items():
                writer.add_scalar(f"train/{key}", value, epoch)
            is_last = epoch + 1 == end_epoch
            improved = False
            if (epoch + 1) % config.eval_every == 0 or is_last:
                metrics = task.evaluate(model.eval(), _eval_loader(eval_set, config), config)
                log.write(epoch, config.eval_split, metrics)
                for key, value in metrics.items():
                    writer.add_scalar(f"{config.eval_split}/{key}", value, epoch)
                if metrics[task.monitor] > best:
                    best, improved = metrics[task.monitor], True
            state = {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "lr_schedule": lr_schedule.state_dict(), "tau_schedule": tau_schedule.state_dict(),
                "epoch": epoch + 1, "best": best, "config": config.to_dict(), "world_size": world.world_size,
            }
            _atomic_save(state, run_dir / "last.pt")
            if improved:
                _atomic_save(state, run_dir / "best.pt")
            writer.flush()
        if world.world_size > 1:
            dist.barrier()
    if writer is not None:
        writer.close()
    return run_dir


def _train_epoch(task: Task, model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                 config: TrainConfig, tau: float, device: torch.device, world: _Dist, desc: str,
                 progress: bool) -> dict[str, float]:
    """One pass over ``loader``; returns the batch means of the loss and the task's logged scalars,
    averaged over the processes."""
    model.train()
    if config.freeze_norm:
        for module in model.modules():
            if isinstance(module, _BatchNorm):
                module.eval()
    totals: dict[str, float] = {}
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress)
    for batch in bar:
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        loss, scalars = task.loss(model, batch, config, tau)
        if not torch.isfinite(loss):
            raise ValueError(f"training diverged: loss is {loss.item()} ({desc})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for key, value in {"loss": loss.item(), **scalars}.items():
            totals[key] = totals.get(key, 0.0) + float(value)
        bar.set_postfix(loss=f"{loss.item():.4f}")
    names = sorted(totals)
    means = torch.tensor([totals[k] / max(len(loader), 1) for k in names], dtype=torch.float64)
    if world.world_size > 1:
        dist.all_reduce(means)
        means /= world.world_size
    return dict(zip(names, means.tolist()))


def _eval_loader(dataset, config: TrainConfig) -> DataLoader:
    return DataLoader(dataset, config.batch_size, shuffle=False, num_workers=config.num_workers,
                      collate_fn=collate_keypoints)


def _atomic_save(state: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
