"""Training-step speed and peak memory of a KeypointDetector: soft- vs sampling-argmax, eager vs compiled.

    python experiments/bench_train.py [--device cpu|cuda] [--width 0.25] [--compile] [--quick] [--out DIR]

One step = forward, KeypointLoss, backward, AdamW, on B clouds of N points with K keypoints (random
data: the cost does not depend on the values). Rows: soft-argmax, then sampling-argmax with Ns in
1/10/30 for each sampler; with --compile the same again with the detector under torch.compile
(inductor). Times are the best of the repeats (the least disturbed step on a shared machine);
ratios are to the soft-argmax step of the same mode, measured in the same run. Writes
experiments/results/bench_train_<device>.{json,md}.
Target: sampling-argmax at Ns = 30 within 1.15x the soft-argmax step.
"""
from __future__ import annotations

import argparse

import torch

from benchutil import add_problem_arguments, best_time, peak_bytes, write_results
from pckeypoints.losses import KeypointLoss
from pckeypoints.models.detector import KeypointDetector


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_problem_arguments(p, batch=16)
    p.add_argument("--width", type=float, default=0.25, help="backbone width (1 on a GPU)")
    p.add_argument("--samplers", default="naive,gaussian,fused")
    p.add_argument("--compile", action="store_true", help="also time the detector under torch.compile")
    args = p.parse_args()
    dev, (b, n, k) = args.device, (args.batch, args.points, args.keypoints)
    torch.manual_seed(0)
    points = torch.rand(b, n, 3, device=dev) - 0.5
    target = torch.rand(b, k, 3, device=dev) - 0.5
    mask = torch.ones(b, k, dtype=torch.bool, device=dev)
    model = KeypointDetector(k, width=args.width).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = [("soft", "-", None, KeypointLoss("soft"))]
    for sampler in args.samplers.split(","):
        losses += [("sampling", sampler, ns, KeypointLoss("sampling", num_samples=ns, sampler=sampler))
                   for ns in (1, 10, 30)]
    modes = [("eager", model)] + ([("compiled", torch.compile(model))] if args.compile else [])
    repeat = 3 if args.quick else 7
    rows = []
    for mode, net in modes:
        base = None
        for method, sampler, ns, loss_fn in losses:

            def step():
                opt.zero_grad(set_to_none=True)
                maps = net(points)
                loss_fn(maps, target, mask, tau=0.5).backward()
                opt.step()

            ms = best_time(step, dev, repeat, 2 if mode == "compiled" else 1, args.clock)
            row = {"mode": mode, "method": method, "sampler": sampler, "Ns": ns or "-", "ms/step": ms,
                   "steps/s": 1e3 / ms, "peak MiB": peak_bytes(step, dev) / 2**20}
            base = base or row
            row["time x soft"], row["memory x soft"] = ms / base["ms/step"], row["peak MiB"] / base["peak MiB"]
            rows.append(row)
            print(row, flush=True)
    config = {"B": b, "N": n, "K": k, "width": args.width, "optimizer": "AdamW", "tau": 0.5, "repeat": repeat,
              "clock": args.clock}
    write_results(f"bench_train_{dev.split(':')[0]}", rows, config, args.out)


if __name__ == "__main__":
    main()
