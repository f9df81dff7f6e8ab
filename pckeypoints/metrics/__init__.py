"""Keypoint metrics: PCK (Euclidean and geodesic), confidence calibration, DAS and keypoint IoU, and the typed
results of an evaluation."""
from pckeypoints.metrics.calibration import (brier_score, calibration_correlation, expected_calibration_error, fit_temperature,
                          reliability_bins, within_radius_probability)
from pckeypoints.metrics.das import DualAlignment, dual_alignment_score, keypoint_miou
from pckeypoints.metrics.geodesic import cloud_geodesics, geodesic_distance, geodesic_pck, knn_distance_graph, snap_to_points
from pckeypoints.metrics.pck import mean_error, pck, pck_auc, pck_curve, pck_from_distances
from pckeypoints.metrics.results import AlignmentEvaluation, KeypointEvaluation, ReadoutScores

__all__ = ["AlignmentEvaluation", "DualAlignment", "KeypointEvaluation", "ReadoutScores", "brier_score", "calibration_correlation", "expected_calibration_error", "fit_temperature",
           "reliability_bins", "within_radius_probability", "cloud_geodesics", "dual_alignment_score", "geodesic_distance",
           "geodesic_pck", "keypoint_miou", "knn_distance_graph", "mean_error", "pck", "pck_auc", "pck_curve",
           "pck_from_distances", "snap_to_points"]
