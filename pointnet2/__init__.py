"""PointNet++ with fused ball-query + grouping ops.

* :mod:`pointnet2.ops`: furthest_point_sample, ball_query, ball_query_group (fused), knn,
  three_nn_interpolate; C++ (CPU), CUDA and pure-PyTorch (:mod:`pointnet2.reference`) backends.
* :mod:`pointnet2.modules`: SetAbstraction (SSG/MSG), GlobalSetAbstraction, FeaturePropagation,
  PointNet2Seg (channels-last per-point backbone).
* :mod:`pointnet2.pyg`: RaggedPointNet2, adapter from PyG ``(x, pos, batch)`` batches (imports torch_geometric).
"""

from pointnet2.modules import FeaturePropagation, GlobalSetAbstraction, PointNet2Seg, SetAbstraction
from pointnet2.ops import ball_query, ball_query_group, furthest_point_sample, knn, three_nn_interpolate

__all__ = [
    "FeaturePropagation",
    "GlobalSetAbstraction",
    "PointNet2Seg",
    "SetAbstraction",
    "ball_query",
    "ball_query_group",
    "furthest_point_sample",
    "knn",
    "three_nn_interpolate",
]
