"""Timing, peak memory and result tables shared by the ``bench_*.py`` scripts."""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Callable

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_time(fn: Callable[[], object], device: str = "cpu", repeat: int = 10, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[len(times) // 2]


def peak_memory(fn: Callable[[], object], device: str = "cpu") -> float:
    """Peak memory allocated by tensors during ``fn()`` above what was held before, in MiB.

    CUDA: the caching allocator's peak. CPU: the running total of the profiler's tensor
    allocation and free events in time order (``profile_memory=True``).
    """
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
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
    return peak / 2**20


def machine() -> dict:
    info = {"torch": torch.__version__, "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def write_results(name: str, rows: list[dict], config: dict, out_dir: Path = RESULTS) -> Path:
    """Write ``<name>.json`` and a markdown table ``<name>.md``; return the markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"config": config, "machine": machine(), "rows": rows}
    (out_dir / f"{name}.json").write_text(json.dumps(payload, indent=2))
    cols = list(rows[0])
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)
    lines = [f"# {name}", "", f"config: `{json.dumps(config)}`  ", f"machine: `{json.dumps(payload['machine'])}`", ""]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    md = out_dir / f"{name}.md"
    md.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return md
