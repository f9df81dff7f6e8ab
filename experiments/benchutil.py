"""Timing, peak memory and result tables shared by the ``bench_*.py`` scripts."""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Callable

import torch

from pckeypoints.evaluation.report import markdown_table

RESULTS = Path(__file__).resolve().parent / "results"


def add_problem_arguments(parser: argparse.ArgumentParser, batch: int) -> None:
    """The flags of the map benchmarks: ``--device``, ``--batch`` (default ``batch``), ``--points``,
    ``--keypoints``, ``--quick``, ``--clock`` and ``--out``."""
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--points", type=int, default=2048)
    parser.add_argument("--keypoints", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--clock", choices=["wall", "process"], default="wall",
                        help="process: CPU time of this process (one-thread CPU runs on a busy machine)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default: experiments/results)")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


def best_time(
    fn: Callable[[], object], device: str = "cpu", repeat: int = 5, warmup: int = 1, clock: str = "wall"
) -> float:
    """Best time of ``fn()`` over ``repeat`` runs after ``warmup`` ones, in milliseconds (the least
    disturbed run on a shared machine). ``clock="process"``: the CPU time of this process instead of
    wall time, which does not count the time other processes hold the cores (for one-thread CPU runs
    on a busy machine)."""
    now = CLOCKS[clock]
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        sync(device)
        t0 = now()
        fn()
        sync(device)
        times.append((now() - t0) * 1e3)
    return min(times)


def peak_bytes(fn: Callable[[], object], device: str = "cpu") -> int:
    """Peak bytes allocated by tensors during ``fn()`` above what was held before.

    CUDA: the caching allocator's peak. CPU: the running total of the profiler's tensor allocation and
    free events in time order (``profile_memory=True``), which also sees temporaries freed inside an op.
    """
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
        key=lambda e: e.start_ns(),
    )
    total = peak = 0
    for e in events:
        total += e.nbytes()
        peak = max(peak, total)
    return peak


def machine() -> dict:
    info = {"torch": torch.__version__, "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def save_results(out_dir: Path, name: str, payload: dict, markdown: str) -> Path:
    """Write ``<name>.json`` (``payload``) and ``<name>.md`` (``markdown``, also printed); return the markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(payload, indent=2))
    md = out_dir / f"{name}.md"
    md.write_text(markdown)
    print(markdown, end="")
    return md


def write_results(name: str, rows: list[dict], config: dict, out_dir: Path = RESULTS) -> Path:
    """Write ``<name>.json`` and a markdown table ``<name>.md`` of ``rows``; return the markdown path."""
    payload = {"config": config, "machine": machine(), "rows": rows}
    cols = list(rows[0])
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)
    lines = [f"# {name}", "", f"config: `{json.dumps(config)}`  ", f"machine: `{json.dumps(payload['machine'])}`", ""]
    lines += markdown_table(cols, [[fmt(r[c]) for c in cols] for r in rows], align=False).splitlines()
    return save_results(out_dir, name, payload, "\n".join(lines) + "\n")
