"""Host synchronisations of a training step (issue 33 item 7), counted on CPU by experiments/bench_syncs.py.

A value check reads the data: on a GPU the host waits for the device. The trainer's steps run without them
(the datasets check their clouds when they read them); public calls still check by default.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pckeypoints.config import TrainConfig
from pckeypoints.data.keypointnet import KeypointClouds
from pckeypoints.distributed import World
from pckeypoints.errors import PCKeypointsError, TrainingError
from pckeypoints.models import KeypointDetector
from pckeypoints.models.autoencoder import SkeletonAutoencoder
from pckeypoints.train.budget import TimeBudget
from pckeypoints.train.callbacks import TrainSession
from pckeypoints.train.training import _train_epoch
from experiments.bench_syncs import HostSyncCounter, step_syncs, training_epoch

TINY = {"width": 0.25, "hidden_channels": 16, "num_samples": 4}


def test_counter_sees_reads_and_value_dependent_shapes():
    x = torch.tensor([0.5, -1.0, 2.0])
    with HostSyncCounter() as counter:
        y = (x * 2).exp().sum()  # no read: 0
        x.sum().item()
        bool((x > 0).any())
        float(x.max())
        x.tolist()
        x[x > 0]  # boolean indexing: its size depends on the values
        (x > 0).nonzero()
    assert counter.count == 6, counter.sites
    assert torch.isfinite(y)
    with HostSyncCounter() as counter:
        torch.optim.AdamW([torch.nn.Parameter(x.clone())]).step()  # its step counters live on the host
    assert counter.count == 0


@pytest.mark.parametrize("mode, fields", [("supervised", {}), ("supervised", {"method": "soft", "basis": "knn"}),
                                          ("unsupervised", {}), ("unsupervised", {"method": "soft"})])
def test_a_training_step_synchronises_once(mode, fields):
    torch.manual_seed(0)
    per_step, sites, per_epoch = step_syncs(training_epoch(mode, batch_size=2, num_points=512, **TINY, **fields))
    # The one read of a step: its loss and logged scalars together (a .tolist() after optimizer.step(), once
    # the step is queued), for the divergence check and the progress bar. Before issue 33 a step made 6
    # (supervised) or 11-12 (unsupervised) reads: value checks of the points, logits, targets and the Chamfer
    # inputs, and the loss read twice and each logged term once.
    assert per_step == 1, sites
    # Per epoch: the means of the logged scalars (a host tensor: no device synchronisation on a GPU)
    assert per_epoch == 1


def test_public_calls_still_check_values():
    torch.manual_seed(0)
    points = torch.rand(1, 256, 3) - 0.5
    detector = KeypointDetector(3, width=0.25, hidden_channels=16).eval()
    autoencoder = SkeletonAutoencoder(3, width=0.25, feature_channels=8, hidden_channels=8).eval()
    for model in (detector, autoencoder):
        with HostSyncCounter() as counter:
            model(points)
        assert counter.count == 1, counter.sites  # the finite check of the points
        with HostSyncCounter() as counter:
            model(points, validate=False)
        assert counter.count == 0, counter.sites
        with pytest.raises(PCKeypointsError, match="NaN"):
            model(torch.full((1, 256, 3), float("nan")))
    with pytest.raises(PCKeypointsError, match="NaN"):  # a call's validate overrides the detector's
        KeypointDetector(3, width=0.25, validate=False)(torch.full((1, 256, 3), float("nan")), validate=True)


def test_datasets_check_their_clouds_when_built():
    clouds = KeypointClouds()
    clouds.num_keypoints, clouds._clouds, clouds._point_index, clouds._centers = 2, [], [], []
    clouds.add_cloud(np.zeros((4, 3), np.float32), [0], [1])
    with pytest.raises(PCKeypointsError, match="points of cloud 1 contain NaN"):
        clouds.add_cloud(np.full((4, 3), np.nan, np.float32), [0], [1])


def test_a_diverged_step_still_stops_training():
    weight = torch.nn.Parameter(torch.ones(()))

    class Diverging:
        def loss(self, model, batch, config, tau):
            return weight * float("nan"), {}

    state = SimpleNamespace(optimizer=torch.optim.SGD([weight], lr=0.1), epoch=0)
    session = TrainSession(Diverging(), TrainConfig(), state, World(), TimeBudget(math.inf))
    with pytest.raises(TrainingError, match="diverged: loss is nan"):
        _train_epoch(session, torch.nn.Linear(1, 1), [{}], 1.0, torch.device("cpu"), desc="test", progress=False)
