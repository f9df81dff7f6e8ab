"""The training loop shared by every :mod:`~pckeypoints.train.tasks` task.

:func:`train` runs AdamW (or SGD) with a per-epoch learning-rate schedule and temperature schedule, logs to
``log.csv`` and TensorBoard, and checkpoints every epoch (``last.pt``, plus ``best.pt`` by the task's
monitored validation metric). Each epoch reseeds every random number generator from ``(seed, epoch,
rank)``, so a run resumed from ``last.pt`` continues exactly as an uninterrupted one.

With ``run.procs > 1`` (CPU processes started by :func:`~pckeypoints.distributed.spawn`) or under
``torchrun`` (``WORLD_SIZE > 1``) it trains with DistributedDataParallel: gloo on CPU, nccl on CUDA;
``batch_size`` is the global batch, split evenly over the processes; only rank 0 logs, evaluates and
writes checkpoints.

A :class:`~pckeypoints.train.budget.TimeBudget` ends a run before the step that would pass it; callbacks
(:mod:`pckeypoints.train.callbacks`) run in rank 0 after each step and validation, outside the budget.
"""
from __future__ import annotations

import csv
import math
import os
import random
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from pckeypoints.train.budget import TimeBudget
from pckeypoints.train.callbacks import Callback, TrainSession
from pckeypoints.train.checkpoint import read_checkpoint, save_checkpoint
from pckeypoints.config import OptimConfig, TrainConfig
from pckeypoints.data import collate_keypoints
from pckeypoints.devices import resolve_device
from pckeypoints.distributed import World, init_world, shielded, spawn
from pckeypoints.errors import CheckpointError, ConfigError, InputError, TrainingError, write_error
from pckeypoints.metrics.results import EvaluationResult
from pckeypoints.train.run_folder import RunFolder, claim, continued_in_place, resume_target
from pckeypoints.core.schedules import make_schedule
from pckeypoints.train.tasks import Task, get_task

__all__ = ["TrainState", "make_lr_schedule", "make_optimizer", "train", "train_loader"]


# ---------------------------------------------------------------------------------------------- seeds
def _seed(seed: int, epoch: int, rank: int) -> None:
    """Reseed torch, NumPy and ``random`` for ``epoch`` on ``rank`` (different noise on every rank)."""
    value = (seed * 100_003 + epoch) * 1_009 + rank
    torch.manual_seed(value)
    np.random.seed(value % 2**32)
    random.seed(value)


# ---------------------------------------------------------------------------------------------- logging
class _RunLog:
    """``log.csv`` (one row per epoch and split with the union of all logged columns, rewritten atomically)
    and TensorBoard (opened in the run's final folder, at the first write)."""

    def __init__(self, run_dir: Path, keep_before_epoch: int):
        self.rows, self.writer = [], None
        path = run_dir / "log.csv"
        if keep_before_epoch > 0 and path.is_file():
            with open(path, newline="") as f:
                self.rows = [r for r in csv.DictReader(f)
                             if (r.get("epoch") or "").isdigit() and int(r["epoch"]) < keep_before_epoch]

    def write_csv(self, epoch: int, scalars: dict[str, dict[str, float]], run_dir: Path) -> None:
        """Log ``{split: {name: value}}`` of ``epoch`` into ``run_dir / "log.csv"``."""
        self.rows += [{"epoch": epoch, "split": split, **values} for split, values in scalars.items()]
        path = run_dir / "log.csv"
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        tmp = path.with_suffix(".tmp")
        try:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, columns)
                writer.writeheader()
                writer.writerows(self.rows)
            os.replace(tmp, path)
        except OSError as err:
            raise write_error(path, err) from None

    def write_tensorboard(self, epoch: int, scalars: dict[str, dict[str, float]], run_dir: Path) -> None:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"))
        for split, values in scalars.items():
            for name, value in values.items():
                self.writer.add_scalar(f"{split}/{name}", value, epoch)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# ---------------------------------------------------------------------------------------------- factories
def make_optimizer(parameters, optim: OptimConfig) -> torch.optim.Optimizer:
    """AdamW, or SGD with momentum 0.9, of ``optim``'s learning rate and weight decay."""
    if optim.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=optim.lr, momentum=0.9, weight_decay=optim.weight_decay)
    return torch.optim.AdamW(parameters, lr=optim.lr, weight_decay=optim.weight_decay)


def make_lr_schedule(optimizer: torch.optim.Optimizer, optim: OptimConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """The per-epoch learning-rate schedule of ``optim``: cosine to 1 % over the epochs, halving every
    ``lr_step_epochs``, or constant."""
    if optim.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=optim.epochs, eta_min=optim.lr * 0.01)
    if optim.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=optim.lr_step_epochs, gamma=0.5)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


# ---------------------------------------------------------------------------------------------- loop
def train(config: TrainConfig | None = None, resume: str | Path | None = None, progress: bool = True,
          stop_after: int | None = None, overwrite: bool = False, budget: TimeBudget | None = None,
          callbacks: Sequence[Callback] = ()) -> Path:
    """Train ``config`` (or continue the run at ``resume``, a run folder or checkpoint, with its own
    config) and return the run folder. ``stop_after`` ends the run after that many epochs in total (of
    ``config.optim.epochs``, schedules unchanged) so that it can be resumed later.

    ``budget`` limits this call's training time (:mod:`pckeypoints.train.budget`): the epoch it cuts short is
    the run's last (logged, validated and checkpointed as any epoch, its schedules stepped), so ``last.pt`` holds
    the final model. ``callbacks`` run in rank 0 after each step and each validation
    (:mod:`pckeypoints.train.callbacks`).

    A new run goes to ``run.out/run.name``; an existing run there is an error unless ``overwrite``
    (which replaces it once the new run has its first checkpoint). Without a ``name`` the folder is
    ``<data label>_<method>``, or ``..._2``, ``..._3`` if taken (with ``overwrite``: replaced). A run that fails
    before its first checkpoint leaves no folder behind. A checkpoint outside a run folder is resumed in a
    new run folder. See :mod:`pckeypoints.train.run_folder`."""
    if (config is None) == (resume is None):
        raise InputError("give either a config or a run to resume")
    checkpoint = None
    if resume is not None:
        checkpoint, config = _resume_state(Path(resume))
        if checkpoint["epoch"] >= config.optim.epochs and continued_in_place(resume) is None:
            raise TrainingError(f"{resume} has finished its {config.optim.epochs} epochs: nothing to continue "
                                f"(eval or predict it, or train a new run)")
    else:
        config = config.replace(**_absolute_paths(config))
    device = resolve_device(config.run.device)
    if config.run.procs > 1 and "WORLD_SIZE" not in os.environ:
        if device.type != "cpu":
            raise ConfigError(f"config field run.procs = {config.run.procs} starts CPU processes; on {device.type} "
                              "start one process per device with torchrun")
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        if config.run.procs > cores:
            raise ConfigError(f"config field run.procs = {config.run.procs} is more than the {cores} CPU cores here")
        _check_batch(config, config.run.procs)
        return _train_in_processes(config, resume, progress, stop_after, overwrite, budget, callbacks)
    world = init_world(device)
    _check_batch(config, world.world_size)
    folder = _claim(config, resume, overwrite) if world.is_main else None
    try:  # from the claim on: whatever fails (Ctrl-C too), a new run without a checkpoint leaves nothing
        if folder is not None:
            config = config.replace(name=folder.name)
        run_dir = folder.path if folder is not None else Path(config.run.out) / config.run_name
        return _train(config, checkpoint, folder, run_dir, device, world, progress, stop_after, budget, callbacks)
    except BaseException:
        if folder is not None:
            folder.abandon()  # an overwritten run stays as it was
        raise


def _claim(config: TrainConfig, resume: str | Path | None, overwrite: bool) -> RunFolder:
    """The run folder of this run, held by this process (see :mod:`pckeypoints.train.run_folder`)."""
    if resume is not None:
        return resume_target(resume, config.run.out, config.run_name)
    # --overwrite without --name replaces <data label>_<method>
    return claim(config.run.out, config.run_name, numbered=config.run.name is None and not overwrite,
                 overwrite=overwrite)


def _train_in_processes(config: TrainConfig, resume: str | Path | None, progress: bool, stop_after: int | None,
                        overwrite: bool, budget: TimeBudget | None, callbacks: Sequence[Callback]) -> Path:
    """Train in ``run.procs`` CPU processes (:func:`~pckeypoints.distributed.spawn`). This process claims the
    run folder and holds it; rank 0 writes into it. Whatever ends the run (a failed or killed process, Ctrl-C or
    SIGTERM to the process group), the processes are stopped first, then the folder is settled from the disk:
    a run with a checkpoint stays, resumable; one without is removed, as in one process."""
    folder = _claim(config, resume, overwrite)
    try:
        run_dir = spawn(_train_process, config.run.procs, None if resume else config.replace(name=folder.name),
                        resume, folder.for_process(), progress, stop_after, budget, callbacks)
    except BaseException:
        with shielded():
            folder.settle()
            folder.abandon()
        raise
    folder.settle()
    folder.close()
    return run_dir


def _train_process(config: TrainConfig | None, resume: str | Path | None, folder: RunFolder, progress: bool,
                   stop_after: int | None, budget: TimeBudget | None, callbacks: Sequence[Callback]) -> Path:
    """One process of :func:`_train_in_processes`: rank 0 trains in ``folder``."""
    checkpoint = None
    if resume is not None:
        checkpoint, config = _resume_state(Path(resume))
    config = config.replace(name=folder.name)
    device = resolve_device(config.run.device)
    world = init_world(device)
    return _train(config, checkpoint, folder if world.is_main else None, folder.path, device, world, progress,
                  stop_after, budget, callbacks)


def _train(config: TrainConfig, checkpoint: dict | None, folder: RunFolder | None, run_dir: Path,
           device: torch.device, world: World, progress: bool, stop_after: int | None, budget: TimeBudget | None,
           callbacks: Sequence[Callback]) -> Path:
    if device.type == "cuda":
        torch.cuda.set_device(device)
    task = get_task(config.mode)
    train_set = task.dataset(config, "train", train=True)
    config = task.configure(config, train_set)
    eval_loader = _eval_loader(task.dataset(config, config.eval.split, train=False), config) if world.is_main else None
    loader = train_loader(train_set, config, world)
    state = TrainState.create(task, config, device)
    log = None
    if checkpoint is not None:
        state.load_state_dict(checkpoint)
    end_epoch = config.optim.epochs if stop_after is None else min(stop_after, config.optim.epochs)
    if world.is_main:
        if checkpoint is not None and not folder.new:
            folder.remove_stale(reports=state.epoch < end_epoch)  # reports of checkpoints about to be replaced
            state.best, state.best_epoch = _reconcile_best(run_dir, checkpoint)
        log = _RunLog(run_dir, state.epoch if not folder.new else 0)
    session = TrainSession(task, config, state, world, budget or TimeBudget(math.inf),
                           callbacks if world.is_main else (), epochs=float(state.epoch))
    trained = DistributedDataParallel(state.model) if world.world_size > 1 else state.model
    shown: dict[str, str] = {}  # the progress bar's last validation score
    try:
        while state.epoch < end_epoch and not session.budget.cut:
            loader.sampler.set_epoch(state.epoch)
            scalars = _run_epoch(session, trained, loader, device, progress and world.is_main, shown)
            if world.is_main:
                run_dir = _end_epoch(session, scalars, eval_loader, end_epoch, log, folder, run_dir, shown)
            if world.world_size > 1:
                dist.barrier()
    finally:
        if log is not None:
            log.close()
    if folder is not None:
        folder.close()
    return run_dir


def _end_epoch(session: TrainSession, scalars: dict[str, dict[str, float]], eval_loader: DataLoader, end_epoch: int,
               log: _RunLog, folder: RunFolder, run_dir: Path, shown: dict[str, str]) -> Path:
    """Rank 0 after an epoch: validate (every ``eval.every`` epochs, after the last and after a budget's cut),
    log, checkpoint; returns the run folder (see :func:`_save`)."""
    task, config, state = session.task, session.config, session.state
    if state.epoch % config.eval.every == 0 or state.epoch == end_epoch or session.budget.cut:
        result = _evaluate(task, state, eval_loader, config)
        scalars[_eval_label(config)] = result.to_dict()
        shown[f"{_eval_label(config)} {result.monitored_name}"] = f"{result.monitored:.4f}"
        session.notify("on_validation", result)
    log.write_csv(state.epoch - 1, scalars, run_dir)  # before the checkpoint: a resume keeps its row
    run_dir = _save(state, config, session.world, folder, run_dir)
    log.write_tensorboard(state.epoch - 1, scalars, run_dir)
    return run_dir


def _check_batch(config: TrainConfig, processes: int) -> None:
    if config.optim.batch_size % processes:
        raise ConfigError(f"optim.batch_size {config.optim.batch_size} must be divisible by the {processes} "
                          f"processes")


class TrainState:
    """What a run continues from: the model, its optimiser and schedules, the epochs done and the best
    validation score so far; :meth:`state_dict` is what a checkpoint holds besides the config."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 lr_schedule: torch.optim.lr_scheduler.LRScheduler, tau_schedule):
        self.model, self.optimizer, self.lr_schedule, self.tau_schedule = model, optimizer, lr_schedule, tau_schedule
        self.epoch, self.best, self.best_epoch = 0, -math.inf, 0

    @classmethod
    def create(cls, task: Task, config: TrainConfig, device: torch.device) -> "TrainState":
        """A freshly initialised model (seeded by ``run.seed``), its optimiser and schedules."""
        torch.manual_seed(config.run.seed)
        model = task.build_model(config).to(device)
        optimizer = make_optimizer(model.parameters(), config.optim)
        loss = config.loss
        tau_schedule = make_schedule(loss.tau_schedule, loss.tau_start, loss.tau_end,
                                     loss.tau_epochs or config.optim.epochs)
        return cls(model, optimizer, make_lr_schedule(optimizer, config.optim), tau_schedule)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "lr_schedule": self.lr_schedule.state_dict(), "tau_schedule": self.tau_schedule.state_dict(),
                "epoch": self.epoch, "best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_schedule.load_state_dict(state["lr_schedule"])
        self.tau_schedule.load_state_dict(state["tau_schedule"])
        self.epoch, self.best, self.best_epoch = state["epoch"], float(state["best"]), int(state.get("best_epoch", 0))


def _run_epoch(session: TrainSession, trained: nn.Module, loader: DataLoader, device: torch.device, progress: bool,
               shown: dict[str, str] | None = None) -> dict[str, dict[str, float]]:
    """Train one epoch (up to the budget), reseeded from ``(seed, epoch, rank)``, and step the schedules;
    ``{"train": scalars}``. The progress bar shows the epoch's mean loss so far and ``shown`` (the last validation
    score)."""
    state, config = session.state, session.config
    _seed(config.run.seed, state.epoch, session.world.rank)
    tau, lr = state.tau_schedule.value, state.optimizer.param_groups[0]["lr"]
    stats = _train_epoch(session, trained, loader, tau, device, desc=f"epoch {state.epoch + 1}/{config.optim.epochs}",
                         progress=progress, shown=shown)
    state.lr_schedule.step()
    state.tau_schedule.step()
    state.epoch += 1
    return {"train": {**stats, "tau": tau, "lr": lr}}


def _eval_label(config: TrainConfig) -> str:
    """The ``split`` of evaluation rows in the log: the evaluated split, ``train_eval`` for the train split (its
    ``train`` rows are the training losses)."""
    return "train_eval" if config.eval.split == "train" else config.eval.split


def _evaluate(task: Task, state: TrainState, loader: DataLoader, config: TrainConfig) -> EvaluationResult:
    """The task's validation result; a new best of its monitored score is recorded in ``state``."""
    result = task.evaluate(state.model.eval(), loader, config)
    if result.monitored > state.best:
        state.best, state.best_epoch = float(result.monitored), state.epoch
    return result


def _save(state: TrainState, config: TrainConfig, world: World, folder: RunFolder, run_dir: Path) -> Path:
    """Write ``last.pt`` (and ``best.pt`` first, at a new best: ``last.pt`` never names a best checkpoint that is
    not on disk); returns the run folder, which an ``--overwrite`` run swaps in after its first checkpoint."""
    checkpoint = {**state.state_dict(), "config": config.to_dict(), "world_size": world.world_size}
    if state.best_epoch == state.epoch:
        save_checkpoint(checkpoint, run_dir / "best.pt")
    save_checkpoint(checkpoint, run_dir / "last.pt")
    return folder.commit()


# ---------------------------------------------------------------------------------------------- run folders
def _absolute_paths(config: TrainConfig) -> dict[str, str]:
    """``data.folder`` and ``data.root`` as absolute paths, so that the run's commands work from any directory."""
    return {name: str(Path(config.get(name)).absolute()) for name in ("data", "data_root")
            if config.get(name) is not None}


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
    if problem is not None:
        warnings.warn(f"{problem}; resuming from the other checkpoint, of epoch {found[0][0]['epoch']}")
    return max(found, key=lambda state: state[0]["epoch"])


def _reconcile_best(run_dir: Path, last: dict) -> tuple[float, int]:
    """``(best score, its epoch)`` to continue a run with, after making ``best.pt`` agree with ``last.pt``.

    If ``best.pt`` is missing or is not the epoch that ``last.pt`` names as the best, it is rewritten from
    ``last.pt`` when that is the best epoch; otherwise the best score is forgotten so that the next evaluation
    writes a new ``best.pt``."""
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


def _train_epoch(session: TrainSession, model: nn.Module, loader: DataLoader, tau: float, device: torch.device,
                 desc: str, progress: bool, shown: dict[str, str] | None = None) -> dict[str, float]:
    """One pass over ``loader``, cut short before the step that would pass the budget, with the callbacks after
    each step; returns the means over its steps of the loss and the task's logged scalars, averaged over the
    processes."""
    config, budget, epoch = session.config, session.budget, session.state.epoch
    _train_mode(model, config.model.freeze_norm)
    totals: dict[str, float] = {}
    steps = 0
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress)
    budget.start()
    for batch in bar:
        if not budget.allows_step(session.world, device):
            break
        with budget.step():
            values = _step(session, model, batch, tau, device, desc)
        steps += 1
        session.step, session.epochs = session.step + 1, epoch + steps / len(loader)
        for key, value in values.items():
            totals[key] = totals.get(key, 0.0) + value
        if progress:  # the epoch's mean loss so far, then the last validation score
            bar.set_postfix({"loss": f"{totals['loss'] / steps:.4f}", **(shown or {})})
        if session.callbacks:
            session.notify("on_step")
            _train_mode(model, config.model.freeze_norm)
    budget.stop()
    bar.close()
    names = sorted(totals)
    means = torch.tensor([totals[k] / max(steps, 1) for k in names], dtype=torch.float64)
    if session.world.world_size > 1:
        dist.all_reduce(means)
        means /= session.world.world_size
    return dict(zip(names, means.tolist()))


def _step(session: TrainSession, model: nn.Module, batch: dict, tau: float, device: torch.device,
          desc: str) -> dict[str, float]:
    """One optimiser step on ``batch``; returns the loss and the task's logged scalars, read in the step's one host
    synchronisation once the step is queued. A loss that is not finite stops the run."""
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    loss, scalars = session.task.loss(model, batch, session.config, tau)
    session.state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    session.state.optimizer.step()
    values = dict(zip(["loss", *scalars], torch.stack([loss.detach(), *scalars.values()]).tolist()))
    if not math.isfinite(values["loss"]):
        raise TrainingError(f"training diverged: loss is {values['loss']} ({desc})")
    return values


def _train_mode(model: nn.Module, freeze_norm: bool) -> None:
    """Put ``model`` into training mode; with ``freeze_norm`` its BatchNorm layers stay in eval mode (running
    statistics)."""
    model.train()
    if freeze_norm:
        for module in model.modules():
            if isinstance(module, _BatchNorm):
                module.eval()


def train_loader(dataset, config: TrainConfig, world: World) -> DataLoader:
    """This process's share of the training clouds, ``optim.batch_size / world_size`` a batch, shuffled anew by
    ``run.seed`` and the epoch set with ``loader.sampler.set_epoch``."""
    sampler = DistributedSampler(dataset, world.world_size, world.rank, shuffle=True, seed=config.run.seed)
    return DataLoader(dataset, config.optim.batch_size // world.world_size, sampler=sampler,
                      num_workers=config.data.num_workers, collate_fn=collate_keypoints)


def _eval_loader(dataset, config: TrainConfig) -> DataLoader:
    return DataLoader(dataset, config.optim.batch_size, shuffle=False, num_workers=config.data.num_workers,
                      collate_fn=collate_keypoints)
