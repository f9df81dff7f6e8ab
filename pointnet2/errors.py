"""The error pointnet2 raises for bad input: :class:`InputError`, a ``ValueError``.

pointnet2 is the lower package and imports nothing of pckeypoints; pckeypoints' own
:class:`pckeypoints.errors.InputError` subclasses this one, so ``except pointnet2.errors.InputError``
(also importable as ``pckeypoints.errors.AnyInputError``) catches bad input to either package.
"""
from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """An argument an op or module cannot take: a tensor of the wrong shape, dtype or device, NaN, an empty
    cloud, an out-of-range setting; the message is one line naming it."""
