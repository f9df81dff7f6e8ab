"""Optional dependencies, installed by the package's extras, and the error that names the extra.

``pip install 'pckeypoints[viz]'`` adds Open3D (rendering, interactive windows, compressed PCD files);
``pip install 'pckeypoints[cluster]'`` adds torch-cluster (only the PointNet++ benchmark's comparison).
"""
from __future__ import annotations

import importlib
from types import ModuleType

from pckeypoints.errors import PCKeypointsError

__all__ = ["EXTRAS", "MissingExtraError", "require"]

#: Extra -> the modules it installs.
EXTRAS = {"viz": ("open3d",), "cluster": ("torch_cluster",)}


class MissingExtraError(PCKeypointsError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (a module of :data:`EXTRAS`), or raise :class:`MissingExtraError` saying that
    ``purpose`` needs it and which ``pip install`` adds it."""
    extra = next(name for name, modules in EXTRAS.items() if module in modules)
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(f"{purpose} needs {module}, which cannot be imported ({err}); install it with "
                                f"pip install 'pckeypoints[{extra}]'") from err
