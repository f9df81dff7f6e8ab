"""Fuzzing the readers: every mutated PCD / PLY / OBJ / keypoint JSON / TOML config / checkpoint file, and every
own-data folder with one mutated file (keypoints.json or .csv, splits.json, a cloud or mesh), either loads
(finite points, valid config, a model, items whose keypoints are cloud points) or raises the project's own error
naming the file; never another exception, never a hang (issues 11, 21).

Each reader gets ``EXAMPLES`` inputs: a valid seed file mutated by 1-4 stacked edits (byte flips, inserted or
deleted runs, duplicated or cut ranges, a number swapped for an extreme value), drawn by hypothesis with a
fixed seed (``derandomize``), so a run is reproducible and a failure shrinks to a small example.
"""
from __future__ import annotations

import functools
import io
import json
import re
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from box_folder import seamed_meshes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pckeypoints.train.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from pckeypoints.config import TrainConfig
from pckeypoints.data import KeypointFolder, read_points
from pckeypoints.data import folder as folder_module
from pckeypoints.errors import PCKeypointsError
from pckeypoints.train.exported import export_program, load_program
from pckeypoints.train.tasks import get_task
from viz.cli import read_keypoints_json

EXAMPLES = 1000
#: seconds one read may take before it counts as a hang
HANG = 10
EXTREMES = [b"0", b"-1", b"1", b"3", b"65536", b"2147483648", b"-2147483649", b"18446744073709551616",
            b"1e308", b"-1e308", b"nan", b"inf", b"", b"x", b"0.5", b"99999999999"]

# ---------------------------------------------------------------------------------------------- mutations
_NUMBER = re.compile(rb"-?\d+(\.\d+)?(e-?\d+)?")


def mutate(data: bytes, edits: list[tuple[int, int, int, bytes]]) -> bytes:
    """Apply ``edits`` ``(kind, position, length, bytes)`` in order; positions wrap around the data."""
    data = bytearray(data)
    for kind, position, length, payload in edits:
        at = position % (len(data) + 1)
        if kind == 0:  # flip bits of one byte
            if data:
                data[at % len(data)] ^= 1 + position % 255
        elif kind == 1:  # insert bytes
            data[at:at] = payload
        elif kind == 2:  # delete a run
            del data[at:at + length]
        elif kind == 3:  # duplicate a run
            data[at:at] = data[at:at + length]
        elif kind == 4:  # truncate
            del data[at:]
        elif kind == 5:  # replace the n-th number by an extreme value
            numbers = list(_NUMBER.finditer(bytes(data)))
            if numbers:
                match = numbers[position % len(numbers)]
                data[match.start():match.end()] = EXTREMES[length % len(EXTREMES)]
        else:  # overwrite bytes
            data[at:at + len(payload)] = payload
    return bytes(data)


EDITS = st.lists(st.tuples(st.integers(0, 6), st.integers(0, 2**20), st.integers(0, 64), st.binary(max_size=8)),
                 min_size=1, max_size=4)
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))


class _Hang(Exception):
    pass


def check_reader(path: Path, data: bytes, read, loaded, names: str | None = None) -> None:
    """Write ``data`` to ``path``, read it: ``loaded(result)`` must hold, or the error is a PCKeypointsError
    naming the file (or ``names``: e.g. the folder it is in); a read over :data:`HANG` seconds fails."""
    path.write_bytes(data)

    def hang(*_):
        raise _Hang(f"reading {path} took over {HANG} s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(HANG)
    try:
        result = read(path)
    except PCKeypointsError as err:
        assert (names or str(path)) in str(err), f"error does not name the file: {err}"
        assert "\n" not in str(err).strip(), f"error is not one line: {err!r}"
        return
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    loaded(result)


def finite_points(points) -> None:
    assert isinstance(points, np.ndarray) and points.ndim == 2 and points.shape[1] == 3 and len(points) > 0
    assert np.isfinite(points).all()


# ---------------------------------------------------------------------------------------------- seeds
def _cloud(n: int = 40) -> np.ndarray:
    return np.random.default_rng(0).uniform(-0.5, 0.5, (n, 3)).astype(np.float32)


def _pcd_header(n: int, fields: str, sizes: str, types: str, data: str) -> bytes:
    return (f"# .PCD v0.7\nVERSION 0.7\nFIELDS {fields}\nSIZE {sizes}\nTYPE {types}\nCOUNT {' '.join('1' * len(fields.split()))}\n"
            f"WIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA {data}\n").encode()


def pcd_seeds() -> list[bytes]:
    points = _cloud()
    ascii_pcd = _pcd_header(len(points), "x y z rgb", "4 4 4 4", "F F F U", "ascii") + "".join(
        f"{x:.5f} {y:.5f} {z:.5f} {i * 4099}\n" for i, (x, y, z) in enumerate(points)).encode()
    binary_pcd = _pcd_header(len(points), "x y z", "4 4 4", "F F F", "binary") + points.tobytes()
    return [ascii_pcd, binary_pcd]


def mesh_seed(suffix: str) -> bytes:
    mesh = trimesh.creation.box(extents=(0.8, 0.3, 0.4))
    return mesh.export(file_type=suffix.lstrip("."), **({"encoding": "ascii"} if suffix == ".ply" else {})).encode() \
        if suffix != ".ply" else mesh.export(file_type="ply", encoding="ascii")


def ply_seeds() -> list[bytes]:
    cloud = trimesh.PointCloud(_cloud()).export(file_type="ply", encoding="ascii")
    binary = trimesh.creation.box(extents=(0.8, 0.3, 0.4)).export(file_type="ply", encoding="binary")
    return [mesh_seed(".ply"), cloud, binary, SEAMED["seamed_ply.ply"][0]]


# ---------------------------------------------------------------------------------------------- readers
@given(seed=st.integers(0, 1), edits=EDITS)
@FUZZ
def test_fuzz_pcd(tmp_path_factory, seed, edits):
    path = _scratch(tmp_path_factory) / "cloud.pcd"
    check_reader(path, mutate(PCD_SEEDS[seed], edits), lambda p: read_points(p, dtype=np.float64), finite_points)


@given(seed=st.integers(0, 3), edits=EDITS)
@FUZZ
def test_fuzz_ply(tmp_path_factory, seed, edits):
    path = _scratch(tmp_path_factory) / "shape.ply"
    check_reader(path, mutate(PLY_SEEDS[seed], edits), lambda p: read_points(p, num_points=64), finite_points)


@given(seed=st.integers(0, 1), edits=EDITS)
@FUZZ
def test_fuzz_obj(tmp_path_factory, seed, edits):
    path = _scratch(tmp_path_factory) / "shape.obj"
    check_reader(path, mutate((OBJ_SEED, SEAMED["seamed.obj"][0])[seed], edits), lambda p: read_points(p, num_points=64),
                 finite_points)


@given(edits=EDITS)
@FUZZ
def test_fuzz_keypoint_json(tmp_path_factory, edits):
    def loaded(result):
        keypoints, ids = result
        assert keypoints.shape == (len(ids), 3) and np.isfinite(keypoints).all() and ids.dtype == np.int64

    path = _scratch(tmp_path_factory) / "keypoints.json"
    check_reader(path, mutate(JSON_SEED, edits), lambda p: read_keypoints_json(str(p)), loaded)


@given(edits=EDITS)
@FUZZ
def test_fuzz_toml_config(tmp_path_factory, edits):
    path = _scratch(tmp_path_factory) / "config.toml"
    check_reader(path, mutate(TOML_SEED, edits), TrainConfig.from_toml, lambda c: isinstance(c, TrainConfig))


@given(edits=EDITS)
@FUZZ
def test_fuzz_checkpoint(tmp_path_factory, edits):
    def loaded(result):
        _, model, config, _ = result
        assert isinstance(config, TrainConfig) and isinstance(model, torch.nn.Module)

    path = _scratch(tmp_path_factory) / "model.pt"
    check_reader(path, mutate(CHECKPOINT_SEED, edits), load_checkpoint, loaded)


@given(edits=EDITS)
@settings(FUZZ, max_examples=EXAMPLES // 10)  # each valid load deserialises a whole graph
def test_fuzz_program(tmp_path_factory, edits):
    """A mutated ``.pt2`` program loads, or is refused with one line naming it (never unpickled: issue 31 H3)."""
    def loaded(result):
        _, detector, config = result
        assert isinstance(config, TrainConfig) and isinstance(detector, torch.nn.Module)

    path = _scratch(tmp_path_factory) / "model.pt2"
    check_reader(path, mutate(_program_seed(), edits), load_program, loaded)


@given(seed=st.integers(0, 1), target=st.integers(0, 7), split=st.sampled_from([None, "train", "val", "test"]),
       edits=EDITS)
@FUZZ
def test_fuzz_keypoint_folder(tmp_path_factory, seed, target, split, edits):
    """One file of an own-data folder (JSON with splits.json, or CSV with the seeded split) mutated."""
    def loaded(dataset):
        for i in range(len(dataset)):
            item = dataset[i]
            assert item["points"].shape == (64, 3) and torch.isfinite(item["points"]).all()
            mask = item["mask"]
            assert torch.equal(item["points"][item["point_index"][mask]], item["keypoints"][mask])

    root = _scratch(tmp_path_factory) / f"folder{seed}"
    files = FOLDER_SEEDS[seed]
    if not root.is_dir():
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
    name = sorted(files)[target % len(files)]
    folder_module._model_cloud_cached.cache_clear()  # a rewrite within the clock's resolution keeps size and mtime
    try:
        check_reader(root / name, mutate(files[name], edits), lambda _: KeypointFolder(root, split, num_points=64),
                     loaded, names=str(root))
    finally:
        (root / name).write_bytes(files[name])


def folder_seeds() -> list[dict[str, bytes]]:
    """Two own-data folders of a cloud (.xyz), a cloud (.pcd), a mesh (.obj), a mesh (.ply) and meshes with
    texture seams (.obj, .ply) with sparse semantic ids: annotated in keypoints.json with a splits.json, and in
    keypoints.csv (seeded split)."""
    points = _cloud().astype(np.float64)
    box = trimesh.creation.box(extents=(0.8, 0.3, 0.4))
    vertices = np.asarray(box.vertices)
    files = {"clouds/a.xyz": "".join(f"{x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in points).encode(),
             "clouds/b.pcd": PCD_SEEDS[0], "clouds/c.obj": OBJ_SEED, "clouds/d.ply": PLY_SEEDS[0],
             "clouds/e.obj": SEAMED["seamed.obj"][0], "clouds/f.ply": SEAMED["seamed_ply.ply"][0]}
    b = read_points_of(files["clouds/b.pcd"])
    models = [
        {"file": "clouds/a.xyz", "keypoints": [{"semantic_id": 0, "xyz": points[3].round(6).tolist()},
                                               {"semantic_id": 1, "point_index": 7}]},
        {"file": "clouds/b.pcd", "model_id": "bee", "keypoints": [{"semantic_id": 0, "point_index": 5},
                                                                  {"semantic_id": 5, "xyz": b[9].tolist()}]},
        {"file": "clouds/c.obj", "keypoints": [{"semantic_id": 1, "xyz": vertices[0].tolist()},
                                               {"semantic_id": 5, "point_index": 3}]},
        {"file": "clouds/d.ply", "keypoints": [{"semantic_id": 0, "point_index": 1},
                                               {"semantic_id": 5, "xyz": vertices[6].tolist()}]},
        *({"file": f"clouds/{name}", "keypoints": [{"semantic_id": 1, "point_index": 3},
                                                    {"semantic_id": 5, "point_index": 8}]} for name in ("e.obj", "f.ply")),
    ]
    rows = ["file,semantic_id,x,y,z,point_index,model_id"]
    for model in models:
        for k in model["keypoints"]:
            rows.append(",".join([model["file"], str(k["semantic_id"]), *map(str, k.get("xyz", ["", "", ""])),
                                  str(k.get("point_index", "")), model.get("model_id", "")]))
    return [{**files, "keypoints.json": json.dumps({"models": models}).encode(),
             "splits.json": json.dumps({"train": ["a", "bee", "e"], "val": ["c"], "test": ["d", "f"]}).encode()},
            {**files, "keypoints.csv": ("\n".join(rows) + "\n").encode()}]


def read_points_of(data: bytes) -> np.ndarray:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "seed.pcd").write_bytes(data)
        return read_points(Path(folder) / "seed.pcd", dtype=np.float64)


def _scratch(factory) -> Path:
    global _SCRATCH
    if _SCRATCH is None:
        _SCRATCH = factory.mktemp("fuzz")
    return _SCRATCH


@functools.cache
def _program_seed() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "a.pt").write_bytes(CHECKPOINT_SEED)
        return export_program(Path(folder) / "a.pt", Path(folder) / "a.pt2", max_points=64).read_bytes()


def _checkpoint_seed() -> bytes:
    config = TrainConfig.from_fields(num_keypoints=2, width=0.25, hidden_channels=8, epochs=1)
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save({"model": get_task("supervised").build_model(config).state_dict(), "config": config.to_dict(),
                "epoch": 1, "format": "pckeypoints", "format_version": FORMAT_VERSION}, buffer)
    return buffer.getvalue()


_SCRATCH = None
SEAMED = seamed_meshes()
PCD_SEEDS = pcd_seeds()
PLY_SEEDS = ply_seeds()
OBJ_SEED = mesh_seed(".obj")
JSON_SEED = b'{"keypoints": [[0.1, -0.2, 0.3], [0.4, 0.5, -0.6]], "semantic_ids": [0, 3], "confidence": [0.5, 0.25]}'
TOML_SEED = (b'mode = "supervised"\n[loss]\nmethod = "sampling"\nnum_samples = 10\ntarget_sigma = 0.02\n'
             b'[model]\nbasis = "fixed"\nsigma = 0.01\n[optim]\nepochs = 12\nbatch_size = 16\nlr = 5e-3\n'
             b'[augment]\nscale_lo = 0.9\nscale_hi = 1.1\n[data]\ncategory = "bathtub"\nmax_models = 8\n'
             b'[run]\nname = "bathtub_small"\ndevice = "cpu"\n')
CHECKPOINT_SEED = _checkpoint_seed()
FOLDER_SEEDS = folder_seeds()


def test_mutations_change_the_seeds():
    """The generator does edit: distinct outputs, some bigger, some smaller (guards against a no-op fuzzer)."""
    edits = [[(1, 5, 0, b"xy")], [(2, 5, 3, b"")], [(5, 0, 6, b"")], [(4, 10, 0, b"")], [(0, 3, 0, b"")]]
    outputs = {mutate(TOML_SEED, e) for e in edits}
    assert len(outputs) == len(edits) and TOML_SEED not in outputs
    assert mutate(TOML_SEED, [(5, 0, 9, b"")]).startswith(b'mode = "supervised"')  # numbers only
    assert b"num_samples = 1e308" in mutate(TOML_SEED, [(5, 0, 8, b"")])


def test_the_seeds_load(tmp_path):
    for i, data in enumerate(PCD_SEEDS):
        (tmp_path / f"{i}.pcd").write_bytes(data)
        finite_points(read_points(tmp_path / f"{i}.pcd"))
    for i, data in enumerate(PLY_SEEDS):
        (tmp_path / f"{i}.ply").write_bytes(data)
        finite_points(read_points(tmp_path / f"{i}.ply"))
    (tmp_path / "a.obj").write_bytes(OBJ_SEED)
    (tmp_path / "a.json").write_bytes(JSON_SEED)
    (tmp_path / "a.toml").write_bytes(TOML_SEED)
    (tmp_path / "a.pt").write_bytes(CHECKPOINT_SEED)
    finite_points(read_points(tmp_path / "a.obj"))
    assert read_keypoints_json(str(tmp_path / "a.json"))[1].tolist() == [0, 3]
    assert TrainConfig.from_toml(tmp_path / "a.toml").data.max_models == 8
    assert load_checkpoint(tmp_path / "a.pt")[2].model.num_keypoints == 2
    save_checkpoint(torch.load(tmp_path / "a.pt", weights_only=True), tmp_path / "b.pt")


def test_the_folder_seeds_load(tmp_path):
    for i, files in enumerate(FOLDER_SEEDS):
        root = tmp_path / f"folder{i}"
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        dataset = KeypointFolder(root, num_points=64)
        assert len(dataset) == 6 and dataset.semantic_ids == [0, 1, 5] and dataset.num_keypoints == 3
        sizes = [len(KeypointFolder(root, split, num_points=64)) for split in ("train", "val", "test")]
        assert sizes == ([3, 1, 2] if i == 0 else [4, 1, 1])
        for item in dataset:  # the seamed meshes' point_index keypoints are their files' vertices
            if item["model_id"] in ("e", "f"):
                original = (item["keypoints"][1:].double() * item["scale"] + item["center"]).numpy()
                np.testing.assert_allclose(original, SEAMED["seamed.obj"][1][[3, 8]], atol=1e-6)
