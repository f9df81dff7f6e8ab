"""Backend selection and JIT build of the C++/CUDA extensions.

Backends: ``"reference"`` (pure PyTorch, :mod:`pointnet2.reference`), ``"cpu"`` (C++ extension built from
``csrc/pointnet2_cpu.cpp``), ``"cuda"`` (``csrc/pointnet2_cuda.cpp`` + ``csrc/pointnet2_kernels.cu``) and
``"auto"`` (the extension matching the tensors' device). The choice comes from the ``backend`` argument of
each op, else the ``POINTNET2_BACKEND`` environment variable, else ``"auto"``.

Extensions are built with :func:`load_extension` (:func:`torch.utils.cpp_extension.load`) on first use and cached in the default
torch extensions directory, so later processes only load them (without ninja: a setuptools build, cached
there too). Under ``"auto"`` a failed build falls back
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
_FLAGS = {"cxx": ["-O3", "-ffp-contract=off"], "nvcc": ["-O3"]}


def _sources(device_type: str) -> list[Path]:
    names = ["pointnet2_cpu.cpp"] if device_type == "cpu" else ["pointnet2_cuda.cpp", "pointnet2_kernels.cu"]
    return [_CSRC / n for n in names]


@cache
def _build(device_type: str) -> ModuleType:
    return load_extension(f"pointnet2_{device_type}", tuple(_sources(device_type)))


@cache
def load_extension(name: str, sources: tuple[Path, ...], cflags: tuple[str, ...] = ()) -> ModuleType:
    """JIT-build (or load from the torch extensions cache) the extension ``name`` from ``sources``
    (``.cpp``, ``.cu``) with extra C++ ``cflags``; headers are found in the sources' folders. Raises
    when the build fails."""
    from torch.utils import cpp_extension

    include = sorted({str(path.parent) for path in sources})
    flags = {"cxx": _FLAGS["cxx"] + list(cflags), "nvcc": _FLAGS["nvcc"]}
    if not cpp_extension.is_ninja_available():
        return _build_with_setuptools(name, sources, include, flags)
    return cpp_extension.load(
        name=name,
        sources=[str(path) for path in sources],
        extra_cflags=flags["cxx"],
        extra_cuda_cflags=_FLAGS["nvcc"],
        extra_include_paths=include,
    )


def _build_with_setuptools(name: str, sources: tuple[Path, ...], include: list[str], flags: dict) -> ModuleType:
    """Fallback for machines without ninja (which ``cpp_extension.load`` requires): a setuptools build,
    cached under the torch extensions directory by a hash of the source folders and the torch version."""
    import contextlib
    import hashlib
    import importlib.util

    from setuptools import setup
    from torch.utils import cpp_extension

    digest = hashlib.sha1((torch.__version__ + repr(flags)).encode())
    for folder in include:
        for path in sorted(Path(folder).iterdir()):
            digest.update(path.read_bytes())
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR", Path.home() / ".cache" / "torch_extensions"))
    build_dir = root / f"{name}_setuptools_{digest.hexdigest()[:12]}"
    if not any(build_dir.glob(f"{name}*.so")):
        build_dir.mkdir(parents=True, exist_ok=True)
        cuda = any(path.suffix == ".cu" for path in sources)
        kind = cpp_extension.CUDAExtension if cuda else cpp_extension.CppExtension
        with contextlib.chdir(build_dir):  # keep setuptools away from any project files in the cwd
            setup(
                name=name,
                ext_modules=[kind(name, [str(p) for p in sources], include_dirs=include, extra_compile_args=flags)],
                cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=False)},
                script_args=["-q", "build_ext", "--build-lib", str(build_dir), "--build-temp", str(build_dir / "tmp")],
            )
    spec = importlib.util.spec_from_file_location(name, next(build_dir.glob(f"{name}*.so")))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def use_reference(backend: str | None, device: torch.device) -> bool:
    """Whether ops on ``device`` under ``backend`` run the pure-PyTorch reference (a constant for
    ``torch.compile``: the choice, and any build, happen once at trace time)."""
    return resolve(backend, device) is None


# What @torch.compiler.assume_constant_result does, without importing torch._dynamo (1.2 s) with
# pointnet2: eager users never need it (tests/test_pointnet2_ops.py checks the two agree).
use_reference._dynamo_marked_constant = True


def extension(device: torch.device) -> ModuleType:
    """The extension module of ``device``'s type (built on first use)."""
    return _build(device.type)


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
