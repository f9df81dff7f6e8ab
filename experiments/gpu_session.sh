#!/usr/bin/env bash
# A whole lent-GPU session in one call: the extension build with the Triton sampling-argmax checks and
# bench_argmax beside it (they need no pointnet2), one evidence part (experiments/gpu_evidence.sh), then
# bench_train eager with the seconds left before the deadline.
#   bash experiments/gpu_evidence.sh pack     # here, once
#   run(command="bash experiments/gpu_session.sh 1 560", carry=[".kpn"], timeout_s=590)
# $OUT gets: evidence_partN.tgz, gpu_checks.log, gpu_session.log, bench_{argmax,train}_cuda.{json,md}.
set -uo pipefail
cd "$(dirname "$0")/.."
part=${1:?usage: gpu_session.sh PART DEADLINE_SECONDS}
deadline=${2:?usage: gpu_session.sh PART DEADLINE_SECONDS}
out=$(realpath "${OUT:-experiments/results}")
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=8
exec > >(tee -a "$out/gpu_session.log") 2>&1
(timeout 60 python3 -m pytest -q -rs tests/test_fused_sampling.py tests/test_argmax.py -k cuda
 timeout 45 python3 -m experiments.bench_argmax --device cuda --quick --out "$out") > "$out/gpu_checks.log" 2>&1 &
checks=$!
python3 -c "
import torch, pointnet2.ops as o
for device in ('cuda', 'cpu'):
    o.furthest_point_sample(torch.rand(1, 64, 3, device=device), 8)
" || exit 1
echo "gpu_session.sh: extensions built at ${SECONDS}s"
wait $checks; echo "gpu_session.sh: checks done at ${SECONDS}s (exit $?)"
EVIDENCE_SECONDS=$((deadline - SECONDS - 45)) bash experiments/gpu_evidence.sh "$part"
echo "gpu_session.sh: evidence done at ${SECONDS}s"
left=$((deadline - SECONDS))
if [ "$left" -gt 20 ]; then
  timeout "$left" python3 -m experiments.bench_train --device cuda --width 1 --quick --out "$out"
fi
echo "gpu_session.sh: done at ${SECONDS}s"
