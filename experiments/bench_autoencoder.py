"""CPU time of one unsupervised training step (the Skeleton Merger autoencoder), soft-argmax vs sampling-argmax.

    python -m experiments.bench_autoencoder      # -> experiments/results/bench_autoencoder.{json,md}

One thread, CPU time of the process, best of the repeats after a warm-up: what sizes the Table 7 grid.
"""
from __future__ import annotations

import argparse
import time

import torch

from experiments.benchutil import write_results
from pckeypoints.config import TrainConfig
from pckeypoints.train.tasks import get_task


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    task, points, rows = get_task("unsupervised"), torch.rand(args.batch, 2048, 3) - 0.5, []
    for ns in (0, 10, 30):
        config = TrainConfig.from_fields(mode="unsupervised", method="sampling" if ns else "soft", num_samples=ns or 30,
                                         width=args.width, basis="fixed", sigma=0.01, num_keypoints=10)
        model = task.build_model(config)
        optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
        times = []
        for _ in range(args.repeat + 1):
            start = time.process_time()
            loss, _ = task.loss(model, {"points": points}, config, 0.5)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            times.append(time.process_time() - start)
        rows.append({"method": "soft" if ns == 0 else f"sampling, Ns = {ns}", "s/step": min(times[1:])})
    write_results("bench_autoencoder", rows, {"B": args.batch, "N": 2048, "K": 10, "width": args.width,
                                              "threads": 1, "clock": "process"})


if __name__ == "__main__":
    main()
