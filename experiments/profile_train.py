"""Where a supervised training step's CPU time goes: data, backbone levels, head, loss, backward, optimizer.

    python -m experiments.profile_train [--category bathtub] [--width 1] [--steps 6] [--out DIR]

One thread (``torch.set_num_threads(1)``), CPU time of this process (``time.process_time``), real
KeypointNet batches with the training augmentation, soft+JS loss (the shipped models' method) and AdamW,
as in ``pckeypoints train``:

1. phases: each step split by timers into data (loader + augmentation + collate), forward (backbone +
   head), the loss, the host synchronisations of the trainer (``isfinite(loss)``, ``loss.item()``),
   backward and the optimizer step;
2. each backbone level (set abstractions ``sa1..sa3``, feature propagations ``fp3..fp1``, the linear
   ``out``) and the head + loss alone, forward and backward (ones as the output gradient), on its inputs
   of a real batch;
3. ops: ``torch.profiler`` self time by op (matrix products, BatchNorm, copies, the pointnet2 ops and
   their backward, ...), over the same number of steps.

Writes experiments/results/profile_train.{json,md}. Times are the median over the steps (ms).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch

from experiments.benchutil import RESULTS, write_results
from pckeypoints.config import TrainConfig
from pckeypoints.data import collate_keypoints
from pckeypoints.train.supervised import SupervisedTask
from pckeypoints.train.training import make_optimizer

LEVELS = ("sa1", "sa2", "sa3", "fp3", "fp2", "fp1")


class Timers:
    """Accumulates process-time intervals by name for the current step."""

    def __init__(self):
        self.step: dict[str, float] = defaultdict(float)
        self.open: dict[str, float] = {}

    def start(self, name: str) -> None:
        self.open[name] = time.process_time()

    def stop(self, name: str) -> None:
        self.step[name] += (time.process_time() - self.open.pop(name)) * 1e3


def level_inputs(model: torch.nn.Module, points: torch.Tensor) -> dict[str, tuple]:
    """The inputs of every backbone level (and of the backbone's output layer) in one forward of ``model``,
    detached, the floating features marked as requiring a gradient as in the full graph."""
    captured, handles = {}, []
    modules = {name: getattr(model.backbone, name) for name in LEVELS} | {"out": model.backbone.head}
    for name, module in modules.items():
        def keep(m, args, n=name):
            captured[n] = tuple(a.detach().requires_grad_(n != "sa1" and i > 0 or n in ("out",))
                                if torch.is_tensor(a) and a.is_floating_point() else a for i, a in enumerate(args))
        handles.append(module.register_forward_pre_hook(keep))
    model(points)
    for h in handles:
        h.remove()
    return captured


def time_level(fn, inputs: tuple, repeat: int) -> tuple[float, float]:
    """Median (forward ms, backward ms) of ``fn(*inputs)`` and the backward of its outputs."""
    forward, backward = [], []
    for _ in range(repeat):
        t0 = time.process_time()
        out = fn(*inputs)
        t1 = time.process_time()
        outs = [o for o in (out if isinstance(out, tuple) else (out,)) if torch.is_tensor(o) and o.requires_grad]
        torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
        t2 = time.process_time()
        forward.append((t1 - t0) * 1e3)
        backward.append((t2 - t1) * 1e3)
    return statistics.median(forward), statistics.median(backward)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--category", default="bathtub")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args()


class Trainer:
    """The training step of ``pckeypoints train`` (soft+JS, AdamW) on real KeypointNet batches, with timers."""

    def __init__(self, args):
        config = TrainConfig.from_fields(category=args.category, method="soft+js", width=args.width,
                                         batch_size=args.batch, basis="fixed", sigma=0.01, jitter=0.005, scale_lo=0.9,
                                         scale_hi=1.1, data_root=args.data_root, lr=2e-3)
        self.task = SupervisedTask()
        train_set = self.task.dataset(config, "train", train=True)
        self.config = self.task.configure(config, train_set)
        self.loader = torch.utils.data.DataLoader(train_set, self.config.optim.batch_size, shuffle=True,
                                                  collate_fn=collate_keypoints, drop_last=True)
        self.model = self.task.build_model(self.config)
        self.optimizer = make_optimizer(self.model.parameters(), self.config.optim)
        self.timers = Timers()

    def step(self, batch_iter, timed: bool) -> None:
        """One step of the next batch; ``timed``: into :attr:`timers` by phase."""
        t = self.timers if timed else Timers()
        t.start("data")
        batch = next(batch_iter)
        t.stop("data")
        t.start("step")
        t.start("forward")
        maps = self.model(batch["points"])
        t.stop("forward")
        t.start("loss")
        loss = self.task.criterion(self.config)(maps, batch["keypoints"], batch["mask"], tau=1.0)
        t.stop("loss")
        t.start("sync")
        if not torch.isfinite(loss):
            raise ValueError("diverged")
        loss.item(), loss.item()
        t.stop("sync")
        t.start("backward")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t.stop("backward")
        t.start("optimizer")
        self.optimizer.step()
        t.stop("optimizer")
        t.stop("step")


def phase_medians(trainer: Trainer, batches, steps: int) -> dict[str, float]:
    """Median ms per phase (``data``, ``forward``, ..., ``step``) over ``steps`` timed steps."""
    samples: dict[str, list[float]] = defaultdict(list)
    for _ in range(steps):
        trainer.timers.step = defaultdict(float)
        trainer.step(batches, timed=True)
        for key, value in trainer.timers.step.items():
            samples[key].append(value)
    return {k: statistics.median(v) for k, v in samples.items()}


def phase_rows(median: dict[str, float]) -> list[dict]:
    phases = [("data", "data", "loader: read, augment (scale, jitter), collate"),
              ("forward", "forward", "whole forward (backbone + head)"),
              ("loss", "loss", "soft+JS KeypointLoss (built + validated each step)"),
              ("sync", "sync", "isfinite(loss) + 2 loss.item()"),
              ("backward", "backward", "whole backward (+ zero_grad)"),
              ("optimizer", "optimizer", "AdamW step"),
              ("total", "step", "step (without data)")]
    return [{"part": part, "what": what, "ms/step": median[key], "% of step": 100 * median[key] / median["step"]}
            for part, key, what in phases]


def level_rows(trainer: Trainer, batch: dict, steps: int, step_ms: float) -> list[dict]:
    """Each backbone level alone and the head + loss, forward and backward (ones as the output gradient), on
    its inputs of a real batch."""
    model = trainer.model
    inputs = level_inputs(model, batch["points"])
    levels = {name: getattr(model.backbone, name) for name in LEVELS} | {"out": model.backbone.head}
    rows = []
    for name, module in levels.items():
        fwd, bwd = time_level(module, inputs[name], steps)
        rows.append({"level": name, "forward ms": fwd, "backward ms": bwd})
    features = model.backbone(batch["points"]).detach().requires_grad_()
    criterion = trainer.task.criterion(trainer.config)
    head_loss = lambda x: criterion(model.head(x, batch["points"]), batch["keypoints"], batch["mask"], tau=1.0)
    fwd, bwd = time_level(head_loss, (features,), steps)
    rows.append({"level": "head + loss", "forward ms": fwd, "backward ms": bwd})
    for r in rows:
        r["total ms"] = r["forward ms"] + r["backward ms"]
        r["% of step"] = 100 * r["total ms"] / step_ms
    return rows


def op_rows(trainer: Trainer, batches, steps: int, step_ms: float) -> list[dict]:
    """The 30 ops of most self CPU time (``torch.profiler``) over ``steps`` steps."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            trainer.step(batches, timed=False)
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total_self = sum(e.self_cpu_time_total for e in ops)
    # the profiler's clock is the wall clock (inflated on a busy machine): ms are its shares of the timed step
    return [{"op": e.key, "calls/step": e.count / steps, "% of self": 100 * e.self_cpu_time_total / total_self,
             "self ms/step": step_ms * e.self_cpu_time_total / total_self} for e in ops[:30]]


def append_sections(out: Path, name: str, levels: list[dict], ops: list[dict]) -> None:
    """Add the levels' and ops' tables to ``<name>.md`` and ``<name>.json`` in ``out``, and print the markdown."""
    md = out / f"{name}.md"
    lines = ["", "## Levels alone (forward, backward with ones as the output gradient; ms, median)", "",
             "| level | forward | backward | total | % of step |", "|---|---|---|---|---|"]
    lines += [f"| {r['level']} | {r['forward ms']:.1f} | {r['backward ms']:.1f} | {r['total ms']:.1f} | {r['% of step']:.1f} |"
              for r in levels]
    lines += ["", "## Ops by self time (torch.profiler; ms = share x the timed step, the profiler's clock being the wall clock)", "",
              "| op | calls/step | self ms/step | % of self |", "|---|---|---|---|"]
    lines += [f"| `{r['op']}` | {r['calls/step']:g} | {r['self ms/step']:.1f} | {r['% of self']:.1f} |" for r in ops]
    md.write_text(md.read_text() + "\n".join(lines) + "\n")
    js = out / f"{name}.json"
    data = json.loads(js.read_text())
    data["levels"], data["ops"] = levels, ops
    js.write_text(json.dumps(data, indent=2))
    print(md.read_text())


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    trainer = Trainer(args)
    trainer.model.train()
    batches = iter(trainer.loader)
    trainer.step(batches, timed=False)  # warm-up: extension loads, allocator
    median = phase_medians(trainer, batches, args.steps)
    levels = level_rows(trainer, next(batches), args.steps, median["step"])
    ops = op_rows(trainer, batches, args.steps, median["step"])
    config = trainer.config
    cfg = {"category": args.category, "width": args.width, "B": args.batch, "N": 2048, "K": config.model.num_keypoints,
           "method": config.loss.method, "steps": args.steps, "threads": 1, "clock": "process (ms, median over steps)"}
    write_results("profile_train", phase_rows(median), cfg, args.out)
    append_sections(args.out, "profile_train", levels, ops)


if __name__ == "__main__":
    main()
