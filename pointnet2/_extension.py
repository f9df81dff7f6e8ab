"""Backend selection and JIT build of the C++/CUDA extensions.

Backends: ``"reference"`` (pure PyTorch, :mod:`pointnet2.reference`), ``"cpu"`` (C++ extension built from
``csrc/pointnet2_cpu.cpp``), ``"cuda"`` (``csrc/pointnet2_cuda.cpp`` + ``csrc/pointnet2_kernels.cu``) and
``"auto"`` (the extension matching the tensors' device). The choice comes from the ``backend`` argument of
each op, else the ``POINTNET2_BACKEND`` environment variable, else ``"auto"``.

Extensions are built with :func:`pointnet2.build.load_extension` on first use and cached in the torch
extensions directory, so later processes only load them. Under ``"auto"`` a failed build falls back
to the reference with one warning; an explicitly requested backend that cannot be built raises.
The CUDA extension is only ever built for CUDA tensors, so nothing needs nvcc on CPU-only machines.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from types import ModuleType

import torch

from pointnet2.build import load_extension, load_or_warn
from pointnet2.errors import InputError

BACKENDS = ("auto", "cpu", "cuda", "reference")
ENV_VAR = "POINTNET2_BACKEND"
_CSRC = Path(__file__).resolve().parent / "csrc"


def _sources(device_type: str) -> list[Path]:
    names = ["pointnet2_cpu.cpp"] if device_type == "cpu" else ["pointnet2_cuda.cpp", "pointnet2_kernels.cu"]
    return [_CSRC / n for n in names]


@cache
def _build(device_type: str) -> ModuleType:
    return load_extension(f"pointnet2_{device_type}", tuple(_sources(device_type)))


@cache
def _build_or_warn(device_type: str) -> ModuleType | None:
    return load_or_warn(lambda: _build(device_type), f"pointnet2's {device_type.upper()} extension",
                        "falling back to the pure-PyTorch reference (slow)", stacklevel=3)


def use_reference(backend: str | None, device: torch.device) -> bool:
    """Whether ops on ``device`` under ``backend`` run the pure-PyTorch reference. Under ``torch.compile`` only
    an explicit ``"reference"`` (argument or ``POINTNET2_BACKEND``) does, decided without building anything:
    the other backends trace into the dispatcher ops, which load their extension when they run (a failed
    build is then an error, not a fallback)."""
    if torch.compiler.is_compiling():
        return (backend if backend is not None else os.environ.get(ENV_VAR, "auto")) == "reference"
    return resolve(backend, device) is None


def extension(device: torch.device) -> ModuleType:
    """The extension module of ``device``'s type (built on first use)."""
    return _build(device.type)


def resolve(backend: str | None, device: torch.device) -> ModuleType | None:
    """Extension module for ``backend`` on ``device``, or None for the pure-PyTorch reference."""
    name = backend if backend is not None else os.environ.get(ENV_VAR, "auto")
    if name not in BACKENDS:
        raise InputError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name == "reference":
        return None
    if name == "auto":
        if device.type not in ("cpu", "cuda"):
            return None
        return _build_or_warn(device.type)
    if device.type != name:
        raise InputError(f"backend={name!r} needs {name} tensors, got tensors on {device}")
    return _build(name)
