"""A few real KeypointNet models copied into a temporary dataset folder, for fast training tests."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

CLASS_IDS = {"bathtub": "02808440", "bed": "02818832"}


def shared_data_root() -> Path:
    """The shared KeypointNet folder (``$PCKP_DATA`` overrides)."""
    if os.environ.get("PCKP_DATA"):
        return Path(os.environ["PCKP_DATA"])
    return Path(__file__).resolve().parents[1].parent / "shared/data/keypointnet"


def make_subset(dest: Path, category: str = "bathtub", sizes: dict[str, int] | None = None,
                num_keypoints: int | None = None) -> Path:
    """Copy the first models of each split of ``category`` into ``dest`` (KeypointNet layout).

    ``sizes`` maps split -> number of models (default 4 train, 2 val, 2 test). With ``num_keypoints``,
    only models with exactly that many annotated keypoints are taken.
    """
    source = shared_data_root()
    if not (source / "annotations" / f"{category}.json").is_file():
        pytest.skip(f"KeypointNet data not found at {source}")
    sizes = sizes or {"train": 4, "val": 2, "test": 2}
    class_id = CLASS_IDS[category]
    entries = json.loads((source / "annotations" / f"{category}.json").read_text())
    if num_keypoints is not None:
        entries = [e for e in entries if len(e["keypoints"]) == num_keypoints]
    annotated = {e["model_id"]: e for e in entries}
    (dest / "splits").mkdir(parents=True)
    (dest / "pcds" / class_id).mkdir(parents=True)
    kept = []
    for split, size in sizes.items():
        lines = (source / "splits" / f"{split}.txt").read_text().split()
        ids = [line.split("-", 1)[1] for line in lines if line.startswith(class_id + "-")]
        ids = [model_id for model_id in ids if model_id in annotated][:size]
        if len(ids) < size:
            pytest.skip(f"not enough {category} models in {split}")
        (dest / "splits" / f"{split}.txt").write_text("".join(f"{class_id}-{m}\n" for m in ids))
        for model_id in ids:
            shutil.copy(source / "pcds" / class_id / f"{model_id}.pcd", dest / "pcds" / class_id)
        kept += ids
    (dest / "annotations").mkdir()
    (dest / "annotations" / f"{category}.json").write_text(json.dumps([annotated[m] for m in kept]))
    return dest
