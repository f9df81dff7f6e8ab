"""Time to accuracy: train a recipe under a CPU-time budget, validation PCK at budget marks, test at the end.

    python experiments/speedrun.py run --recipes fast --categories bathtub bed --seeds 0 1 2 --jobs 2
    python experiments/speedrun.py tables                     # rebuild speedrun.md and the plot from the JSON

A recipe is a set of :class:`~pckeypoints.config.TrainConfig` fields (:data:`RECIPES`, TOML-able: what
``pckeypoints train`` takes). Each (recipe, category, seed) cell trains in its own process on ONE thread
(``torch.set_num_threads(1)``), budgeted by that process's CPU time (``time.process_time``) spent in
training steps, data loading included: a 600 s single-core budget is half the compute of 10 minutes on
the 2-core machine, and unlike wall time it does not grow when other processes share the cores. The
step that would pass the budget is not taken (a recipe whose epochs do not fit is cut short, and the
cell says so). Validation PCK@0.01 (Euclidean, ``config.readout``) is measured at every tenth of the
budget, outside the clock; the final model (no checkpoint selection) is scored on the test split: PCK@0.01
of the snapped readout with KeypointNet's strict geodesic distance (the official metric) and Euclidean,
and of the expectation. Wall times are recorded too (training alone and the whole cell).

Results go to experiments/results/speedrun.json as each cell finishes (a finished cell is skipped when the
command is run again), then speedrun.md (mean ± sd over seeds per recipe and category) and speedrun.png
(validation PCK against CPU minutes per recipe, category and seed; the test score at the end).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"

#: CPU seconds of one core per category (the issue's targets: 10 min / 5 min of the 2-core machine, halved)
BUDGETS = {"bathtub": 600.0, "bed": 300.0}
#: test PCK@0.01 (%) to reach by (category, budget): the shipped models' (Euclidean, snapped readout), and the
#: quick start's 55 % in 5 minutes of the 2-core machine (300 CPU-s of one core)
TARGETS = {("bathtub", 600.0): 58.0, ("bed", 300.0): 50.7, ("bathtub", 300.0): 55.0}
MARKS = 10  # validation at every tenth of the budget

_SHIPPED = {"method": "soft+js", "readout": "snapped", "basis": "fixed", "sigma": 0.01, "target_sigma": 0.02,
            "reg_weight": 1.0,
            "tau_schedule": "exponential", "tau_start": 1.0, "tau_end": 0.1, "batch_size": 16,
            "weight_decay": 1e-4, "jitter": 0.005, "scale_lo": 0.9, "scale_hi": 1.1}
#: name -> TrainConfig fields (category, seed, device, out and name are set per cell)
RECIPES: dict[str, dict] = {
    # the quick start before the recipe (width 0.25, 30 epochs, σ from 8-NN), the speedrun's baseline
    "quickstart": {**_SHIPPED, "basis": "knn", "sigma": None, "knn_k": 8, "width": 0.25, "epochs": 30, "lr": 5e-3,
                   "lr_schedule": "cosine"},
    # the shipped models' protocol (experiments/configs/evidence_best.toml) cut to the budget
    "best": {**_SHIPPED, "width": 1.0, "epochs": 100, "lr": 2e-3, "lr_schedule": "cosine"},
    # the shipped protocol with its epochs fitted to the bathtub budget (steps of 1.29 / 0.54 s at width 1 / 0.5)
    "w1-e20": {**_SHIPPED, "width": 1.0, "epochs": 20, "lr": 3e-3, "lr_schedule": "cosine"},
    # width 0.5 (0.49 s a step): 50 epochs of bathtub (22 steps) or 85 of bed (7 steps) fit their budgets
    "w05-e50": {**_SHIPPED, "width": 0.5, "epochs": 50, "lr": 3e-3, "lr_schedule": "cosine"},
    "w05-e85": {**_SHIPPED, "width": 0.5, "epochs": 85, "lr": 3e-3, "lr_schedule": "cosine"},
    # one-seed probes of the bathtub gap: width 0.75 (34 epochs fit), width 0.5 with a higher lr and the whole budget
    "w075-e34": {**_SHIPPED, "width": 0.75, "epochs": 34, "lr": 3e-3, "lr_schedule": "cosine"},
    "w05-e54-lr5": {**_SHIPPED, "width": 0.5, "epochs": 54, "lr": 5e-3, "lr_schedule": "cosine"},
    # the quick start's budget (5 minutes of 2 cores, run at 300 CPU-s of one core): 25 epochs of bathtub
    "w05-e25": {**_SHIPPED, "width": 0.5, "epochs": 25, "lr": 3e-3, "lr_schedule": "cosine"},
}


# ---------------------------------------------------------------------------------------------- one cell
def train_cell(recipe: str, fields: dict, category: str, seed: int, budget: float, data_root: str | None) -> dict:
    """Train one cell in this process (one thread) and return its record."""
    import torch
    from torch.utils.data import DataLoader, DistributedSampler

    from pckeypoints.config import UNSET, TrainConfig
    from pckeypoints.data import collate_keypoints
    from pckeypoints.errors import TrainingError
    from pckeypoints.evaluation import collect_readouts
    from pckeypoints.metrics.summary import keypoint_records, records_metrics
    from pckeypoints.supervised import SupervisedTask
    from pckeypoints.training import TrainState, _seed

    torch.set_num_threads(1)
    wall0, load0 = time.perf_counter(), os.getloadavg()[0]
    fields = {k: UNSET if v is None else v for k, v in fields.items()}
    config = TrainConfig.from_fields(**fields, category=category, seed=seed, device="cpu", data_root=data_root)
    task = SupervisedTask()
    train_set = task.dataset(config, "train", train=True)
    config = task.configure(config, train_set)
    sampler = DistributedSampler(train_set, 1, 0, shuffle=True, seed=config.run.seed)
    loader = DataLoader(train_set, config.optim.batch_size, sampler=sampler, collate_fn=collate_keypoints)
    eval_loader = lambda split: DataLoader(task.dataset(config, split, train=False), 32, collate_fn=collate_keypoints)
    val_loader = eval_loader("val")
    state = TrainState.create(task, config, torch.device("cpu"))
    model, optimizer, lr_schedule, tau_schedule = state.model, state.optimizer, state.lr_schedule, state.tau_schedule

    spent = eval_cpu = train_wall = 0.0  # training CPU s, evaluation CPU s, training wall s
    curve, step, last_step = [], 0, 0.0
    marks = [budget * (i + 1) / MARKS for i in range(MARKS)]

    def validate(epoch: float) -> None:
        nonlocal eval_cpu
        t0 = time.process_time()
        metrics = task.evaluate(model.eval(), val_loader, config)
        model.train()
        eval_cpu += time.process_time() - t0
        curve.append({"cpu_s": spent, "wall_s": time.perf_counter() - wall0, "epoch": epoch, "step": step,
                      "val_pck": 100 * metrics["pck@0.01"]})

    epoch, cut = 0, False
    while epoch < config.optim.epochs and not cut:
        _seed(config.run.seed, epoch, 0)
        sampler.set_epoch(epoch)
        model.train()
        tau = tau_schedule.value
        t0, w0 = time.process_time(), time.perf_counter()
        for i, batch in enumerate(loader):
            if spent + (time.process_time() - t0) + last_step > budget:  # the next step would pass the budget
                cut = True
                break
            s0 = time.process_time()
            loss, _ = task.loss(model, batch, config, tau)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            last_step = time.process_time() - s0
            if marks and spent + time.process_time() - t0 >= marks[0]:
                marks.pop(0)
                spent += time.process_time() - t0
                train_wall += time.perf_counter() - w0
                validate(epoch + (i + 1) / len(loader))
                t0, w0 = time.process_time(), time.perf_counter()
        spent += time.process_time() - t0
        train_wall += time.perf_counter() - w0
        if not torch.isfinite(loss):
            raise TrainingError(f"training diverged at epoch {epoch}")
        if not cut:
            lr_schedule.step()
            tau_schedule.step()
            epoch += 1
    if not curve or curve[-1]["step"] != step:
        validate(float(epoch))
    t0 = time.process_time()
    predictions = collect_readouts(model.eval(), eval_loader("test"), ("snapped", "expectation"))
    metrics = records_metrics(keypoint_records(predictions, geodesic=True), "snapped")
    eval_cpu += time.process_time() - t0
    test = {"pck_snapped_geodesic": 100 * metrics["geo_pck@0.01/snapped"],
            "pck_snapped_euclidean": 100 * metrics["pck@0.01/snapped"],
            "pck_expectation_euclidean": 100 * metrics["pck@0.01/expectation"]}
    return {"recipe": recipe, "fields": fields, "category": category, "seed": seed, "budget_cpu_s": budget,
            "train_cpu_s": spent, "train_wall_s": train_wall, "eval_cpu_s": eval_cpu,
            "cell_wall_s": time.perf_counter() - wall0, "steps": step, "epochs": epoch, "of_epochs": config.optim.epochs,
            "cut_by_budget": cut, "curve": curve, "test": test, "threads": torch.get_num_threads(),
            "loadavg_start": load0, "loadavg_end": os.getloadavg()[0]}


# ---------------------------------------------------------------------------------------------- runner
def cell_key(recipe: str, category: str, seed: int) -> str:
    return f"{recipe}/{category}/s{seed}"


def load_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"cells": {}}


def run(args) -> None:
    path = args.results / "speedrun.json"
    results = load_results(path)
    pairs = [tuple(r.split(":")) if ":" in r else (r, c) for r in args.recipes for c in args.categories
             if ":" not in r or r.endswith(":" + c)]  # "recipe:category" runs that recipe on that category only
    todo = [(r, c, s) for s in args.seeds for r, c in pairs if cell_key(r, c, s) not in results["cells"]]
    unknown = sorted({r for r, _, _ in todo} - set(RECIPES))
    if unknown:
        raise SystemExit(f"unknown recipes {unknown}; known: {sorted(RECIPES)}")
    lock = threading.Lock()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}

    def one(cell):
        recipe, category, seed = cell
        budget = args.budget or BUDGETS[category]
        command = [sys.executable, __file__, "cell", recipe, category, str(seed), str(budget)]
        if args.data_root:
            command += ["--data-root", args.data_root]
        done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
        if done.returncode:
            print(f"{cell_key(*cell)} failed:\n{done.stderr[-3000:]}", flush=True)
            return
        record = json.loads(done.stdout.strip().splitlines()[-1])
        with lock:
            latest = load_results(path)
            latest["cells"][cell_key(*cell)] = record
            path.write_text(json.dumps(latest, indent=1))
            write_tables(args.results)
        t = record["test"]
        print(f"{cell_key(*cell)}: test PCK@0.01 snapped geodesic {t['pck_snapped_geodesic']:.1f} / Euclidean "
              f"{t['pck_snapped_euclidean']:.1f} after {record['train_cpu_s']:.0f} CPU-s "
              f"({record['epochs']}/{record['of_epochs']} epochs, {record['train_wall_s']:.0f} s wall)", flush=True)

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(one, todo))
    write_tables(args.results)


# ---------------------------------------------------------------------------------------------- tables
def mean_sd(values: list[float]) -> str:
    import statistics

    if not values:
        return "–"
    return f"{statistics.mean(values):.1f}" + (f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else "")


def write_tables(results_dir: Path) -> None:
    import statistics

    results_dir.mkdir(parents=True, exist_ok=True)
    cells = load_results(results_dir / "speedrun.json")["cells"].values()
    groups: dict[tuple[str, str], list[dict]] = {}
    for cell in cells:
        groups.setdefault((cell["recipe"], cell["category"]), []).append(cell)
    lines = ["# Speedrun: test PCK@0.01 within a CPU-time budget", "",
             "Generated by `experiments/speedrun.py` from `speedrun.json`. Clock: CPU time of the training process "
             "on ONE thread (`torch.set_num_threads(1)`), data loading included, evaluation excluded; a 600 s "
             "single-core budget is half the compute of 10 minutes on the 2-core machine. The machine was shared "
             "(load average at start/end in the JSON), so wall times are longer than the CPU times. Final model, "
             "no checkpoint selection. Test PCK@0.01 (%), mean ± sd over seeds: **official** = snapped readout, "
             "strict geodesic (KeypointNet's metric); Euclidean = snapped readout, distance ≤ 0.01 (the shipped "
             "models' 58.0 / 50.7 are this one). Targets (mean of 3 seeds, Euclidean snapped): the shipped models' figures "
             "within 600 / 300 CPU-s, and the quick start's 55 % within 300 CPU-s (5 minutes of the 2-core machine).", "",
             "| recipe | category | seeds | budget CPU-s | train CPU-s | train wall s | epochs | official (geodesic) | "
             "Euclidean snapped | Euclidean expectation | target | met |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (recipe, category), group in sorted(groups.items()):
        euclid = [c["test"]["pck_snapped_euclidean"] for c in group]
        target = TARGETS.get((category, group[0]["budget_cpu_s"]))
        met = "–" if target is None else ("yes" if statistics.mean(euclid) >= target else "no") + \
            f" ({statistics.mean(euclid) - target:+.1f})"
        lines.append(
            f"| {recipe} | {category} | {','.join(str(c['seed']) for c in sorted(group, key=lambda c: c['seed']))} | "
            f"{group[0]['budget_cpu_s']:.0f} | {statistics.mean(c['train_cpu_s'] for c in group):.0f} | "
            f"{statistics.mean(c['train_wall_s'] for c in group):.0f} | "
            f"{'/'.join(str(c['epochs']) for c in group)} of {group[0]['of_epochs']} | "
            f"{mean_sd([c['test']['pck_snapped_geodesic'] for c in group])} | {mean_sd(euclid)} | "
            f"{mean_sd([c['test']['pck_expectation_euclidean'] for c in group])} | {target or '–'} | {met} |")
    lines += ["", "Recipes (TrainConfig fields; category, seed, device set per cell):", ""]
    for recipe in sorted({r for r, _ in groups}):
        fields = next(c["fields"] for c in cells if c["recipe"] == recipe)
        lines.append(f"- `{recipe}`: `{json.dumps(fields)}`")
    lines += ["", "![validation PCK against CPU minutes](speedrun.png)", ""]
    (results_dir / "speedrun.md").write_text("\n".join(lines))
    plot(groups, results_dir / "speedrun.png")


def plot(groups: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    categories = sorted({c for _, c in groups})
    if not categories:
        return
    fig, axes = plt.subplots(1, len(categories), figsize=(6 * len(categories), 4.2), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    recipes = sorted({r for r, _ in groups})
    for ax, category in zip(axes[0], categories):
        for i, recipe in enumerate(recipes):
            for j, cell in enumerate(sorted(groups.get((recipe, category), []), key=lambda c: c["seed"])):
                x = [p["cpu_s"] / 60 for p in cell["curve"]]
                ax.plot(x, [p["val_pck"] for p in cell["curve"]], color=colors[i % len(colors)], alpha=0.8,
                        label=recipe if j == 0 else None, marker=".")
                ax.plot([cell["train_cpu_s"] / 60], [cell["test"]["pck_snapped_euclidean"]], marker="*",
                        markersize=10, color=colors[i % len(colors)])
        for (target_category, budget), target in TARGETS.items():
            if target_category == category:
                ax.axhline(target, color="gray", linestyle="--", linewidth=1)
                ax.annotate(f"target in {budget / 60:g} min", (0, target), fontsize=7, color="gray", va="bottom")
        ax.set(title=f"{category}: val PCK@0.01 (lines), test (stars)", xlabel="training CPU minutes (one core)",
               ylabel="PCK@0.01 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the missing cells")
    r.add_argument("--recipes", nargs="+", default=["quickstart"], help="names, or name:category for one category")
    r.add_argument("--categories", nargs="+", default=["bathtub", "bed"])
    r.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    r.add_argument("--jobs", type=int, default=2, help="cells at a time (one core each)")
    r.add_argument("--budget", type=float, default=None, help="CPU seconds (default: BUDGETS per category)")
    r.add_argument("--data-root", default=None)
    r.add_argument("--results", type=Path, default=RESULTS)
    t = sub.add_parser("tables", help="rebuild speedrun.md and speedrun.png")
    t.add_argument("--results", type=Path, default=RESULTS)
    c = sub.add_parser("cell", help="(internal) train one cell, print its record as JSON")
    c.add_argument("recipe")
    c.add_argument("category")
    c.add_argument("seed", type=int)
    c.add_argument("budget", type=float)
    c.add_argument("--data-root", default=None)
    args = p.parse_args(argv)
    if args.command == "cell":
        record = train_cell(args.recipe, RECIPES[args.recipe], args.category, args.seed, args.budget, args.data_root)
        print(json.dumps(record))
    elif args.command == "run":
        run(args)
    else:
        write_tables(args.results)


if __name__ == "__main__":
    main()
