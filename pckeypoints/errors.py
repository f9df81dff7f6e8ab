"""The errors pckeypoints raises for bad input (files, configs, checkpoints, arguments).

Every one is a :class:`PCKeypointsError`, a ``ValueError``: its message is one line that names the
offending file or setting and what is wrong with it, and the command line prints just that line.

A bad argument to a function (a tensor of the wrong shape, dtype or range, NaN, an empty cloud, an unknown
option) is an :class:`InputError`. pointnet2, the lower package, cannot import pckeypoints, so its ops and
modules raise their own ``pointnet2.errors.InputError``, which pckeypoints' :class:`InputError` subclasses:
that class, :data:`AnyInputError` here, is the one base of every bad-input error of both packages
(``except AnyInputError``), and the command line prints it as one line too.
"""
from __future__ import annotations

from pointnet2.errors import InputError as AnyInputError

__all__ = ["PCKeypointsError", "ConfigError", "CheckpointError", "ReadError", "WriteError", "InputError", "UsageError",
           "TrainingError", "AnyInputError"]


class PCKeypointsError(ValueError):
    """Bad input to pckeypoints; the message says which and why."""


class ConfigError(PCKeypointsError):
    """An invalid :class:`~pckeypoints.config.TrainConfig` field or config file."""


class CheckpointError(PCKeypointsError):
    """A checkpoint file that cannot be used: missing, damaged, foreign or from another version."""


class ReadError(PCKeypointsError):
    """A point cloud, mesh or keypoint file that cannot be read."""


class WriteError(PCKeypointsError):
    """A file or folder that cannot be written: disk full, read-only file system, no permission."""


def write_error(path, err: Exception, what: str = "") -> WriteError:
    """The one-line :class:`WriteError` for a failed write of ``path`` (``what``: e.g. ``"checkpoint"``): the
    system's reason, or for a failure that gives none (``torch.save``) the free space left on its disk."""
    import shutil
    from pathlib import Path

    name = f"{what} {path}" if what else str(path)
    if isinstance(err, OSError) and err.strerror:
        return WriteError(f"cannot write {name}: {err.strerror}")
    try:
        free = f"{shutil.disk_usage(Path(path).parent).free / 2**20:.1f} MiB free there"
    except OSError:
        free = "its folder is gone"
    return WriteError(f"cannot write {name}: the write failed (disk full or not writable? {free})")


class InputError(PCKeypointsError, AnyInputError):
    """An argument a function cannot take: a tensor of the wrong shape, dtype or range, NaN, an empty cloud.
    Also a :data:`AnyInputError`, the base that catches pointnet2's bad-input errors too."""


class UsageError(PCKeypointsError):
    """A command-line option, or a combination of options, that cannot work."""


class TrainingError(PCKeypointsError):
    """A run that cannot go on, e.g. a diverged loss (a learning rate too large for the data)."""
