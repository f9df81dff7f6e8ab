"""Train-or-reuse runs and result tables of ``table7.py`` (``evidence.py`` has its own parallel runner)."""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Callable, Hashable

from tqdm.auto import tqdm

from pckeypoints.checkpoint import read_checkpoint, resolve_checkpoint
from pckeypoints.config import TrainConfig
from pckeypoints.training import train

ROOT = Path(__file__).resolve().parents[1]


def add_run_arguments(parser: argparse.ArgumentParser, table: str) -> None:
    """``--runs``, ``--results``, ``--data-root`` and ``--retrain`` of the ``table`` script."""
    parser.add_argument("--runs", default=str(ROOT / "runs" / table), help="folder of the training runs")
    parser.add_argument("--results", default=str(ROOT / "experiments/results"), help="folder of the tables")
    parser.add_argument("--data-root", help="KeypointNet folder (default: $PCKP_DATA or ../shared/data/keypointnet)")
    parser.add_argument("--retrain", action="store_true", help="train again even if a finished run exists")


def train_and_evaluate(config: TrainConfig, retrain: bool, evaluate: Callable[..., dict],
                       save_train_minutes: bool = False, checkpoint: str | None = None) -> dict:
    """Train (or resume, or reuse) the run of ``config`` and evaluate its best checkpoint (or the file
    ``checkpoint`` of the run folder, e.g. ``"last.pt"``).

    A finished run whose ``eval_test/metrics.json`` exists is reused as is. Otherwise training resumes
    from ``last.pt`` (unless ``retrain``) and ``evaluate(checkpoint path, config, report_dir)`` scores the
    checkpoint; the metrics gain ``train_minutes`` (training + evaluation in this session), which
    ``save_train_minutes`` also writes into ``metrics.json``.
    """
    run_dir = Path(config.run.out) / config.run_name
    report_dir = run_dir / "eval_test"
    resume = (run_dir / "last.pt").is_file() and not retrain
    finished = False
    if resume:
        state, saved = read_checkpoint(resolve_checkpoint(run_dir))
        if saved.replace(num_keypoints=config.model.num_keypoints) != config:
            raise ValueError(f"{run_dir} was trained with another config; pass --retrain or another --runs")
        finished = state["epoch"] >= saved.optim.epochs
    if finished and (report_dir / "metrics.json").is_file():
        return json.loads((report_dir / "metrics.json").read_text())["metrics"]
    started = time.time()
    if not finished:
        train(None if resume else config, resume=run_dir if resume else None, overwrite=not resume)
    path = run_dir / checkpoint if checkpoint else run_dir
    config = read_checkpoint(resolve_checkpoint(path, prefer_best=True))[1]
    metrics = evaluate(path, config, report_dir)
    metrics["train_minutes"] = (time.time() - started) / 60
    if save_train_minutes:
        (report_dir / "metrics.json").write_text(json.dumps({"config": config.to_dict(), "metrics": metrics}, indent=2))
    return metrics


def run_table(jobs: list[tuple[str, Hashable]], run_one: Callable[[str, Hashable], dict],
              write_tables: Callable[[dict], None], desc: str, monitor: str,
              label: Callable[[Hashable], str] = str) -> dict[str, dict]:
    """Run every ``(category, key)`` job, rewriting the tables after each so an interrupted session keeps
    what finished; returns ``{category: {key: metrics}}``."""
    results: dict[str, dict] = {}
    for category, key in tqdm(jobs, desc=desc):
        tqdm.write(f"== {category} / {label(key)}")
        results.setdefault(category, {})[key] = run_one(category, key)
        tqdm.write(f"   test {monitor.upper()} {results[category][key][monitor]:.4f}")
        write_tables(results)
    return results


def save_table(out: Path, name: str, lines: list[str], payload: dict, gallery: Path) -> None:
    """Write ``<name>.md`` (``lines``) and ``<name>.json`` (``payload``) into ``out``, copy ``gallery`` to
    ``<name>_gallery.png`` if it exists, and print the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    (out / f"{name}.json").write_text(json.dumps(payload, indent=2))
    if gallery.is_file():
        (out / f"{name}_gallery.png").write_bytes(gallery.read_bytes())
    print("\n".join(lines))


def percent(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def display_path(path: str) -> str:
    """``path`` relative to the repository root where it lies inside it, else as given."""
    return str(Path(path).relative_to(ROOT)) if Path(path).is_relative_to(ROOT) else path
