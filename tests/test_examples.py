"""The examples run: the head on PyG DGCNN / Point Transformer / PointNet++ backbones and grid heatmaps train."""
import importlib

import pytest
import torch

from keypointnet_subset import make_subset


def load(name: str):
    """The example ``examples/<name>.py`` (on pytest's ``pythonpath``: they import each other by name)."""
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def bathtubs(tmp_path_factory):
    root = make_subset(tmp_path_factory.mktemp("kpn"), "bathtub", {"train": 4, "val": 1, "test": 1})
    return load("pyg_backbones").bathtubs(root, num_clouds=4, num_points=512)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["dgcnn", "transformer"])
def test_pyg_backbone_with_the_head_learns_bathtub_keypoints(model, bathtubs):
    example = load("pyg_backbones")
    torch.manual_seed(0)
    net = example.MODELS[model](bathtubs["keypoints"].shape[1], channels=32, k=10)
    maps = net(bathtubs["pos"], bathtubs["batch"])
    assert maps.logits.shape == (4 * 512, bathtubs["keypoints"].shape[1])  # PyG-native, no padding
    errors = example.train(net, bathtubs, steps=8)
    assert errors[-1] < 0.95 * errors[0]  # deterministic: seeded model, data and samples


@pytest.mark.slow
def test_pyg_pointnet2_on_the_projects_ops_learns_bathtub_keypoints(bathtubs):
    example = load("pyg_pointnet2")
    torch.manual_seed(0)
    net = example.PointNet2Keypoints(bathtubs["keypoints"].shape[1], channels=32)
    errors = example.train(net, bathtubs, steps=8)
    assert errors[-1] < 0.9 * errors[0]  # deterministic: seeded model, FPS starts, data and samples


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["uniform", "triangular", "gaussian"])
def test_grid_heatmaps_train_with_every_grid_basis(kind):
    errors = load("grid_heatmaps").train(kind, steps=25)
    assert errors[-1] < 0.5 * errors[0]
