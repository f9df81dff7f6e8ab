"""Keypoint models."""
from .detector import KeypointDetector

__all__ = ["KeypointDetector"]
