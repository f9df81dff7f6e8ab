"""Table 7 of "Localization with Sampling-Argmax" (Li et al., NeurIPS 2021): unsupervised keypoints with a
Skeleton Merger style autoencoder on KeypointNet bathtub and bed, trained with soft-argmax or with
sampling-argmax (Ns = 1, 5, 10, 30 samples decoded per cloud), scored by the dual alignment score (DAS).

Each (category, variant) trains on the train split without labels, keeps the checkpoint with the best val
DAS, and is scored on the whole test split (DAS with its forward/backward parts, keypoint mIoU@0.1). Writes
``experiments/results/table7.{md,json}`` and a gallery of test keypoints. Finished runs are reused and
interrupted ones resumed, so the table can be built over several sessions.

    python experiments/table7.py                                    # small CPU budget (see --help)
    python experiments/table7.py --epochs 80 --width 1 --max-models 0 --threads 0   # full data (GPU)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from pckeypoints.data import collate_keypoints  # noqa: E402
from pckeypoints.training import TrainConfig  # noqa: E402
from tables import add_run_arguments, display_path, percent, run_table, save_table, train_and_evaluate  # noqa: E402

VARIANTS = ("soft", "1", "5", "10", "30")
#: The paper's Table 7 (DAS, %). Not found in the sources available to this project: "n/a".
PAPER_DAS: dict[str, dict[str, float | None]] = {v: {"bathtub": None, "bed": None} for v in VARIANTS}


def variant_name(variant: str) -> str:
    return "Soft-argmax" if variant == "soft" else f"Sampling-argmax, Ns = {variant}"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "experiments/configs/table7_unsup.toml"),
                        help="base TrainConfig TOML (category, method, num_samples, name and the flags override it)")
    parser.add_argument("--categories", nargs="+", default=["bathtub", "bed"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS,
                        help="'soft' or a number of sampling-argmax samples Ns")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the config's)")
    parser.add_argument("--width", type=float, help="backbone width (default: the config's)")
    parser.add_argument("--batch-size", type=int, help="batch size (default: the config's)")
    parser.add_argument("--lr", type=float, help="learning rate (default: the config's)")
    parser.add_argument("--max-models", type=int,
                        help="first n models of the train and val splits; 0 = all (default: the config's)")
    parser.add_argument("--device", help="cpu, cuda, auto (default: the config's)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch's default)")
    add_run_arguments(parser, "table7")
    return parser.parse_args(argv)


def run_config(args, category: str, variant: str) -> TrainConfig:
    method = "soft" if variant == "soft" else "sampling"
    overrides = {"category": category, "method": method, "name": f"{category}_{'soft' if variant == 'soft' else 'ns' + variant}",
                 "out": args.runs, "epochs": args.epochs, "width": args.width, "batch_size": args.batch_size, "lr": args.lr,
                 "max_models": args.max_models or None, "device": args.device, "data_root": args.data_root}
    if variant != "soft":
        overrides["num_samples"] = int(variant)
    config = TrainConfig.from_toml(args.config, **overrides)
    return dataclasses.replace(config, max_models=None) if args.max_models == 0 else config


def run_one(args, category: str, variant: str) -> dict:
    """Train (or resume, or reuse) one run and score its best checkpoint on the test split."""

    def evaluate(task, model, config: TrainConfig, report_dir: Path) -> dict:
        device = torch.device("cuda" if config.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
        test_set = task.dataset(dataclasses.replace(config, max_models=None), "test", train=False)  # the whole split
        loader = DataLoader(test_set, config.batch_size, collate_fn=collate_keypoints)
        return task.report(model.to(device), loader, config, report_dir)

    return train_and_evaluate(run_config(args, category, variant), args.retrain, evaluate, save_train_minutes=True)


def write_tables(results: dict, args, out: Path) -> None:
    categories = [c for c in args.categories if c in results]
    config = run_config(args, categories[0], "soft")
    subset = (f"first {config.max_models} models of the train and val splits" if config.max_models else "full splits")
    lines = ["# Table 7: unsupervised keypoints (Skeleton Merger style) on KeypointNet, DAS (%) on the test split", "",
             f"Budget: {config.epochs} epochs, backbone width {config.width}, batch {config.batch_size}, lr {config.lr}, "
             f"{config.num_keypoints} keypoints, tau {config.tau_start} -> {config.tau_end} ({config.tau_schedule}), "
             f"{subset}; checkpoint with the best val DAS, scored on the whole test split.",
             "Paper column: Li et al. (2021), Table 7 — its numbers were not found in the sources available to "
             "this project, so n/a.",
             "", "| Method | " + " | ".join(f"{c} DAS (ours) | {c} DAS (paper) | {c} fwd / bwd | {c} mIoU@0.1"
                                         for c in categories) + " |",
             "|---|" + "---|---|---|---|" * len(categories)]
    for variant in args.variants:
        cells = []
        for category in categories:
            m = results[category].get(variant)
            cells += [percent(m and m["das"]), percent(PAPER_DAS[variant][category]),
                      "n/a" if m is None else f"{percent(m['das_forward'])} / {percent(m['das_backward'])}",
                      percent(m and m["miou@0.1"])]
        lines.append(f"| {variant_name(variant)} | " + " | ".join(cells) + " |")
    minutes = {f"{c}/{v}": round(m.get("train_minutes", float("nan")), 1)
               for c in categories for v, m in results[c].items()}
    lines += ["", f"Wall time per run (minutes, training + test scoring, this session only): `{json.dumps(minutes)}`",
              f"Per-run reports (metrics, gallery of test keypoints coloured by index) under "
              f"`{display_path(args.runs)}/<category>_<variant>/eval_test/`."]
    save_table(out, "table7", lines, {"config": config.to_dict(), "paper": PAPER_DAS, "results": results},
               Path(args.runs) / f"{categories[0]}_ns30" / "eval_test" / "gallery.png")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    jobs = [(c, v) for c in args.categories for v in args.variants]
    run_table(jobs, lambda category, variant: run_one(args, category, variant),
              lambda results: write_tables(results, args, Path(args.results)), "table7 runs", "das", variant_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
