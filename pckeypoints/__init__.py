"""Keypoints on point clouds with sampling-argmax (Li et al., NeurIPS 2021).

One import gives the public API (PyG's point ops on ragged batches as ``fps``, ``radius``,
``radius_graph``, ``knn_graph``, ``knn_interpolate``; the ragged ``knn`` is ``pckeypoints.ops.pyg.knn``,
``pckeypoints.knn_points`` the dense one); the core (bases, argmaxes, head, losses, schedules, k-NN) loads
eagerly and needs only PyTorch, the rest (metrics, models, data) on first use. Nothing here imports
``viz``, matplotlib or Open3D.

Examples:
    >>> import torch
    >>> import pckeypoints as pk
    >>> head = pk.KeypointHead(in_channels=32, num_keypoints=4, knn_k=4)
    >>> maps = head(torch.randn(2, 64, 32), torch.rand(2, 64, 3))
    >>> loss = pk.KeypointLoss("sampling", num_samples=8)(maps, torch.rand(2, 4, 3), tau=0.5)
    >>> tuple(maps.keypoints.shape), loss.shape
    ((2, 4, 3), torch.Size([]))
"""
from __future__ import annotations

import importlib

from pckeypoints.core.argmax import sampling_argmax, soft_argmax
from pckeypoints.core.basis import PointBasis
from pckeypoints.errors import PCKeypointsError
from pckeypoints.core.head import KeypointHead, KeypointMaps, KeypointReadout, RaggedKeypointMaps
from pckeypoints.core.losses import KeypointLoss
from pckeypoints.ops.neighbors import knn_points
from pckeypoints.ops.pyg import fps, knn_graph, knn_interpolate, radius, radius_graph
from pckeypoints.core.schedules import ConstantTau, CosineTau, ExponentialTau, LinearTau, TemperatureSchedule, make_schedule
from pckeypoints.validation import check_cloud

#: name -> submodule, imported on first access (PEP 562) to keep ``import pckeypoints`` cheap.
_LAZY = {
    "metrics": None, "models": None, "data": None,
    "pck": "metrics", "pck_curve": "metrics", "mean_error": "metrics", "geodesic_pck": "metrics",
    "dual_alignment_score": "metrics", "keypoint_miou": "metrics", "calibration_correlation": "metrics",
    "KeypointDetector": "models", "SkeletonAutoencoder": "models.autoencoder",
    "KeypointNet": "data", "collate_keypoints": "data", "evaluate_model": "evaluation.inference",
    "use_as_pyg_backend": "ops.pyg_backend",
}

__all__ = [
    "ConstantTau", "CosineTau", "ExponentialTau", "KeypointHead", "KeypointLoss", "KeypointMaps", "KeypointReadout",
    "LinearTau", "PCKeypointsError", "PointBasis", "RaggedKeypointMaps", "TemperatureSchedule", "check_cloud", "fps",
    "knn_graph", "knn_interpolate", "knn_points", "make_schedule", "radius", "radius_graph", "sampling_argmax",
    "soft_argmax", *_LAZY,
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'pckeypoints' has no attribute {name!r}")
    module = importlib.import_module(f".{_LAZY[name] or name}", __name__)
    value = module if _LAZY[name] is None else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
