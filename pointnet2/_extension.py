"""Backend selection and JIT build of the C++/CUDA extensions.

Backends: ``"reference"`` (pure PyTorch, :mod:`pointnet2.reference`), ``"cpu"`` (C++ extension built from
``csrc/pointnet2_cpu.cpp``), ``"cuda"`` (``csrc/pointnet2_cuda.cpp`` + ``csrc/pointnet2_kernels.cu``) and
``"auto"`` (the extension matching the tensors' device). The choice comes from the ``backend`` argument of
each op, else the ``POINTNET2_BACKEND`` environment variable, else ``"auto"``.

Extensions are built with :func:`load_extension` (:func:`torch.utils.cpp_extension.load`; without ninja,
setuptools) on first use and cached in the torch extensions directory, so later processes only load
them. Under ``"auto"`` a failed build falls back
to the reference with one warning; an explicitly requested backend that cannot be built raises.
The CUDA extension is only ever built for CUDA tensors, so nothing needs nvcc on CPU-only machines.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
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
    when the build fails.

    Each build lives in a folder named by a hash of the source folders' files, the flags, torch and Python,
    so a built extension loads directly, without importing ``torch.utils.cpp_extension`` (and setuptools)
    or running ninja in every process that uses it.
    """
    include = sorted({str(path.parent) for path in sources})
    flags = {"cxx": _FLAGS["cxx"] + list(cflags), "nvcc": _FLAGS["nvcc"]}
    build_dir = _build_dir(name, include, flags)
    built = build_dir / f"{name}.so"
    if not built.exists() or (build_dir / "lock").exists():  # not built, or another process is building it
        _compile(name, sources, include, flags, build_dir)
    spec = importlib.util.spec_from_file_location(name, built)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build_dir(name: str, include: list[str], flags: dict) -> Path:
    """``$TORCH_EXTENSIONS_DIR/<name>_<hash>``: one folder per version of the sources, flags, torch and Python."""
    digest = hashlib.sha1(f"{torch.__version__} {sys.implementation.cache_tag} {flags!r}".encode())
    for folder in include:
        for path in sorted(Path(folder).iterdir()):
            if path.is_file():
                digest.update(path.name.encode() + path.read_bytes())
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR", Path.home() / ".cache" / "torch_extensions"))
    return root / f"{name}_{digest.hexdigest()[:12]}"


def _compile(name: str, sources: tuple[Path, ...], include: list[str], flags: dict, build_dir: Path) -> None:
    """Build ``build_dir/<name>.so``: ninja through ``cpp_extension.load`` (which locks the folder against
    concurrent builds), or setuptools on machines without ninja."""
    from torch.utils import cpp_extension

    build_dir.mkdir(parents=True, exist_ok=True)
    if cpp_extension.is_ninja_available():
        cpp_extension.load(name=name, sources=[str(path) for path in sources], extra_cflags=flags["cxx"],
                           extra_cuda_cflags=flags["nvcc"], extra_include_paths=include,
                           build_directory=str(build_dir))
        return
    import contextlib

    from setuptools import setup

    cuda = any(path.suffix == ".cu" for path in sources)
    kind = cpp_extension.CUDAExtension if cuda else cpp_extension.CppExtension
    with contextlib.chdir(build_dir):  # keep setuptools away from any project files in the cwd
        setup(
            name=name,
            ext_modules=[kind(name, [str(p) for p in sources], include_dirs=include, extra_compile_args=flags)],
            cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=False)},
            script_args=["-q", "build_ext", "--build-lib", str(build_dir / "lib"), "--build-temp",
                         str(build_dir / "tmp")],
        )
    os.replace(next((build_dir / "lib").glob(f"{name}*.so")), build_dir / f"{name}.so")


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


# What @torch.compiler.assume_constant_result does, without importing torch._dynamo (seconds) with
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
