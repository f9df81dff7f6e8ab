#!/usr/bin/env bash
# Everything that needs a GPU, in one run on a lent GPU machine (torch with CUDA, no torch-cluster):
# pointnet2's CUDA tests and benchmark, the CUDA sampling-argmax tests (Triton fused kernels against the
# reference), the argmax benchmark and the training-step benchmark (width 1, eager and compiled).
#   bash experiments/gpu_check.sh     # results -> experiments/results/*_cuda.*, and $OUT if set
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0
bash experiments/gpu_pointnet2.sh || status=1
echo; echo "==> sampling-argmax on CUDA"
timeout 300 python3 -m pytest -q -rs tests/test_argmax.py tests/test_fused_sampling.py -k cuda || status=1
timeout 120 python3 -m experiments.bench_argmax --device cuda || status=1
echo; echo "==> training step on CUDA"
timeout 420 python3 -m experiments.bench_train --device cuda --width 1 --compile || status=1
[ -n "${OUT:-}" ] && cp experiments/results/*_cuda.* "$OUT"/ 2>/dev/null
echo "gpu_check.sh: exit status $status"
exit $status
