"""Building C++/CUDA extensions: the one helper used by pointnet2's ops and pckeypoints' kernels.

:func:`load_extension` JIT-builds an extension with :func:`torch.utils.cpp_extension.load` (without ninja,
setuptools) and caches it in the torch extensions directory (``$TORCH_EXTENSIONS_DIR``), in a folder named by
a hash of its sources, flags, torch and Python, so that later processes load it directly.
``scripts/setup.sh`` builds every extension ahead of time (``python -m pckeypoints.ops.extensions``); with
``PCKP_NO_BUILD=1`` :func:`load_extension` raises instead of compiling a missing one. :func:`load_or_warn` is
the fallback of every ``"auto"`` backend: the extension, or None and one warning when it cannot be built.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import warnings
from collections.abc import Callable
from functools import cache
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["NO_BUILD_VAR", "NotBuiltError", "load_extension", "load_or_warn"]

NO_BUILD_VAR = "PCKP_NO_BUILD"

_FLAGS = {"cxx": ["-O3", "-ffp-contract=off"], "nvcc": ["-O3"]}


class NotBuiltError(RuntimeError):
    """An extension is not built for its current sources and ``PCKP_NO_BUILD=1`` forbids compiling it."""


@cache
def load_extension(name: str, sources: tuple[Path, ...], cflags: tuple[str, ...] = ()) -> ModuleType:
    """JIT-build (or load from the torch extensions cache) the extension ``name`` from ``sources``
    (``.cpp``, ``.cu``) with extra C++ ``cflags``; headers are found in the sources' folders. Raises
    when the build fails, and :class:`NotBuiltError` instead of building when ``PCKP_NO_BUILD=1``.

    Each build lives in a folder named by a hash of the source folders' files, the flags, torch and Python,
    so a built extension loads directly, without importing ``torch.utils.cpp_extension`` (and setuptools)
    or running ninja in every process that uses it.
    """
    include = sorted({str(path.parent) for path in sources})
    flags = {"cxx": _FLAGS["cxx"] + list(cflags), "nvcc": _FLAGS["nvcc"]}
    build_dir = _build_dir(name, include, flags)
    built = build_dir / f"{name}.so"
    if not built.exists() or (build_dir / "lock").exists():  # not built, or another process is building it
        if os.environ.get(NO_BUILD_VAR, "0") not in ("", "0"):
            raise NotBuiltError(f"the extension {name} is not built for its current sources (no {built}) and "
                                f"{NO_BUILD_VAR}=1 forbids compiling it: build it with `python -m "
                                "pckeypoints.ops.extensions` (bash scripts/setup.sh runs it)")
        _compile(name, sources, include, flags, build_dir)
    spec = importlib.util.spec_from_file_location(name, built)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_or_warn(load: Callable[[], ModuleType], what: str, fallback: str, stacklevel: int = 2) -> ModuleType | None:
    """``load()`` (an extension's loader, e.g. calling :func:`load_extension`), or None with the RuntimeWarning
    ``"building {what} failed (<error>); {fallback}"`` where it raises (no compiler, a build error,
    :class:`NotBuiltError`); ``stacklevel`` as the caller would give :func:`warnings.warn` (1: its line). Callers cache
    the answer, so that a failed build warns once."""
    try:
        return load()
    except Exception as err:  # any failure means "use the fallback"
        warnings.warn(f"building {what} failed ({type(err).__name__}: {err}); {fallback}", RuntimeWarning,
                      stacklevel=stacklevel + 1)
        return None


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
