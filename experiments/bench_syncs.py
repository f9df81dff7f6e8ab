"""Host synchronisations and CPU time of one training step of each task.

    python -m experiments.bench_syncs [--clock process] [--batch 4] [--points 2048] [--tag before] [--out DIR]

One step is the trainer's own (:func:`pckeypoints.train.training._train_epoch` over one batch already on the
device): the task's loss, backward, AdamW, and the trainer's bookkeeping. :class:`HostSyncCounter` counts
the places where the host waits for the device on a GPU, on any machine (a CPU run counts what a GPU run of
the same code would wait on): reads of a tensor's value (``.item()``, ``bool()``, ``float()``, ``int()``,
``.tolist()``, ``.numpy()``: ``aten._local_scalar_dense``; ``aten.equal``) and ops whose output size depends on
the values (``nonzero``, boolean indexing, ``masked_select``, ``unique``, ...). The optimiser's own step is not
counted: AdamW keeps its step counters on the host, so its reads of them wait for nothing.

Rows: each task (supervised sampling-argmax, unsupervised sampling-argmax and soft-argmax) at the config's
defaults, with a random batch (the count and the cost do not depend on the values). ``--tag before`` /
``--tag after`` rows of the same run folder are merged into one table (``bench_syncs.{json,md}``), so that
the count before a change and after it stand side by side.
"""
from __future__ import annotations

import argparse
import math
import json
import traceback
from collections import Counter
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from experiments.benchutil import CLOCKS, RESULTS, machine, save_results
from pckeypoints.evaluation.report import markdown_table

aten = torch.ops.aten
#: Kernels that wait for the device: they read a value, or their output's size depends on the values.
SYNCING_OPS = {aten._local_scalar_dense.default, aten.equal.default, aten.nonzero.default,
               aten.masked_select.default, aten._unique2.default, aten.unique_dim.default,
               aten.unique_consecutive.default, aten.repeat_interleave.Tensor, aten.bincount.default}
#: Python-level reads of a tensor's values (on a CPU tensor some never reach a kernel).
READING_METHODS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.__bool__,
                   torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__index__}


class HostSyncCounter:
    """Context manager counting host synchronisations (module doc); ``count`` is their number and
    ``sites`` a :class:`~collections.Counter` of ``"op at file:line"`` (the innermost frame of this project)."""

    def __init__(self):
        self.count, self.sites, self.paused = 0, Counter(), 0
        self._modes = (_FunctionReads(self), _DispatchReads(self))
        self._hooks = []

    def __enter__(self) -> "HostSyncCounter":
        self._hooks = [register_optimizer_step_pre_hook(lambda *_: self._pause(1)),
                       register_optimizer_step_post_hook(lambda *_: self._pause(-1))]
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)
        for hook in self._hooks:
            hook.remove()

    def _pause(self, change: int) -> None:
        self.paused += change

    def record(self, name: str) -> None:
        if self.paused:
            return
        self.count += 1
        frames = [f for f in traceback.extract_stack() if "pckeypoints" in f.filename or "pointnet2" in f.filename]
        where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
        self.sites[f"{name} at {where}"] += 1


class _FunctionReads(TorchFunctionMode):
    def __init__(self, counter: HostSyncCounter):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in READING_METHODS:
            self.counter.record(func.__name__)
            self.counter._pause(1)  # the kernel it runs is the same synchronisation
            try:
                return func(*args, **(kwargs or {}))
            finally:
                self.counter._pause(-1)
        return func(*args, **(kwargs or {}))


class _DispatchReads(TorchDispatchMode):
    def __init__(self, counter: HostSyncCounter):
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in SYNCING_OPS or (func is aten.index.Tensor and _has_boolean_index(args[1])):
            self.counter.record(str(func.overloadpacket.__name__))
        return func(*args, **(kwargs or {}))


def _has_boolean_index(indices) -> bool:
    return any(i is not None and i.dtype == torch.bool for i in indices)


# ---------------------------------------------------------------------------------------------- the step
def training_epoch(mode: str, batch_size: int = 4, num_points: int = 2048, **fields):
    """``epoch(num_batches)``: the trainer's epoch (``_train_epoch``) of ``num_batches`` training steps of a fresh
    model of ``mode`` (config defaults changed by ``fields``), every step on the same random batch."""
    from pckeypoints.config import TrainConfig
    from pckeypoints.distributed import World
    from pckeypoints.train.tasks import get_task
    from pckeypoints.train.budget import TimeBudget
    from pckeypoints.train.callbacks import TrainSession
    from pckeypoints.train.training import TrainState, _train_epoch

    config = TrainConfig.from_fields(mode=mode, batch_size=batch_size, **fields)
    num_keypoints = config.model.num_keypoints or 10
    config = config.replace(num_keypoints=num_keypoints)
    generator = torch.Generator().manual_seed(0)
    points = torch.rand(batch_size, num_points, 3, generator=generator) * 2 - 1
    batch = {"points": points, "keypoints": points[:, :num_keypoints].clone(),
             "mask": torch.ones(batch_size, num_keypoints, dtype=torch.bool)}
    task = get_task(mode)
    state = TrainState.create(task, config, torch.device("cpu"))
    tau = state.tau_schedule.value

    session = TrainSession(task, config, state, World(), TimeBudget(math.inf))

    def epoch(num_batches: int = 1) -> dict:
        return _train_epoch(session, state.model, [batch] * num_batches, tau, torch.device("cpu"), desc="bench",
                            progress=False)

    return epoch


def step_syncs(epoch) -> tuple[int, Counter, int]:
    """``(syncs per step, their sites, syncs per epoch besides)`` of ``epoch`` (:func:`training_epoch`): the
    difference between the counts of an epoch of two steps and one of one step."""
    counts = []
    for num_batches in (1, 2):
        with HostSyncCounter() as counter:
            epoch(num_batches)
        counts.append(counter)
    per_step = counts[1].count - counts[0].count
    return per_step, counts[1].sites - counts[0].sites, counts[0].count - per_step


CASES = {  # label -> (mode, config fields)
    "supervised sampling": ("supervised", {}),
    "unsupervised sampling": ("unsupervised", {}),
    "unsupervised soft": ("unsupervised", {"method": "soft"}),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--points", type=int, default=2048)
    p.add_argument("--repeat", type=int, default=3, help="timed steps (the best counts)")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="process",
                   help="process: CPU time of this process (a busy machine); wall: wall time")
    p.add_argument("--tag", default="after", help="the rows' label, e.g. before/after a change")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)  # one core: the machine is shared
    now = CLOCKS[args.clock]
    rows = []
    for label, (mode, fields) in CASES.items():
        epoch = training_epoch(mode, args.batch, args.points, **fields)
        epoch()  # warm-up
        per_step, sites, per_epoch = step_syncs(epoch)
        times = []
        for _ in range(args.repeat):
            start = now()
            epoch()
            times.append((now() - start) * 1e3)
        rows.append({"tag": args.tag, "task": label, "syncs_per_step": per_step, "syncs_per_epoch": per_epoch,
                     "step_ms": min(times), "sites": dict(sites)})
        print(f"{args.tag} {label}: {per_step} syncs per step (+{per_epoch} per epoch), {min(times):.0f} ms",
              flush=True)
    _write(args, rows)


def _write(args, rows: list[dict]) -> None:
    """Merge ``rows`` into ``bench_syncs.json`` (replacing the rows of the same tag) and rewrite the table."""
    path = args.out / "bench_syncs.json"
    old = json.loads(path.read_text())["rows"] if path.is_file() else []
    rows = [r for r in old if r["tag"] != args.tag] + rows
    config = {"batch": args.batch, "points": args.points, "clock": args.clock, "repeat": args.repeat}
    payload = {"config": config, "machine": machine(), "rows": rows}
    lines = ["# bench_syncs: host synchronisations of one training step", "",
             f"config: `{json.dumps(config)}`  ", f"machine: `{json.dumps(payload['machine'])}`", "",
             *markdown_table(["tag", "task", "syncs / step", "+ syncs / epoch", f"step ms ({args.clock} clock)"],
                             [[r["tag"], r["task"], str(r["syncs_per_step"]), str(r["syncs_per_epoch"]),
                               f"{r['step_ms']:.0f}"] for r in rows], align=False).splitlines(),
             "", "Sites (op at the innermost line of the project, times per step):", ""]
    for r in rows:
        sites = ", ".join(f"{site} x{n}" for site, n in sorted(r["sites"].items())) or "none"
        lines.append(f"- {r['tag']} {r['task']}: {sites}")
    save_results(args.out, "bench_syncs", payload, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
