"""Ship a trained run as a pretrained model of the package: weights, model card, registry entry.

    python experiments/ship_pretrained.py runs/bathtub_soft+js --name bathtub \
        --protocol "Table 6's best method (soft+js), 30 epochs, width 1, on an H200" --seeds 0

writes ``pckeypoints/pretrained/<name>.pt`` (weights and config, float16 if float32 exceeds 1 MiB),
``<name>.md`` (the model card) and the ``registry.json`` entry, with the test PCK@0.01 of the shipped file
on the whole KeypointNet test split and on its first 20 models (what ``tests/test_pretrained.py`` checks).
"""
from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

from pckeypoints.checkpoint import export_model, load_checkpoint
from pckeypoints.evaluate_checkpoint import evaluate_checkpoint
from pckeypoints.pretrained import REGISTRY

#: Models of the test split behind the card's quick-check number.
FIRST = 20


def test_pck(name: str, max_models: int | None) -> tuple[float, int]:
    """(PCK@0.01, number of models) of the shipped model ``name`` on the first ``max_models`` test models."""
    result = evaluate_checkpoint(name, "test", max_models=max_models)
    return result.metrics["pck@0.01"], result.num_models


def model_card(name: str, entry: dict, config: dict) -> str:
    keys = ("loss.method", "loss.num_samples", "optim.epochs", "optim.batch_size", "optim.lr", "optim.lr_schedule",
            "model.width", "model.basis", "model.knn_k", "model.sigma", "eval.readout", "augment.rotate",
            "augment.jitter", "augment.scale_lo", "augment.scale_hi")
    value = {key: config[key.split(".")[0]][key.split(".")[1]] for key in keys}
    return "\n".join([
        f"# {name}: {entry['category']} keypoint detector",
        "",
        f"- **Protocol**: {entry['protocol']}",
        f"- **Seeds**: {entry['seeds']}",
        f"- **Test PCK@0.01** (Euclidean, `{value['eval.readout']}` readout): {100 * entry['test_pck']:.1f} % on the "
        f"{entry['test_models']} models of the "
        f"official KeypointNet test split; {100 * entry['first20_pck']:.1f} % on its first {FIRST}",
        f"- **Date**: {entry['date']}",
        f"- **File**: `{entry['file']}`, {entry['bytes'] / 2**20:.2f} MiB, {entry['dtype']} weights, "
        f"{config['model']['num_keypoints']} keypoints (semantic ids 0..{config['model']['num_keypoints'] - 1})",
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
        f"pckeypoints eval {name} --split test",
        "```",
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run folder (best.pt) or checkpoint file")
    parser.add_argument("--name", required=True, help="name of the shipped model, e.g. bathtub")
    parser.add_argument("--protocol", required=True, help="how it was trained, one line for the model card")
    parser.add_argument("--seeds", default="0", help="training seed(s), for the model card")
    args = parser.parse_args()

    folder = REGISTRY.parent
    dtype = export_model(args.run, folder / f"{args.name}.pt")
    registry = json.loads(REGISTRY.read_text())
    config = load_checkpoint(folder / f"{args.name}.pt")[2]
    entry = {"file": f"{args.name}.pt", "card": f"{args.name}.md", "category": config.data.label,
             "protocol": args.protocol, "seeds": args.seeds, "date": datetime.date.today().isoformat(),
             "bytes": (folder / f"{args.name}.pt").stat().st_size, "dtype": str(dtype).removeprefix("torch.")}
    registry[args.name] = entry  # registered first: the PCK below is measured through the name
    REGISTRY.write_text(json.dumps(registry, indent=2) + "\n")
    entry["test_pck"], entry["test_models"] = test_pck(args.name, None)
    entry["first20_pck"], _ = test_pck(args.name, FIRST)
    REGISTRY.write_text(json.dumps(registry, indent=2) + "\n")
    (folder / entry["card"]).write_text(model_card(args.name, entry, config.to_dict()))
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
