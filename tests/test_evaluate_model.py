"""``pk.evaluate_model``: ``pckeypoints eval``'s metrics for any model (a PyG PointNet++ here) on dense or PyG
batches, in the dataset's units (issue 22 item 2)."""
from __future__ import annotations

import pytest
import torch
from keypointnet_subset import make_subset
from test_examples import load
from torch.utils.data import DataLoader
from torch_geometric.loader import DataLoader as PyGLoader

import pckeypoints as pk
from pckeypoints.data import KeypointNet, collate_keypoints
from pckeypoints.data.pyg import PyGKeypoints
from pckeypoints.errors import InputError


@pytest.fixture(scope="module")
def bathtubs(tmp_path_factory):
    root = make_subset(tmp_path_factory.mktemp("kpn"), "bathtub", {"train": 1, "val": 1, "test": 3})
    return KeypointNet(root, "bathtub", "test", normalize=True, transform=lambda item: shrunk(item, 512))


@pytest.fixture(scope="module")
def net(bathtubs):
    torch.manual_seed(0)
    return load("pyg_pointnet2").PointNet2Keypoints(bathtubs[0]["keypoints"].shape[0], channels=16)


def seeded(model):
    """``model`` with its random FPS starts seeded anew on every call, so that two passes agree."""
    def call(*args):
        torch.manual_seed(1)
        return model(*args)
    return call


def test_pyg_model_in_dataset_units_equals_the_metrics_by_hand(net, bathtubs):
    result = pk.evaluate_model(seeded(net), PyGKeypoints(bathtubs), batch_size=2)
    preds, targets, masks = [], [], []
    for batch in PyGLoader(PyGKeypoints(bathtubs), 2):  # soft-argmax keypoints mapped back by hand
        with torch.no_grad():
            keypoints = seeded(net)(batch.pos, batch.batch).keypoints.double()
        scale, center = batch.scale.double()[:, None, None], batch.center.double()[:, None]
        preds.append(keypoints * scale + center)
        targets.append(batch.y.double() * scale + center)
        masks.append(batch.mask)
    pred, target, mask = torch.cat(preds), torch.cat(targets), torch.cat(masks)
    torch.testing.assert_close(result.predictions["pred"]["expectation"], pred)
    expectation = result.metrics.readouts["expectation"]
    assert expectation.pck == pytest.approx(float(pk.pck(pred, target, mask, 0.01)))
    assert expectation.pck_coarse == pytest.approx(float(pk.pck(pred, target, mask, 0.05)))
    assert expectation.mean_error == pytest.approx(float(pk.mean_error(pred, target, mask)))
    raw = KeypointNet(bathtubs.root, "bathtub", "test")  # the dataset's own coordinates
    torch.testing.assert_close(result.predictions["target"][mask],
                               torch.stack([raw[i]["keypoints"] for i in range(3)]).double()[mask], atol=1e-6, rtol=0)
    assert result.records["geo/snapped"].shape == (int(mask.sum()),)
    assert set(result.metrics.to_dict()) >= {"geo_pck@0.01/snapped", "ece/top", "pck@0.10", "calibration_r"}


def test_dense_batches_give_the_same_metrics(net, bathtubs):
    def dense(points):  # the PyG model on dense (B, N, 3) batches
        b, n, _ = points.shape
        return net(points.reshape(-1, 3), torch.arange(b).repeat_interleave(n))

    pyg = pk.evaluate_model(seeded(net), PyGLoader(PyGKeypoints(bathtubs), 2))
    dict_batches = pk.evaluate_model(seeded(dense), DataLoader(bathtubs, 2, collate_fn=collate_keypoints))
    assert dict_batches.metrics == pytest.approx(pyg.metrics, nan_ok=True, abs=1e-6)
    from_dataset = pk.evaluate_model(seeded(dense), bathtubs, batch_size=2)  # batched by evaluate_model
    assert from_dataset.metrics == pytest.approx(pyg.metrics, nan_ok=True, abs=1e-6)


def shrunk(item: dict, n: int) -> dict:
    """``item`` with only ``n`` of its points: the annotated ones first, ``point_index`` renumbered."""
    present = item["mask"]
    annotated = item["point_index"][present]
    others = torch.ones(len(item["points"]), dtype=torch.bool)
    others[annotated] = False
    keep = torch.cat([annotated, others.nonzero()[:, 0]])[:n]
    point_index = item["point_index"].clone()
    point_index[present] = torch.arange(len(annotated))
    return {**item, "points": item["points"][keep], "point_index": point_index}


def test_clouds_of_different_sizes(net, bathtubs):
    items = [shrunk(bathtubs[i], n) for i, n in enumerate((512, 300, 400))]  # (already 512)
    result = pk.evaluate_model(seeded(net), PyGKeypoints(items), batch_size=3)
    assert [len(p) for p in result.predictions["points"]] == [512, 300, 400]
    for readout in ("top", "snapped"):  # estimates on a point of their own cloud, never on padding
        for pred, points in zip(result.predictions["pred"][readout], result.predictions["points"]):
            assert torch.cdist(pred, points).amin(1).max() < 1e-6
    assert all(torch.isfinite(v).all() for v in result.predictions["within"].values())


def test_a_model_of_another_output_is_named(bathtubs):
    with pytest.raises(InputError, match="must return KeypointMaps"):
        pk.evaluate_model(lambda points: points.mean(1), bathtubs)
