"""The C++ extensions pckeypoints runs, built ahead of time so that no user command compiles.

``bash scripts/setup.sh`` runs ``python -m pckeypoints.ops.extensions``, which builds every extension this machine
uses by calling the very loaders the runtime calls: each is built with the runtime's name, sources, flags and
cache folder (:func:`pointnet2.build.load_extension`, a folder per hash of the current sources, flags, torch
and Python), so the first training step loads it instead of compiling. Nothing here names a source or a
hash: an edited source gets a new folder, built by the next set-up, or JIT-built on first use as in a bare
checkout (the fallback). Already built extensions are loaded, not rebuilt, so the step is idempotent.

Usage::

    python -m pckeypoints.ops.extensions           # build the missing ones, in parallel (one process each)
    python -m pckeypoints.ops.extensions --check   # load each with PCKP_NO_BUILD=1: fails, compiling nothing,
                                               # if one is not built for the current sources
"""
from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType

__all__ = ["EXTENSIONS", "extensions", "load"]

#: name -> (module, loader, arguments): the runtime's own loader of each extension.
EXTENSIONS: dict[str, tuple[str, str, tuple]] = {
    "pointnet2_cpu": ("pointnet2._extension", "_build", ("cpu",)),
    "pointnet2_cuda": ("pointnet2._extension", "_build", ("cuda",)),
    "pckeypoints_sampling_argmax": ("pckeypoints.ops.fused", "_cpu", ()),
    "pckeypoints_chamfer": ("pckeypoints.ops.chamfer", "_kernel", ()),
    "pckeypoints_grid_neighbors": ("pckeypoints.ops.grid_search", "_build", ()),
}


def extensions() -> list[str]:
    """The extensions this machine uses: the CPU ones, and pointnet2's CUDA ops where torch sees a GPU and a CUDA
    toolkit (the fused sampler and the Chamfer search run Triton or torch code on GPUs)."""
    import torch

    cuda = torch.cuda.is_available() and importlib.import_module("torch.utils.cpp_extension").CUDA_HOME is not None
    return [name for name in EXTENSIONS if name != "pointnet2_cuda" or cuda]


def load(name: str) -> ModuleType:
    """Load (building it unless ``PCKP_NO_BUILD=1``) the extension ``name`` through its runtime loader."""
    module, function, args = EXTENSIONS[name]
    return getattr(importlib.import_module(module), function)(*args)


def _run(name: str, check: bool) -> tuple[str, int, float, str]:
    """Load ``name`` in a fresh process (builds run side by side; a failed one cannot break the others)."""
    from pointnet2.build import NO_BUILD_VAR

    env = {**os.environ, NO_BUILD_VAR: "1"} if check else os.environ
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pckeypoints.ops.extensions", "--one", name], env=env,
                          capture_output=True, text=True)
    return name, done.returncode, time.perf_counter() - start, (done.stdout + done.stderr).strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pckeypoints.ops.extensions", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only load them, with PCKP_NO_BUILD=1")
    parser.add_argument("--one", choices=sorted(EXTENSIONS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:
        load(args.one)
        return 0
    names = extensions()
    todo = names
    if not args.check:  # the built ones are only loaded: a set-up run twice compiles nothing the second time
        with ThreadPoolExecutor(len(names)) as pool:
            todo = [name for name, code, _, _ in pool.map(lambda n: _run(n, check=True), names) if code]
        if todo:
            print(f"building {', '.join(todo)} (a few minutes on 2 cores)...", flush=True)
    failed = []
    with ThreadPoolExecutor(max(1, min(len(todo), os.cpu_count() or 1))) as pool:
        for name, code, seconds, output in pool.map(lambda n: _run(n, args.check), todo):
            label = ("not built" if code else "ok") if args.check else ("FAILED" if code else "built")
            print(f"{name}: {label} ({seconds:.0f} s)")
            if code:
                failed.append(name)
                print((output.splitlines() or [""])[-1] if args.check else output, file=sys.stderr)
    if not args.check:
        print(f"extensions: {len(names) - len(todo)} already built, {len(todo) - len(failed)} built"
              + (f", {len(failed)} failed" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
