"""Table 6 of "Localization with Sampling-Argmax" (Li et al., NeurIPS 2021): supervised keypoints on
KeypointNet bathtub and bed, PCK@0.01 per training method, plus a calibration table (the paper's
Table 3 analogue: Pearson r between each keypoint's map peak max π and its correctness at 0.01).

Trains one detector per (category, method) on the official train split, keeps the checkpoint with the
best val PCK@0.01, evaluates it on test and writes ``experiments/results/table6.{md,json}``, a PCK-curve
plot per category and a gallery of test predictions. Finished runs are skipped and interrupted ones
resumed, so the table can be built over several sessions.

    python experiments/table6.py                          # small CPU budget (see --help)
    python experiments/table6.py --epochs 100 --width 1   # the paper's schedule (GPU)
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from torch.utils.data import DataLoader  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from pckeypoints.data import collate_keypoints  # noqa: E402
from pckeypoints.losses import METHODS  # noqa: E402
from pckeypoints.training import TrainConfig, load_checkpoint, resolve_checkpoint, train  # noqa: E402

#: The paper's Table 6 (PCK@0.01, %). Not found in the sources available to this project: "n/a".
PAPER_PCK: dict[str, dict[str, float | None]] = {method: {"bathtub": None, "bed": None} for method in METHODS}
METHOD_NAMES = {"soft": "Soft-argmax", "soft+var": "Soft-argmax + Var", "soft+js": "Soft-argmax + JS",
                "discrete": "Discrete expectation", "sampling": "Sampling-argmax"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "experiments/configs/table6.toml"),
                        help="base TrainConfig TOML (category, method, name and epochs/width flags override it)")
    parser.add_argument("--categories", nargs="+", default=["bathtub", "bed"])
    parser.add_argument("--methods", nargs="+", default=["sampling", "soft", "soft+var", "soft+js", "discrete"],
                        choices=METHODS, help="trained in this order (each for every category)")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the config's)")
    parser.add_argument("--width", type=float, help="backbone width (default: the config's)")
    parser.add_argument("--max-models", type=int, help="first n models of each split (smoke runs)")
    parser.add_argument("--runs", default=str(ROOT / "runs/table6"), help="folder of the training runs")
    parser.add_argument("--results", default=str(ROOT / "experiments/results"), help="folder of the tables")
    parser.add_argument("--data-root", help="KeypointNet folder (default: $PCKP_DATA or ../shared/data/keypointnet)")
    parser.add_argument("--retrain", action="store_true", help="train again even if a finished run exists")
    return parser.parse_args(argv)


def run_one(args, category: str, method: str) -> dict:
    """Train (or resume, or reuse) one run and evaluate its best checkpoint on test."""
    overrides = {"category": category, "method": method, "name": f"{category}_{method}", "out": args.runs,
                 "epochs": args.epochs, "width": args.width, "max_models": args.max_models,
                 "data_root": args.data_root}
    config = TrainConfig.from_toml(args.config, **overrides)
    run_dir = Path(args.runs) / config.run_name
    report_dir = run_dir / "eval_test"
    finished = False
    if (run_dir / "last.pt").is_file() and not args.retrain:
        _, _, saved, checkpoint = load_checkpoint(resolve_checkpoint(run_dir))
        finished = checkpoint["epoch"] >= saved.epochs
        if dict(saved.to_dict(), num_keypoints=None) != config.to_dict():
            raise ValueError(f"{run_dir} was trained with another config; pass --retrain or another --runs")
    started = time.time()
    if not finished:
        resume = run_dir if (run_dir / "last.pt").is_file() and not args.retrain else None
        train(None if resume else config, resume=resume)
    if finished and (report_dir / "metrics.json").is_file():
        return json.loads((report_dir / "metrics.json").read_text())["metrics"]
    task, model, config, _ = load_checkpoint(run_dir)
    loader = DataLoader(task.dataset(config, "test", train=False), config.batch_size, collate_fn=collate_keypoints)
    metrics = task.report(model, loader, config, report_dir)
    metrics["train_minutes"] = (time.time() - started) / 60
    return metrics


def percent(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def write_tables(results: dict, args, out: Path) -> None:
    import viz
    from pckeypoints.supervised import CURVE_THRESHOLDS

    categories = [c for c in args.categories if c in results]
    config = TrainConfig.from_toml(args.config, epochs=args.epochs, width=args.width)
    lines = ["# Table 6: supervised keypoints on KeypointNet, PCK@0.01 (%) on the test split", "",
             f"Budget: {config.epochs} epochs, backbone width {config.width}, batch {config.batch_size}, "
             f"lr {config.lr}, best val PCK@0.01 checkpoint"
             + (f", first {args.max_models} models per split" if args.max_models else "") + ".",
             "Paper column: the numbers of Li et al. (2021), Table 6 — not available to this project, so n/a.",
             "", "| Method | " + " | ".join(f"{c} (ours) | {c} (paper) | {c} geodesic (ours)" for c in categories) + " |",
             "|---|" + "---|---|---|" * len(categories)]
    for method in METHODS:
        cells = []
        for category in categories:
            m = results[category].get(method)
            cells += [percent(m and m["pck@0.01"]), percent(PAPER_PCK[method][category]),
                      percent(m and m["geo_pck@0.01"])]
        lines.append(f"| {METHOD_NAMES[method]} | " + " | ".join(cells) + " |")
    lines += ["", "# Calibration (Table 3 analogue): Pearson r between max π and correctness at 0.01", "",
              "| Method | " + " | ".join(f"{c} r | {c} mean max π" for c in categories) + " |",
              "|---|" + "---|---|" * len(categories)]
    for method in METHODS:
        cells = []
        for category in categories:
            m = results[category].get(method)
            cells += ["n/a" if m is None or math.isnan(m["calibration_r"]) else f"{m['calibration_r']:.3f}",
                      "n/a" if m is None else f"{m['mean_confidence']:.3f}"]
        lines.append(f"| {METHOD_NAMES[method]} | " + " | ".join(cells) + " |")
    lines += ["", "Figures: " + ", ".join(f"`table6_pck_{c}.png`" for c in categories)
              + ", `table6_gallery.png` (sampling-argmax, first test clouds); per-run reports under "
              f"`{Path(args.runs).relative_to(ROOT) if Path(args.runs).is_relative_to(ROOT) else args.runs}/<category>_<method>/eval_test/`."]
    out.mkdir(parents=True, exist_ok=True)
    (out / "table6.md").write_text("\n".join(lines) + "\n")
    (out / "table6.json").write_text(json.dumps({"config": config.to_dict(), "paper": PAPER_PCK,
                                                 "results": results}, indent=2))
    for category in categories:
        curves = {METHOD_NAMES[m]: (CURVE_THRESHOLDS.tolist(), [r[f"pck@{t:.2f}"] for t in CURVE_THRESHOLDS])
                  for m, r in results[category].items()}
        viz.plot_pck_curves(curves, out / f"table6_pck_{category}.png", title=f"PCK on KeypointNet {category}")
    gallery = Path(args.runs) / f"{categories[0]}_sampling" / "eval_test" / "gallery.png"
    if gallery.is_file():
        (out / "table6_gallery.png").write_bytes(gallery.read_bytes())
    print("\n".join(lines))


def main(argv=None) -> int:
    args = parse_args(argv)
    results: dict[str, dict[str, dict]] = {}
    jobs = [(c, m) for m in args.methods for c in args.categories]
    for category, method in tqdm(jobs, desc="table6 runs"):
        tqdm.write(f"== {category} / {method}")
        results.setdefault(category, {})[method] = run_one(args, category, method)
        tqdm.write(f"   test PCK@0.01 {results[category][method]['pck@0.01']:.4f}")
        write_tables(results, args, Path(args.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
