"""KeypointNet (You et al., CVPR 2020) as a torch ``Dataset``.

Layout under ``root``: ``annotations/<category>.json``, ``pcds/<class_id>/<model_id>.pcd`` and
``splits/{train,val,test}.txt`` (``<class_id>-<model_id>`` a line).
"""
from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from pckeypoints.choices import SPLITS
from pckeypoints.data.pcd import read_pcd
from pckeypoints.data.transforms import Normalize, keypoints_at
from pckeypoints.distributed import is_main_process
from pckeypoints.errors import ConfigError, InputError, ReadError
from pckeypoints.validation import check_cloud

__all__ = ["CATEGORIES", "KeypointClouds", "KeypointNet", "collate_keypoints", "data_root"]

#: KeypointNet category name -> ShapeNet synset id.
CATEGORIES = {
    "airplane": "02691156", "bathtub": "02808440", "bed": "02818832", "bottle": "02876657", "cap": "02954340",
    "car": "02958343", "chair": "03001627", "guitar": "03467517", "helmet": "03513137", "knife": "03624134",
    "laptop": "03642806", "motorcycle": "03790512", "mug": "03797390", "skateboard": "04225987",
    "table": "04379243", "vessel": "04530566",
}
#: Largest distance allowed between an annotated xyz and the cloud point at its ``point_index``.
_KEYPOINT_TOLERANCE = 1e-4


def data_root() -> Path:
    """KeypointNet folder: ``$PCKP_DATA`` if set, else ``<repo>/../shared/data/keypointnet``."""
    if os.environ.get("PCKP_DATA"):
        return Path(os.environ["PCKP_DATA"])
    return Path(__file__).resolve().parents[3] / "shared" / "data" / "keypointnet"


class KeypointClouds(Dataset):
    """Base of the keypoint datasets: clouds in memory, each with the point index of every semantic keypoint.

    Subclasses set ``model_ids``, ``class_id``, ``num_keypoints``, ``normalize`` and ``transform``, and
    add each cloud with :meth:`add_cloud`; items are built here (format in :class:`KeypointNet`).
    """

    def add_cloud(self, cloud: np.ndarray, semantic_ids, point_index, center: np.ndarray | None = None) -> None:
        """Append ``cloud (N, 3)`` whose keypoint ``semantic_ids[j]`` is its point ``point_index[j]``; ``center``:
        the float64 offset the cloud was moved by (its items' ``center``, else 0). The cloud's values are
        checked here, once: the training steps run without value checks."""
        check_cloud(cloud, f"the points of cloud {len(self._clouds)}")
        index = np.full(self.num_keypoints, -1, dtype=np.int64)
        index[semantic_ids] = point_index
        self._clouds.append(cloud)
        self._point_index.append(index)
        self._centers.append(torch.zeros(3) if center is None else torch.as_tensor(center, dtype=torch.float64))

    def annotated(self, indices=None) -> np.ndarray:
        """``(K,) bool``: which keypoints are annotated in at least one of the items ``indices`` (default: all)."""
        rows = [self._point_index[i] for i in (range(len(self)) if indices is None else indices)]
        return np.any(np.stack(rows) >= 0, axis=0) if rows else np.zeros(self.num_keypoints, dtype=bool)

    def __len__(self) -> int:
        return len(self.model_ids)

    def __getitem__(self, i: int) -> dict:
        points = torch.from_numpy(self._clouds[i].copy())
        point_index = torch.from_numpy(self._point_index[i].copy())
        mask = point_index >= 0
        item = {
            "points": points,
            "keypoints": keypoints_at(points, point_index, mask),
            "mask": mask,
            "point_index": point_index,
            "center": self._centers[i].clone(),
            "scale": torch.tensor(1.0),
            "model_id": self.model_ids[i],
            "class_id": self.class_id,
        }
        if self.normalize is not None:
            item = self.normalize(item)
        if self.transform is not None:
            item = self.transform(item)
        return item


class KeypointNet(KeypointClouds):
    """Point clouds of one KeypointNet category with their keypoints ordered by semantic id.

    Args:
        root: dataset folder (``None``: :func:`data_root`).
        category: name (``"bathtub"``) or ShapeNet class id (``"02808440"``).
        split: ``None`` for every annotated model, or ``"train"``, ``"val"``, ``"test"``.
        normalize: apply :class:`~pckeypoints.data.transforms.Normalize` (bounding-box centre, unit radius).
        transform: called on each item after normalisation.

    Items are dicts with ``points (N, 3) float32``, ``keypoints (K, 3) float32`` (row ``k`` = semantic id ``k``,
    0 where missing), ``mask (K,) bool``, ``point_index (K,) long`` (-1 where missing), ``center (3,)`` and
    ``scale ()`` (original coordinates = ``points * scale + center``), ``model_id`` and ``class_id``.
    ``K = num_keypoints`` = largest semantic id of the category + 1. Clouds are parsed once, when the dataset is
    built, and kept in memory (shared between datasets of the same files).

    Attributes: ``category``, ``class_id``, ``num_keypoints``, ``model_ids`` (item order) and ``symmetries`` (the
    annotation's ``symmetries`` dict of each model, ``None`` where absent, with its ``kp_indexes``, positions in the
    model's keypoint list in the file, translated to semantic ids, i.e. rows of ``keypoints``).
    """

    def __init__(self, root: str | Path | None, category: str, split: str | None = None, normalize: bool = False,
                 transform: Callable[[dict], dict] | None = None):
        self.root = Path(root) if root is not None else data_root()
        self.category, self.class_id = _resolve_category(category)
        if split is not None and split not in SPLITS:
            raise ConfigError(f"split must be None or one of {SPLITS}, got {split!r}")
        self.split = split
        self.normalize = Normalize() if normalize else None
        self.transform = transform

        annotation_file = self.root / "annotations" / f"{self.category}.json"
        models = _read_annotations(annotation_file, self.class_id)
        self.num_keypoints = 1 + int(max(max(ids) for _, ids, _, _ in models.values()))  # a Python int
        if split is not None:
            keep = _read_split(self.root / "splits" / f"{split}.txt", self.class_id)
            models = {model_id: model for model_id, model in models.items() if model_id in keep}
            if not models:
                raise ConfigError(f"split {split!r} has no annotated {self.category} models")
        self.model_ids = list(models)
        self.symmetries = [models[m][3] for m in self.model_ids]

        self._clouds, self._point_index, self._centers = [], [], []
        for model_id in tqdm(self.model_ids, desc=f"KeypointNet {self.category}", leave=False,
                             disable=not is_main_process()):  # one bar for data-parallel processes
            cloud_file = self.root / "pcds" / self.class_id / f"{model_id}.pcd"
            cloud = _load_cloud(cloud_file)
            xyz, ids, point_index, _ = models[model_id]
            _check_keypoints(cloud, xyz, point_index, cloud_file, annotation_file)
            self.add_cloud(cloud, ids, point_index)

    def __repr__(self) -> str:
        return (f"KeypointNet(category={self.category!r}, split={self.split!r}, models={len(self)}, "
                f"num_keypoints={self.num_keypoints})")


def collate_keypoints(items: Sequence[dict]) -> dict:
    """Stack items into a batch: tensors gain a leading ``B`` dimension, strings become lists.

    All clouds must have the same number of points (KeypointNet's have 2048); resample them first otherwise.
    """
    if len(items) == 0:
        raise InputError("cannot collate an empty list of items")
    sizes = sorted({tuple(item["points"].shape) for item in items})
    if len(sizes) > 1:
        raise InputError(f"cannot batch point clouds of different shapes {sizes}; resample them to a common size")
    keys = items[0].keys()
    if any(item.keys() != keys for item in items):
        raise InputError("items have different keys")
    return {key: torch.stack([item[key] for item in items]) if torch.is_tensor(items[0][key])
            else [item[key] for item in items] for key in keys}


def _resolve_category(category: str) -> tuple[str, str]:
    if category in CATEGORIES:
        return category, CATEGORIES[category]
    for name, class_id in CATEGORIES.items():
        if category == class_id:
            return name, class_id
    raise ConfigError(f"unknown KeypointNet category {category!r}; expected one of {sorted(CATEGORIES)} "
                     f"or their class ids")


def _read_annotations(path: Path, class_id: str) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, dict | None]]:
    """model_id -> (xyz (Ki, 3), semantic ids (Ki,), point indices (Ki,), symmetries)."""
    try:
        entries = json.loads(path.read_text())
    except OSError as err:
        raise ReadError(f"cannot read annotation file {path}: {err.strerror or err}") from err
    except json.JSONDecodeError as err:
        raise ReadError(f"corrupt annotation file {path}: {err}") from err
    if not isinstance(entries, list) or not entries:
        raise ReadError(f"corrupt annotation file {path}: expected a non-empty list of models")
    models = {}
    for n, entry in enumerate(entries):
        try:
            model_id = str(entry["model_id"])
            if entry["class_id"] != class_id:
                raise ReadError(f"class_id {entry['class_id']} instead of {class_id}")
            keypoints = entry["keypoints"]
            xyz = np.array([k["xyz"] for k in keypoints], dtype=np.float64).reshape(len(keypoints), 3)
            ids = np.array([k["semantic_id"] for k in keypoints], dtype=np.int64)
            point_index = np.array([k["pcd_info"]["point_index"] for k in keypoints], dtype=np.int64)
        except (KeyError, TypeError, ValueError) as err:
            raise ReadError(f"corrupt annotation file {path}: model #{n}: bad or missing entry ({err})") from err
        if len(ids) == 0:
            raise ReadError(f"corrupt annotation file {path}: model {model_id} has no keypoints")
        if ids.min() < 0 or len(np.unique(ids)) != len(ids):
            raise ReadError(f"corrupt annotation file {path}: model {model_id} has negative or repeated "
                             f"semantic ids {ids.tolist()}")
        if model_id in models:
            raise ReadError(f"corrupt annotation file {path}: model {model_id} appears twice")
        symmetries = entry.get("symmetries")
        if symmetries is not None:
            symmetries = _symmetries_by_semantic_id(symmetries, ids,
                                                    f"corrupt annotation file {path}: model {model_id}")
        models[model_id] = (xyz, ids, point_index, symmetries)
    return models


def _symmetries_by_semantic_id(symmetries: dict, ids: np.ndarray, context: str) -> dict:
    """Copy of an annotation's symmetries with ``kp_indexes`` (keypoint list positions) replaced by semantic ids."""
    try:
        return {kind: [{**group, "kp_indexes": [int(ids[i]) for i in group["kp_indexes"]]} for group in groups]
                for kind, groups in symmetries.items()}
    except (AttributeError, IndexError, KeyError, TypeError) as err:
        raise ReadError(f"{context}: bad symmetries ({err!r})") from err


def _read_split(path: Path, class_id: str) -> set[str]:
    """Model ids of ``class_id`` listed in a split file."""
    try:
        lines = path.read_text().split()
    except OSError as err:
        raise ReadError(f"cannot read split file {path}: {err.strerror or err}") from err
    return {line.split("-", 1)[1] for line in lines if line.startswith(f"{class_id}-")}


def _load_cloud(path: Path) -> np.ndarray:
    """``read_pcd`` cached across datasets (train/val/test share clouds), keyed by path, size and mtime."""
    try:
        stat = path.stat()
    except OSError as err:
        raise ReadError(f"missing point cloud {path}: {err.strerror or err}") from err
    return _read_cloud_cached(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _read_cloud_cached(path: str, size: int, mtime_ns: int) -> np.ndarray:
    cloud = read_pcd(path)
    if len(cloud) == 0:
        raise ReadError(f"point cloud {path} has no points")
    cloud.setflags(write=False)
    return cloud


def _check_keypoints(cloud: np.ndarray, xyz: np.ndarray, point_index: np.ndarray, cloud_file: Path,
                     annotation_file: Path) -> None:
    if point_index.min() < 0 or point_index.max() >= len(cloud):
        raise ReadError(f"corrupt annotation file {annotation_file}: point_index {point_index.tolist()} out of "
                         f"range for {cloud_file} with {len(cloud)} points")
    error = np.abs(cloud[point_index] - xyz).max()
    if error > _KEYPOINT_TOLERANCE:
        raise ReadError(f"annotation file {annotation_file} and {cloud_file} disagree: keypoint xyz differs from "
                         f"the cloud point at its point_index by {error:.2g}")
