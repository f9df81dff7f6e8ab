"""Table 7 of "Localization with Sampling-Argmax" (Li et al., NeurIPS 2021): unsupervised keypoints with a
Skeleton Merger style autoencoder on KeypointNet bathtub and bed, trained with soft-argmax or with
sampling-argmax (Ns = 1, 5, 10, 30 samples decoded per cloud), several seeds each.

Each (category, variant, seed) trains on the train split without labels and is scored at its last epoch
(``last.pt``: an unsupervised method has no labels to select a checkpoint with) by the dual alignment score
in two protocols, Skeleton Merger's published one (self-pairs, every annotated shape of the category) and
the strict one (distinct shapes of the test split), and by the keypoint mIoU@0.1 on the test split.
Writes ``table7.{md,json}`` (mean ± sd over seeds per cell with the reconstruction loss and CPU time, paired
bootstrap CIs over shapes of sampling − soft from each run's per-shape records, every run's metrics, the missing
runs) into ``--results``. Finished runs are reused and interrupted ones resumed. Each run trains in its own process
(:mod:`experiments.runner`, ``--jobs N`` at a time, one thread each), which runs this script with ``--train-only`` for its
cell; ``--table-only`` writes the table from every scored run of the grid.

    python -m experiments.table7 --variants soft 10 30 --jobs 2       # CPU protocol, 3 seeds, ~1 h 50 min
    python -m experiments.table7 --config experiments/configs/table7_gpu.toml --variants soft 10 --jobs 12 \
        --runs /tmp/runs7 --results experiments/results/evidence/gpu   # one GPU, the paper's protocol
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from experiments.runner import run_commands
from experiments.stats import BOOTSTRAP_DRAWS, bootstrap, percent, summarize

from pckeypoints.train.checkpoint import read_checkpoint, resolve_checkpoint
from pckeypoints.config import UNSET, TrainConfig
from pckeypoints.devices import resolve_device
from pckeypoints.train.evaluate_checkpoint import evaluate_checkpoint
from pckeypoints.metrics.das import das_from_votes
from pckeypoints.train.training import train

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = ("soft", "1", "5", "10", "30")
#: Epochs per category of the CPU protocol (``configs/table7_cpu.toml``): about 1,000 optimiser steps each at
#: batch 8 (344 bathtub, 104 bed train clouds). ``--epochs`` overrides them.
EPOCHS = {"bathtub": 25, "bed": 75}
#: Li et al. (2021), Table 7: DAS "following Skeleton Merger" (../shared/reference/paper_tables.md), as fractions.
PAPER_DAS = {"soft": {"bathtub": 0.562, "bed": 0.580}, "1": {"bathtub": 0.538, "bed": 0.635},
             "5": {"bathtub": 0.540, "bed": 0.619}, "10": {"bathtub": 0.588, "bed": 0.617},
             "30": {"bathtub": 0.567, "bed": 0.600}}
#: Metrics of a cell, averaged over seeds.
CELL_METRICS = ("das_sm", "das_sm_forward", "das_sm_backward", "das", "das_forward", "das_backward", "miou@0.1",
                "reconstruction", "train_minutes", "train_cpu_minutes")
#: Metrics with paired bootstrap CIs of sampling − soft over shapes (from each run's ``eval_test/records.pt``).
CI_METRICS = {"das_sm": "DAS (SM)", "das": "DAS strict", "miou@0.1": "mIoU@0.1", "reconstruction": "reconstruction"}


def variant_name(variant: str) -> str:
    return "Soft-argmax" if variant == "soft" else f"Sampling-argmax, Ns = {variant}"


def add_run_arguments(parser: argparse.ArgumentParser, table: str) -> None:
    """``--runs``, ``--results``, ``--data-root`` and ``--retrain`` of the ``table`` script."""
    parser.add_argument("--runs", default=str(ROOT / "runs" / table), help="folder of the training runs")
    parser.add_argument("--results", default=str(ROOT / "experiments/results"), help="folder of the tables")
    parser.add_argument("--data-root", help="KeypointNet folder (default: $PCKP_DATA or ../shared/data/keypointnet)")
    parser.add_argument("--retrain", action="store_true", help="train again even if a finished run exists")


def save_table(out: Path, name: str, lines: list[str], payload: dict, gallery: Path) -> None:
    """Write ``<name>.md`` (``lines``) and ``<name>.json`` (``payload``) into ``out``, copy ``gallery`` to
    ``<name>_gallery.png`` if it exists, and print the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    (out / f"{name}.json").write_text(json.dumps(payload, indent=2))
    if gallery.is_file():
        (out / f"{name}_gallery.png").write_bytes(gallery.read_bytes())
    print("\n".join(lines))


def display_path(path: str) -> str:
    """``path`` relative to the repository root where it lies inside it, else as given."""
    return str(Path(path).relative_to(ROOT)) if Path(path).is_relative_to(ROOT) else path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "experiments/configs/table7_cpu.toml"),
                        help="base TrainConfig TOML (category, method, num_samples, seed, name, out and the flags "
                             "override it)")
    parser.add_argument("--categories", nargs="+", default=["bathtub", "bed"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS,
                        help="'soft' or a number of sampling-argmax samples Ns")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int,
                        help="training epochs (default: EPOCHS per category with the CPU config, else the config's)")
    parser.add_argument("--epochs-factor", type=int, default=1,
                        help="multiplies the CPU config's EPOCHS (e.g. 2: is the protocol converged?)")
    parser.add_argument("--width", type=float, help="backbone width (default: the config's)")
    parser.add_argument("--batch-size", type=int, help="batch size (default: the config's)")
    parser.add_argument("--lr", type=float, help="learning rate (default: the config's)")
    parser.add_argument("--sigma", type=float, help="fixed basis σ (default: the config's)")
    parser.add_argument("--max-models", type=int,
                        help="first n models of the train and val splits; 0 = all (default: the config's)")
    parser.add_argument("--device", help="cpu, cuda, auto (default: the config's)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at a time, each in its own process with one thread (OMP_NUM_THREADS=1)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--train-only", action="store_true", help="train and score the runs, write no table")
    mode.add_argument("--table-only", action="store_true", help="train nothing: table of the finished runs")
    add_run_arguments(parser, "table7")
    parser.set_defaults(results=str(ROOT / "experiments/results/evidence"))
    return parser.parse_args(argv)


def run_config(args, category: str, variant: str, seed: int) -> TrainConfig:
    tag = "soft" if variant == "soft" else f"ns{variant}"
    overrides = {"category": category, "method": "soft" if variant == "soft" else "sampling", "seed": seed,
                 "name": f"{category}_{tag}_s{seed}", "out": args.runs,
                 "epochs": args.epochs or default_epochs(args, category), "width": args.width,
                 "batch_size": args.batch_size, "lr": args.lr, "sigma": args.sigma,
                 "max_models": args.max_models or None, "device": args.device, "data_root": args.data_root}
    if variant != "soft":
        overrides["num_samples"] = int(variant)
    config = TrainConfig.from_toml(args.config, **overrides)
    return config.replace(max_models=None) if args.max_models == 0 else config


def default_epochs(args, category: str) -> int | None:
    """:data:`EPOCHS` of ``category`` under the CPU protocol's config, else None (the config's epochs)."""
    cpu = Path(args.config).resolve() == (ROOT / "experiments/configs/table7_cpu.toml").resolve()
    return EPOCHS[category] * args.epochs_factor if cpu and category in EPOCHS else None


def run_one(args, category: str, variant: str, seed: int) -> dict:
    """Train (or resume, or reuse) one run and score its last epoch (``last.pt``: no label-based selection) on
    the whole test split. A finished run whose ``eval_test/metrics.json`` and ``records.pt`` exist is reused as
    is, one without records scored again (keeping its timings); the metrics gain ``reconstruction``,
    ``train_minutes`` (wall) and ``train_cpu_minutes`` (this process's CPU time: one thread, so a fair measure
    under load) of training + evaluation in this session, and the device."""
    config = run_config(args, category, variant, seed)
    run_dir = Path(config.run.out) / config.run_name
    report_dir = run_dir / "eval_test"
    resume = (run_dir / "last.pt").is_file() and not args.retrain
    finished = False
    if resume:
        state, saved = read_checkpoint(resolve_checkpoint(run_dir))
        if saved.replace(num_keypoints=config.model.num_keypoints) != config:
            raise ValueError(f"{run_dir} was trained with another config; pass --retrain or another --runs")
        finished = state["epoch"] >= saved.optim.epochs
    scored = json.loads((report_dir / "metrics.json").read_text())["metrics"] if (
        finished and (report_dir / "metrics.json").is_file()) else None
    if scored is not None and (report_dir / "records.pt").is_file():
        return scored
    started, cpu_started = time.time(), time.process_time()
    if not finished:
        train(None if resume else config, resume=run_dir if resume else None, overwrite=not resume)
    device = resolve_device(config.run.device)
    result = evaluate_checkpoint(run_dir / "last.pt", "test", str(device), report_dir, max_models=UNSET)
    timings = {"train_minutes": (time.time() - started) / 60,
               "train_cpu_minutes": (time.process_time() - cpu_started) / 60}
    if scored is not None:
        timings = {key: scored.get(key, float("nan")) for key in timings}
    metrics = {**result.metrics.to_dict(), "reconstruction": result.metrics.reconstruction, **timings,
               "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    trained = read_checkpoint(run_dir / "last.pt")[1]  # the run's config (the scoring unset max_models)
    (report_dir / "metrics.json").write_text(json.dumps({"config": trained.to_dict(), "metrics": metrics}, indent=2))
    return metrics


def grid(args) -> list[tuple[str, str, int]]:
    return [(c, v, s) for s in args.seeds for c in args.categories for v in args.variants]


def recorded_runs(args) -> list[dict]:
    """Every run recorded in ``--results``'s ``table7.json`` (earlier sessions, any protocol), updated with the
    scored runs of the grid's run folders; entries ``{"category", "variant", "seed", "config", "metrics"}``."""
    previous = Path(args.results) / "table7.json"
    runs = [r for r in json.loads(previous.read_text())["runs"] if "config" in r] if previous.is_file() else []
    for category, variant, seed in grid(args):
        config = run_config(args, category, variant, seed)
        report = Path(config.run.out) / config.run_name / "eval_test" / "metrics.json"
        if report.is_file():
            saved = json.loads(report.read_text())
            runs = [r for r in runs if r["config"] != saved["config"]]
            runs.append({"category": category, "variant": variant, "seed": seed, **saved})
    return runs


def cell_text(cell: dict | None, key: str, scale: float = 100, digits: int = 1) -> str:
    """A table cell of :func:`experiments.stats.summarize` results: ``mean ± sd`` times ``scale`` (percent by default),
    ``missing`` without runs, ``n/a`` where the runs lack the metric."""
    if cell is None:
        return "missing"
    if key not in cell:
        return "n/a"
    stats = cell[key]
    text = f"{stats['mean'] * scale:.{digits}f}"
    return text + ("" if stats["sd"] is None else f" ± {stats['sd'] * scale:.{digits}f}")


def protocol_line(config: TrainConfig, epochs: dict[str, int]) -> str:
    data, model, loss, optim = config.data, config.model, config.loss, config.optim
    subset = (f"first {data.max_models} models of the train and val splits" if data.max_models
              else "all train models")
    sigma = (f"σ_i from the {model.knn_k} nearest neighbours" if model.basis == "knn"
             else f"σ = {model.sigma} (normalised units)")
    schedule = f"halved every {optim.lr_step_epochs} epochs" if optim.lr_schedule == "step" else optim.lr_schedule
    per_category = ", ".join(f"{category} {n}" for category, n in epochs.items())
    return (f"Protocol: epochs {per_category}, backbone width {model.width}, batch {optim.batch_size}, "
            f"{optim.optimizer} lr {optim.lr} ({schedule}), weight decay {optim.weight_decay}, {sigma}, "
            f"{model.num_keypoints} keypoints, "
            f"τ {loss.tau_start} → {loss.tau_end} ({loss.tau_schedule}), {subset}, trained on KeypointNet's "
            f"train clouds (Skeleton Merger trains on ShapeNet clouds); scored at the last epoch (no checkpoint "
            f"selection with labels).")


def write_tables(args, out: Path) -> None:
    recorded = recorded_runs(args)
    wanted = {json.dumps(run_config(args, *key).to_dict(), sort_keys=True): key for key in grid(args)}
    runs = {}  # (category, variant, seed) -> metrics, of the runs trained with the grid's config
    for run in recorded:
        key = wanted.get(json.dumps(run["config"], sort_keys=True))
        if key is not None:
            runs[key] = run["metrics"]
    cells: dict[str, dict[str, dict]] = {}
    for category in args.categories:
        for variant in args.variants:
            done = [runs[category, variant, s] for s in args.seeds if (category, variant, s) in runs]
            if done:  # a metric over the runs that have it (runs of older versions lack some; NaN: not measured)
                values = {k: [m[k] for m in done if k in m and not math.isnan(m[k])] for k in CELL_METRICS}
                cells.setdefault(category, {})[variant] = {k: summarize(v) for k, v in values.items() if v}
    missing = [f"{c}/{variant_name(v)}/seed {s}" for c in args.categories for v in args.variants for s in args.seeds
               if (c, v, s) not in runs]
    config = run_config(args, args.categories[0], "soft", args.seeds[0])
    epochs = {c: run_config(args, c, "soft", args.seeds[0]).optim.epochs for c in args.categories}
    shapes = {c: next(m["das_sm_shapes"] for (cc, _, _), m in runs.items() if cc == c)
              for c in args.categories if any(key[0] == c for key in runs)}
    devices = sorted({m.get("device", "?") for m in runs.values()})
    lines = ["# Table 7: unsupervised keypoints (Skeleton Merger style) on KeypointNet, DAS (%)", "",
             protocol_line(config, epochs), f"Seeds {args.seeds}; mean ± sd over the finished seeds (n per cell); "
             f"machine: {', '.join(devices) or 'none yet'}.",
             "- **DAS (SM)**: Skeleton Merger's published protocol — forward and backward over every annotated shape "
             "of the category (" + ", ".join(f"{c}: {n}" for c, n in shapes.items()) + " shapes, all splits), "
             "self-pairs included; the paper's Table 7 numbers \"follow\" this protocol (paper column).",
             "- **DAS strict**: ordered pairs of distinct shapes of the test split only.",
             "- **mIoU@0.1**: KeypointNet's keypoint IoU at geodesic distance 0.1 (10-NN graph), test split.", ""]
    for category in args.categories:
        lines += [f"## {category}", "", "| Method | seeds | DAS (SM) | DAS (SM), paper | SM fwd / bwd | "
                  "DAS strict (test) | strict fwd / bwd | mIoU@0.1 (test) | reconstruction (test, ×10³) | "
                  "CPU min / run |", "|---|---|---|---|---|---|---|---|---|---|"]
        for variant in args.variants:
            cell = cells.get(category, {}).get(variant)
            lines.append(" | ".join([
                f"| {variant_name(variant)}", "0" if cell is None else str(cell["das_sm"]["n"]),
                cell_text(cell, "das_sm"),
                percent(PAPER_DAS[variant][category]) if category in PAPER_DAS[variant] else "n/a",
                f"{cell_text(cell, 'das_sm_forward')} / {cell_text(cell, 'das_sm_backward')}", cell_text(cell, "das"),
                f"{cell_text(cell, 'das_forward')} / {cell_text(cell, 'das_backward')}", cell_text(cell, "miou@0.1"),
                cell_text(cell, "reconstruction", 1000, 2), cell_text(cell, "train_cpu_minutes", 1)]) + " |")
        lines.append("")
    intervals = sampling_minus_soft(args, runs)
    lines += bootstrap_lines(intervals)
    lines += ["Missing runs: " + ("; ".join(missing) if missing else "none") + ".",
              f"Per-run reports (metrics, gallery of test keypoints coloured by index) under "
              f"`{display_path(args.runs)}/<category>_<variant>_s<seed>/eval_test/`."]
    payload = {"protocol": protocol_line(config, epochs), "config": config.to_dict(), "paper": PAPER_DAS, "cells": cells,
               "sampling_minus_soft": intervals, "missing": missing, "runs": recorded}
    gallery = run_config(args, args.categories[0], args.variants[-1], args.seeds[0]).run_name
    save_table(out, "table7", lines, payload, Path(args.runs) / gallery / "eval_test" / "gallery.png")
    plot_convergence(args, out / "table7_convergence.png")


def plot_convergence(args, path: Path) -> None:
    """Validation curves of the grid's runs from their ``log.csv`` (the label-free reconstruction loss, and the
    logged strict DAS and mIoU@0.1) against the epoch, per category: does the protocol train to convergence?"""
    import csv

    from viz.plots import panel_figure, save_figure

    panels = (("neg_reconstruction", "val reconstruction loss", -1), ("das", "val DAS strict (%)", 100),
              ("miou@0.1", "val mIoU@0.1 (%)", 100))
    fig, axes = panel_figure(len(args.categories), len(panels), (4.2, 3.2))
    for row, category in enumerate(args.categories):
        for variant, seed in [(v, s) for v in args.variants for s in args.seeds]:
            log = Path(args.runs) / run_config(args, category, variant, seed).run_name / "log.csv"
            if not log.is_file():
                continue
            rows = [r for r in csv.DictReader(log.open()) if r["split"] == "val" and r.get("das")]
            for ax, (key, label, scale) in zip(axes[row], panels):
                ax.plot([int(r["epoch"]) + 1 for r in rows], [float(r[key]) * scale for r in rows], marker=".",
                        color=f"C{args.variants.index(variant)}", alpha=0.4 + 0.6 * (seed == args.seeds[0]),
                        label=f"{variant_name(variant)}" if seed == args.seeds[0] else None)
        for ax, (_, label, _) in zip(axes[row], panels):
            ax.set(title=f"{category}: {label}", xlabel="epoch")
            ax.grid(alpha=0.3)
        if axes[row][0].get_legend_handles_labels()[0]:
            axes[row][0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def shape_statistics(records: dict) -> dict:
    """Per metric of :data:`CI_METRICS`, a function of shape weights ``(d, S)`` to the run's metric on each
    weighted resample ``(d,)``, from its ``records.pt`` (:meth:`pckeypoints.train.unsupervised.UnsupervisedTask.report`)."""
    def das(prefix: str, self_pairs: bool):
        forward, backward = records[f"{prefix}_forward_votes"], records[f"{prefix}_backward_votes"]
        def statistic(weights):
            w = torch.from_numpy(weights)
            return das_from_votes(torch.einsum("ds,spi->dpi", w, forward), torch.einsum("ds,sip->dip", w, backward),
                                  w.sum(1), self_pairs)[0].numpy()
        return statistic

    matches, reconstruction = records["miou_matches"].numpy(), records["reconstruction"].double().numpy()
    def miou(weights):
        tp, fp, gt = (weights @ matches).T
        return tp / (gt + fp)
    return {"das_sm": das("das_sm", True), "das": das("das", False), "miou@0.1": miou,
            "reconstruction": lambda weights: weights @ reconstruction / weights.sum(1)}


def sampling_minus_soft(args, runs: dict) -> dict:
    """``{category: {variant: {metric: {"diff", "low", "high", "seeds"}}}}``: paired bootstrap CIs over shapes
    (:data:`stats.BOOTSTRAP_DRAWS` resamples; the shapes of the test split, or every annotated shape for DAS (SM))
    of the seed-mean metric of sampling with ``variant`` minus soft-argmax's, over the seeds both have scored
    with records."""
    def records(category, variant, seed):
        path = Path(args.runs) / run_config(args, category, variant, seed).run_name / "eval_test" / "records.pt"
        return torch.load(path) if (category, variant, seed) in runs and path.is_file() else None

    intervals = {}
    for category in args.categories:
        for variant in [v for v in args.variants if v != "soft"]:
            pairs = [(records(category, "soft", s), records(category, variant, s)) for s in args.seeds]
            seeds = [s for s, (a, b) in zip(args.seeds, pairs) if a is not None and b is not None]
            pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
            if not pairs:
                continue
            for a, b in pairs:
                if a["model_id"] != b["model_id"] or a["das_sm_model_id"] != b["das_sm_model_id"]:
                    raise ValueError(f"{category}: the runs scored different shapes; score them again")
            stats_a, stats_b = [shape_statistics(a) for a, _ in pairs], [shape_statistics(b) for _, b in pairs]
            cell = intervals.setdefault(category, {}).setdefault(variant, {})
            for metric in CI_METRICS:
                num_shapes = len(pairs[0][0]["das_sm_model_id" if metric == "das_sm" else "model_id"])
                def difference(weights, metric=metric):
                    return sum(b[metric](weights) - a[metric](weights) for a, b in zip(stats_a, stats_b)) / len(pairs)
                diff, low, high = bootstrap(difference, num_shapes)
                cell[metric] = {"diff": diff, "low": low, "high": high, "seeds": seeds}
    return intervals


def bootstrap_lines(intervals: dict) -> list[str]:
    """The table of :func:`sampling_minus_soft` (percentage points; reconstruction ×10³)."""
    if not intervals:
        return ["No paired bootstrap CIs yet: they need soft-argmax and sampling runs of a seed scored with records.",
                ""]
    lines = [f"## Sampling − soft-argmax, paired bootstrap over shapes ({BOOTSTRAP_DRAWS:,} resamples, 95 % CI)", "",
             "Seed-mean metric of sampling minus soft-argmax's on the same resampled shapes (test split; every "
             "annotated shape for DAS (SM)); percentage points, reconstruction ×10³ (lower is better). They resample "
             "shapes only: the seeds' own spread (the ± above) is not in them.", "",
             "| Category | Ns | seeds | " + " | ".join(CI_METRICS.values()) + " |",
             "|---|---|---|" + "---|" * len(CI_METRICS)]
    for category, variants in intervals.items():
        for variant, cell in variants.items():
            texts = [f"{_points(s['diff'], m)} [{_points(s['low'], m)}, {_points(s['high'], m)}]" for m, s in cell.items()]
            seeds = next(iter(cell.values()))["seeds"]
            lines.append(f"| {category} | {variant} | {', '.join(map(str, seeds))} | " + " | ".join(texts) + " |")
    return lines + [""]


def _points(value: float, metric: str) -> str:
    return f"{value * 1000:+.2f}" if metric == "reconstruction" else f"{value * 100:+.1f}"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.train_only:  # in this process, one cell after another (what each runner process does)
        for category, variant, seed in grid(args):
            metrics = run_one(args, category, variant, seed)
            print(f"{category} / {variant_name(variant)}, seed {seed}: DAS (SM) {metrics['das_sm']:.4f}")
        return 0
    failed = []
    if not args.table_only:
        command = [sys.executable, "-m", "experiments.table7", *argv, "--train-only"]
        runs = [(run_config(args, c, v, s).run_name, command + ["--categories", c, "--variants", v, "--seeds", str(s)])
                for c, v, s in grid(args)]
        failed = run_commands(runs, args.jobs, Path(args.runs) / "logs")
    write_tables(args, Path(args.results))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
