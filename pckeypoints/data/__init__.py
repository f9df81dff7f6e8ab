"""KeypointNet data: PCD/mesh readers, the dataset, its transforms and batching."""
from . import transforms
from .keypointnet import CATEGORIES, KeypointNet, collate_keypoints, data_root
from .pcd import read_pcd, read_points

__all__ = ["CATEGORIES", "KeypointNet", "collate_keypoints", "data_root", "read_pcd", "read_points", "transforms"]
