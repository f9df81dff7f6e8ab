"""Keypoints on point clouds with sampling-argmax."""
