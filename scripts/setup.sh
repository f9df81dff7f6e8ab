#!/usr/bin/env bash
# Idempotent set-up of pckeypoints into the current Python (3.11) on a fresh Debian machine.
#   bash scripts/setup.sh                  # the package, its dependencies and the [viz] extra
#   bash scripts/setup.sh --with-cluster   # also the [cluster] extra, torch-cluster: a source build of about
#                                          # 5.5 minutes on 2 cores (cached), which only the tests' and the
#                                          # PointNet++ benchmark's comparisons use
# Environment:
#   PCKP_CACHE   where built wheels are cached between clones (default ~/.cache/pckeypoints);
#                only an optimisation: a missing or empty cache rebuilds from source.
#   PCKP_SKIP_APT=1  skip the Debian packages for headless rendering (no root needed then).
#   TORCH_EXTENSIONS_DIR  where the C++ extensions are built (default ~/.cache/torch_extensions); the
#                runtime loads them from there, so use the same value when training.
set -Eeuo pipefail
trap 'echo "setup.sh: FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR

WITH_CLUSTER=0
for arg in "$@"; do
  case $arg in
    --with-cluster) WITH_CLUSTER=1 ;;
    *) echo "setup.sh: unknown argument $arg (usage: setup.sh [--with-cluster])" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP="$PY -m pip install --disable-pip-version-check -q"
CACHE=${PCKP_CACHE:-$HOME/.cache/pckeypoints}
step() { printf '\n==> %s\n' "$*"; }

"$PY" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
  || { echo "setup.sh: Python >= 3.11 required" >&2; exit 1; }

# Debian packages Open3D needs to import and to render headless (Mesa's EGL and OpenGL drivers).
GL_PKGS=(libgl1-mesa-dri libegl1 libegl-mesa0 libgl1-mesa-glx libgbm1 libusb-1.0-0)
if [ "${PCKP_SKIP_APT:-0}" != 1 ]; then
  missing=()
  for p in "${GL_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    step "apt-get install ${missing[*]}"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

step "torch 2.13.0 (CPU build)"
"$PY" -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null \
  || $PIP torch==2.13.0 numpy==2.4.6

# torch-cluster has only a source release: its compile (about 5 minutes on 2 cores) runs in the background
# while the other dependencies install; the wheel is cached, so later set-ups only install it.
build=""
if [ "$WITH_CLUSTER" = 1 ]; then step "torch-cluster (built from source, wheel cached in $CACHE/wheels)"; fi
if [ "$WITH_CLUSTER" = 1 ] && ! "$PY" -c 'import torch_cluster' 2>/dev/null; then
  mkdir -p "$CACHE/wheels"
  if ! $PIP --no-index --find-links "$CACHE/wheels" torch-cluster==1.6.3 2>/dev/null; then
    # torch-cluster's setup.py ignores MAX_JOBS; setuptools' build_ext `parallel` compiles
    # its sources two at a time (~5.5 instead of ~10.5 minutes on 2 cores).
    jobs=$(nproc 2>/dev/null || echo 2)
    cfg=$(mktemp --suffix=.cfg); printf '[build_ext]\nparallel = %s\n' "$jobs" >"$cfg"
    echo "    compiling torch-cluster with $jobs jobs in the background (about 5 minutes on 2 cores)..."
    DIST_EXTRA_CONFIG="$cfg" $PY -m pip wheel --disable-pip-version-check -q --no-build-isolation \
      --no-deps -w "$CACHE/wheels" torch-cluster==1.6.3 > "$cfg.log" 2>&1 &
    build=$!
  fi
fi

step "Python dependencies (exact versions; pyproject.toml declares the ranges)"
$PIP torch-geometric==2.8.1 numpy==2.4.6 scipy==1.17.1 open3d==0.20.0 trimesh==5.2.0 matplotlib==3.11.2 \
  pillow==13.0.0 tqdm==4.70.1 tensorboard==2.21.0 pytest==9.0.3 hypothesis==6.155.2 kornia==0.9.0

if [ -n "$build" ]; then
  step "waiting for the torch-cluster compile (a dot every 30 s)"
  while kill -0 "$build" 2>/dev/null; do sleep 30; kill -0 "$build" 2>/dev/null && printf '.'; done; echo
  wait "$build" || { cat "$cfg.log" >&2; rm -f "$cfg" "$cfg.log"; echo "setup.sh: torch-cluster failed to build" >&2; exit 1; }
  rm -f "$cfg" "$cfg.log"
  $PIP --no-index --find-links "$CACHE/wheels" torch-cluster==1.6.3
fi
if [ "$WITH_CLUSTER" = 1 ]; then
  "$PY" -c 'import torch_cluster' || { echo "setup.sh: torch_cluster does not import" >&2; exit 1; }
fi

step "pckeypoints (editable)"
$PIP --no-build-isolation --no-deps -e .
"$PY" -c 'import pckeypoints, pointnet2, torch_geometric, open3d, trimesh'

# The C++ extensions (pointnet2's ops, the fused sampler, the Chamfer kernels), built now by the runtime's own
# loaders into the torch extensions cache, so that no training or evaluation command compiles; a no-op when
# they are built for the current sources (a bare checkout without this step builds each on first use).
step "C++ extensions (pointnet2, fused sampler, Chamfer, grid search; cached in ${TORCH_EXTENSIONS_DIR:-$HOME/.cache/torch_extensions})"
"$PY" -m pckeypoints.ops.extensions
echo "setup.sh: done"
