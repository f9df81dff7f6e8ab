"""Ship a trained run as a pretrained model of the package: weights, model card, registry entry.

    python -m experiments.ship_pretrained runs/bathtub_soft+js --name bathtub \
        --protocol "Table 6's best method (soft+js), 30 epochs, width 1, on an H200" --seeds 0
    python -m experiments.ship_pretrained runs/table7/bathtub_soft_s0/last.pt --name bathtub-unsup \
        --protocol "Table 7's CPU protocol, soft-argmax, the last epoch" --seeds 0

writes ``pckeypoints/pretrained/<name>.pt`` (weights and config, float16 if float32 exceeds 1 MiB),
``<name>.md`` (the model card) and the ``registry.json`` entry, with the metrics of the shipped file on the
KeypointNet test split. A supervised run: PCK@0.01 on the whole split and on its first 20 models. An unsupervised
one: the strict DAS (and on the first 20 models), the keypoint mIoU@0.1, and DAS in Skeleton Merger's protocol
(self-pairs, every annotated shape of the category). ``tests/test_pretrained.py`` checks the first-20 numbers.
"""
from __future__ import annotations

import argparse
import datetime
import json
import tempfile

import pckeypoints.pretrained as pretrained
from pckeypoints.train.checkpoint import export_model, load_checkpoint
from pckeypoints.train.evaluate_checkpoint import calibrate_checkpoint, evaluate_checkpoint

#: Models of the test split behind the card's quick-check number.
FIRST = 20


def test_metrics(name: str, mode: str) -> dict:
    """The registry entry's test metrics of the shipped model ``name``, trained in ``mode``."""
    first = evaluate_checkpoint(name, "test", max_models=FIRST).metrics
    if mode == "supervised":
        full = evaluate_checkpoint(name, "test")
        headline = full.metrics.headline
        return {"test_pck": headline.pck, "test_models": full.num_models, "first20_pck": first.headline.pck,
                "test_ece_before": headline.ece_raw, "test_ece": headline.ece}
    with tempfile.TemporaryDirectory() as report:  # the report adds Skeleton Merger's DAS (every annotated shape)
        full = evaluate_checkpoint(name, "test", out_dir=report)
    return {"test_das": full.metrics.das.das, f"test_miou@{full.metrics.miou_threshold}": full.metrics.miou,
            "test_models": full.num_models, "first20_das": first.das.das, "das_sm": full.metrics.das_sm.das,
            "das_sm_shapes": full.metrics.das_sm_shapes}


def _percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def headline(entry: dict, config: dict) -> list[str]:
    """The model card's lines of test metrics (see :func:`test_metrics`)."""
    split = f"the {entry['test_models']} models of the official KeypointNet test split"
    if config["mode"] == "supervised":
        return [f"- **Test PCK@0.01** (Euclidean, `{config['eval']['readout']}` readout): "
                f"{_percent(entry['test_pck'])} on {split}; {_percent(entry['first20_pck'])} on its first {FIRST}",
                f"- **Confidence**: the within-radius probability at the temperature T = "
                f"{entry['confidence_temperature']:.3g} fitted on the validation split (`pckeypoints calibrate`); test "
                f"ECE {entry['test_ece_before']:.3f} at T = 1 -> {entry['test_ece']:.3f}; T changes no keypoint"]
    return [
        f"- **Test DAS** (strict: pairs of distinct shapes; soft-argmax keypoints): {_percent(entry['test_das'])} on "
        f"{split}; {_percent(entry['first20_das'])} on its first {FIRST}",
        f"- **DAS (Skeleton Merger's protocol)**: {_percent(entry['das_sm'])} over the {entry['das_sm_shapes']} "
        f"annotated {entry['category']} shapes of every split, self-pairs counted",
        f"- **Test keypoint mIoU@0.1** (geodesic): {_percent(entry['test_miou@0.1'])}",
    ]


def model_card(name: str, entry: dict, config: dict) -> str:
    keys = ("loss.method", "loss.num_samples", "optim.epochs", "optim.batch_size", "optim.lr", "optim.lr_schedule",
            "model.width", "model.basis", "model.knn_k", "model.sigma", "eval.readout", "augment.rotate",
            "augment.jitter", "augment.scale_lo", "augment.scale_hi")
    value = {key: config[key.split(".")[0]][key.split(".")[1]] for key in keys}
    k = config["model"]["num_keypoints"]
    supervised = config["mode"] == "supervised"
    what = "keypoint detector" if supervised else "unsupervised keypoints (Skeleton Merger style autoencoder)"
    ids = f"semantic ids 0..{k - 1}" if supervised else f"indices 0..{k - 1}, learned without labels: no semantic names"
    return "\n".join([
        f"# {name}: {entry['category']} {what}",
        "",
        f"- **Protocol**: {entry['protocol']}",
        f"- **Seeds**: {entry['seeds']}",
        *headline(entry, config),
        f"- **Date**: {entry['date']}",
        f"- **File**: `{entry['file']}`, {entry['bytes'] / 2**20:.2f} MiB, {entry['dtype']} weights, {k} keypoints "
        f"({ids})",
        "",
        "Training configuration:",
        "",
        "| field | value |",
        "|---|---|",
        *[f"| {key} | {value[key]} |" for key in keys],
        "",
        "Use:",
        "",
        "```bash",
        f"pckeypoints predict {name} model.ply -o keypoints.json",
        f"pckeypoints viz model.ply --model {name} --png {name}.png",
        f"pckeypoints viz --category {entry['category']} --model {name} --gallery 8 --png {name}_gallery.png",
        f"pckeypoints eval {name} --split test",
        "```",
        "",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run folder (best.pt, else last.pt) or checkpoint file")
    parser.add_argument("--name", required=True, help="name of the shipped model, e.g. bathtub")
    parser.add_argument("--protocol", required=True, help="how it was trained, one line for the model card")
    parser.add_argument("--seeds", default="0", help="training seed(s), for the model card")
    args = parser.parse_args(argv)

    registry_file = pretrained.REGISTRY
    folder = registry_file.parent
    dtype = export_model(args.run, folder / f"{args.name}.pt")
    registry = json.loads(registry_file.read_text())
    config = load_checkpoint(folder / f"{args.name}.pt")[2]
    entry = {"file": f"{args.name}.pt", "card": f"{args.name}.md", "category": config.data.label,
             "protocol": args.protocol, "seeds": args.seeds, "date": datetime.date.today().isoformat(),
             "bytes": (folder / f"{args.name}.pt").stat().st_size, "dtype": str(dtype).removeprefix("torch.")}
    if config.mode == "supervised":  # the confidence's temperature, fitted on val (pckeypoints calibrate)
        entry["confidence_temperature"] = calibrate_checkpoint(folder / f"{args.name}.pt")[1].temperature
    registry[args.name] = entry  # registered first: the metrics below are measured through the name
    registry_file.write_text(json.dumps(registry, indent=2) + "\n")
    entry.update(test_metrics(args.name, config.mode))
    registry_file.write_text(json.dumps(registry, indent=2) + "\n")
    (folder / entry["card"]).write_text(model_card(args.name, entry, config.to_dict()))
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
