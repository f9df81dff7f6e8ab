"""Backend selection and JIT build of the C++/CUDA extensions.

Backends: ``"reference"`` (pure PyTorch, :mod:`pointnet2.reference`), ``"cpu"`` (C++ extension built from
``csrc/pointnet2_cpu.cpp``), ``"cuda"`` (``csrc/pointnet2_cuda.cpp`` + ``csrc/pointnet2_kernels.cu``) and
``"auto"`` (the extension matching the tensors' device). The choice comes from the ``backend`` argument of
each op, else the ``POINTNET2_BACKEND`` environment variable, else ``"auto"``.

Extensions are built with :func:`torch.utils.cpp_extension.load` on first use and cached in the default
torch extensions directory, so later processes only load them. Under ``"auto"`` a failed build falls back
to the reference with one warning; an explicitly requested backend that cannot be built raises.
The CUDA extension is only ever built for CUDA tensors, so nothing needs nvcc on CPU-only machines.
"""

from __future__ import annotations

import os
import warnings
from functools import cache
from pathlib import Path
from types import ModuleType

import torch

BACKENDS = ("auto", "cpu", "cuda", "reference")
ENV_VAR = "POINTNET2_BACKEND"
_CSRC = Path(__file__).resolve().parent / "csrc"


@cache
def _build(device_type: str) -> ModuleType:
    from torch.utils import cpp_extension

    if device_type == "cpu":
        return cpp_extension.load(
            name="pointnet2_cpu",
            sources=[str(_CSRC / "pointnet2_cpu.cpp")],
            extra_cflags=["-O3", "-ffp-contract=off"],
            extra_include_paths=[str(_CSRC)],
        )
    return cpp_extension.load(
        name="pointnet2_cuda",
        sources=[str(_CSRC / "pointnet2_cuda.cpp"), str(_CSRC / "pointnet2_kernels.cu")],
        extra_cflags=["-O3", "-ffp-contract=off"],
        extra_cuda_cflags=["-O3"],
        extra_include_paths=[str(_CSRC)],
    )


@cache
def _build_or_warn(device_type: str) -> ModuleType | None:
    try:
        return _build(device_type)
    except Exception as err:  # compiler missing, build error, ...: any failure means "use the reference"
        warnings.warn(
            f"pointnet2: building the {device_type.upper()} extension failed ({type(err).__name__}: {err}); "
            "falling back to the pure-PyTorch reference (slow).",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def resolve(backend: str | None, device: torch.device) -> ModuleType | None:
    """Extension module for ``backend`` on ``device``, or None for the pure-PyTorch reference."""
    name = backend if backend is not None else os.environ.get(ENV_VAR, "auto")
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name == "reference":
        return None
    if name == "auto":
        if device.type not in ("cpu", "cuda"):
            return None
        return _build_or_warn(device.type)
    if device.type != name:
        raise ValueError(f"backend={name!r} needs {name} tensors, got tensors on {device}")
    return _build(name)
