"""The one place that turns a device name (``"auto"``, ``"cpu"``, ``"cuda:1"``, ...) into a checked ``torch.device``."""
from __future__ import annotations

import os

import torch

from pckeypoints.errors import InputError

__all__ = ["resolve_device"]


def resolve_device(name: str) -> torch.device:
    """``"auto"``, ``"cpu"``, ``"cuda"`` (this process's ``LOCAL_RANK`` GPU), ``"cuda:N"`` or ``"mps"``, checked to
    exist on this machine (a one-line :class:`~pckeypoints.errors.InputError` otherwise)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if name == "cuda" else torch.device(name)
    except RuntimeError as err:
        raise InputError(f"unknown device {name!r} ({err})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this PyTorch build has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise InputError(f"device {name!r} is unavailable: {why}; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"device {name!r} is unavailable: {torch.cuda.device_count()} CUDA GPU(s) visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {name!r} is unavailable on this machine; use --device cpu")
    return device
