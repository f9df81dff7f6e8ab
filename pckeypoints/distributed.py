"""Data-parallel processes: the process group a run trains in, and CPU processes that share out the cores.

On a CPU, one training process with several intra-op threads leaves most of the extra cores idle (the
backbone's ops are small), so ``run.procs = P`` trains in P processes of one thread each (or
``cores // P``) under DistributedDataParallel over gloo, started by :func:`spawn`. On GPUs, start the
processes with ``torchrun`` (nccl), which sets the same environment variables.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from .errors import PCKeypointsError, TrainingError

__all__ = ["World", "init_world", "is_main_process", "spawn"]


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_main_process() -> bool:
    """Whether this process prints progress: rank 0 of the process group, else of the ``RANK`` that torchrun and
    :func:`spawn` set before the group exists (while the datasets load); a process outside any run is."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def init_world(device: torch.device) -> World:
    """Join the process group described by ``WORLD_SIZE``/``RANK`` (torchrun's or :func:`spawn`'s variables):
    nccl on CUDA, gloo otherwise; a single process without them."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def spawn(fn: Callable, procs: int, *args):
    """Run ``fn(*args)`` in ``procs`` new processes (ranks 0 .. procs - 1 of a local process group that
    :func:`init_world` joins), each with ``cores // procs`` intra-op threads (at least one), and return rank
    0's result. A :class:`~pckeypoints.errors.PCKeypointsError` raised in a process is raised here as it was;
    any other failure becomes a :class:`~pckeypoints.errors.TrainingError` with that process's traceback."""
    context = mp.get_context("spawn")
    results, errors = context.SimpleQueue(), context.SimpleQueue()
    threads = max(1, torch.get_num_threads() // procs)
    try:
        mp.spawn(_process, args=(procs, _free_port(), threads, results, errors, fn, args), nprocs=procs, join=True)
    except mp.ProcessRaisedException as err:
        if not errors.empty():
            raise errors.get() from None
        raise TrainingError(f"a training process failed:{err}") from None
    return results.get()


def _process(rank: int, procs: int, port: int, threads: int, results, errors, fn: Callable, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(procs), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(threads)
    try:
        value = fn(*args)
        if rank == 0:
            results.put(value)
    except PCKeypointsError as err:
        errors.put(err)
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
