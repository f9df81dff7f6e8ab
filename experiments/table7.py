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
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from pckeypoints.data import collate_keypoints  # noqa: E402
from pckeypoints.training import TrainConfig, load_checkpoint, resolve_checkpoint, train  # noqa: E402

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
    parser.add_argument("--runs", default=str(ROOT / "runs/table7"), help="folder of the training runs")
    parser.add_argument("--results", default=str(ROOT / "experiments/results"), help="folder of the tables")
    parser.add_argument("--data-root", help="KeypointNet folder (default: $PCKP_DATA or ../shared/data/keypointnet)")
    parser.add_argument("--retrain", action="store_true", help="train again even if a finished run exists")
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
    config = run_config(args, category, variant)
    run_dir = Path(args.runs) / config.run_name
    report_dir = run_dir / "eval_test"
    finished = False
    if (run_dir / "last.pt").is_file() and not args.retrain:
        _, _, saved, checkpoint = load_checkpoint(resolve_checkpoint(run_dir))
        if dict(saved.to_dict(), num_keypoints=config.num_keypoints) != config.to_dict():
            raise ValueError(f"{run_dir} was trained with another config; pass --retrain or another --runs")
        finished = checkpoint["epoch"] >= saved.epochs
    if finished and (report_dir / "metrics.json").is_file():
        return json.loads((report_dir / "metrics.json").read_text())["metrics"]
    started = time.time()
    if not finished:
        resume = run_dir if (run_dir / "last.pt").is_file() and not args.retrain else None
        train(None if resume else config, resume=resume)
    task, model, config, _ = load_checkpoint(run_dir)
    device = torch.device("cuda" if config.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    test_set = task.dataset(dataclasses.replace(config, max_models=None), "test", train=False)  # the whole split
    loader = DataLoader(test_set, config.batch_size, collate_fn=collate_keypoints)
    metrics = task.report(model.to(device), loader, config, report_dir)
    metrics["train_minutes"] = (time.time() - started) / 60
    (report_dir / "metrics.json").write_text(json.dumps({"config": config.to_dict(), "metrics": metrics}, indent=2))
    return metrics


def percent(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}"


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
              f"`{Path(args.runs).relative_to(ROOT) if Path(args.runs).is_relative_to(ROOT) else args.runs}"
              f"/<category>_<variant>/eval_test/`."]
    out.mkdir(parents=True, exist_ok=True)
    (out / "table7.md").write_text("\n".join(lines) + "\n")
    (out / "table7.json").write_text(json.dumps({"config": config.to_dict(), "paper": PAPER_DAS, "results": results},
                                                indent=2))
    gallery = Path(args.runs) / f"{categories[0]}_ns30" / "eval_test" / "gallery.png"
    if gallery.is_file():
        (out / "table7_gallery.png").write_bytes(gallery.read_bytes())
    print("\n".join(lines))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    results: dict[str, dict[str, dict]] = {}
    jobs = [(c, v) for c in args.categories for v in args.variants]
    for category, variant in tqdm(jobs, desc="table7 runs"):
        tqdm.write(f"== {category} / {variant_name(variant)}")
        results.setdefault(category, {})[variant] = run_one(args, category, variant)
        tqdm.write(f"   test DAS {results[category][variant]['das']:.4f}")
        write_tables(results, args, Path(args.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
