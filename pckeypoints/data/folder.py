"""Your own annotated models as a torch ``Dataset``: a folder of clouds or meshes plus one keypoint file.

Layout of ``root`` (file names inside it are free, paths are relative to ``root``)::

    my_chairs/
        keypoints.json      or keypoints.csv (exactly one of them)
        splits.json         optional: {"train": [model ids], "val": [...], "test": [...]}
        clouds/chair01.ply  clouds or meshes: .pcd .ply .obj .off .stl .xyz .npy
        ...

``keypoints.json``::

    {"keypoint_names": ["seat_front_left", "seat_front_right", ...],      (optional; id = position)
     "models": [{"file": "clouds/chair01.ply", "model_id": "chair01",     (model_id optional: file stem)
                 "keypoints": [{"semantic_id": 0, "xyz": [0.12, 0.40, -0.3]},
                               {"semantic_id": 1, "point_index": 812}]}, ...]}

``keypoints.csv``: a header line, then one keypoint a line; columns ``file, semantic_id`` and either
``x, y, z`` or ``point_index`` (an optional ``model_id`` column overrides the file stem)::

    file,semantic_id,x,y,z,point_index
    clouds/chair01.ply,0,0.12,0.40,-0.3,
    clouds/chair01.ply,1,,,,812

A keypoint is an ``xyz`` position or the ``point_index`` of a cloud point (of a mesh vertex). Without
``splits.json`` the models are split 80/10/10 (at least one model in val and test) by a seeded shuffle.

Every model becomes a cloud of ``num_points`` points whose keypoints are points of the cloud, as in KeypointNet:
an ``xyz`` keypoint of a cloud is snapped to its nearest point; a mesh is sampled uniformly on its surface and its
keypoints are added to the samples as points. Clouds with more points are subsampled, clouds with fewer are padded
with repeated points (always keeping the keypoints' points). Everything is checked when the dataset is built, on
every model of every split: a defect (missing or unreadable file, NaN, unknown semantic id or model id, duplicate
model, keypoint farther than ``tolerance`` x the model's radius from its surface) raises a
:class:`~pckeypoints.errors.ReadError` naming the file and the entry. PCK thresholds are in the files' own units.
"""
from __future__ import annotations

import csv
import functools
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pckeypoints.errors import InputError, ReadError
from pckeypoints.ops.neighbors import knn_points
from pckeypoints.choices import SPLITS
from pckeypoints.data.keypointnet import KeypointClouds
from pckeypoints.data.pcd import read_geometry
from pckeypoints.data.transforms import Normalize

__all__ = ["KeypointFolder", "KEYPOINT_FILES", "SPLIT_FILE"]

KEYPOINT_FILES = ("keypoints.json", "keypoints.csv")
SPLIT_FILE = "splits.json"
#: Fractions of the models in train and val when no splits file is given (the rest is test).
SPLIT_FRACTIONS = (0.8, 0.1)


@dataclass(frozen=True)
class _Keypoint:
    where: str  # "keypoints.json: models[3] keypoints[1]" or "keypoints.csv line 7", for errors
    semantic_id: int
    xyz: tuple[float, float, float] | None
    point_index: int | None


@dataclass(frozen=True)
class _Model:
    where: str
    model_id: str
    file: Path
    keypoints: tuple[_Keypoint, ...]


class KeypointFolder(KeypointClouds):
    """Annotated clouds or meshes of one folder (format in the module docstring), items as :class:`KeypointNet`'s.

    Args:
        root: the folder.
        split: ``None`` for every model, or ``"train"``, ``"val"``, ``"test"``.
        normalize: apply :class:`~pckeypoints.data.transforms.Normalize` (bounding-box centre, unit radius).
        transform: called on each item after normalisation.
        num_points: points of every item's cloud (``N``).
        seed: seed of the split (without ``splits.json``), of mesh sampling and of resampling clouds.
        tolerance: largest distance of a keypoint from its model's surface (nearest cloud point, or mesh
            triangle), as a fraction of the model's radius (bounding-box centre to farthest point).
        min_points: fewest points a cloud file may hold (a model's ``knn_k + 1``).

    Items are dicts with ``points (N, 3) float32``, ``keypoints (K, 3) float32`` (row ``k`` = semantic id
    ``semantic_ids[k]``, 0 where missing), ``mask (K,) bool``, ``point_index (K,) long`` (-1 where missing),
    ``center (3,) float64``, ``scale ()``, ``model_id`` and ``class_id`` (the folder's name). Files are read in
    float64 and centred (bounding box) before the float32 points, so clouds far from the origin keep their
    precision (``points * scale + center`` is the file's coordinates). Attributes: ``category`` (the folder's
    name), ``semantic_ids`` (the annotated ids, sorted: ids need not be 0..K-1), ``num_keypoints`` (their
    number), ``keypoint_names`` (of ``semantic_ids``, or ``None``), ``model_ids`` and ``files`` (item order).
    """

    def __init__(self, root: str | Path, split: str | None = None, normalize: bool = False,
                 transform: Callable[[dict], dict] | None = None, num_points: int = 2048, seed: int = 0,
                 tolerance: float = 0.02, min_points: int = 1):
        self.root = Path(root)
        if split is not None and split not in SPLITS:
            raise InputError(f"split must be None or one of {SPLITS}, got {split!r}")
        if num_points < 1 or min_points < 1:
            raise InputError(f"num_points and min_points must be >= 1, got {num_points}, {min_points}")
        self.split, self.num_points, self.seed, self.tolerance = split, num_points, seed, tolerance
        self.normalize = Normalize() if normalize else None
        self.transform = transform
        self.category = self.class_id = self.root.resolve().name

        models, names = _read_keypoint_file(self.root)
        self.semantic_ids = sorted({k.semantic_id for m in models for k in m.keypoints})
        self.num_keypoints = len(self.semantic_ids)
        self.keypoint_names = [names[i] for i in self.semantic_ids] if names else None
        row = {semantic_id: k for k, semantic_id in enumerate(self.semantic_ids)}
        splits = _read_splits(self.root, [m.model_id for m in models], seed)
        clouds = {m.model_id: _model_cloud(m, num_points, seed, tolerance, min_points)
                  for m in models}  # checks every model
        chosen = models if split is None else [m for m in models if m.model_id in splits[split]]
        if not chosen and len(models) < 3 and not (self.root / SPLIT_FILE).is_file():
            raise ReadError(f"{self.root}: {len(models)} model(s) cannot be split into train, val and test; add "
                            f"models (3 at least) or a {SPLIT_FILE}")
        if not chosen:
            raise ReadError(f"{self.root}: split {split!r} has no models")
        self.model_ids = [m.model_id for m in chosen]
        self.files = [m.file for m in chosen]
        self._clouds, self._point_index, self._centers = [], [], []
        for model in chosen:
            cloud, point_index, center = clouds[model.model_id]
            self.add_cloud(cloud, [row[k.semantic_id] for k in model.keypoints], point_index, center)

    def __repr__(self) -> str:
        return (f"KeypointFolder(root={str(self.root)!r}, split={self.split!r}, models={len(self)}, "
                f"num_keypoints={self.num_keypoints})")


# ---------------------------------------------------------------------------------------------- keypoint files
def _read_keypoint_file(root: Path) -> tuple[list[_Model], list[str] | None]:
    """The models of ``root``'s keypoint file, checked for structure, ids and duplicates (not yet geometry)."""
    if not root.is_dir():
        raise ReadError(f"dataset folder {root} does not exist")
    present = [root / name for name in KEYPOINT_FILES if (root / name).is_file()]
    if len(present) != 1:
        raise ReadError(f"dataset folder {root} needs exactly one of {' or '.join(KEYPOINT_FILES)}, "
                        f"found {len(present)}")
    path = present[0]
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (spreadsheet exports) is no error
    except (OSError, UnicodeDecodeError) as err:
        raise ReadError(f"cannot read {path}: {err}") from err
    names = None
    if path.suffix == ".json":
        try:
            document = json.loads(text)
        except json.JSONDecodeError as err:
            raise ReadError(f"{path} is not valid JSON: {err}") from err
        if not isinstance(document, dict) or not isinstance(document.get("models"), list):
            raise ReadError(f'{path}: expected an object with a "models" list')
        names = document.get("keypoint_names")
        if names is not None and not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
            raise ReadError(f"{path}: keypoint_names must be a non-empty list of strings")
        models = [_json_model(entry, f"{path}: models[{n}]", root) for n, entry in enumerate(document["models"])]
    else:
        models = _csv_models(text, path, root)
    if not models:
        raise ReadError(f"{path} lists no models")
    seen: dict[str, str] = {}
    for model in models:
        for key, shown in ((model.model_id, model.model_id), (str(model.file.resolve()), str(model.file))):
            if key in seen:  # files by their real path: clouds/../clouds/a.pcd and links are a.pcd
                raise ReadError(f"{model.where}: duplicate model {shown!r} (also {seen[key]})")
            seen[key] = model.where
        ids = [k.semantic_id for k in model.keypoints]
        for k in model.keypoints:
            if names is not None and k.semantic_id >= len(names):
                raise ReadError(f"{k.where}: unknown semantic_id {k.semantic_id}; keypoint_names has "
                                f"ids 0..{len(names) - 1}")
            if ids.count(k.semantic_id) > 1:
                raise ReadError(f"{k.where}: semantic_id {k.semantic_id} appears twice in model {model.model_id!r}")
    return models, names


def _json_model(entry, where: str, root: Path) -> _Model:
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
        raise ReadError(f'{where}: expected an object with a "file" path and a "keypoints" list')
    keypoints = entry.get("keypoints")
    if not isinstance(keypoints, list) or not keypoints:
        raise ReadError(f"{where} ({entry['file']}): keypoints must be a non-empty list")
    parsed = []
    for n, k in enumerate(keypoints):
        if not isinstance(k, dict):
            raise ReadError(f"{where} keypoints[{n}]: expected an object with semantic_id and xyz or point_index")
        parsed.append(_keypoint(f"{where} keypoints[{n}]", k.get("semantic_id"), k.get("xyz"), k.get("point_index")))
    return _Model(where, str(entry.get("model_id") or Path(entry["file"]).stem), root / entry["file"], tuple(parsed))


def _csv_models(text: str, path: Path, root: Path) -> list[_Model]:
    rows = csv.DictReader(text.splitlines(), skipinitialspace=True)
    columns = set(rows.fieldnames or ())
    partial = sorted({"x", "y", "z"} & columns)
    if partial and len(partial) < 3 and "point_index" not in columns:
        raise ReadError(f"{path}: the header has {', '.join(partial)} but not {', '.join(sorted({'x', 'y', 'z'} - columns))}"
                        f"; give x, y and z, or point_index")
    if not {"file", "semantic_id"} <= columns or not ({"x", "y", "z"} <= columns or "point_index" in columns):
        raise ReadError(f"{path}: the header must name file, semantic_id and x, y, z or point_index; "
                        f"got {sorted(columns)}")
    models: dict[str, list] = {}
    for line, row in enumerate(rows, start=2):
        where = f"{path} line {line}"
        if None in row or None in row.values():
            raise ReadError(f"{where}: expected {len(rows.fieldnames)} comma-separated values")
        xyz = [row[c] for c in "xyz"] if {"x", "y", "z"} <= columns and any(row[c].strip() for c in "xyz") else None
        index = row["point_index"] if "point_index" in columns and row["point_index"].strip() else None
        model_id = row.get("model_id") or Path(row["file"]).stem
        models.setdefault(row["file"], [where, model_id, []])[2].append(
            _keypoint(where, row["semantic_id"], xyz, index))
    return [_Model(where, model_id, root / file, tuple(keypoints)) for file, (where, model_id, keypoints) in models.items()]


def _keypoint(where: str, semantic_id, xyz, point_index) -> _Keypoint:
    """One keypoint, with its numbers parsed (from JSON values or CSV strings) and checked."""
    try:
        semantic_id = _integer(semantic_id)
    except (TypeError, ValueError):
        raise ReadError(f"{where}: semantic_id must be a non-negative integer, got {semantic_id!r}") from None
    if semantic_id < 0:
        raise ReadError(f"{where}: semantic_id must be a non-negative integer, got {semantic_id}")
    if (xyz is None) == (point_index is None):
        raise ReadError(f"{where}: give either xyz or point_index")
    if xyz is not None:
        if not isinstance(xyz, (list, tuple)):  # a string of digits is not three numbers
            raise ReadError(f"{where}: xyz must be three numbers, got {xyz!r}")
        try:
            xyz = tuple(float(v) for v in xyz)
        except (TypeError, ValueError):
            raise ReadError(f"{where}: xyz must be three numbers, got {xyz!r}") from None
        if len(xyz) != 3:
            raise ReadError(f"{where}: xyz must be three numbers, got {list(xyz)}")
        if not np.isfinite(xyz).all():
            raise ReadError(f"{where}: xyz {list(xyz)} is not finite")
        return _Keypoint(where, semantic_id, xyz, None)
    try:
        point_index = _integer(point_index)
    except (TypeError, ValueError):
        raise ReadError(f"{where}: point_index must be an integer, got {point_index!r}") from None
    return _Keypoint(where, semantic_id, None, point_index)


def _integer(value) -> int:
    if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
    return int(value.strip()) if isinstance(value, str) else int(value)


def _read_splits(root: Path, model_ids: list[str], seed: int) -> dict[str, set[str]]:
    """split -> model ids: from ``splits.json`` (checked) or a seeded 80/10/10 shuffle of ``model_ids``."""
    path = root / SPLIT_FILE
    if not path.is_file():
        order = np.random.default_rng(seed).permutation(sorted(model_ids)).tolist()
        num_val = max(1, round(SPLIT_FRACTIONS[1] * len(order))) if len(order) >= 3 else 0
        num_train = min(round(SPLIT_FRACTIONS[0] * len(order)), len(order) - 2 * num_val)
        return {"train": set(order[:num_train]), "val": set(order[num_train:num_train + num_val]),
                "test": set(order[num_train + num_val:])}
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReadError(f"cannot read {path}: {err}") from err
    if not isinstance(document, dict) or set(document) - set(SPLITS) or not all(
            isinstance(ids, list) for ids in document.values()):
        raise ReadError(f"{path}: expected an object mapping {', '.join(SPLITS)} to lists of model ids")
    known, owner = set(model_ids), {}
    for split, ids in document.items():
        for model_id in ids:
            if model_id not in known:
                raise ReadError(f"{path}: {split} lists unknown model id {model_id!r}")
            if model_id in owner:
                raise ReadError(f"{path}: model {model_id!r} is in both {owner[model_id]} and {split}")
            owner[model_id] = split
    return {split: set(document.get(split, ())) for split in SPLITS}


# ---------------------------------------------------------------------------------------------- geometry
def _model_cloud(model: _Model, num_points: int, seed: int, tolerance: float,
                 min_points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(cloud (num_points, 3) float32 centred, point index of each keypoint, centre (3,) float64)`` of one
    model, cached by file version."""
    try:
        stat = model.file.stat()
    except OSError as err:
        raise ReadError(f"{model.where}: model file {model.file} is missing ({err.strerror or err})") from err
    return _model_cloud_cached(model, stat.st_size, stat.st_mtime_ns, num_points, seed, tolerance, min_points)


@functools.lru_cache(maxsize=4096)
def _model_cloud_cached(model: _Model, size: int, mtime_ns: int, num_points: int, seed: int, tolerance: float,
                        min_points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        vertices, faces = read_geometry(model.file, dtype=np.float64)
    except ReadError as err:
        raise ReadError(f"{model.where}: {err}") from None
    _check_geometry(vertices, faces, min_points, model)
    center = (vertices.min(0) + vertices.max(0)) / 2
    radius = np.linalg.norm(vertices - center, axis=1).max()
    xyz = np.empty((len(model.keypoints), 3))
    for row, k in enumerate(model.keypoints):
        if k.xyz is None and not 0 <= k.point_index < len(vertices):
            raise ReadError(f"{k.where}: point_index {k.point_index} is out of range for {model.file} with "
                            f"{len(vertices)} {'vertices' if faces is not None else 'points'}")
        xyz[row] = vertices[k.point_index] if k.xyz is None else k.xyz
    for k, p, d in zip(model.keypoints, xyz, _distance_to_surface(xyz, vertices, faces)):
        if d > tolerance * radius:
            raise ReadError(f"{k.where}: keypoint {p.tolist()} is {d:.3g} from the surface of {model.file} "
                            f"(tolerance {tolerance:g} x radius {radius:.3g})")
    rng = np.random.default_rng([seed, zlib.crc32(model.model_id.encode())])
    if faces is not None:  # surface samples plus the keypoints themselves
        import trimesh

        num_samples = num_points - len(xyz)
        if num_samples < 1:
            raise ReadError(f"{model.where}: {len(xyz)} keypoints leave no room among num_points={num_points}")
        samples, _ = trimesh.sample.sample_surface(trimesh.Trimesh(vertices, faces, process=False), num_samples,
                                                   seed=int(rng.integers(2**31)))
        cloud, point_index = np.concatenate([samples, xyz]), np.arange(num_samples, num_points)
    else:
        nearest = knn_points(torch.from_numpy(xyz)[None], torch.from_numpy(vertices)[None], 1).index[0, :, 0].numpy()
        cloud, point_index = _resample(vertices, nearest, num_points, rng, model.where)
    order = rng.permutation(num_points)  # no fixed positions for keypoints
    cloud = (cloud[order] - center).astype(np.float32)  # centred in float64: no precision lost far from 0
    cloud.setflags(write=False)
    return cloud, np.argsort(order)[point_index], center


def _check_geometry(vertices: np.ndarray, faces: np.ndarray | None, min_points: int, model: _Model) -> None:
    """The checks ``predict`` makes of its input: enough points, not all at one place, a mesh with an area."""
    if faces is None and len(vertices) < min_points:
        raise ReadError(f"{model.where}: {model.file} has {len(vertices)} points; the model needs at least "
                        f"{min_points} (knn_k + 1)")
    if not np.ptp(vertices, axis=0).any():
        raise ReadError(f"{model.where}: all points of {model.file} coincide")
    if faces is not None:
        import trimesh

        with np.errstate(over="ignore", invalid="ignore"):
            area = trimesh.Trimesh(vertices, faces, process=False).area
        if not (np.isfinite(area) and area > 0):
            raise ReadError(f"{model.where}: cannot sample the surface of {model.file} (total area {area})")


def _distance_to_surface(xyz: np.ndarray, vertices: np.ndarray, faces: np.ndarray | None) -> np.ndarray:
    """``(K,)`` distance of each keypoint to the nearest cloud point, or to the nearest triangle of a mesh."""
    if faces is None:
        return np.array([np.linalg.norm(vertices - p, axis=1).min() for p in xyz])
    from trimesh.triangles import closest_point

    triangles = vertices[faces]
    return np.array([np.linalg.norm(closest_point(triangles, np.broadcast_to(p, (len(faces), 3))) - p, axis=1).min()
                     for p in xyz])


def _resample(points: np.ndarray, keep: np.ndarray, num_points: int, rng: np.random.Generator,
              where: str) -> tuple[np.ndarray, np.ndarray]:
    """``num_points`` of ``points (M, 3)`` always including ``points[keep]``: a random subset when
    ``M >= num_points``, else all of them plus random repeats. Returns the cloud and ``keep``'s new indices."""
    kept = np.unique(keep)
    if len(kept) > num_points:
        raise ReadError(f"{where}: {len(kept)} keypoints do not fit in num_points={num_points}")
    if len(points) >= num_points:
        others = np.setdiff1d(np.arange(len(points)), kept)
        chosen = np.concatenate([kept, rng.choice(others, num_points - len(kept), replace=False)])
    else:
        chosen = np.concatenate([np.arange(len(points)), rng.choice(len(points), num_points - len(points))])
    first_row = {int(index): row for row, index in reversed(list(enumerate(chosen)))}
    return points[chosen], np.array([first_row[int(i)] for i in keep], dtype=np.int64)
