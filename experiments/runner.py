"""The experiments' one runner: commands (trainings, scorings) run as processes, a few at a time.

Each process gets one thread (``OMP_NUM_THREADS=1``), so ``jobs`` processes fill ``jobs`` cores; its output
goes to ``log_dir/<name>.log`` (appended: a resumed grid keeps the earlier sessions' logs).
"""
from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm.auto import tqdm

__all__ = ["run_commands"]


def run_commands(commands: list[tuple[str, list[str]]], jobs: int, log_dir: Path) -> list[str]:
    """Run ``(name, command)`` pairs, ``jobs`` at a time, with a progress bar; returns the names that failed."""
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    failed = []
    bar = tqdm(total=len(commands), desc="runs")

    def one(item):
        name, command = item
        with open(log_dir / f"{name}.log", "a") as log:
            code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        if code:
            failed.append(name)
            tqdm.write(f"   {name} failed (exit {code}), see {log_dir / (name + '.log')}")
        bar.update()

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        list(pool.map(one, commands))
    bar.close()
    return failed
