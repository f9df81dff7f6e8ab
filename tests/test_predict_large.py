"""Big clouds: predict subsamples them cheaply (seeded random subset, then farthest point sampling) before the
model (issue 11 defect 9; speed and memory are measured by experiments/bench_predict.py)."""
from __future__ import annotations

import numpy as np
import torch

from pckeypoints.data.transforms import subsample_cloud


def dense_cloud(n: int) -> torch.Tensor:
    rng = np.random.default_rng(1)
    points = rng.normal(size=(n, 3))
    return torch.from_numpy(points / np.linalg.norm(points, axis=1, keepdims=True))  # unit sphere, float64


def test_small_clouds_are_kept_whole():
    points = dense_cloud(500)
    assert subsample_cloud(points, 2048) is points or torch.equal(subsample_cloud(points, 2048), points)


def test_subsample_is_seeded_distinct_points_of_the_cloud():
    points = dense_cloud(50_000)
    a, b, c = subsample_cloud(points, 512), subsample_cloud(points, 512), subsample_cloud(points, 512, seed=1)
    assert a.shape == (512, 3) and a.dtype == torch.float64
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(torch.unique(a, dim=0)) == 512
    rows = {tuple(row) for row in points.tolist()}
    assert all(tuple(row) in rows for row in a.tolist())  # every pick is an input point, exactly


def test_subsample_covers_the_cloud_better_than_a_random_subset():
    points = dense_cloud(50_000)
    picked = subsample_cloud(points, 512)
    random = points[torch.randperm(len(points), generator=torch.Generator().manual_seed(0))[:512]]
    coverage = lambda subset: torch.cdist(points, subset).amin(1).max()  # farthest input point from the subset
    assert coverage(picked) < 0.75 * coverage(random)
