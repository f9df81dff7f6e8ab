"""Keypoint data: KeypointNet, folders of your own annotated models, PCD/mesh readers, transforms and batching.

The PyTorch Geometric view (:class:`pckeypoints.data.pyg.PyGKeypoints`) is imported from its own module.
"""
from pckeypoints.data import transforms
from pckeypoints.data.folder import KeypointFolder
from pckeypoints.data.keypointnet import CATEGORIES, KeypointNet, collate_keypoints, data_root
from pckeypoints.data.pcd import read_geometry, read_pcd, read_points

__all__ = ["CATEGORIES", "KeypointFolder", "KeypointNet", "collate_keypoints", "data_root", "read_geometry",
           "read_pcd", "read_points", "transforms"]
