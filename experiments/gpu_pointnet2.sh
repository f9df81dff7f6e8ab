#!/usr/bin/env bash
# pointnet2 on a GPU machine, run once: CUDA tests, then the CUDA benchmark. About 3-4 minutes in all,
# most of it the JIT build of the extensions. torch_cluster may be absent (its benchmark rows are skipped).
#   bash experiments/gpu_pointnet2.sh      # results -> experiments/results/bench_pointnet2_cuda.{json,md}, and $OUT if set
set -uo pipefail
cd "$(dirname "$0")/.."
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export MAX_JOBS="${MAX_JOBS:-8}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
LOG=experiments/results/gpu_pointnet2.log
mkdir -p experiments/results
: > "$LOG"
status=0
step() { printf '\n==> %s\n' "$*" | tee -a "$LOG"; }
finish() {
  echo "gpu_pointnet2.sh: exit status $status" | tee -a "$LOG"
  if [ -n "${OUT:-}" ]; then mkdir -p "$OUT" && cp experiments/results/bench_pointnet2_cuda.* "$LOG" "$OUT"/ 2>/dev/null; fi
  exit "$status"
}

step "environment"
"$PY" -c "
import shutil, torch
import torch.utils.cpp_extension as ext
assert torch.cuda.is_available(), 'no CUDA device'
print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())
print('nvcc', shutil.which('nvcc'), 'CUDA_HOME', ext.CUDA_HOME, 'ninja', ext.is_ninja_available())
" 2>&1 | tee -a "$LOG"
[ "${PIPESTATUS[0]}" = 0 ] || { status=1; finish; }

step "JIT build of the CPU and CUDA extensions"
timeout 240 "$PY" -c "
import time, torch
from pointnet2 import _extension
for kind in ('cpu', 'cuda'):
    t = time.time(); _extension.resolve(kind, torch.device(kind)); print(kind, 'built in', round(time.time() - t), 's')
" 2>&1 | tail -20 | tee -a "$LOG"
[ "${PIPESTATUS[0]}" = 0 ] || status=1

step "tests"
timeout 180 "$PY" -m pytest -q -rs tests/test_pointnet2_*.py 2>&1 | tail -30 | tee -a "$LOG"
[ "${PIPESTATUS[0]}" = 0 ] || status=1

step "benchmark (--device cuda)"
timeout 180 "$PY" -m experiments.bench_pointnet2 --device cuda 2>&1 | tail -30 | tee -a "$LOG"
[ "${PIPESTATUS[0]}" = 0 ] || status=1

finish
