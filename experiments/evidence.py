"""Does sampling-argmax give better keypoints? Methods × categories × seeds, every readout, calibration.

Trains supervised KeypointNet detectors under a named protocol (``experiments/configs/evidence_<protocol>.toml``),
one run per (category, method, seed), scores each on the test split with every readout of
:mod:`pckeypoints.core.readouts`, and writes ``experiments/results/evidence/``: one ``records/<protocol>/<run>.npz``
of per-keypoint records per run (distances, geodesic distances, confidences), ``evidence.json`` (every
run's metrics, every table's numbers) and ``table6.md`` with mean ± sd over seeds, paired bootstrap CIs of
each method − soft-argmax (and − soft-argmax + JS), readouts, calibration, plus reliability diagrams. Finished
runs are skipped, interrupted ones resumed, and the tables are rebuilt from whatever ``.npz`` files exist (from
any machine).

    python -m experiments.evidence all --protocol cpu-full --jobs 2       # this 2-core CPU: 3 seeds, ~10 min a run
    python -m experiments.evidence all --protocol best --methods soft sampling30 --jobs 12   # one GPU (gpu_evidence.sh)
    python -m experiments.evidence tables                                   # rebuild the tables only

(from the repository root, as every experiment).

Methods: ``soft``, ``soft+var``, ``soft+js``, ``discrete``, ``samplingN`` (sampling-argmax with N samples).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from experiments.runner import run_commands
from experiments.stats import BOOTSTRAP_DRAWS, mean_sd, nan_mean, paired_bootstrap
from pckeypoints.core.readouts import READOUTS
from pckeypoints.evaluation.inference import THRESHOLD
from pckeypoints.metrics.summary import distances, is_correct, records_metrics

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "experiments" / "results" / "evidence"
CONFIGS = ROOT / "experiments" / "configs"
#: sampling-argmax variants (issue-19 ablation): name -> the config fields beside Ns = 30
_AUTHORS = {"gumbel": "official", "tau_schedule": "linear", "tau_start": 2.0, "tau_end": 0.5, "tau_epochs": 26}
_KNN = {"basis": "knn", "knn_k": 8, "sigma": None}
SAMPLING_VARIANTS = {"sampling30-official": {"gumbel": "official"}, "sampling30-authors": _AUTHORS,
                     "sampling30-authors+clip": {**_AUTHORS, "clipped_integral": True},
                     "sampling30-authors+clip+js": {**_AUTHORS, "clipped_integral": True, "method": "sampling+js"},
                     "sampling30+js": {"method": "sampling+js"}, "sampling30+js-knn": {"method": "sampling+js", **_KNN},
                     "sampling30-learnsigma": {"learn_sigma": True}, "sampling30-knn": _KNN,
                     "sampling30-tau0.5": {"tau_end": 0.5}, "sampling30-tau1": {"tau_end": 1.0},
                     "sampling30-tau2": {"tau_start": 2.0, "tau_end": 2.0},
                     "sampling30-knn0.2": {**_KNN, "knn_factor": 0.2}}
METHODS = ("soft", "soft+var", "soft+js", "discrete", "sampling1", "sampling5", "sampling10", "sampling30",
           *SAMPLING_VARIANTS)
METHOD_NAMES = {"soft": "soft-argmax", "soft+var": "soft-argmax + var", "soft+js": "soft-argmax + JS",
                "discrete": "discrete expectation", "sampling1": "sampling, Ns = 1", "sampling5": "sampling, Ns = 5",
                "sampling10": "sampling, Ns = 10", "sampling30": "sampling, Ns = 30",
                "sampling30-official": "sampling, Ns = 30, official Gumbel form",
                "sampling30-authors": "sampling, Ns = 30, authors' Gumbel form and τ 2 → 0.5",
                "sampling30-authors+clip": "sampling, Ns = 30, authors' form, τ and clipped gradient",
                "sampling30-authors+clip+js": "sampling + JS, Ns = 30, authors' form, τ and clipped gradient",
                "sampling30+js": "sampling + JS, Ns = 30", "sampling30+js-knn": "sampling + JS, Ns = 30, σ from 8-NN",
                "sampling30-learnsigma": "sampling, Ns = 30, learned σ",
                "sampling30-knn": "sampling, Ns = 30, σ from 8-NN",
                "sampling30-tau0.5": "sampling, Ns = 30, τ → 0.5", "sampling30-tau1": "sampling, Ns = 30, τ = 1",
                "sampling30-tau2": "sampling, Ns = 30, τ = 2",
                "sampling30-knn0.2": "sampling, Ns = 30, σ = 0.2 x the 8-NN distance (median at the fixed σ)"}
#: Li et al. (2021), Table 6, PCK@0.01 (%), from ../shared/reference/paper_tables.md (sampling rows: Gaussian bases).
PAPER_TABLE6 = {"soft": {"bathtub": 43.6, "bed": 44.0}, "soft+var": {"bathtub": 41.6, "bed": 39.2},
                "soft+js": {"bathtub": 42.7, "bed": 43.9}, "discrete": {"bathtub": None, "bed": None},
                "sampling1": {"bathtub": 43.0, "bed": 41.2}, "sampling5": {"bathtub": 42.4, "bed": 43.8},
                "sampling10": {"bathtub": 45.5, "bed": 41.7}, "sampling30": {"bathtub": 45.1, "bed": 47.5}}
PROTOCOLS = {
    "cpu-full": "the speedrun recipe: width 0.5, 50 epochs, AdamW lr 3e-3 cosine, batch 16, σ = 0.01 (~600 s of one "
                "core per bathtub run)",
    "best": "project's best: width 1, 100 epochs, AdamW lr 2e-3 cosine, batch 16, σ = 0.01",
    "paper": "paper's: width 1, 100 epochs, Adam lr 1e-3 halved every 10 epochs, batch 8, σ = 0.01",
    "speedrun": "the recipe users train (speedrun w05-e100 / w05-e165): width 0.5, bathtub 100 epochs, bed 165, AdamW "
                "lr 3e-3 cosine, batch 16, σ = 0.01, 2 processes; the decisive comparison (decisive/rule.md)",
}
#: epochs per category where a protocol's differ (its config holds the first category's)
PROTOCOL_EPOCHS = {"speedrun": {"bathtub": 100, "bed": 165}}
#: PCK thresholds of the threshold table (dataset units), beside the mean error and the PCK curve's area
TABLE_THRESHOLDS = (0.005, 0.01, 0.02, 0.05)
#: baselines every sampling method is compared with, paired over test keypoints (soft-argmax: the paper's
#: comparison; + JS: the strongest baseline here)
PAIRED_BASELINES = ("soft", "soft+js")
#: further (baseline, method) pairs: the discrete expectation against sampling, its noise-free τ → 0 limit
PAIRED_EXTRA = (("sampling30", "discrete"),)
#: the strongest baseline, compared with every method at each of :data:`TABLE_THRESHOLDS` besides 0.01
STRONGEST_BASELINE = "soft+js"


def protocol_config(protocol: str) -> Path:
    """The config file of ``protocol``."""
    return CONFIGS / f"evidence_{protocol}.toml"


def method_overrides(method: str) -> dict:
    if method in SAMPLING_VARIANTS:
        return {"method": "sampling", "num_samples": 30, **SAMPLING_VARIANTS[method]}
    if method.startswith("sampling"):
        return {"method": "sampling", "num_samples": int(method.removeprefix("sampling"))}
    return {"method": method}


def run_name(category: str, method: str, seed: int) -> str:
    return f"{category}_{method}_s{seed}"


# ---------------------------------------------------------------------------------------------- running
def train_command(args, category: str, method: str, seed: int) -> list[str] | None:
    """The ``pckeypoints train`` command that starts or resumes a run, or ``None`` if it is finished."""
    from pckeypoints.train.checkpoint import read_checkpoint

    run_dir = Path(args.runs) / args.protocol / run_name(category, method, seed)
    if (run_dir / "last.pt").is_file():
        state, config = read_checkpoint(run_dir / "last.pt")
        if state["epoch"] >= config.optim.epochs:
            return None
        return [sys.executable, "-m", "pckeypoints", "train", "--resume", str(run_dir), "--no-test", "--no-progress"]
    fields = method_overrides(method)  # None: unset the field
    given = {"category": category, "seed": seed, "name": run_name(category, method, seed),
             "out": str(Path(args.runs) / args.protocol), "data_root": args.data_root, "max_models": args.max_models,
             "epochs": args.epochs or PROTOCOL_EPOCHS.get(args.protocol, {}).get(category),
             "device": args.device}  # None: not given
    flags = [_flag(k, v) for k, v in fields.items()] + [_flag(k, v) for k, v in given.items() if v is not None]
    return [sys.executable, "-m", "pckeypoints", "train", "--config", str(protocol_config(args.protocol)),
            *flags, "--no-test", "--no-progress"]


def _flag(name: str, value) -> str:
    """The command-line flag that sets ``name`` to ``value`` (booleans as ``--x`` / ``--no-x``, ``None`` as
    ``--x=none``, which unsets a nullable field)."""
    flag = name.replace("_", "-")
    if isinstance(value, bool):
        return f"--{flag}" if value else f"--no-{flag}"
    return f"--{flag}={'none' if value is None else value}"


def evaluate_run(run_dir: Path, out: Path, data_root: str | None, device: str) -> None:
    """Score ``run_dir``'s best checkpoint on the test split; write the per-keypoint records to ``out``."""
    import torch

    from pckeypoints.train.evaluate_checkpoint import evaluate_checkpoint

    result = evaluate_checkpoint(run_dir, "test", device, run_dir / "eval_test", data_root=data_root or None)
    saved = torch.load(run_dir / "eval_test" / "records.pt", weights_only=False)
    records = {k: v.numpy().astype(np.int32 if k in ("cloud", "keypoint") else np.float32)
               for k, v in saved["records"].items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"config": result.config.to_dict(), "epoch": result.epoch, "metrics": result.metrics.to_dict(),
            "model_id": saved["model_id"]}
    np.savez_compressed(out, meta=np.array(json.dumps(meta)), **{k.replace("/", "__"): v for k, v in records.items()})


def load_records(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """``(meta, records)`` of one run's ``.npz``."""
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        records = {k.replace("__", "/"): data[k] for k in data.files if k != "meta"}
    return meta, records


# ---------------------------------------------------------------------------------------------- statistics
def correct(records: dict[str, np.ndarray], readout: str, geodesic: bool, threshold: float = THRESHOLD) -> np.ndarray:
    """Per keypoint 0/1 (:func:`pckeypoints.metrics.summary.is_correct`)."""
    return is_correct(records, readout, geodesic, threshold).astype(np.float64)


def distance_row(records: dict[str, np.ndarray], geodesic: bool) -> dict[str, float]:
    """The expectation readout's PCK (%) at :data:`TABLE_THRESHOLDS`, mean error and area under the PCK curve
    (%, 0 to 0.1, :func:`pckeypoints.metrics.pck_auc`), Euclidean or geodesic (snapped, ``d < t``)."""
    import torch

    from pckeypoints.metrics import pck_auc

    errors = torch.from_numpy(distances(records, "expectation", geodesic).astype(np.float64))
    row = {f"pck@{t:g}": 100 * correct(records, "expectation", geodesic, t).mean() for t in TABLE_THRESHOLDS}
    return {**row, "mean_error": float(errors.mean()), "auc": 100 * pck_auc(errors, inclusive=not geodesic)}


def calibration_row(records: dict[str, np.ndarray]) -> dict[str, float]:
    """Calibration of one run's expectation readout: the peak π's mean and Pearson r with correctness
    (binary and exp(-d²/2t²)), and the within-radius probability's mean, ECE, Brier score and r, beside
    the PCK (:func:`pckeypoints.metrics.summary.records_metrics`)."""
    import torch

    metrics = records_metrics({k: torch.from_numpy(v.astype(np.float64)) for k, v in records.items()
                               if k == "peak" or k.endswith("/expectation")}, "expectation", THRESHOLD)
    within = metrics.headline
    return {"mean_peak": metrics.mean_confidence, "r_peak": metrics.calibration_r,
            "r_peak_continuous": metrics.calibration_r_continuous, "mean_within": within.mean_within,
            "pck": within.pck, "ece": within.ece, "brier": within.brier, "r_within": within.r_within}


def paired_difference(a: list[dict], b: list[dict], readout: str, geodesic: bool,
                      threshold: float = THRESHOLD) -> tuple[float, float, float]:
    """PCK@``threshold`` of ``b`` − ``a`` (in points) with its paired 95 % bootstrap CI
    (:func:`stats.paired_bootstrap`): per test keypoint the correctness is averaged over the seeds, test models
    are resampled."""
    for runs in (a, b):
        if any(len(r["cloud"]) != len(a[0]["cloud"]) or (r["cloud"] != a[0]["cloud"]).any() for r in runs):
            raise ValueError("runs were scored on different test keypoints")

    def seed_mean(runs):
        return np.mean([correct(r, readout, geodesic, threshold) for r in runs], axis=0)

    d, low, high = paired_bootstrap(seed_mean(a), seed_mean(b), a[0]["cloud"])
    return 100 * d, 100 * low, 100 * high


# ---------------------------------------------------------------------------------------------- tables
def collect(results: Path) -> dict:
    """``{protocol: {category: {method: [(meta, records) per seed, sorted by seed]}}}`` of every ``.npz``."""
    runs: dict = {}
    for path in sorted((results / "records").glob("*/*.npz")):
        category, method, seed = path.stem.rsplit("_", 2)
        runs.setdefault(path.parent.name, {}).setdefault(category, {}).setdefault(method, []).append(
            (int(seed.removeprefix("s")), *load_records(path)))
    return {p: {c: {m: [({**meta, "seed": seed}, rec) for seed, meta, rec in sorted(v, key=lambda x: x[0])]
                    for m, v in ms.items()} for c, ms in cs.items()} for p, cs in runs.items()}


@dataclass
class Grid:
    """One protocol's scored runs: ``runs[category][method]`` = ``[(meta, records) per seed]`` (:func:`collect`),
    and the categories and methods that have runs, in table order."""

    protocol: str
    runs: dict
    categories: list[str]
    methods: list[str]

    @classmethod
    def of(cls, protocol: str, runs: dict) -> "Grid":
        categories = [c for c in ("bathtub", "bed") if c in runs] + sorted(set(runs) - {"bathtub", "bed"})
        return cls(protocol, runs, categories, [m for m in METHODS if any(m in runs[c] for c in categories)])

    def seeds(self, category: str, method: str) -> list:
        """``[(meta, records) per seed]`` of a cell, ``[]`` if it was not run."""
        return self.runs[category].get(method, [])

    def header(self, columns: list[str]) -> list[str]:
        """A table's header and rule: a method column, then ``columns`` for each category."""
        return ["| method | " + " | ".join(f"{c} {col}" for c in self.categories for col in columns) + " |",
                "|---|" + "---|" * (len(self.categories) * len(columns))]


def protocol_tables(protocol: str, runs: dict, plots: Path) -> tuple[list[str], dict]:
    """Markdown lines and JSON numbers of one protocol."""
    grid = Grid.of(protocol, runs)
    numbers: dict = {"description": PROTOCOLS.get(protocol, protocol), "cells": {}, "paired": {},
                     "paired_thresholds": {}, "calibration": {}}
    lines = [f"## Protocol `{protocol}`: {PROTOCOLS.get(protocol, protocol)}", ""]
    for table in (cells_table, readouts_table, thresholds_table, paired_table, paired_thresholds_table,
                  calibration_table, figure_lines):
        lines += table(grid, numbers, plots)
    return lines, numbers


def method_row(method: str, cells: list[str]) -> str:
    return f"| {METHOD_NAMES[method]} | " + " | ".join(cells) + " |"


def cells_table(grid: Grid, numbers: dict, plots: Path) -> list[str]:
    """The main table: the expectation readout's PCK@0.01, Euclidean and geodesic, mean ± sd over seeds, beside
    the paper's; and the cells not run yet."""
    lines = ["PCK@0.01 (%) on the test split, mean ± sd over seeds (n = seeds). **Euclidean**: the expectation "
             "(soft-argmax) within 0.01. **Geodesic**: KeypointNet's benchmark metric, the expectation snapped to "
             "its nearest cloud point, geodesic distance on the cloud's 20-NN graph < 0.01. Paper: Li et al. "
             "Table 6 (its protocol does not say which distance).", "",
             "| method | " + " | ".join(f"{c} Euclidean | {c} geodesic | {c} paper | n" for c in grid.categories) + " |",
             "|---|" + "---|---|---|---|" * len(grid.categories)]
    for m in grid.methods:
        cells = []
        for c in grid.categories:
            rs = grid.seeds(c, m)
            euclid = [correct(r, "expectation", False).mean() for _, r in rs]
            geo = [correct(r, "expectation", True).mean() for _, r in rs]
            paper = PAPER_TABLE6.get(m, {}).get(c)
            cells += [mean_sd(euclid), mean_sd(geo), "–" if paper is None else f"{paper:.1f}", str(len(rs))]
            numbers["cells"].setdefault(c, {})[m] = {"euclidean": euclid, "geodesic": geo, "paper": paper,
                                                     "seeds": [meta["seed"] for meta, _ in rs]}
        lines.append(method_row(m, cells))
    missing = [f"{c}/{m}" for c in grid.categories for m in METHODS if not grid.seeds(c, m)]
    return lines + ["", f"Missing cells (not run under this protocol yet): {', '.join(missing) or 'none'}.", ""]


def readouts_table(grid: Grid, numbers: dict, plots: Path) -> list[str]:
    """PCK@0.01 of every readout, Euclidean / geodesic, mean over seeds."""
    lines = ["### Readouts: PCK@0.01 (%) by how the keypoint is read from the map (Euclidean / geodesic)", "",
             *grid.header(list(READOUTS))]
    for m in grid.methods:
        cells = []
        for c in grid.categories:
            for r in READOUTS:
                rs = grid.seeds(c, m)
                e = [correct(x, r, False).mean() for _, x in rs]
                g = [correct(x, r, True).mean() for _, x in rs]
                cells.append("–" if not rs else f"{100 * np.mean(e):.1f} / {100 * np.mean(g):.1f}")
                numbers.setdefault("readouts", {}).setdefault(c, {}).setdefault(m, {})[r] = {"euclidean": e, "geodesic": g}
        lines.append(method_row(m, cells))
    return lines + [""]


def thresholds_table(grid: Grid, numbers: dict, plots: Path) -> list[str]:
    """The expectation readout's :func:`distance_row`, Euclidean / geodesic, mean over seeds."""
    columns = [f"pck@{t:g}" for t in TABLE_THRESHOLDS] + ["mean_error", "auc"]
    titles = [f"@{t:g}" for t in TABLE_THRESHOLDS] + ["mean error ×10³", "AUC"]
    lines = [f"### Thresholds: PCK (%) at {', '.join(f'{t:g}' for t in TABLE_THRESHOLDS)}, mean error and the PCK "
             "curve's area (%, 0 to 0.1), expectation readout (Euclidean / geodesic)", "", *grid.header(titles)]
    scale = {k: 1000 if k == "mean_error" else 1 for k in columns}
    for m in grid.methods:
        cells = []
        for c in grid.categories:
            rs = grid.seeds(c, m)
            if not rs:
                cells += ["–"] * len(columns)
                continue
            values = {name: {k: float(np.mean([distance_row(r, geodesic)[k] for _, r in rs])) for k in columns}
                      for name, geodesic in (("euclidean", False), ("geodesic", True))}
            numbers.setdefault("thresholds", {}).setdefault(c, {})[m] = values
            cells += [f"{scale[k] * values['euclidean'][k]:.1f} / {scale[k] * values['geodesic'][k]:.1f}"
                      for k in columns]
        lines.append(method_row(m, cells))
    return lines + [""]


def paired_cells(grid: Grid, c: str, base: str, m: str, readout: str, threshold: float, store: dict,
                 label: str) -> list[str]:
    """``m`` − ``base`` on both distances over the seeds both have, as "d [lo, hi]" cells; the numbers go to
    ``store[c][key][f"{label}/{distance}"]``, key ``m`` against soft-argmax, else ``f"{m} - {base}"``."""
    shared = min(len(grid.seeds(c, base)), len(grid.seeds(c, m)))
    if not shared:
        return ["–", "–"]
    cells = []
    for geodesic in (False, True):
        d, lo, hi = paired_difference([x for _, x in grid.seeds(c, base)[:shared]],
                                      [x for _, x in grid.seeds(c, m)[:shared]], readout, geodesic, threshold)
        cells.append(f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}]")
        store.setdefault(c, {}).setdefault(m if base == "soft" else f"{m} - {base}", {})[
            f"{label}/{'geodesic' if geodesic else 'euclidean'}"] = [d, lo, hi, shared]
    return cells


def compared_methods(grid: Grid) -> list[str]:
    """The methods compared with the baselines: every sampler and the discrete expectation."""
    return [m for m in grid.methods if m.startswith("sampling") or m == "discrete"]


def paired_table(grid: Grid, numbers: dict, plots: Path) -> list[str]:
    """Every compared method − each baseline that was run (and :data:`PAIRED_EXTRA`), every readout, PCK@0.01."""
    pairs = [(base, m) for base in PAIRED_BASELINES if base in grid.methods for m in compared_methods(grid)]
    pairs += [(base, m) for base, m in PAIRED_EXTRA if base in grid.methods and m in grid.methods]
    if not pairs:
        return []
    lines = ["### Methods − baselines: PCK@0.01 difference (points) with a paired 95 % bootstrap CI",
             "", "Per test keypoint the correctness is averaged over the seeds both methods share; test models "
             f"are resampled with replacement ({BOOTSTRAP_DRAWS} draws). A CI above 0 means the method wins.", "",
             "| comparison | readout | " + " | ".join(f"{c} Euclidean | {c} geodesic" for c in grid.categories) + " |",
             "|---|---|" + "---|---|" * len(grid.categories)]
    for base, m in pairs:
        for r in READOUTS:
            cells = [cell for c in grid.categories
                     for cell in paired_cells(grid, c, base, m, r, THRESHOLD, numbers["paired"], r)]
            lines.append(f"| {METHOD_NAMES[m]} − {METHOD_NAMES[base]} | {r} | " + " | ".join(cells) + " |")
    return lines + [""]


def paired_thresholds_table(grid: Grid, numbers: dict, plots: Path) -> list[str]:
    """Every compared method − :data:`STRONGEST_BASELINE` at the other :data:`TABLE_THRESHOLDS`, expectation readout."""
    compared = compared_methods(grid)
    if STRONGEST_BASELINE not in grid.methods or not compared:
        return []
    others = [t for t in TABLE_THRESHOLDS if t != THRESHOLD]
    lines = [f"### Methods − {METHOD_NAMES[STRONGEST_BASELINE]} at the other thresholds: PCK difference "
             "(points), paired 95 % CI as above, expectation readout (Euclidean / geodesic)", "",
             *grid.header([f"@{t:g}" for t in others])]
    for m in compared:
        cells = [" / ".join(paired_cells(grid, c, STRONGEST_BASELINE, m, "expectation", t,
                                         numbers["paired_thresholds"], f"{t:g}"))
                 for c in grid.categories for t in others]
        lines.append(method_row(m, cells))
    return lines + [""]


def calibration_table(grid: Grid, numbers: dict, plots: Path) -> list[str]:
    """The expectation readout's :func:`calibration_row`, mean over seeds."""
    lines = ["### Calibration (expectation readout)", "",
             "peak: the map's mean max π; r peak: its Pearson correlation with correctness (the paper's Table 3 "
             "measure; r cont.: with exp(-d²/2·0.01²)). P(within): the mixture's own probability that the target lies "
             "within 0.01 of the estimate (`confidence` of `pckeypoints predict`): its mean against the actual "
             "Euclidean PCK, its ECE (10 bins), Brier score and Pearson r with correctness. Mean over seeds.", "",
             *grid.header(["peak", "r peak", "r cont.", "mean P(within)", "PCK", "ECE", "Brier", "r P(within)"])]
    for m in grid.methods:
        cells = []
        for c in grid.categories:
            rs = grid.seeds(c, m)
            if not rs:
                cells += ["–"] * 8
                continue
            rows = [calibration_row(r) for _, r in rs]
            values = {name: nan_mean([row[name] for row in rows]) for name in rows[0]}
            numbers["calibration"].setdefault(c, {})[m] = values
            cells += [f"{v:.3f}" for v in values.values()]
        lines.append(method_row(m, cells))
    return lines


def figure_lines(grid: Grid, numbers: dict, plots: Path) -> list[str]:
    """Draw the reliability diagrams and the PCK curves into ``plots``; the lines that name them."""
    figure = plot_reliability(grid.protocol, grid.runs, grid.categories, grid.methods, plots)
    lines = ["", f"Reliability diagrams: `{figure.name}`.", ""]
    curves = plot_pck_curves(grid.protocol, grid.runs, grid.categories, grid.methods, plots)
    if curves is not None:
        lines += [f"PCK against the threshold, each method − soft-argmax + JS: `{curves.name}`.", ""]
    return lines


def plot_reliability(protocol: str, runs: dict, categories: list[str], methods: list[str], out: Path) -> Path:
    """One panel per category: accuracy against the predicted P(within 0.01) in 10 bins, all seeds pooled
    (:func:`viz.plots.plot_reliability_panels`)."""
    from viz.plots import plot_reliability_panels

    panels = {f"{c} ({protocol})": {METHOD_NAMES[m]: (np.concatenate([r["within/expectation"] for _, r in rs]),
                                                      np.concatenate([correct(r, "expectation", False) for _, r in rs]))
                                    for m in methods if (rs := runs[c].get(m))} for c in categories}
    return plot_reliability_panels(panels, out / f"reliability_{protocol}.png",
                                   xlabel="predicted P(target within 0.01)")


def plot_pck_curves(protocol: str, runs: dict, categories: list[str], methods: list[str], out: Path) -> Path | None:
    """One panel per category and distance: each method's PCK − soft-argmax + JS's at thresholds 0.0025 to 0.05
    (expectation readout, seed means; :func:`viz.plots.plot_curve_grid`); ``None`` without soft-argmax + JS runs."""
    from viz.plots import plot_curve_grid

    if not any(runs[c].get("soft+js") for c in categories):
        return None
    thresholds = np.linspace(0.0025, 0.05, 20)

    def curve(c, m, geodesic):
        return 100 * np.mean([[correct(r, "expectation", geodesic, t).mean() for t in thresholds]
                              for _, r in runs[c][m]], axis=0)

    def panel(c, distance, geodesic):
        if not runs[c].get("soft+js"):
            return f"{c}, {distance} ({protocol})", {}
        baseline = curve(c, "soft+js", geodesic)
        return f"{c}, {distance} ({protocol})", {
            f"{METHOD_NAMES[m]} (n = {len(runs[c][m])})": (thresholds, curve(c, m, geodesic) - baseline)
            for m in methods if m != "soft+js" and runs[c].get(m)}

    grid = [[panel(c, distance, geodesic) for c in categories]
            for distance, geodesic in (("Euclidean", False), ("geodesic", True))]
    return plot_curve_grid(grid, out / f"pck_curves_{protocol}.png", xlabel="threshold",
                           ylabel="PCK − soft-argmax + JS (points)", reference_x=THRESHOLD)


def write_tables(results: Path) -> None:
    runs = collect(results)
    lines = ["# Evidence: supervised keypoints on KeypointNet (Table 6 protocol family)", "",
             "Generated by `python -m experiments.evidence tables` from the per-run records in `records/`; every number "
             "below is in `evidence.json`.", ""]
    numbers = {}
    for protocol in [p for p in PROTOCOLS if p in runs] + sorted(set(runs) - set(PROTOCOLS)):
        protocol_lines, numbers[protocol] = protocol_tables(protocol, runs[protocol], results)
        lines += protocol_lines
    absent = [p for p in PROTOCOLS if p not in runs]
    if absent:
        lines += [f"Protocols with no runs yet: {', '.join(f'`{p}` ({PROTOCOLS[p]})' for p in absent)}.", ""]
    per_run = {p: {c: {m: [meta for meta, _ in rs] for m, rs in cs.items()} for c, cs in ps.items()}
               for p, ps in runs.items()}
    (results / "table6.md").write_text("\n".join(lines) + "\n")
    (results / "evidence.json").write_text(json.dumps({"tables": numbers, "runs": per_run}, indent=1, default=float))
    print("\n".join(lines))


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("train", "evaluate", "tables", "all"))
    parser.add_argument("--protocol", default="cpu-full",
                        help="experiments/configs/evidence_<protocol>.toml")
    parser.add_argument("--categories", nargs="+", default=["bathtub", "bed"])
    parser.add_argument("--methods", nargs="+", default=["soft", "soft+js", "sampling30"], choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "evidence"), help="folder of the training runs")
    parser.add_argument("--results", default=str(RESULTS), help="folder of the records and tables")
    parser.add_argument("--data-root", help="KeypointNet folder (default: $PCKP_DATA or ../shared/data/keypointnet)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--epochs", type=int, help="override the protocol's epochs (smoke runs)")
    parser.add_argument("--max-models", type=int, help="first n models of each split (smoke runs)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    results = Path(args.results)
    config_file = protocol_config(args.protocol)
    if not config_file.is_file():
        raise SystemExit(f"evidence.py: no protocol config {config_file}")
    grid = [(c, m, s) for s in args.seeds for c in args.categories for m in args.methods]
    failed = []
    if args.step in ("train", "all"):
        commands = [(run_name(*job), cmd) for job in grid if (cmd := train_command(args, *job)) is not None]
        print(f"evidence.py: {len(grid) - len(commands)} of {len(grid)} runs finished, training {len(commands)}")
        failed += run_commands(commands, args.jobs, Path(args.runs) / args.protocol / "logs")
    if args.step in ("evaluate", "all"):
        todo = []
        for job in grid:
            name = run_name(*job)
            run_dir, out = Path(args.runs) / args.protocol / name, results / "records" / args.protocol / f"{name}.npz"
            if name not in failed and (run_dir / "last.pt").is_file() and not out.is_file() and train_command(args, *job) is None:
                todo.append((name, [sys.executable, "-m", "experiments.evidence", "_evaluate", str(run_dir), str(out),
                                    args.data_root or "", args.device]))
        print(f"evidence.py: evaluating {len(todo)} runs")
        failed += run_commands(todo, args.jobs, Path(args.runs) / args.protocol / "logs")
    if args.step in ("tables", "all"):
        write_tables(results)
    if failed:
        print(f"evidence.py: {len(failed)} failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_evaluate":
        evaluate_run(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] or None, sys.argv[5])
        sys.exit(0)
    sys.exit(main())
