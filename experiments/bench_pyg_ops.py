"""Benchmark of pckeypoints.ops.pyg (PyG's point ops on pointnet2's kernels) against torch-cluster's.

    python3 -m experiments.bench_pyg_ops [--batch B ...] [--points N ...] [--quick] [--clock process] [--out DIR]

Writes experiments/results/bench_pyg_ops.{json,md}: the best time of each op on B ragged clouds (noisy
sphere surfaces of radius 0.5, sizes spread over [0.75 N, 1.25 N]), one thread, with the same
arguments as PyG's PointNet++ example: fps ratio 0.25; radius 0.2 to the samples, at most 64
neighbours; knn_interpolate k = 3 back from the samples; knn and knn_graph k = 16; radius_graph 0.05 with
PyG's default limit of 32. Each row checks that both give the same neighbour sets (fps: the same indices;
radius and radius_graph: the balls neither cut). fps is left out above --max-fps points per cloud
(torch-cluster's takes minutes there), and every op above --max-total points in the batch.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch_cluster

from experiments.benchutil import RESULTS, best_time, write_results
from pckeypoints.ops import pyg


def clouds(b: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    sizes = torch.randint(3 * n // 4, 5 * n // 4 + 1, (b,), generator=g)
    p = torch.randn(int(sizes.sum()), 3, generator=g)
    pos = 0.5 * p / p.norm(dim=-1, keepdim=True) + 0.005 * torch.randn(p.shape, generator=g)
    return pos, torch.arange(b).repeat_interleave(sizes)


def edges(e: torch.Tensor) -> set:
    return set(map(tuple, e.t().tolist()))


def ops(pos: torch.Tensor, batch: torch.Tensor) -> dict:
    """name -> (pyg_ops call, torch-cluster call, equal(a, b))."""
    idx = pyg.fps(pos, batch, 0.25, random_start=False)
    feats = torch.randn(idx.shape[0], 64)
    same_sets = lambda a, b: edges(a) == edges(b)
    interpolate = lambda knn: lambda: _interpolate(knn, feats, pos[idx], pos, batch[idx], batch)
    return {
        "fps": (lambda: pyg.fps(pos, batch, 0.25, random_start=False),
                lambda: torch_cluster.fps(pos, batch, 0.25, random_start=False), torch.equal),
        "radius": (lambda: pyg.radius(pos, pos[idx], 0.2, batch, batch[idx], 64),
                   lambda: torch_cluster.radius(pos, pos[idx], 0.2, batch, batch[idx], 64), None),
        "knn": (lambda: pyg.knn(pos, pos[idx], 16, batch, batch[idx]),
                lambda: torch_cluster.knn(pos, pos[idx], 16, batch, batch[idx]), same_sets),
        "knn_graph": (lambda: pyg.knn_graph(pos, 16, batch),
                      lambda: torch_cluster.knn_graph(pos, 16, batch), same_sets),
        "radius_graph": (lambda: pyg.radius_graph(pos, 0.05, batch, max_num_neighbors=32),
                         lambda: torch_cluster.radius_graph(pos, 0.05, batch, max_num_neighbors=32), None),
        "knn_interpolate": (interpolate(pyg.knn), interpolate(torch_cluster.knn),
                            lambda a, b: torch.allclose(a, b, atol=1e-5)),
    }


def _interpolate(knn, x, pos_x, pos_y, batch_x, batch_y, k: int = 3) -> torch.Tensor:
    """PyG's knn_interpolate on the given k-NN search (pyg.knn_interpolate is this on pyg.knn)."""
    if knn is pyg.knn:
        return pyg.knn_interpolate(x, pos_x, pos_y, batch_x, batch_y, k)
    y_idx, x_idx = knn(pos_x, pos_y, k, batch_x, batch_y)
    w = 1 / (pos_x[x_idx] - pos_y[y_idx]).square().sum(-1, keepdim=True).clamp(min=1e-16)
    num = x.new_zeros(pos_y.shape[0], x.shape[1]).index_add_(0, y_idx, x[x_idx] * w)
    return num / x.new_zeros(pos_y.shape[0], 1).index_add_(0, y_idx, w)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--points", type=int, nargs="+", default=[1024, 8192, 100_000])
    parser.add_argument("--max-fps", type=int, default=16384, help="leave fps out above this many points per cloud")
    parser.add_argument("--max-total", type=int, default=150_000, help="leave out B x N above this many points")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--clock", choices=["wall", "process"], default="wall")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    repeat = 2 if args.quick else 5
    rows = []
    for n in args.points:
        for b in args.batch:
            if b * n > args.max_total:
                continue
            pos, batch = clouds(b, n)
            for name, (ours, theirs, equal) in ops(pos, batch).items():
                if name == "fps" and n > args.max_fps:
                    continue
                a, c = ours(), theirs()
                if equal is None:  # radius: equal where neither cut the ball at max_num_neighbors
                    limit, centre = (64, 0) if name == "radius" else (32, 1)  # radius_graph: row 1 the centre
                    count_a, count_c = (torch.bincount(e[centre], minlength=pos.shape[0]) for e in (a, c))
                    full = (count_a < limit) & (count_c < limit)
                    equal_ = edges(a[:, full[a[centre]]]) == edges(c[:, full[c[centre]]])
                else:
                    equal_ = bool(equal(a, c))
                t_ours = best_time(ours, repeat=repeat, clock=args.clock)
                t_theirs = best_time(theirs, repeat=repeat, clock=args.clock)
                rows.append({"op": name, "B": b, "N": n, "pyg_ops ms": t_ours, "torch_cluster ms": t_theirs,
                             "speed-up": t_theirs / t_ours, "same result": equal_})
                print(rows[-1], flush=True)
    write_results("bench_pyg_ops", rows, {"clock": args.clock, "repeat": repeat, "threads": 1}, args.out)


if __name__ == "__main__":
    main()
