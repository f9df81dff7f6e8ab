"""Keypoint models."""
from pckeypoints.models.detector import KeypointDetector

__all__ = ["KeypointDetector"]
