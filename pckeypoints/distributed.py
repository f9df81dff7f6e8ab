"""Data-parallel processes: the process group a run trains in, and CPU processes that share out the cores.

On a CPU, one training process with several intra-op threads leaves most of the extra cores idle (the
backbone's ops are small), so ``run.procs = P`` trains in P processes of one thread each (or
``cores // P``) under DistributedDataParallel over gloo, started by :func:`spawn`. On GPUs, start the
processes with ``torchrun`` (nccl), which sets the same environment variables.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist

from pckeypoints.errors import PCKeypointsError, TrainingError

__all__ = ["World", "init_world", "is_main_process", "shielded", "spawn"]


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
    0's result.

    A :class:`~pckeypoints.errors.PCKeypointsError` raised in a process is raised here as it was; a process
    killed by a signal (``kill -9``, out of memory) becomes a one-line :class:`~pckeypoints.errors.TrainingError`;
    any other failure a :class:`~pckeypoints.errors.TrainingError` with that process's traceback. Whatever ends
    the wait (a failed process, Ctrl-C or SIGTERM here), the other processes are stopped and waited for before
    it is raised: no process outlives this call. The processes ignore Ctrl-C (this process stops them) and end
    with this process if it is killed (Linux)."""
    context = multiprocessing.get_context("spawn")
    threads = max(1, torch.get_num_threads() // procs)
    port, parent = _free_port(), os.getpid()
    processes, receivers, messages = [], [], {}
    stopped: set[int] = set()  # ranks this call stopped: their signal is no failure of theirs
    blocked = hasattr(signal, "pthread_sigmask")
    try:
        if blocked:  # the processes start with Ctrl-C blocked, until they ignore it
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            for rank in range(procs):
                receiver, sender = context.Pipe(duplex=False)
                process = context.Process(target=_process, name=f"pckeypoints-rank-{rank}", daemon=False,
                                          args=(rank, procs, port, threads, parent, sender, fn, args))
                processes.append(process)
                receivers.append(receiver)
                process.start()
                sender.close()
        finally:
            if blocked:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        stopped |= _wait(processes, receivers, messages)
    except BaseException:
        stopped |= {rank for rank, p in enumerate(processes) if p.exitcode is None}
        with shielded():
            _stop(processes)
        raise
    finally:
        for receiver in receivers:
            receiver.close()
    _raise_failure(processes, messages, stopped)
    return messages[0][1]


def _wait(processes: list, receivers: list, messages: dict) -> set[int]:
    """Collect each process's message into ``messages`` (rank -> (kind, value)) as the processes end; at the first
    failure stop the others. Returns the ranks stopped."""
    running = dict(enumerate(processes))
    while running:
        ready = multiprocessing.connection.wait([p.sentinel for p in running.values()] +
                                                [r for rank, r in enumerate(receivers) if rank not in messages])
        for rank, receiver in enumerate(receivers):
            if receiver in ready and rank not in messages:
                messages[rank] = _receive(receiver)
        for rank, process in list(running.items()):
            if process.sentinel in ready:
                process.join()
                del running[rank]
                if rank not in messages:
                    messages[rank] = _receive(receivers[rank])
                if process.exitcode != 0 or messages[rank][0] != "done":
                    stopped = set(running)
                    _stop(running.values())
                    return stopped
    return set()


def _raise_failure(processes: list, messages: dict, stopped: set[int]) -> None:
    """Raise what failed first, if anything did: a toolkit error as it was, a kill, a crash, an exit status."""
    procs = len(processes)
    for rank in range(procs):
        messages.setdefault(rank, ("", None))
    for rank, (kind, value) in messages.items():
        if kind == "error":
            raise value
    for rank, process in enumerate(processes):
        if process.exitcode and process.exitcode < 0 and rank not in stopped:
            raise TrainingError(f"training process {rank} of {procs} was killed by {_signal_name(-process.exitcode)}"
                                f"{' (out of memory?)' if process.exitcode == -signal.SIGKILL else ''}; the "
                                "others were stopped")
    for rank, (kind, value) in messages.items():
        if kind == "crash":
            raise TrainingError(f"a training process failed: rank {rank}: {value}")
    for rank, process in enumerate(processes):
        if process.exitcode and rank not in stopped:
            raise TrainingError(f"training process {rank} of {procs} ended with status {process.exitcode}")


@contextlib.contextmanager
def shielded():
    """Defer Ctrl-C and SIGTERM (in the main thread) while a cleanup runs, so that a second signal (``timeout``
    signals the command, then its process group) cannot cut it short; they take effect after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = {signum: signal.signal(signum, lambda number, frame: received.append(number))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received and callable(previous[received[0]]):
            previous[received[0]](received[0], None)


def _process(rank: int, procs: int, port: int, threads: int, parent: int, sender, fn: Callable,
             args: tuple) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops every process
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _die_with_parent(parent)
    _thread_lock_for_progress_bars()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(procs), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(threads)
    try:
        value = fn(*args)
        message = ("done", value if rank == 0 else None)
    except PCKeypointsError as err:
        message = ("error", err)
    except Exception as err:  # a bug: its traceback goes to the parent
        message = ("crash", f"{type(err).__name__}: {err}\n\n{traceback.format_exc()}")
    finally:
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:
                pass
    sender.send(message)
    sender.close()
    if message[0] != "done":
        sys.exit(1)


def _thread_lock_for_progress_bars() -> None:
    """tqdm's default lock holds a multiprocessing semaphore, which a killed process leaves to the resource
    tracker (a warning at exit); one process's bars need a thread lock only."""
    try:
        from tqdm import tqdm
    except ImportError:
        return
    tqdm.set_lock(threading.RLock())


def _receive(receiver) -> tuple[str, object]:
    """The message a process sent before it ended, or ``("", None)`` if it sent none (it was killed)."""
    try:
        return receiver.recv() if receiver.poll() else ("", None)
    except (EOFError, OSError):
        return "", None


def _stop(processes, grace: float = 5.0) -> None:
    """SIGTERM the processes that still run, SIGKILL those that outlast ``grace`` seconds, and wait for all."""
    processes = [p for p in processes if p.pid is not None]  # started
    for process in processes:
        if process.exitcode is None:
            process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.exitcode is None:
            process.kill()
            process.join()


def _die_with_parent(parent: int) -> None:
    """End this process by SIGTERM when ``parent`` dies (Linux), so that a killed parent leaves no training
    processes behind; end now if it is gone already."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os._exit(1)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
