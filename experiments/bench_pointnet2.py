"""Benchmark of the fused ball-query + grouping op against unfused alternatives, and of the backbone.

    python3 -m experiments.bench_pointnet2 [--device cpu|cuda] [--quick] [--out DIR]

Writes experiments/results/bench_pointnet2{,_cuda}.{json,md}; times are the best of the repeats.
Clouds: B noisy sphere surfaces of radius 0.5 (like the normalised KeypointNet shapes); centres are FPS
samples; radius 0.1.
Grouping methods, all producing neighbour offsets + features for every centre:
  fused       pointnet2.ops.ball_query_group (C++ or CUDA backend), dense (B, 3 + C, M, S)
  reference   the same op in pure PyTorch (pointnet2.reference)
  tc_dense    torch_cluster.radius + gather into the same dense layout
  pyg_edges   PyG-style: radius search (torch_geometric.nn.pool.radius, else torch_cluster.radius), then
              index features per edge into the ragged message layout (E, 3 + C) of PointNetConv
Rows whose search backend is missing are skipped. Peak memory of the op: see benchutil.peak_bytes (CUDA:
torch.cuda.max_memory_allocated; CPU: the profiler's allocation and free events in time order).
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import torch
from tqdm import tqdm

from experiments.benchutil import RESULTS, best_time, peak_bytes, save_results
from pckeypoints.evaluation.report import markdown_table
from pointnet2 import PointNet2Seg, ops

RADIUS = 0.1

try:
    import torch_cluster
except ImportError:
    torch_cluster = None


def pyg_radius_search():
    """(name, fn) of PyG's radius search: torch_geometric.nn.pool.radius when its backend (pyg-lib) works,
    else torch_cluster.radius (what PyG used before), else (None, None)."""
    try:
        from torch_geometric.nn.pool import radius

        radius(torch.zeros(1, 3), torch.zeros(1, 3), 1.0)
        return "torch_geometric.nn.pool.radius", radius
    except Exception:  # ImportError without pyg-lib; anything else means it is unusable here too
        pass
    return ("torch_cluster.radius", torch_cluster.radius) if torch_cluster is not None else (None, None)


def sphere_cloud(B: int, N: int, device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    p = torch.randn(B, N, 3, generator=g)
    p = 0.5 * p / p.norm(dim=-1, keepdim=True) + 0.005 * torch.randn(B, N, 3, generator=g)
    return p.to(device)


def grouping_methods(xyz, new_xyz, feats, S: int, device: str) -> dict:
    """name -> function(features) returning the grouped tensor(s) to back-propagate through."""
    B, N, _ = xyz.shape
    M = new_xyz.shape[1]
    backend = "cuda" if device == "cuda" else "cpu"
    methods = {
        "fused": lambda f: ops.ball_query_group(xyz, new_xyz, f, RADIUS, S, backend=backend)[0],
        "reference": lambda f: ops.ball_query_group(xyz, new_xyz, f, RADIUS, S, backend="reference")[0],
    }
    pos_x, pos_y = xyz.reshape(-1, 3), new_xyz.reshape(-1, 3)
    batch_x = torch.arange(B, device=device).repeat_interleave(N)
    batch_y = torch.arange(B, device=device).repeat_interleave(M)
    _, pyg_radius = pyg_radius_search()
    if pyg_radius is not None:

        def pyg_edges(f):
            row, col = pyg_radius(pos_x, pos_y, RADIUS, batch_x, batch_y, max_num_neighbors=S)
            feats_flat = f.transpose(1, 2).reshape(B * N, -1)
            return torch.cat([pos_x[col] - pos_y[row], feats_flat[col]], dim=1)

        methods["pyg_edges"] = pyg_edges
    if torch_cluster is None:
        return methods

    def tc_dense(f):
        row, col = torch_cluster.radius(pos_x, pos_y, RADIUS, batch_x, batch_y, max_num_neighbors=S)
        counts = torch.bincount(row, minlength=B * M)
        slot = torch.arange(row.numel(), device=device) - (counts.cumsum(0) - counts)[row]
        feats_flat = f.transpose(1, 2).reshape(B * N, -1)
        values = torch.cat([pos_x[col] - pos_y[row], feats_flat[col]], dim=1)
        grouped = values.new_zeros(B * M, S, values.shape[1]).index_put((row, slot), values)
        return grouped.view(B, M, S, -1).permute(0, 3, 1, 2)

    methods["tc_dense"] = tc_dense
    return methods


def bench_grouping(B, N, M, S, C, device, reps) -> list[dict]:
    xyz = sphere_cloud(B, N, device)
    new_xyz = xyz.gather(1, ops.furthest_point_sample(xyz, M)[..., None].expand(-1, -1, 3))
    feats = torch.randn(B, C, N, device=device, requires_grad=True)
    out_bytes = B * (3 + C) * M * S * 4
    index_bytes = B * M * S * 4 + B * M * 4
    counts = ops.ball_query(xyz, new_xyz, RADIUS, S)[1].float()
    rows = []
    for name, fn in grouping_methods(xyz, new_xyz, feats, S, device).items():
        def forward():
            with torch.no_grad():
                fn(feats)

        def forward_backward():
            out = fn(feats)
            out.backward(torch.ones_like(out))
            feats.grad = None

        row = {
            "op": "group", "method": name, "B": B, "N": N, "M": M, "nsample": S, "C": C,
            "forward_ms": best_time(forward, device, reps),
            "forward_backward_ms": best_time(forward_backward, device, reps),
            "peak_forward_bytes": peak_bytes(forward, device),
            "output_plus_index_bytes": out_bytes + index_bytes,
            "mean_ball_count": counts.mean().item(),
        }
        rows.append(row)
    return rows


def bench_fps(B, N, M, device, reps) -> list[dict]:
    xyz = sphere_cloud(B, N, device)
    methods = {
        "fused": lambda: ops.furthest_point_sample(xyz, M, backend="cuda" if device == "cuda" else "cpu"),
        "reference": lambda: ops.furthest_point_sample(xyz, M, backend="reference"),
    }
    if torch_cluster is not None:
        batch = torch.arange(B, device=device).repeat_interleave(N)
        methods["torch_cluster"] = lambda: torch_cluster.fps(xyz.reshape(-1, 3), batch, M / N, random_start=False)
    return [
        {"op": "fps", "method": name, "B": B, "N": N, "M": M, "forward_ms": best_time(fn, device, reps)}
        for name, fn in methods.items()
    ]


def bench_backbone(B, N, device, reps) -> list[dict]:
    torch.manual_seed(0)
    model = PointNet2Seg().to(device)
    xyz = sphere_cloud(B, N, device)
    rows = []
    for backend in ("auto", "reference"):
        os.environ["POINTNET2_BACKEND"] = backend

        def step():
            model(xyz).square().mean().backward()
            model.zero_grad(set_to_none=True)

        rows.append({"op": "backbone", "method": "fused" if backend == "auto" else "reference", "B": B, "N": N,
                     "forward_backward_ms": best_time(step, device, reps)})
    os.environ.pop("POINTNET2_BACKEND")
    return rows


def targets(rows: list[dict]) -> dict:
    """CPU targets at the largest N: fused >= 3x faster than torch_cluster, >= 10x than the reference."""
    N = max(r["N"] for r in rows if r["op"] == "group")
    by = {r["method"]: r for r in rows if r["op"] == "group" and r["N"] == N}
    fused = by["fused"]
    result = {"N": N, "fused_vs_reference_forward": by["reference"]["forward_ms"] / fused["forward_ms"]}
    result["fused_vs_reference_met_10x"] = result["fused_vs_reference_forward"] >= 10
    if "tc_dense" in by:
        result["fused_vs_torch_cluster_forward"] = by["tc_dense"]["forward_ms"] / fused["forward_ms"]
        result["fused_vs_torch_cluster_met_3x"] = result["fused_vs_torch_cluster_forward"] >= 3
    result["memory_within_output_plus_index"] = all(
        r["peak_forward_bytes"] <= 1.05 * r["output_plus_index_bytes"]
        for r in rows if r["op"] == "group" and r["method"] == "fused"
    )
    return result


def markdown(rows: list[dict], meta: dict) -> str:
    def fmt(v):
        return "" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v)

    mib = lambda b: None if b is None else b / 2**20  # noqa: E731
    lines = [f"# bench_pointnet2 ({meta['device']}, {meta['threads']} threads, torch {meta['torch']})", ""]
    lines += markdown_table(
        ["op", "method", "B", "N", "M", "S", "C", "fwd ms", "fwd+bwd ms", "peak fwd MiB", "out+idx MiB"],
        [[fmt(v) for v in [r["op"], r["method"], r["B"], r["N"], r.get("M"), r.get("nsample"), r.get("C"),
                           r.get("forward_ms"), r.get("forward_backward_ms"), mib(r.get("peak_forward_bytes")),
                           mib(r.get("output_plus_index_bytes"))]] for r in rows], align=False).splitlines()
    lines += ["", "Targets: " + ", ".join(f"{k}={fmt(v) if isinstance(v, float) else v}"
                                         for k, v in meta["targets"].items())]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default: experiments/results)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device is available")
    reps = 2 if args.quick else 5
    B, M, S, C = 8, 512, 32, 64
    jobs = [("fps", (B, N, M)) for N in (2048, 16384)]
    jobs += [("group", (B, N, M, S, C)) for N in (2048, 16384)]
    jobs += [("backbone", (B, 2048))]
    rows = []
    for kind, shape in tqdm(jobs, desc="bench_pointnet2"):
        if kind == "fps":
            rows += bench_fps(*shape, args.device, reps)
        elif kind == "group":
            rows += bench_grouping(*shape, args.device, reps)
        else:
            rows += bench_backbone(*shape, args.device, max(1, reps // 2))
    meta = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "torch_cluster": None if torch_cluster is None else torch_cluster.__version__,
        "pyg_radius": pyg_radius_search()[0],
        "load_average": os.getloadavg(), "quick": args.quick, "radius": RADIUS,
    }
    meta["targets"] = targets(rows)
    name = "bench_pointnet2" if args.device == "cpu" else "bench_pointnet2_cuda"
    save_results(args.out, name, {"meta": meta, "rows": rows}, markdown(rows, meta))


if __name__ == "__main__":
    main()
