"""Keypoint data: KeypointNet, folders of your own annotated models, PCD/mesh readers, transforms and batching.

The PyTorch Geometric view (:class:`pckeypoints.data.pyg.PyGKeypoints`) is imported from its own module.
"""
from . import transforms
from .folder import KeypointFolder
from .keypointnet import CATEGORIES, KeypointNet, collate_keypoints, data_root
from .pcd import read_geometry, read_pcd, read_points

__all__ = ["CATEGORIES", "KeypointFolder", "KeypointNet", "collate_keypoints", "data_root", "read_geometry",
           "read_pcd", "read_points", "transforms"]
