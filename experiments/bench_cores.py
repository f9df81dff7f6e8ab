"""Both CPU cores for one training run: wall time per step of one thread, two threads, and two processes.

    python -m experiments.bench_cores [--width 0.5] [--steps 30] [--out DIR]     # on an idle machine

A training step (forward, soft+JS loss, backward, AdamW; a global batch of B = 16 clouds of N = 2048 points,
K = 24 keypoints, σ = 0.01) timed by the wall clock over ``--steps`` steps after 3 warm-up steps, in three
set-ups run one after the other: one process on one thread, one process on two intra-op threads, and
``run.procs = 2`` (two processes of one thread under DistributedDataParallel over gloo, 8 clouds each, the
gradients averaged every step). Wall time is the point (the cores are the budget), so run it alone.
Writes experiments/results/bench_cores.{json,md}.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from experiments.benchutil import RESULTS, write_results

B, N, K = 16, 2048, 24


def seconds_per_step(width: float, steps: int, threads: int) -> float | None:
    """Wall seconds per step of this process's share of the global batch (``None`` on ranks other than 0)."""
    from torch.nn.parallel import DistributedDataParallel

    from pckeypoints.distributed import init_world
    from pckeypoints.core.losses import KeypointLoss
    from pckeypoints.models.detector import KeypointDetector

    torch.set_num_threads(threads)
    world = init_world(torch.device("cpu"))
    torch.manual_seed(world.rank)
    batch = B // world.world_size
    points = torch.rand(batch, N, 3) * 2 - 1
    target, mask = torch.rand(batch, K, 3) - 0.5, torch.ones(batch, K, dtype=torch.bool)
    torch.manual_seed(0)
    model = KeypointDetector(K, width=width, fixed_sigma=0.01, validate=False)
    trained = DistributedDataParallel(model) if world.world_size > 1 else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = KeypointLoss("soft+js", target_sigma=0.02, validate=False)

    def step():
        maps = trained(points)
        loss = loss_fn(maps, target, mask, tau=1.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    elapsed = (time.perf_counter() - t0) / steps
    return elapsed if world.is_main else None


def main() -> None:
    from pckeypoints.distributed import spawn

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    one = seconds_per_step(args.width, args.steps, 1)
    rows = [{"set-up": "1 process, 1 thread", "s per step": one, "speed-up": 1.0}]
    for name, seconds in (("1 process, 2 intra-op threads", seconds_per_step(args.width, args.steps, 2)),
                          ("2 processes (run.procs = 2), 1 thread each", spawn(seconds_per_step, 2, args.width,
                                                                               args.steps, 1))):
        rows.append({"set-up": name, "s per step": seconds, "speed-up": one / seconds})
        print(rows[-1], flush=True)
    write_results("bench_cores", rows, {"B": B, "N": N, "K": K, "width": args.width, "method": "soft+js",
                                        "steps": args.steps, "clock": "wall"}, args.out)


if __name__ == "__main__":
    main()
