#!/usr/bin/env bash
# Tables 6 and 7 with a longer schedule on a lent GPU machine (no internet, no torch-cluster, no open3d):
# the KeypointNet bathtub/bed files travel as .kpn/kpn.tgz (an ignored, uncommitted copy) and are unpacked
# to /tmp. Both tables train at once on the one GPU. Results -> experiments/results/*_gpu.*, and $OUT.
#   bash experiments/gpu_tables.sh [EPOCHS] [SECONDS_PER_TABLE]
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PCKP_DATA=/tmp/kpn
epochs=${1:-40}
mkdir -p /tmp/kpn && tar xzf .kpn/kpn.tgz -C /tmp/kpn || exit 1
limit=${2:-420}  # seconds per table; each writes its markdown after every run, so a cut-off keeps what finished
timeout "$limit" python3 experiments/table6.py --config experiments/configs/table6_gpu.toml --epochs "$epochs" \
  --methods sampling soft soft+var soft+js discrete \
  --runs /tmp/runs6 --results experiments/results/table6_gpu > /tmp/table6_gpu.log 2>&1 &
p6=$!
timeout "$limit" python3 experiments/table7.py --config experiments/configs/table7_gpu.toml --epochs "$epochs" \
  --max-models 0 --variants soft 10 30 5 1 \
  --device cuda --threads 0 --runs /tmp/runs7 --results experiments/results/table7_gpu > /tmp/table7_gpu.log 2>&1 &
p7=$!
wait $p6; s6=$?
wait $p7; s7=$?
tail -c 3000 /tmp/table6_gpu.log; tail -c 3000 /tmp/table7_gpu.log
cp /tmp/table6_gpu.log /tmp/table7_gpu.log experiments/results/
[ -n "${OUT:-}" ] && tar czf "$OUT/gpu_tables.tgz" experiments/results/table6_gpu experiments/results/table7_gpu \
  experiments/results/table6_gpu.log experiments/results/table7_gpu.log
echo "gpu_tables.sh: table6 exit $s6, table7 exit $s7"
