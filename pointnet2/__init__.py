"""PointNet++ with fused ball-query + grouping ops."""
