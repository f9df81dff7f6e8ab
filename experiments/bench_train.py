"""Training-step speed and peak memory of a KeypointDetector: soft- vs sampling-argmax, eager vs compiled.

    python -m experiments.bench_train [--device cpu|cuda] [--width 0.25] [--compile] [--quick] [--tag T] [--out DIR]

One step = forward, KeypointLoss, backward, AdamW, on B clouds of N points with K keypoints (random
data: the cost does not depend on the values). Rows: soft-argmax, then sampling-argmax with Ns in
1/10/30 for each sampler; with --compile the same again with the detector under torch.compile
(inductor, mode "compiled"), and with detector and loss compiled as one graph (``fullgraph=True``, mode
"fullgraph"; a loss whose sampler breaks the graph is left out and named). Times are the best of the repeats (the least disturbed step on a shared machine);
ratios are to the soft-argmax step of the same mode, measured in the same run (column "x eager": to the
same loss's eager step). Writes experiments/results/bench_train_<device>[_<tag>].{json,md}.
Target: sampling-argmax at Ns = 30 within 1.15x the soft-argmax step.

With --js the rows are the decisive comparison's pair (experiments/results/decisive/rule.md) instead:
soft-argmax + JS, then sampling + JS at Ns = 30 with the authors' Gumbel form and clipped-integral gradient
through the fused and the naive sampler, ratios to soft-argmax + JS (target: fused within 1.15x), on the
recipe's basis (σ = 0.01 fixed).
"""
from __future__ import annotations

import argparse

import torch

from experiments.benchutil import add_problem_arguments, best_time, peak_bytes, write_results
from pckeypoints.core.losses import KeypointLoss
from pckeypoints.models.detector import KeypointDetector


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_problem_arguments(p, batch=16)
    p.add_argument("--width", type=float, default=0.25, help="backbone width (1 on a GPU)")
    p.add_argument("--samplers", default="naive,gaussian,fused")
    p.add_argument("--compile", action="store_true", help="also time the detector, and detector + loss in one "
                   "graph, under torch.compile")
    p.add_argument("--js", action="store_true", help="soft-argmax + JS against the authors' sampling + JS instead")
    p.add_argument("--tag", help="suffix of the results' file name")
    return p.parse_args()


def compared_losses(args) -> list[tuple[str, str, int | None, KeypointLoss]]:
    """(method, sampler, Ns, loss) rows, the baseline first: soft-argmax against sampling with each sampler and
    Ns = 1, 10, 30; with ``--js`` soft-argmax + JS against the authors' sampling + JS."""
    if args.js:
        authors = {"num_samples": 30, "gumbel": "official", "clipped_integral": True}
        losses = [("soft+js", "-", None, KeypointLoss("soft+js"))]
        losses += [("sampling+js, authors' form + clipped", sampler, 30, KeypointLoss("sampling+js", sampler=sampler,
                                                                                      **authors))
                   for sampler in ("fused", "naive")]
    else:
        losses = [("soft", "-", None, KeypointLoss("soft"))]
        for sampler in args.samplers.split(","):
            losses += [("sampling", sampler, ns, KeypointLoss("sampling", num_samples=ns, sampler=sampler))
                       for ns in (1, 10, 30)]
    return losses


def main() -> None:
    args = parse_args()
    dev, (b, n, k) = args.device, (args.batch, args.points, args.keypoints)
    torch.manual_seed(0)
    points = torch.rand(b, n, 3, device=dev) - 0.5
    target = torch.rand(b, k, 3, device=dev) - 0.5
    mask = torch.ones(b, k, dtype=torch.bool, device=dev)
    # --js: the decisive recipe's basis, σ = 0.01 fixed (else the detector's default, σ from the 8 nearest points)
    model = KeypointDetector(k, width=args.width, fixed_sigma=0.01 if args.js else None).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = compared_losses(args)
    compiled = torch.compile(model)
    tau = 0.5
    modes = {"eager": lambda loss_fn: lambda: loss_fn(model(points), target, mask, tau=tau),
             "compiled": lambda loss_fn: lambda: loss_fn(compiled(points), target, mask, tau=tau),
             "fullgraph": lambda loss_fn: torch.compile(lambda: loss_fn(model(points), target, mask, tau=tau),
                                                        fullgraph=True)}
    repeat = 3 if args.quick else 7
    rows, eager_ms = [], {}
    for mode in list(modes)[:3 if args.compile else 1]:
        base = None
        for method, sampler, ns, loss_fn in losses:
            forward = modes[mode](loss_fn)

            def step():
                opt.zero_grad(set_to_none=True)
                forward().backward()
                opt.step()

            try:
                ms = best_time(step, dev, repeat, 1 if mode == "eager" else 2, args.clock)
            except torch._dynamo.exc.Unsupported as err:  # the graph breaks (fullgraph=True)
                print(f"{mode} {method} {sampler}: not one graph ({str(err).splitlines()[0][:120]})", flush=True)
                continue
            row = {"mode": mode, "method": method, "sampler": sampler, "Ns": ns or "-", "ms/step": ms,
                   "steps/s": 1e3 / ms, "peak MiB": peak_bytes(step, dev) / 2**20}
            base = base or row
            first = losses[0][0]  # soft, or soft+js
            row[f"time x {first}"], row[f"memory x {first}"] = ms / base["ms/step"], row["peak MiB"] / base["peak MiB"]
            row["x eager"] = ms / eager_ms.setdefault((method, sampler, ns), ms)
            rows.append(row)
            print(row, flush=True)
    config = {"B": b, "N": n, "K": k, "width": args.width, "optimizer": "AdamW", "tau": tau, "repeat": repeat,
              "clock": args.clock}
    name = f"bench_train_{dev.split(':')[0]}" + (f"_{args.tag}" if args.tag else "")
    write_results(name, rows, config, args.out)


if __name__ == "__main__":
    main()
