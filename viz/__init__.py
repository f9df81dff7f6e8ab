"""Open3D visualisation of keypoints and probability maps."""
