"""Deprecated argument names, kept working for one release with a ``DeprecationWarning``."""
from __future__ import annotations

import warnings
from typing import Any

from .errors import PCKeypointsError


def renamed_argument(new: Any, old: Any, old_name: str, new_name: str, required: bool = False) -> Any:
    """The value of an argument renamed from ``old_name`` to ``new_name``: ``new``, or ``old`` with a warning."""
    if old is None:
        if required and new is None:
            raise PCKeypointsError(f"missing argument {new_name!r}")
        return new
    if new is not None:
        raise PCKeypointsError(f"pass {new_name!r} only ({old_name!r} is its deprecated name)")
    warnings.warn(f"{old_name!r} is deprecated, use {new_name!r}", DeprecationWarning, stacklevel=3)
    return old
