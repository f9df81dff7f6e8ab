"""Your own data: the folder format (JSON and CSV), its checks, training and evaluation on it, the PyG view."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from box_folder import CORNER_NAMES, make_box_folder, seamed_meshes

from pckeypoints.cli import main
from pckeypoints.data import KeypointFolder, collate_keypoints, read_points
from pckeypoints.errors import PCKeypointsError, ReadError

TINY = ["--width", "0.25", "--hidden-channels", "16", "--batch-size", "4", "--epochs", "1", "--method", "sampling",
        "--num-samples", "4", "--no-progress"]


@pytest.fixture(scope="module", params=["json", "csv"])
def boxes(request, tmp_path_factory):
    """(folder, ground-truth corners by model id) of 14 generated boxes, annotated in JSON or CSV."""
    root = tmp_path_factory.mktemp(request.param) / "boxes"
    return root, make_box_folder(root, keypoint_file=request.param)


def test_items_hold_the_annotated_keypoints_as_cloud_points(boxes):
    root, truth = boxes
    dataset = KeypointFolder(root, num_points=1024)
    assert len(dataset) == 14 and dataset.num_keypoints == 8 and dataset.category == "boxes"
    for i in range(len(dataset)):
        item = dataset[i]
        assert item["points"].shape == (1024, 3) and item["points"].dtype == torch.float32
        mask = item["mask"].numpy()
        expected = truth[item["model_id"]]
        np.testing.assert_array_equal(mask, ~np.isnan(expected[:, 0]))  # box02 lacks corner 7
        original = (item["keypoints"].double() * item["scale"] + item["center"]).numpy()  # centred in float64
        np.testing.assert_allclose(original[mask], expected[mask], atol=1e-5)
        assert (item["points"][item["point_index"][mask]] == item["keypoints"][mask]).all()
    # The same items again (seeded resampling), and normalised ones map back to the files' coordinates.
    assert torch.equal(KeypointFolder(root, num_points=1024)[3]["points"], dataset[3]["points"])
    item = KeypointFolder(root, normalize=True, num_points=1024)[0]
    assert torch.allclose(item["points"].norm(dim=1).max(), torch.tensor(1.0))
    np.testing.assert_allclose((item["keypoints"] * item["scale"] + item["center"]).numpy(), truth["box00"], atol=1e-5)


def test_seeded_split_and_splits_file(tmp_path):
    truth = make_box_folder(tmp_path / "a", num_models=10)
    sizes = {split: KeypointFolder(tmp_path / "a", split).model_ids for split in ("train", "val", "test")}
    assert [len(ids) for ids in sizes.values()] == [8, 1, 1]
    assert sorted(sum(sizes.values(), [])) == sorted(truth)
    assert KeypointFolder(tmp_path / "a", "test", seed=1).model_ids != sizes["test"] or \
        KeypointFolder(tmp_path / "a", "val", seed=1).model_ids != sizes["val"]
    make_box_folder(tmp_path / "b", num_models=4, splits={"train": ["box00", "box02"], "test": ["box03"]})
    assert KeypointFolder(tmp_path / "b", "train").model_ids == ["box00", "box02"]
    with pytest.raises(ReadError, match="split 'val' has no models"):
        KeypointFolder(tmp_path / "b", "val")


def test_train_one_epoch_evaluate_and_predict(boxes, tmp_path, capsys):
    root, _ = boxes
    out = tmp_path / "runs"
    assert main(["train", "--data", str(root), "--out", str(out), *TINY]) == 0
    run = out / "boxes_sampling"  # the run takes the folder's name as its category
    report = json.loads((run / "eval_test" / "metrics.json").read_text())
    assert report["config"]["data"]["folder"] == str(root) and report["config"]["model"]["num_keypoints"] == 8
    assert 0 <= report["metrics"]["pck@0.01"] <= report["metrics"]["pck@0.10"] <= 1
    assert main(["eval", str(run), "--split", "val", "--out", str(tmp_path / "val")]) == 0
    assert "pck@0.01" in (tmp_path / "val" / "metrics.md").read_text()
    cloud = root / "models" / "box01.xyz"
    assert main(["predict", str(run), str(cloud), "-o", str(tmp_path / "kp.json")]) == 0
    keypoints = np.asarray(json.loads((tmp_path / "kp.json").read_text())["keypoints"])
    points = read_points(cloud)
    assert keypoints.shape == (8, 3)
    assert (keypoints >= points.min(0) - 1e-4).all() and (keypoints <= points.max(0) + 1e-4).all()


# ---------------------------------------------------------------------------------------------- defects
def _edit_json(root, edit):
    path = root / "keypoints.json"
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


def _defective(tmp_path, fmt="json"):
    root = tmp_path / "boxes"
    make_box_folder(root, num_models=7, keypoint_file=fmt)
    return root


def test_missing_model_file(tmp_path):
    root = _defective(tmp_path)
    (root / "models" / "box04.obj").unlink()
    with pytest.raises(ReadError, match=r"keypoints.json: models\[4\]: model file .*box04.obj is missing"):
        KeypointFolder(root, "train")


def test_unknown_semantic_id(tmp_path):
    root = _defective(tmp_path)
    _edit_json(root, lambda d: d["models"][1]["keypoints"][2].update(semantic_id=len(CORNER_NAMES)))
    with pytest.raises(ReadError, match=r"keypoints.json: models\[1\] keypoints\[2\]: unknown semantic_id 8; "
                                        r"keypoint_names has ids 0..7"):
        KeypointFolder(root)


def test_unknown_model_id_in_splits_file(tmp_path):
    root = _defective(tmp_path)
    (root / "splits.json").write_text(json.dumps({"train": ["box00", "box1"], "test": ["box02"]}))
    with pytest.raises(ReadError, match=r"splits.json: train lists unknown model id 'box1'"):
        KeypointFolder(root)


@pytest.mark.parametrize("n, file", [(0, "box00.npy"), (4, "box04.obj")])
def test_keypoint_far_from_the_surface(tmp_path, n, file):
    root = _defective(tmp_path)

    def move_inside(document):  # 40% of the way to the box's centre: off the cloud and off the mesh
        keypoints = document["models"][n]["keypoints"]
        centre = np.mean([k["xyz"] for k in keypoints], axis=0)
        keypoints[5]["xyz"] = (0.6 * np.asarray(keypoints[5]["xyz"]) + 0.4 * centre).tolist()

    _edit_json(root, move_inside)
    with pytest.raises(ReadError, match=rf"keypoints.json: models\[{n}\] keypoints\[5\]: keypoint .* is .* from "
                                        rf"the surface of .*{file} \(tolerance 0.02"):
        KeypointFolder(root)


def test_point_index_of_a_mesh_is_the_files_vertex(tmp_path):
    """Issue 31 H2: point_index in an OBJ or PLY means the file's vertex, though trimesh splits vertices at
    texture seams and drops unreferenced ones."""
    from pckeypoints.data import read_geometry

    files = {}
    for name, (data, vertices) in seamed_meshes().items():
        (tmp_path / name).write_bytes(data)
        files[name] = vertices
    models = [{"file": name, "keypoints": [{"semantic_id": k, "point_index": i} for k, i in enumerate((1, 3, 6, 8))]}
              for name in files]
    (tmp_path / "keypoints.json").write_text(json.dumps({"models": models}))
    (tmp_path / "splits.json").write_text(json.dumps({"train": ["seamed", "seamed_ply"]}))
    for name, vertices in files.items():
        np.testing.assert_array_equal(read_geometry(tmp_path / name, dtype=np.float64)[0], vertices)
    dataset = KeypointFolder(tmp_path, "train", num_points=256)
    for item in dataset:
        original = (item["keypoints"].double() * item["scale"] + item["center"]).numpy()
        np.testing.assert_allclose(original, files[item["model_id"] + (".obj" if item["model_id"] == "seamed" else
                                                                       ".ply")][[1, 3, 6, 8]], atol=1e-6)


def test_nan_in_a_cloud_and_in_a_keypoint(tmp_path):
    root = _defective(tmp_path)
    cloud = np.load(root / "models" / "box00.npy")
    cloud[10, 1] = np.nan
    np.save(root / "models" / "box00.npy", cloud)
    with pytest.raises(ReadError, match=r"keypoints.json: models\[0\]: .*box00.npy has non-finite coordinates"):
        KeypointFolder(root)
    root = _defective(tmp_path / "csv", "csv")
    lines = (root / "keypoints.csv").read_text().splitlines()
    lines[3] = "models/box00.npy,2,0.1,nan,0.2,"
    (root / "keypoints.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ReadError, match=r"keypoints.csv line 4: xyz \[0.1, nan, 0.2\] is not finite"):
        KeypointFolder(root)


def test_duplicate_model(tmp_path):
    root = _defective(tmp_path)
    _edit_json(root, lambda d: d["models"].append(dict(d["models"][3])))
    with pytest.raises(ReadError, match=r"keypoints.json: models\[7\]: duplicate model 'box03' "
                                        r"\(also .*keypoints.json: models\[3\]\)"):
        KeypointFolder(root)
    root = _defective(tmp_path / "csv", "csv")  # two files with the same stem
    (root / "models" / "box00.xyz").write_text((root / "models" / "box01.xyz").read_text())
    with open(root / "keypoints.csv", "a") as f:
        f.write("models/box00.xyz,0,,,,5\n")
    with pytest.raises(ReadError, match=r"keypoints.csv line \d+: duplicate model 'box00'"):
        KeypointFolder(root)


def test_defects_stop_training_before_it_starts(tmp_path):
    root = _defective(tmp_path)
    (root / "models" / "box05.off").unlink()  # a model of the test split, found while loading train
    assert main(["train", "--data", str(root), "--out", str(tmp_path / "runs"), *TINY]) == 1
    assert not (tmp_path / "runs").exists()


def test_malformed_keypoint_files(tmp_path):
    root = _defective(tmp_path)
    (root / "keypoints.csv").write_text("file,semantic_id\n")
    with pytest.raises(ReadError, match="exactly one of keypoints.json or keypoints.csv, found 2"):
        KeypointFolder(root)
    (root / "keypoints.json").unlink()
    with pytest.raises(ReadError, match="keypoints.csv: the header must name file, semantic_id and x, y, z or "
                                        "point_index"):
        KeypointFolder(root)
    (root / "keypoints.csv").write_text("file,semantic_id,point_index\nmodels/box00.npy,-1,3\n")
    with pytest.raises(ReadError, match="keypoints.csv line 2: semantic_id must be a non-negative integer, got -1"):
        KeypointFolder(root)
    (root / "keypoints.csv").write_text("file,semantic_id,point_index\nmodels/box00.npy,0,99999\n")
    with pytest.raises(ReadError, match=r"keypoints.csv line 2: point_index 99999 is out of range for .*box00.npy "
                                        r"with \d+ points"):
        KeypointFolder(root)


# ---------------------------------------------------------------------------------------------- PyG
def test_pyg_view_batches_ragged_clouds_with_dense_keypoints(boxes):
    from torch_geometric.loader import DataLoader

    from pckeypoints.data.pyg import PyGKeypoints

    root, _ = boxes
    folder = KeypointFolder(root, "train", num_points=512)
    batch = next(iter(DataLoader(PyGKeypoints(folder), batch_size=3)))
    assert batch.pos.shape == (3 * 512, 3) and batch.batch.bincount().tolist() == [512] * 3
    dense = collate_keypoints([folder[i] for i in range(3)])
    for name, key in (("y", "keypoints"), ("mask", "mask"), ("point_index", "point_index"), ("center", "center"),
                      ("scale", "scale")):
        assert torch.equal(batch[name], dense[key]), name
    assert batch.model_id == dense["model_id"]
    for b in range(3):  # point_index indexes each graph's own points
        mask = batch.mask[b]
        assert torch.equal(batch.pos[batch.batch == b][batch.point_index[b][mask]], batch.y[b][mask])


def test_pyg_fixed_points_keeps_keypoints_on_kept_points(boxes):
    """Bug 5: T.FixedPoints raised IndexError on the 0-d scale; the keypoints now follow the subsampling."""
    import torch_geometric.transforms as T

    from pckeypoints.data.pyg import PyGKeypoints

    folder = KeypointFolder(boxes[0], "train", num_points=512)
    torch.manual_seed(0)
    data = PyGKeypoints(folder, transform=T.FixedPoints(128, replace=False))[0]
    item, mask = folder[0], data.mask[0]
    assert data.pos.shape == (128, 3) and data.scale.shape == (1,) and "node_id" not in data
    assert torch.equal(data.pos[data.point_index[0][mask]], data.y[0][mask])
    kept = (item["points"][:, None] == data.pos[None]).all(-1).any(1)  # which original points survived
    nearest = torch.cdist(item["keypoints"][mask], item["points"][kept]).min(1).values
    assert torch.allclose((data.y[0][mask] - item["keypoints"][mask]).norm(dim=1), nearest, atol=1e-5)  # the nearest


def test_pyg_transforms_move_the_keypoints_with_the_points(boxes):
    """Bug 6: NormalizeScale moved pos and not y (silently wrong targets); now y follows, and center/scale
    take in a translation + scaling; a transform that makes new points is refused, naming it."""
    import torch_geometric.transforms as T
    from torch_geometric.loader import DataLoader

    from pckeypoints.data.pyg import PyGKeypoints

    folder = KeypointFolder(boxes[0], "train", num_points=512)
    item = folder[1]
    for transform in (T.NormalizeScale(), T.Compose([T.Center(), T.RandomScale((2, 3))]),
                      T.Compose([T.NormalizeScale(), T.FixedPoints(300, replace=False)])):
        data = PyGKeypoints(folder, transform=transform)[1]
        mask = data.mask[0]
        assert not torch.allclose(data.pos[:10], item["points"][:10])
        assert torch.equal(data.pos[data.point_index[0][mask]], data.y[0][mask])
        original = item["points"] * item["scale"] + item["center"]  # original = points * scale + center, kept
        back = data.pos * data.scale + data.center
        assert float(torch.cdist(back.double(), original.double()).min(1).values.max()) < 1e-5, transform
        if data.pos.shape[0] == 512:  # no point dropped: the same keypoints
            back = data.y[0][mask] * data.scale + data.center
            assert torch.allclose(back, item["keypoints"][mask] * item["scale"] + item["center"], atol=1e-5)
    data = PyGKeypoints(folder, transform=T.RandomRotate(90, axis=2))[1]
    mask = data.mask[0]
    assert torch.equal(data.pos[data.point_index[0][mask]], data.y[0][mask])
    assert torch.equal(data.scale, item["scale"].reshape(1))  # a rotation is an augmentation: not recorded
    batch = next(iter(DataLoader(PyGKeypoints(folder, transform=T.NormalizeScale()), batch_size=3)))
    assert batch.scale.shape == (3,) and batch.y.shape[0] == 3

    class AddMirror(T.BaseTransform):  # makes new points (as GridSampling does, which needs pyg-lib)
        def forward(self, data):
            data.pos = torch.cat([data.pos, -data.pos])
            return data

    with pytest.raises(PCKeypointsError, match="AddMirror"):
        PyGKeypoints(folder, transform=AddMirror())[0]


def test_pyg_view_of_keypointnet(tmp_path):
    from keypointnet_subset import make_subset
    from torch_geometric.loader import DataLoader

    from pckeypoints.data import KeypointNet
    from pckeypoints.data.pyg import PyGKeypoints

    dataset = KeypointNet(make_subset(tmp_path, "bathtub"), "bathtub", "train", normalize=True)
    batch = next(iter(DataLoader(PyGKeypoints(dataset), batch_size=2)))
    assert batch.pos.shape == (2 * 2048, 3) and batch.y.shape == (2, dataset.num_keypoints, 3)
    assert torch.equal(batch.y[1], dataset[1]["keypoints"])


# ---------------------------------------------------------------------------------------------- issue 21
def _cloud_folder(root, clouds: dict[str, np.ndarray], keypoints: dict[str, list[tuple[int, int]]]):
    """``root`` with ``.xyz`` clouds (full float64 text) whose keypoints are points of the cloud (xyz given)."""
    (root / "clouds").mkdir(parents=True)
    models = []
    for name, cloud in clouds.items():
        np.savetxt(root / "clouds" / f"{name}.xyz", cloud, fmt="%.17g")
        models.append({"file": f"clouds/{name}.xyz", "keypoints": [
            {"semantic_id": semantic_id, "xyz": cloud[index].tolist()} for semantic_id, index in keypoints[name]]})
    (root / "keypoints.json").write_text(json.dumps({"models": models}))


@pytest.mark.parametrize("offset", [1e5, 1e6])
def test_clouds_far_from_the_origin_keep_their_precision(tmp_path, offset):
    """Issue 21 item 4: read in float64 and centred before float32 (at 1e6 a keypoint was '0.03 from the
    surface', at 1e5 the points were snapped to a 7.8 mm grid)."""
    rng = np.random.default_rng(0)
    clouds = {f"m{i}": offset + rng.uniform(-0.5, 0.5, (500, 3)) for i in range(3)}
    _cloud_folder(tmp_path, clouds, {name: [(0, 3), (1, 70)] for name in clouds})
    dataset = KeypointFolder(tmp_path, num_points=256)
    for item in (dataset[i] for i in range(3)):
        assert item["center"].dtype == torch.float64
        original = (item["keypoints"].double() * item["scale"] + item["center"]).numpy()
        expected = clouds[item["model_id"]][[3, 70]]
        np.testing.assert_allclose(original, expected, rtol=0, atol=1e-6)  # float32 of the unit cloud: 3e-8


def test_sparse_semantic_ids_are_re_indexed_and_predicted_as_such(tmp_path, capsys):
    """Issue 21 items 5, 6: ids 0, 5, 17, ..., 10**10 give 8 keypoint rows (not 10**10 + 1), and predict returns
    those 8 with their own ids."""
    root = tmp_path / "boxes"
    make_box_folder(root, num_models=10)
    ids = [0, 5, 17, 40, 41, 99, 100000, 10**10]
    _edit_json(root, lambda d: (d.pop("keypoint_names"), [k.update(semantic_id=ids[k["semantic_id"]])
                                                           for m in d["models"] for k in m["keypoints"]]))
    dataset = KeypointFolder(root, num_points=512)
    assert dataset.semantic_ids == ids and dataset.num_keypoints == 8 and dataset[0]["keypoints"].shape == (8, 3)
    assert dataset[2]["mask"].tolist() == [True] * 7 + [False]  # box02 lacks corner 7, now id 10**10
    out = tmp_path / "runs"
    assert main(["train", "--data", str(root), "--out", str(out), "--name", "sparse", "--no-test", *TINY]) == 0
    prediction = tmp_path / "kp.json"
    assert main(["predict", str(out / "sparse"), str(root / "models" / "box01.xyz"), "-o", str(prediction)]) == 0
    result = json.loads(prediction.read_text())
    assert result["semantic_ids"] == ids and len(result["keypoints"]) == 8


@pytest.mark.parametrize("name, content, problem", [
    ("flat.obj", "v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n", "cannot sample the surface of .*flat.obj"),
    ("empty.pcd", "VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 0\nHEIGHT 1\nPOINTS 0\n"
                  "DATA ascii\n", "empty.pcd has 0 points; the model needs at least 9"),
    ("one.xyz", "0.1 0.2 0.3\n", "one.xyz has 1 points; the model needs at least 9"),
    ("same.xyz", "0.1 0.2 0.3\n" * 20, "all points of .*same.xyz coincide"),
])
def test_degenerate_clouds_are_rejected_before_training(tmp_path, capsys, name, content, problem):
    """Issue 21 item 7: the checks predict makes of its input, for every model of --data, naming the file."""
    root = _defective(tmp_path)
    (root / "models" / name).write_text(content)
    _edit_json(root, lambda d: d["models"].append({"file": f"models/{name}", "keypoints": [
        {"semantic_id": 0, "point_index": 0}]}))
    assert main(["train", "--data", str(root), "--out", str(tmp_path / "runs"), *TINY]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "keypoints.json: models[7]" in err, err
    import re

    assert re.search(problem, err), err
    assert not (tmp_path / "runs").exists()


def test_keypoint_file_details(tmp_path):
    """Issue 21 (low): a CSV with a byte-order mark loads; a CSV without z, and "xyz": "123", are named as such;
    the same file under another path (.., a link) is a duplicate; 1-2 models say why they cannot be split."""
    root = _defective(tmp_path, "csv")
    csv_path = root / "keypoints.csv"
    text = csv_path.read_text()
    csv_path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert KeypointFolder(root).num_keypoints == 8
    csv_path.write_text("file,semantic_id,x,y\nmodels/box00.npy,0,0.1,0.2\n")
    with pytest.raises(ReadError, match="keypoints.csv: the header has x, y but not z; give x, y and z, or "
                                        "point_index"):
        KeypointFolder(root)
    root = _defective(tmp_path / "json")
    _edit_json(root, lambda d: d["models"][0]["keypoints"][0].update(xyz="123"))
    with pytest.raises(ReadError, match=r"models\[0\] keypoints\[0\]: xyz must be three numbers, got '123'"):
        KeypointFolder(root)
    for alias in ("models/../models/box01.xyz", "models/link.xyz"):
        root = _defective(tmp_path / alias.replace("/", "_"))
        (root / "models" / "link.xyz").symlink_to(root / "models" / "box01.xyz")
        _edit_json(root, lambda d: d["models"].append({"file": alias, "model_id": "other",
                                                       "keypoints": d["models"][1]["keypoints"]}))
        with pytest.raises(ReadError, match=rf"models\[7\]: duplicate model '.*{alias}' \(also .*models\[1\]\)"):
            KeypointFolder(root)
    root = tmp_path / "two"
    make_box_folder(root, num_models=2)
    assert len(KeypointFolder(root)) == 2
    with pytest.raises(ReadError, match="2 model\\(s\\) cannot be split into train, val and test; add models "
                                        "\\(3 at least\\) or a splits.json"):
        KeypointFolder(root, "val")


def test_an_id_annotated_only_outside_the_train_split_is_named(tmp_path, capsys):
    """Issue 21 item 6: the model would predict it untrained; training says so before it starts."""
    root = tmp_path / "boxes"
    make_box_folder(root, num_models=4, splits={"train": ["box00", "box01"], "val": ["box02"], "test": ["box03"]})
    _edit_json(root, lambda d: (d.pop("keypoint_names"), d["models"][3]["keypoints"][0].update(semantic_id=99)))
    assert main(["train", "--data", str(root), "--out", str(tmp_path / "runs"), *TINY]) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith("boxes: semantic id 99 is annotated in no model of the train split (1 such id(s)); "
                        "annotate it in a train model or remove it"), err
    assert not (tmp_path / "runs").exists()
