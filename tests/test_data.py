import json

import numpy as np
import pytest
import torch

from pckeypoints.data import KeypointNet, collate_keypoints, data_root, read_pcd, read_points
from pckeypoints.data.transforms import Compose, Jitter, Normalize, RandomRotateUp, RandomScale

ROOT = data_root()
SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def bathtub():
    return KeypointNet(ROOT, "bathtub")


def _annotations(category):
    return json.loads((ROOT / "annotations" / f"{category}.json").read_text())


def _split_size(category, split):
    try:
        return len(KeypointNet(ROOT, category, split))
    except ValueError as err:  # e.g. airplane has no val model
        assert "no annotated" in str(err)
        return 0


def test_category_counts_and_splits():
    assert len(KeypointNet(ROOT, "bathtub")) == 492
    assert len(KeypointNet(ROOT, "bed")) == 146
    categories = ("bathtub", "bed", "airplane", "chair")
    for split in SPLITS:
        lines = (ROOT / "splits" / f"{split}.txt").read_text().split()
        assert sum(_split_size(c, split) for c in categories) == len(lines)
    for category in ("bathtub", "bed"):
        parts = [set(KeypointNet(ROOT, category, split).model_ids) for split in SPLITS]
        assert sum(map(len, parts)) == len(KeypointNet(ROOT, category))
        assert set.union(*parts) == set(KeypointNet(ROOT, category).model_ids)


def test_category_by_class_id(bathtub):
    by_id = KeypointNet(ROOT, "02808440", "test")
    assert by_id.category == "bathtub" and by_id.class_id == "02808440"
    assert set(by_id.model_ids) <= set(bathtub.model_ids)
    with pytest.raises(ValueError, match="unknown KeypointNet category"):
        KeypointNet(ROOT, "sofa")
    with pytest.raises(ValueError, match="split"):
        KeypointNet(ROOT, "bathtub", "training")


def test_keypoints_follow_annotation(bathtub):
    annotations = {m["model_id"]: m for m in _annotations("bathtub")}
    assert bathtub.num_keypoints == 1 + max(k["semantic_id"] for m in annotations.values() for k in m["keypoints"])
    for i in range(0, len(bathtub), 7):
        item = bathtub[i]
        model = annotations[item["model_id"]]
        assert item["class_id"] == "02808440" and item["points"].dtype == torch.float32
        expected_mask = torch.zeros(bathtub.num_keypoints, dtype=torch.bool)
        for keypoint in model["keypoints"]:
            k = keypoint["semantic_id"]
            expected_mask[k] = True
            assert item["point_index"][k] == keypoint["pcd_info"]["point_index"]
            expected = torch.tensor(keypoint["xyz"], dtype=torch.float64)
            torch.testing.assert_close(item["keypoints"][k].double(), expected, atol=1e-6, rtol=0)
        assert torch.equal(item["mask"], expected_mask)
        assert (item["point_index"][~expected_mask] == -1).all() and (item["keypoints"][~expected_mask] == 0).all()
        assert torch.equal(item["keypoints"][expected_mask], item["points"][item["point_index"][expected_mask]])
    # symmetries refer to positions in the model's keypoint list; the dataset translates them to semantic ids
    translated = 0
    for model_id, symmetries in zip(bathtub.model_ids, bathtub.symmetries):
        model = annotations[model_id]
        ids = [k["semantic_id"] for k in model["keypoints"]]
        for kind, groups in model["symmetries"].items():
            for group, ours in zip(groups, symmetries[kind], strict=True):
                assert ours["kp_indexes"] == [ids[i] for i in group["kp_indexes"]]
                translated += ours["kp_indexes"] != group["kp_indexes"]
    assert translated > 0


def test_normalize_is_invertible(bathtub):
    raw = bathtub[3]
    item = KeypointNet(ROOT, "bathtub", normalize=True)[3]
    points = item["points"]
    assert points.norm(dim=1).max().item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close((points.amin(0) + points.amax(0)) / 2, torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(points * item["scale"] + item["center"], raw["points"], atol=1e-6, rtol=0)
    mask = item["mask"]
    torch.testing.assert_close(item["keypoints"][mask] * item["scale"] + item["center"], raw["keypoints"][mask],
                               atol=1e-6, rtol=0)
    centroid = Normalize("centroid")(raw)
    torch.testing.assert_close(centroid["points"].mean(0), torch.zeros(3), atol=1e-6, rtol=0)


def test_collate(bathtub):
    batch = collate_keypoints([bathtub[i] for i in range(3)])
    assert batch["points"].shape == (3, 2048, 3) and batch["keypoints"].shape == (3, bathtub.num_keypoints, 3)
    assert batch["mask"].dtype == torch.bool and batch["scale"].shape == (3,)
    assert batch["model_id"] == bathtub.model_ids[:3]
    small = dict(bathtub[1], points=bathtub[1]["points"][:100])
    with pytest.raises(ValueError, match="different shapes"):
        collate_keypoints([bathtub[0], small])
    with pytest.raises(ValueError, match="empty"):
        collate_keypoints([])


def _assert_keypoints_on_points(item):
    mask = item["mask"]
    assert torch.equal(item["keypoints"][mask], item["points"][item["point_index"][mask]])
    assert (item["keypoints"][~mask] == 0).all()


def test_rotation_preserves_distances_and_up_axis(bathtub):
    item = bathtub[0]
    rotated = RandomRotateUp(axis=1, generator=torch.Generator().manual_seed(0))(item)
    _assert_keypoints_on_points(rotated)
    sample = torch.arange(0, 2048, 37)
    def pairwise(points):
        return (points[sample, None] - points[None, sample]).norm(dim=-1)

    torch.testing.assert_close(pairwise(rotated["points"]), pairwise(item["points"]), atol=1e-6, rtol=0)
    torch.testing.assert_close(rotated["points"][:, 1], item["points"][:, 1])
    assert not torch.allclose(rotated["points"], item["points"], atol=1e-3)


def test_random_transforms_are_seeded_and_keep_keypoints_on_points(bathtub):
    item = bathtub[5]
    original = item["points"].clone()

    def augment(seed):
        generator = torch.Generator().manual_seed(seed)
        return Compose([RandomRotateUp(generator=generator), RandomScale(0.8, 1.25, generator=generator),
                        Jitter(0.01, 0.02, generator=generator)])(item)

    first, again, other = augment(1), augment(1), augment(2)
    assert torch.equal(first["points"], again["points"]) and not torch.equal(first["points"], other["points"])
    _assert_keypoints_on_points(first)
    assert torch.equal(item["points"], original)  # input untouched


def test_jitter_and_scale(bathtub):
    item = bathtub[2]
    jittered = Jitter(sigma=0.01, clip=0.02, generator=torch.Generator().manual_seed(0))(item)
    offset = (jittered["points"] - item["points"]).abs()
    assert offset.max() <= 0.02 + 1e-7 and offset.mean() > 1e-3
    _assert_keypoints_on_points(jittered)
    scaled = RandomScale(0.5, 2.0, generator=torch.Generator().manual_seed(0))(item)
    _assert_keypoints_on_points(scaled)
    torch.testing.assert_close(scaled["points"] * scaled["scale"] + scaled["center"], item["points"])


PCD_HEADER = "VERSION .7\nFIELDS {fields}\nSIZE 4 4 4 4\nTYPE F F F {rgb_type}\nCOUNT 1 1 1 1\nWIDTH {n}\nHEIGHT 1\n" \
             "VIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA {data}\n"


def _write_ascii(path, rows, fields="x y z rgb", n=None, rgb_type="U"):
    header = PCD_HEADER.format(fields=fields, n=len(rows) if n is None else n, data="ascii", rgb_type=rgb_type)
    path.write_text(header + "".join(" ".join(map(str, row)) + "\n" for row in rows))
    return path


def test_read_pcd_ascii_and_binary(tmp_path):
    rows = [[0.5, -1.25, 2.0, 0xFF8000], [0.0, 0.25, -0.5, 0x0000FF]]
    points, rgb = read_pcd(_write_ascii(tmp_path / "a.pcd", rows), return_rgb=True)
    assert points.dtype == np.float32 and points.shape == (2, 3)
    np.testing.assert_array_equal(points, np.array(rows)[:, :3])
    np.testing.assert_array_equal(rgb, [[255, 128, 0], [0, 0, 255]])
    # rgb as the bits of a float (PCL's usual packing), written with enough digits to round-trip
    packed = np.array([0xFF8000, 0x0000FF], dtype=np.uint32).view(np.float32)
    float_rows = [row[:3] + [repr(float(p))] for row, p in zip(rows, packed)]
    _, rgb = read_pcd(_write_ascii(tmp_path / "f.pcd", float_rows, rgb_type="F"), return_rgb=True)
    np.testing.assert_array_equal(rgb, [[255, 128, 0], [0, 0, 255]])
    # binary: the same header with DATA binary and little-endian records
    table = np.zeros(2, dtype=[("xyz", "<f4", (3,)), ("rgb", "<u4")])
    table["xyz"], table["rgb"] = np.array(rows)[:, :3], [0xFF8000, 0x0000FF]
    binary = tmp_path / "b.pcd"
    binary.write_bytes(PCD_HEADER.format(fields="x y z rgb", n=2, data="binary", rgb_type="U").encode()
                       + table.tobytes())
    np.testing.assert_array_equal(read_pcd(binary), points)


def test_read_pcd_binary_compressed_through_open3d(tmp_path):
    import open3d as o3d

    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.random.default_rng(0).random((50, 3))))
    path = tmp_path / "c.pcd"
    o3d.io.write_point_cloud(str(path), cloud, compressed=True)
    assert b"binary_compressed" in path.read_bytes()[:400]
    np.testing.assert_allclose(read_pcd(path), np.asarray(cloud.points), atol=1e-6)


def test_read_real_pcd_matches_first_lines():
    path = next((ROOT / "pcds" / "02808440").glob("*.pcd"))
    lines = path.read_text().splitlines()
    first = lines[lines.index("DATA ascii") + 1].split()
    points = read_pcd(path)
    assert points.shape == (2048, 3)
    np.testing.assert_array_equal(points[0], np.array(first[:3], dtype=np.float32))


@pytest.mark.parametrize("corruption, message", [
    ("truncated", "data lines"),
    ("ragged", "truncated or ragged"),
    ("non_numeric", "non-numeric"),
    ("no_xyz", "lack x y z"),
    ("bad_points", "not-a-number|bad or missing header"),
    ("no_data_line", "DATA line"),
])
def test_corrupt_pcd_names_the_file(tmp_path, corruption, message):
    rows = [[0.1, 0.2, 0.3, 1]] * 4
    path = tmp_path / f"{corruption}.pcd"
    if corruption == "truncated":
        _write_ascii(path, rows[:3], n=4)
    elif corruption == "ragged":
        _write_ascii(path, rows[:3] + [[0.1, 0.2, 0.3]])
    elif corruption == "non_numeric":
        _write_ascii(path, rows[:3] + [[0.1, "abc", 0.3, 1]])
    elif corruption == "no_xyz":
        _write_ascii(path, rows, fields="x y w rgb")
    elif corruption == "bad_points":
        _write_ascii(path, rows, n="not-a-number")
    else:
        path.write_text("VERSION .7\nFIELDS x y z\n")
    with pytest.raises(ValueError, match=message) as error:
        read_pcd(path)
    assert str(path) in str(error.value)


def test_missing_pcd_names_the_file(tmp_path):
    with pytest.raises(ValueError, match=str(tmp_path / "none.pcd")):
        read_pcd(tmp_path / "none.pcd")


def _fake_root(tmp_path, keypoints, write_cloud=True):
    """A one-model KeypointNet folder: bathtub model 'm0' with a 4-point cloud."""
    (tmp_path / "annotations").mkdir()
    (tmp_path / "pcds" / "02808440").mkdir(parents=True)
    (tmp_path / "annotations" / "bathtub.json").write_text(json.dumps(
        [{"class_id": "02808440", "model_id": "m0", "keypoints": keypoints}]))
    if write_cloud:
        _write_ascii(tmp_path / "pcds" / "02808440" / "m0.pcd", [[i, 0, 0, 0] for i in range(4)])
    return tmp_path


def _keypoint(semantic_id, index):
    return {"xyz": [index, 0, 0], "semantic_id": semantic_id, "pcd_info": {"point_index": index}}


def test_dataset_on_a_small_folder(tmp_path):
    dataset = KeypointNet(_fake_root(tmp_path, [_keypoint(2, 3), _keypoint(0, 1)]), "bathtub")
    item = dataset[0]
    assert dataset.num_keypoints == 3 and dataset.symmetries == [None]
    assert item["point_index"].tolist() == [1, -1, 3] and item["mask"].tolist() == [True, False, True]
    assert item["keypoints"][:, 0].tolist() == [1, 0, 3]


@pytest.mark.parametrize("problem, message", [
    ("missing_cloud", "missing point cloud .*m0.pcd"),
    ("bad_json", "corrupt annotation file .*bathtub.json"),
    ("no_semantic_id", "corrupt annotation file .*bathtub.json"),
    ("index_out_of_range", "out of range"),
    ("xyz_off_cloud", "disagree"),
    ("repeated_id", "repeated"),
])
def test_dataset_errors_name_the_file(tmp_path, problem, message):
    keypoints = {"index_out_of_range": [_keypoint(0, 7)], "repeated_id": [_keypoint(0, 1), _keypoint(0, 2)],
                 "xyz_off_cloud": [dict(_keypoint(0, 1), xyz=[0.5, 0, 0])],
                 "no_semantic_id": [{"xyz": [1, 0, 0], "pcd_info": {"point_index": 1}}]}.get(problem, [_keypoint(0, 1)])
    root = _fake_root(tmp_path, keypoints, write_cloud=problem != "missing_cloud")
    if problem == "bad_json":
        (root / "annotations" / "bathtub.json").write_text('[{"class_id": ')
    with pytest.raises(ValueError, match=message):
        KeypointNet(root, "bathtub")


def test_read_points_samples_meshes_and_reads_clouds(tmp_path):
    import trimesh

    box = trimesh.creation.box(extents=(2.0, 2.0, 2.0))
    for suffix in (".obj", ".off", ".stl", ".ply"):
        path = tmp_path / f"box{suffix}"
        box.export(path)
        points = read_points(path, num_points=500, seed=0)
        assert points.shape == (500, 3) and points.dtype == np.float32
        # on the surface of the box: some coordinate is at +-1, none beyond
        assert np.allclose(np.abs(points).max(axis=1), 1.0, atol=1e-5)
        np.testing.assert_array_equal(points, read_points(path, num_points=500, seed=0))
    cloud = np.random.default_rng(0).random((37, 3))
    trimesh.PointCloud(cloud).export(tmp_path / "cloud.ply")
    np.testing.assert_allclose(read_points(tmp_path / "cloud.ply"), cloud, atol=1e-6)
    np.testing.assert_array_equal(read_points(_write_ascii(tmp_path / "c.pcd", [[1, 2, 3, 0]])), [[1, 2, 3]])
    with pytest.raises(ValueError, match="unsupported point cloud format"):
        read_points(tmp_path / "cloud.las")
    with pytest.raises(ValueError, match="no such file"):
        read_points(tmp_path / "nothing.obj")


def test_ascii_pcd_of_float_fields_keeps_every_digit(tmp_path):
    """Issue 31 M2: an ASCII PCD declared TYPE F SIZE 4 far from the origin is read in float64 (its text has
    the digits); casting to float32 first moved points by up to 4e-3 at 1e5 and merged them at 1e7."""
    for offset in (1e5, 1e7):
        rows = [[offset + 0.001 * i, offset - 0.002 * i, 0.5 * i, 0] for i in range(4)]
        points = read_pcd(_write_ascii(tmp_path / "far.pcd", rows), dtype=np.float64)
        np.testing.assert_allclose(points, np.array(rows)[:, :3], rtol=0, atol=1e-9)


def test_num_keypoints_is_an_int_that_builds_a_head(bathtub):
    """Bug 4: num_keypoints was an np.int64, which KeypointHead refused; NumPy integers are taken too."""
    import pckeypoints as pk

    assert type(bathtub.num_keypoints) is int
    head = pk.KeypointHead(8, bathtub.num_keypoints)
    assert head.num_keypoints == bathtub.num_keypoints
    head = pk.KeypointHead(np.int32(8), np.int64(5), hidden_channels=np.int64(16))
    assert type(head.num_keypoints) is int
    assert head(torch.randn(1, 20, 8), torch.rand(1, 20, 3)).logits.shape == (1, 5, 20)
