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
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from torch.utils.data import DataLoader  # noqa: E402

from pckeypoints.data import collate_keypoints  # noqa: E402
from pckeypoints.losses import METHODS  # noqa: E402
from pckeypoints.training import TrainConfig  # noqa: E402
from tables import add_run_arguments, display_path, percent, run_table, save_table, train_and_evaluate  # noqa: E402

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
    add_run_arguments(parser, "table6")
    return parser.parse_args(argv)


def run_one(args, category: str, method: str) -> dict:
    """Train (or resume, or reuse) one run and evaluate its best checkpoint on test."""
    overrides = {"category": category, "method": method, "name": f"{category}_{method}", "out": args.runs,
                 "epochs": args.epochs, "width": args.width, "max_models": args.max_models,
                 "data_root": args.data_root}

    def evaluate(task, model, config: TrainConfig, report_dir: Path) -> dict:
        loader = DataLoader(task.dataset(config, "test", train=False), config.batch_size, collate_fn=collate_keypoints)
        return task.report(model, loader, config, report_dir)

    return train_and_evaluate(TrainConfig.from_toml(args.config, **overrides), args.retrain, evaluate)


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
              f"`{display_path(args.runs)}/<category>_<method>/eval_test/`."]
    save_table(out, "table6", lines, {"config": config.to_dict(), "paper": PAPER_PCK, "results": results},
               Path(args.runs) / f"{categories[0]}_sampling" / "eval_test" / "gallery.png")
    for category in categories:
        curves = {METHOD_NAMES[m]: (CURVE_THRESHOLDS.tolist(), [r[f"pck@{t:.2f}"] for t in CURVE_THRESHOLDS])
                  for m, r in results[category].items()}
        viz.plot_pck_curves(curves, out / f"table6_pck_{category}.png", title=f"PCK on KeypointNet {category}")


def main(argv=None) -> int:
    args = parse_args(argv)
    jobs = [(c, m) for m in args.methods for c in args.categories]
    run_table(jobs, lambda category, method: run_one(args, category, method),
              lambda results: write_tables(results, args, Path(args.results)), "table6 runs", "pck@0.01")
    return 0


if __name__ == "__main__":
    sys.exit(main())
