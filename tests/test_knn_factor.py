"""The k-NN basis' σ factor (model.knn_factor, issue 30 item 2) and the loss of experiments/knn_sigma.py."""
import math

import pytest
import torch

from pckeypoints.core.basis import KNN_FACTOR
from pckeypoints.config import TrainConfig
from pckeypoints.errors import ConfigError, PCKeypointsError
from pckeypoints.core.head import KeypointHead, KeypointReadout


def test_readout_scales_the_knn_sigma_by_its_factor():
    pos = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [3, 0, 0], [7, 0, 0]]])
    default = KeypointReadout(knn_k=2).basis(pos).bandwidth
    assert torch.allclose(default[0, :, 0], KNN_FACTOR * torch.tensor([2.0, 1.5, 2.5, 5.0]))
    scaled = KeypointReadout(knn_k=2, knn_factor=0.2).basis(pos).bandwidth
    assert torch.allclose(scaled, default * 0.2 / KNN_FACTOR)
    # ragged clouds (the trainer's PyG path) and a caller's graph get the same factor
    batch = torch.zeros(4, dtype=torch.long)
    ragged = KeypointReadout(knn_k=2, knn_factor=0.2).basis(pos[0], batch).bandwidth
    assert torch.allclose(ragged, scaled)
    edges = torch.tensor([[1, 0, 2, 1], [0, 1, 1, 2]])
    graph = KeypointReadout(knn_factor=0.2).basis(pos[0, :3], batch[:3], edge_index=edges).bandwidth
    assert torch.allclose(graph[0, :, 0], 0.2 * torch.tensor([1.0, 1.5, 2.0]))
    # the fixed σ ignores the factor
    assert torch.all(KeypointReadout(fixed_sigma=0.01, knn_factor=0.2).basis(pos).bandwidth == 0.01)
    assert "knn_factor=0.2" in repr(KeypointReadout(knn_factor=0.2)) and "factor" not in repr(KeypointReadout())


@pytest.mark.parametrize("bad", [0, -0.5, math.inf, math.nan, True, "0.2"])
def test_readout_rejects_a_bad_factor(bad):
    with pytest.raises(PCKeypointsError, match="knn_factor"):
        KeypointReadout(knn_factor=bad)


def test_config_field_reaches_the_head():
    config = TrainConfig.from_fields(basis="knn", knn_k=8, knn_factor=0.2, sigma=None, num_keypoints=3)
    assert config.model.knn_factor == 0.2 and config.model.arguments()["knn_factor"] == 0.2
    head = KeypointHead(4, 3, knn_k=config.model.knn_k, knn_factor=config.model.knn_factor)
    assert head.readout.knn_factor == 0.2
    assert TrainConfig().model.knn_factor == KNN_FACTOR  # old checkpoints (no field) keep their σ
    assert TrainConfig.from_dict({"model": {"basis": "knn", "sigma": None}}).model.knn_factor == KNN_FACTOR


def test_config_rejects_an_unused_or_bad_factor():
    with pytest.raises(ConfigError, match="model.knn_factor is set but unused"):
        TrainConfig.from_fields(knn_factor=0.2)  # the default basis is fixed
    with pytest.raises(ConfigError, match="model.knn_factor must be > 0"):
        TrainConfig.from_fields(basis="knn", sigma=None, knn_factor=0.0)


def test_expected_l1_matches_monte_carlo():
    from experiments.knn_sigma import expected_l1

    gen = torch.Generator().manual_seed(0)
    delta = torch.tensor([[0.0, 0.0, 0.0], [0.01, -0.02, 0.005]], dtype=torch.float64)
    sigma = torch.tensor([0.02, 0.01], dtype=torch.float64)
    eps = torch.randn(400_000, 2, 3, generator=gen, dtype=torch.float64)
    mc = (delta + sigma[:, None] * eps).abs().sum(-1).mean(0)
    assert torch.allclose(expected_l1(delta, sigma), mc, rtol=5e-3)
    assert torch.isclose(expected_l1(delta[:1], sigma[:1]), torch.tensor(3 * 0.02 * math.sqrt(2 / math.pi),
                                                                         dtype=torch.float64))
