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
import dataclasses
import math
import os
import random
import shutil
import warnings
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

from .checkpoint import load_checkpoint, read_checkpoint, resolve_checkpoint, save_checkpoint
from .config import TrainConfig, config_fields
from .data import collate_keypoints
from .errors import CheckpointError, PCKeypointsError
from .schedules import make_schedule
from .tasks import Task, get_task

__all__ = ["TrainConfig", "config_fields", "load_checkpoint", "make_lr_schedule", "make_optimizer", "resolve_checkpoint",
           "resolve_device", "train"]


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


def resolve_device(name: str) -> torch.device:
    """``"auto"``, ``"cpu"``, ``"cuda"`` (this process's ``LOCAL_RANK`` GPU), ``"cuda:N"`` or ``"mps"``, checked to
    exist on this machine (a one-line :class:`~pckeypoints.errors.PCKeypointsError` otherwise)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if name == "cuda" else torch.device(name)
    except RuntimeError as err:
        raise PCKeypointsError(f"unknown device {name!r} ({err})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this PyTorch build has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise PCKeypointsError(f"device {name!r} is unavailable: {why}; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise PCKeypointsError(f"device {name!r} is unavailable: {torch.cuda.device_count()} CUDA GPU(s) visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise PCKeypointsError(f"device {name!r} is unavailable on this machine; use --device cpu")
    return device


def _seed(seed: int, epoch: int, rank: int) -> None:
    """Reseed torch, NumPy and ``random`` for ``epoch`` on ``rank`` (different noise on every rank)."""
    value = (seed * 100_003 + epoch) * 1_009 + rank
    torch.manual_seed(value)
    np.random.seed(value % 2**32)
    random.seed(value)


# ---------------------------------------------------------------------------------------------- logging
class _CsvLog:
    """``log.csv``: one row per (epoch, split) with the union of all logged columns, rewritten atomically."""

    def __init__(self, path: Path, keep_before_epoch: int):
        self.path, self.rows = path, []
        if keep_before_epoch > 0 and path.is_file():
            with open(path, newline="") as f:
                self.rows = [r for r in csv.DictReader(f)
                             if (r.get("epoch") or "").isdigit() and int(r["epoch"]) < keep_before_epoch]

    def write(self, epoch: int, split: str, values: dict[str, float]) -> None:
        self.rows.append({"epoch": epoch, "split": split, **values})
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.path)


# ---------------------------------------------------------------------------------------------- loop
def train(config: TrainConfig | None = None, resume: str | Path | None = None, progress: bool = True,
          stop_after: int | None = None, overwrite: bool = False) -> Path:
    """Train ``config`` (or continue the run at ``resume``, a run folder or checkpoint, with its own
    config) and return the run folder. ``stop_after`` ends the run after that many epochs in total (of
    ``config.epochs``, schedules unchanged) so that it can be resumed later.

    A new run goes to ``config.out/config.name``; an existing run there is an error unless ``overwrite``
    (which replaces it). Without a ``name`` the folder is ``<category>_<method>``, or ``..._2``, ``..._3``
    if taken. A run that fails before its first checkpoint leaves no folder behind."""
    if (config is None) == (resume is None):
        raise PCKeypointsError("give either a config or a run to resume")
    checkpoint = None
    if resume is not None:
        checkpoint, config = _resume_state(Path(resume))
        run_dir = Path(resume) if Path(resume).is_dir() else Path(resume).parent
    else:
        run_dir = _new_run_dir(config, overwrite)
        config = dataclasses.replace(config, name=run_dir.name)
    device = resolve_device(config.device)
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
    optimizer = make_optimizer(config, model)
    lr_schedule = make_lr_schedule(config, optimizer)
    tau_schedule = make_schedule(config.tau_schedule, config.tau_start, config.tau_end, config.epochs)
    start_epoch, best, best_epoch = 0, -math.inf, 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        lr_schedule.load_state_dict(checkpoint["lr_schedule"])
        tau_schedule.load_state_dict(checkpoint["tau_schedule"])
        start_epoch = checkpoint["epoch"]
    trained = DistributedDataParallel(model) if world.world_size > 1 else model

    end_epoch = config.epochs if stop_after is None else min(stop_after, config.epochs)
    log = writer = None
    if world.is_main:
        if checkpoint is None:
            _create_run_dir(run_dir, overwrite)
        else:
            best, best_epoch = _reconcile_best(run_dir, checkpoint)
            if start_epoch < end_epoch:
                for report in run_dir.glob("eval_*"):  # reports of the checkpoints about to be replaced
                    shutil.rmtree(report, ignore_errors=True)
        log = _CsvLog(run_dir / "log.csv", start_epoch)
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"))
    try:
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
                improved = False
                if (epoch + 1) % config.eval_every == 0 or epoch + 1 == end_epoch:
                    metrics = task.evaluate(model.eval(), _eval_loader(eval_set, config), config)
                    log.write(epoch, config.eval_split, metrics)
                    for key, value in metrics.items():
                        writer.add_scalar(f"{config.eval_split}/{key}", value, epoch)
                    if metrics[task.monitor] > best:
                        best, best_epoch, improved = float(metrics[task.monitor]), epoch + 1, True
                state = {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "lr_schedule": lr_schedule.state_dict(), "tau_schedule": tau_schedule.state_dict(),
                    "epoch": epoch + 1, "best": best, "best_epoch": best_epoch, "config": config.to_dict(),
                    "world_size": world.world_size,
                }
                if improved:  # best.pt first: last.pt never names a best checkpoint that is not on disk
                    save_checkpoint(state, run_dir / "best.pt")
                save_checkpoint(state, run_dir / "last.pt")
                writer.flush()
            if world.world_size > 1:
                dist.barrier()
    except BaseException:
        if writer is not None and checkpoint is None and not (run_dir / "last.pt").exists():
            writer.close()
            shutil.rmtree(run_dir, ignore_errors=True)  # failed before its first checkpoint: leave nothing
        raise
    if writer is not None:
        writer.close()
    return run_dir


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """``config.optimizer`` (AdamW, or SGD with momentum 0.9) over ``model``'s parameters."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def make_lr_schedule(config: TrainConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """``config.lr_schedule``, stepped once per epoch."""
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs, eta_min=config.lr * 0.01)
    if config.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step_epochs, gamma=0.5)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


# ---------------------------------------------------------------------------------------------- run folders
def _new_run_dir(config: TrainConfig, overwrite: bool) -> Path:
    """The folder of a new run (not created yet): ``out/name``, which must be free unless ``overwrite``; without
    a name the first free one of ``<category>_<method>``, ``<category>_<method>_2``, ..."""
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise PCKeypointsError(f"out {out} is a file, not a folder")
    if config.name is not None:
        run_dir = out / config.name
        if _is_taken(run_dir) and not overwrite:
            raise PCKeypointsError(f"run folder {run_dir} already exists; pass --overwrite to replace it, "
                                   f"--resume {run_dir} to continue it, or choose another --name")
        if overwrite and _is_taken(run_dir) and not _is_run(run_dir):
            raise PCKeypointsError(f"{run_dir} exists and is not a pckeypoints run folder; not overwriting it")
        return run_dir
    base, suffix = config.run_name, 1
    while _is_taken(out / (base if suffix == 1 else f"{base}_{suffix}")):
        suffix += 1
    return out / (base if suffix == 1 else f"{base}_{suffix}")


def _create_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Create the folder chosen by :func:`_new_run_dir`, replacing the old run there if ``overwrite``."""
    if overwrite and _is_taken(run_dir):
        shutil.rmtree(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PCKeypointsError(f"cannot create run folder {run_dir}: {err.strerror or err}") from None
    if _is_run(run_dir):
        raise PCKeypointsError(f"run folder {run_dir} was taken by another run meanwhile")


def _is_taken(path: Path) -> bool:
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


def _is_run(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in ("last.pt", "best.pt", "log.csv", "tensorboard"))


def _resume_state(resume: Path) -> tuple[dict, TrainConfig]:
    """The checkpoint to continue from: ``resume`` itself, or the newer of a run folder's ``last.pt`` and
    ``best.pt`` (both hold the whole training state; ``best.pt`` is the newer one after a kill between
    their writes)."""
    if not resume.is_dir():
        return read_checkpoint(resume, training_state=True)
    found, problem = [], None
    for name in ("last.pt", "best.pt"):
        if (resume / name).is_file():
            try:
                found.append(read_checkpoint(resume / name, training_state=True))
            except CheckpointError as err:
                problem = err
    if not found:
        raise problem or CheckpointError(f"run folder {resume} has no last.pt or best.pt to resume from")
    return max(found, key=lambda state: state[0]["epoch"])


def _reconcile_best(run_dir: Path, last: dict) -> tuple[float, int]:
    """``(best score, its epoch)`` to continue a run with, after making ``best.pt`` agree with ``last.pt``.

    Removes stale ``*.tmp`` files of writes a kill interrupted. If ``best.pt`` is missing or is not the epoch
    that ``last.pt`` names as the best, it is rewritten from ``last.pt`` when that is the best epoch; otherwise
    the best score is forgotten so that the next evaluation writes a new ``best.pt``."""
    for tmp in run_dir.glob("*.tmp"):
        tmp.unlink()
    best, best_epoch = float(last["best"]), int(last.get("best_epoch", -1))
    if best_epoch == 0:  # nothing evaluated yet
        return best, best_epoch
    try:
        on_disk = read_checkpoint(run_dir / "best.pt")[0]["epoch"]
    except CheckpointError:
        on_disk = None
    if best_epoch == -1 and on_disk is not None:  # written before best_epoch was recorded
        return best, on_disk
    if on_disk == best_epoch or (on_disk is not None and on_disk > last["epoch"]):
        return best, best_epoch  # consistent, or written just before a kill (the rerun epoch rewrites it)
    if best_epoch == last["epoch"]:
        save_checkpoint(last, run_dir / "best.pt")
        return best, best_epoch
    warnings.warn(f"{run_dir / 'best.pt'} of epoch {best_epoch} is lost; the next evaluation writes a new one")
    return -math.inf, 0


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
