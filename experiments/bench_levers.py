"""Speed levers of a supervised training step, one at a time: CPU time per step before and after.

    python -m experiments.bench_levers [--width 0.5] [--repeat 5] [--out DIR]

Every row times a training step (forward, soft+JS loss, backward, AdamW; B = 16 clouds of N = 2048 points,
K = 24 keypoints, σ = 0.01) in its "before" and "after" form, interleaved in one process on one thread,
with the CPU time of this process (``time.process_time``: the machine is shared), best of ``--repeat``.
Rows whose lever is not a whole step (BatchNorm folding: evaluation; 1x1 convolution vs Linear: one MLP)
say what they time. Kept / dropped and the accuracy evidence are in speedrun_levers.md (written by hand
from these numbers and the speedrun runs). Writes experiments/results/bench_levers.{json,md}.
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
from torch import nn

from experiments.benchutil import RESULTS, write_results
from pckeypoints.core.losses import KeypointLoss
from pckeypoints.models.detector import KeypointDetector
from pointnet2 import modules
from pointnet2.ops import ball_query, ball_query_group, furthest_point_sample


def masked_forward(self, xyz, features):
    """SetAbstraction.forward before the plain max: padding slots masked to -inf, amax, empty balls 0."""
    new_xyz = modules.gather_points(xyz, furthest_point_sample(xyz, self.npoint, validate=False))
    pooled = []
    for radius, nsample, mlp in zip(self.radii, self.nsamples, self.mlps):
        grouped, counts = ball_query_group(xyz, new_xyz, features, radius, nsample, validate=False)
        h = mlp(grouped.permute(0, 2, 3, 1))
        valid = torch.arange(nsample, device=h.device) < counts.unsqueeze(-1)
        h = h.masked_fill(~valid.unsqueeze(-1), float("-inf")).amax(dim=2)
        pooled.append(torch.where(counts.unsqueeze(-1) > 0, h, 0.0))
    return new_xyz, torch.cat(pooled, dim=-1).transpose(1, 2)


mlp_forward = modules.SharedMLP.forward


def bf16_mlp_forward(self, x):
    """SharedMLP.forward under bfloat16 autocast, float32 out (the pointnet2 ops take float32 only)."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return mlp_forward(self, x).float()


def best_of(fns: dict, repeat: int, warmup: int = 1) -> dict[str, float]:
    """Best process time (ms) of each callable, the callables interleaved round by round."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.process_time()
            fn()
            times[name].append((time.process_time() - t0) * 1e3)
    return {name: min(v) for name, v in times.items()}


class FoldedMLP(nn.Module):
    """An eval-mode SharedMLP with each BatchNorm folded into the Linear before it."""

    def __init__(self, mlp: modules.SharedMLP):
        super().__init__()
        layers, items = [], list(mlp)
        for linear, bn in zip(items[0::3], items[1::3]):
            scale = bn.weight / (bn.running_var + bn.eps).sqrt()
            fused = nn.Linear(linear.in_features, linear.out_features)
            fused.weight.data = (linear.weight * scale[:, None]).detach()
            fused.bias.data = (bn.bias - bn.running_mean * scale).detach()
            layers += [fused, nn.ReLU()]
        self.seq = nn.Sequential(*layers)

    def forward(self, x):
        return self.seq(x.reshape(-1, x.shape[-1])).view(*x.shape[:-1], -1)


class Levers:
    """The step under test (B = 16 clouds of N = 2048 points, K = 24 keypoints) and the rows timed so far."""

    def __init__(self, width: float, repeat: int, b: int = 16, n: int = 2048, k: int = 24):
        self.repeat, self.rows = repeat, []
        self.points = torch.rand(b, n, 3) * 2 - 1
        self.target, self.mask = torch.rand(b, k, 3) - 0.5, torch.ones(b, k, dtype=torch.bool)
        self.model = KeypointDetector(k, width=width, fixed_sigma=0.01, validate=False)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.loss_fn = KeypointLoss("soft+js", target_sigma=0.02, validate=False)

    def step(self, pts=None, autocast=False, trainer_checks=False):
        """One training step of ``pts`` (default: the points) as a callable; ``trainer_checks``: validate the
        input, rebuild the loss and synchronise as the trainer did."""
        pts = self.points if pts is None else pts

        def run():
            self.model.validate = trainer_checks
            modules.SharedMLP.forward = bf16_mlp_forward if autocast else mlp_forward
            maps = self.model(pts)
            modules.SharedMLP.forward = mlp_forward
            crit = KeypointLoss("soft+js", target_sigma=0.02) if trainer_checks else self.loss_fn
            loss = crit(maps, self.target, self.mask, tau=1.0)
            if trainer_checks:
                if not torch.isfinite(loss):
                    raise ValueError("diverged")
                loss.item(), loss.item()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        return run

    def best_of(self, fns: dict) -> dict[str, float]:
        return best_of(fns, self.repeat)

    def row(self, lever, before, after, what="training step", note=""):
        self.rows.append({"lever": lever, "what": what, "before ms": before, "after ms": after,
                          "after/before": after / before, "note": note})
        print(self.rows[-1], flush=True)


def time_step_levers(bench: Levers) -> None:
    """Levers 1-5, whole training steps: SA pooling, per-step checks, threads, bfloat16, fewer points."""
    sa_forward = modules.SetAbstraction.forward

    def with_masked():
        modules.SetAbstraction.forward = masked_forward
        try:
            bench.step()()
        finally:
            modules.SetAbstraction.forward = sa_forward
    t = bench.best_of({"before": with_masked, "after": bench.step()})
    bench.row("SA pooling: masked amax -> plain max", t["before"], t["after"], note="kept (equal, tested)")
    t = bench.best_of({"before": bench.step(trainer_checks=True), "after": bench.step()})
    bench.row("per-step input validation, KeypointLoss rebuilt, isfinite + 2 item()", t["before"], t["after"])
    # intra-op threads: CPU time per step with 2 threads (two processes cost 1 thread's each)
    torch.set_num_threads(2)
    t2 = bench.best_of({"after": bench.step()})["after"]
    torch.set_num_threads(1)
    t1 = bench.best_of({"before": bench.step()})["before"]
    bench.row("2 intra-op threads (CPU time of both) vs 1", t1, t2, what="CPU ms per step",
              note="> 1: two one-thread processes do more work per CPU second")
    t = bench.best_of({"before": bench.step(), "after": bench.step(autocast=True)})
    bench.row("bfloat16 autocast of the backbone MLPs (CPU has avx512_bf16)", t["before"], t["after"])
    n = bench.points.shape[1]
    half = bench.points[:, torch.randperm(n)[: n // 2]].contiguous()
    t = bench.best_of({"before": bench.step(), "after": bench.step(pts=half)})
    bench.row("N = 1024 points instead of 2048", t["before"], t["after"])


def time_mlp_layout(bench: Levers) -> None:
    """Lever 6, Linear vs 1x1 convolution: the first set abstraction's MLP, forward + backward."""
    mlp = bench.model.backbone.sa1.mlps[0]
    channels = [mlp[0].in_features] + [m.out_features for m in list(mlp)[0::3]]
    conv = nn.Sequential(*[layer for c_in, c_out in zip(channels[:-1], channels[1:])
                           for layer in (nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))])
    x_last = torch.randn(bench.points.shape[0], 512, 32, channels[0])
    x_first = x_last.permute(0, 3, 1, 2).contiguous()
    t = bench.best_of({"before": lambda: conv(x_first).amax(-1).sum().backward(),
                       "after": lambda: mlp(x_last).amax(2).sum().backward()})
    bench.row("1x1 Conv2d -> Linear (channels-last), sa1 MLP", t["before"], t["after"], what="sa1 MLP forward + backward",
              note="kept (the modules' layout already)")


def time_batchnorm_folding(bench: Levers) -> None:
    """Lever 7, BatchNorm folded into the Linear before it, at evaluation."""
    model, points = bench.model, bench.points
    model.eval()
    fold = copy.deepcopy(model)
    for sa in (fold.backbone.sa1, fold.backbone.sa2):
        sa.mlps = nn.ModuleList(FoldedMLP(m) for m in sa.mlps)
    for name in ("sa3", "fp3", "fp2", "fp1"):
        getattr(fold.backbone, name).mlp = FoldedMLP(getattr(fold.backbone, name).mlp)
    with torch.no_grad():
        same = torch.allclose(model(points).logits, fold(points).logits, atol=1e-3)
        t = bench.best_of({"before": lambda: model(points), "after": lambda: fold(points)})
    bench.row("BatchNorm folded into Linear (eval)", t["before"], t["after"], what="evaluation forward",
              note=f"logits equal: {same}")
    model.train()


def time_index_cache(bench: Levers) -> None:
    """Lever 8, FPS and ball query: the index computations a per-cloud cache would skip (both levels), at most."""
    points, sa1, sa2 = bench.points, bench.model.backbone.sa1, bench.model.backbone.sa2

    def indices():
        idx1 = furthest_point_sample(points, sa1.npoint, validate=False)
        xyz1 = modules.gather_points(points, idx1)
        ball_query(points, xyz1, sa1.radii[0], sa1.nsamples[0], validate=False)
        xyz2 = modules.gather_points(xyz1, furthest_point_sample(xyz1, sa2.npoint, validate=False))
        ball_query(xyz1, xyz2, sa2.radii[0], sa2.nsamples[0], validate=False)
    t = bench.best_of({"step": bench.step(), "indices": indices})
    bench.row("cache FPS + ball-query indices per cloud (upper bound)", t["step"], t["step"] - t["indices"],
              note=f"FPS + ball query of both levels: {t['indices']:.1f} ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    bench = Levers(args.width, args.repeat)
    for time_levers in (time_step_levers, time_mlp_layout, time_batchnorm_folding, time_index_cache):
        time_levers(bench)
    b, n, _ = bench.points.shape
    write_results("bench_levers", bench.rows, {"B": b, "N": n, "K": bench.target.shape[1], "width": args.width,
                                               "method": "soft+js", "sigma": 0.01, "repeat": args.repeat,
                                               "clock": "process", "threads": 1},
                  args.out)


if __name__ == "__main__":
    main()
