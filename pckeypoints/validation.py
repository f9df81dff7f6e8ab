"""The one validator of point clouds, used by every public entry point.

Shape checks are cheap and always run. Value checks (NaN or infinite coordinates, sortedness of a
ragged ``batch``) read the data, a device synchronisation on a GPU, so they run only with
``validate=True``: once per public call (:class:`~pckeypoints.models.KeypointDetector`,
:class:`~pckeypoints.core.head.KeypointHead`, :class:`~pckeypoints.core.basis.PointBasis`,
:class:`~pckeypoints.core.losses.KeypointLoss`, the readers), never inside the ops of a training step: the
trainer's steps pass ``validate=False``, its datasets check their clouds when they read them
(``tests/test_host_syncs.py`` counts a step's host synchronisations).
Every failure is one :class:`~pckeypoints.errors.InputError` line naming the argument.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from pckeypoints.errors import InputError

__all__ = ["check_cloud", "check_batch_index", "check_finite"]


def check_cloud(
    points: Tensor | np.ndarray,
    name: str = "points",
    *,
    batched: bool = False,
    dim: int | None = 3,
    min_points: int = 1,
    validate: bool = True,
) -> None:
    """Raise unless ``points`` is one cloud ``(N, D)`` (``batched=True``: ``(B, N, D)``) of finite coordinates.

    Args:
        points: a tensor or NumPy array.
        name: the argument's name in the message.
        batched: expect a leading batch axis.
        dim: required D (``None``: any D >= 1).
        min_points: smallest allowed N.
        validate: also check the values (NaN/inf); shapes are always checked.

    Examples:
        >>> check_cloud(torch.zeros(5, 3))
        >>> check_cloud(torch.zeros(2, 5, 3), "pos", batched=True)
        >>> check_cloud(torch.tensor([[0.0, float("nan"), 0.0]]))
        Traceback (most recent call last):
        ...
        pckeypoints.errors.InputError: points contain NaN or infinite coordinates
    """
    shape = tuple(points.shape)
    layout = "(B, N, D)" if batched else "(N, D)"
    if dim is not None:
        layout = layout.replace("D)", f"{dim})")
    if len(shape) != (3 if batched else 2) or (dim is not None and shape[-1] != dim) or shape[-1] < 1:
        raise InputError(f"{name} must be {layout}, got shape {shape}")
    if shape[-2] < min_points:
        what = "an empty cloud (N = 0)" if shape[-2] == 0 else f"N = {shape[-2]} points"
        raise InputError(f"{name} has {what}; need more than {min_points - 1}")
    if validate:
        check_finite(points, name, "coordinates")


def check_finite(values: Tensor | np.ndarray, name: str, what: str = "values") -> None:
    """Raise ``"{name} contain NaN or infinite {what}"`` unless every entry is finite (a value check;
    skipped inside ``torch.compile``, which cannot branch on values)."""
    if torch.compiler.is_compiling():
        return
    finite = np.isfinite(values).all() if isinstance(values, np.ndarray) else torch.isfinite(values).all()
    if not finite:
        raise InputError(f"{name} contain NaN or infinite {what}")


def check_batch_index(batch: Tensor, num_points: int, name: str = "batch", validate: bool = True) -> None:
    """Raise unless ``batch`` is a sorted ``(N,)`` integer cloud index of ``num_points`` points (PyG convention).

    Examples:
        >>> check_batch_index(torch.tensor([0, 0, 1]), 3)
        >>> check_batch_index(torch.tensor([1, 0, 0]), 3)
        Traceback (most recent call last):
        ...
        pckeypoints.errors.InputError: batch must be sorted (PyG convention); reorder the points with perm = batch.argsort(stable=True)
    """
    if batch.dim() != 1 or batch.shape[0] != num_points:
        raise InputError(f"{name} must be ({num_points},), one cloud index per point, got shape {tuple(batch.shape)}")
    if batch.dtype.is_floating_point or batch.dtype == torch.bool:
        raise InputError(f"{name} must hold integer cloud indices, got {batch.dtype}")
    if not validate or num_points == 0 or torch.compiler.is_compiling():  # value checks: not while compiling
        return
    if bool(batch[0] < 0):
        raise InputError(f"{name} holds negative cloud indices")
    if bool((batch[1:] < batch[:-1]).any()):
        raise InputError(
            f"{name} must be sorted (PyG convention); reorder the points with perm = {name}.argsort(stable=True)"
        )
