#!/usr/bin/env bash
# Evidence runs (experiments/evidence.py) on a lent GPU machine, one part per call of <= 9 minutes.
#
#   bash experiments/gpu_evidence.sh pack     # here, once: KeypointNet bathtub/bed -> .kpn/kpn.tgz (ignored)
#   run(command="bash experiments/gpu_evidence.sh 1", carry=[".kpn", "runs/evidence"], timeout_s=560)
#   tar xzf <files_at>/evidence_part1.tgz     # here: merge the records, then
#   python experiments/evidence.py tables     # rebuild experiments/results/evidence/table6.md
#
# Parts: 1-4 the `best` protocol (1: soft, sampling30; 2: soft+var, soft+js; 3: discrete, sampling10;
# 4: sampling1, sampling5), 5 the `paper` protocol (soft, sampling30), 6 the `best` protocol's σ from
# 8-NN (sampling30-knn), 7-9 Table 7 (soft and Ns 10; Ns 30; Ns 1 and 5), each for bathtub and bed, seeds 0-2.
#
# Every run of a part trains at once on the one GPU, one process each with OMP_NUM_THREADS=1 (on an H200:
# part 1, 12 runs of 100 epochs, trained and scored in 281 s; part 2 in under 200 s). A part cut off by its
# time limit keeps what finished: its unfinished runs' folders come back in the same archive
# (runs/evidence/...), and carrying runs/evidence into the next call resumes them. The GPU machines have
# no torch-cluster: σ from k-NN (part 6) uses pointnet2's kNN.
set -uo pipefail
cd "$(dirname "$0")/.."
part=${1:?usage: gpu_evidence.sh pack | PART (1-9)}
if [ "$part" = pack ]; then
  src=${PCKP_DATA:-../shared/data/keypointnet}
  mkdir -p .kpn
  tar czf .kpn/kpn.tgz -C "$src" annotations/bathtub.json annotations/bed.json splits pcds/02808440 pcds/02818832
  grep -qx '.kpn/' .gitignore || echo '.kpn/' >> .gitignore
  du -h .kpn/kpn.tgz; exit 0
fi
case $part in
  1) protocol=best;     methods="soft sampling30" ;;
  2) protocol=best;     methods="soft+var soft+js" ;;
  3) protocol=best;     methods="discrete sampling10" ;;
  4) protocol=best;     methods="sampling1 sampling5" ;;
  5) protocol=paper;    methods="soft sampling30" ;;
  6) protocol=best;     methods="sampling30-knn" ;;
  7) protocol=table7;   variants="soft 10" ;;
  8) protocol=table7;   variants="30" ;;
  9) protocol=table7;   variants="1 5" ;;
  *) echo "gpu_evidence.sh: unknown part $part" >&2; exit 2 ;;
esac
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PCKP_DATA=/tmp/kpn
mkdir -p /tmp/kpn && tar xzf .kpn/kpn.tgz -C /tmp/kpn || { echo "gpu_evidence.sh: run 'pack' first" >&2; exit 1; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# build the CUDA extension once before a dozen processes want it
python3 -c "import torch, pointnet2.ops as o; o.furthest_point_sample(torch.rand(1, 64, 3, device='cuda'), 8)" || exit 1
limit=${EVIDENCE_SECONDS:-480}
if [ "$protocol" = table7 ]; then
  # Table 7 (unsupervised, the paper's protocol): runs are scored when they finish; a cut-off run is lost
  # (results beside the CPU table in evidence/gpu/; Ns = 30 runs take ~4 min each, 6 at a time)
  jobs=12; [ "$variants" = 30 ] && jobs=6
  timeout "$limit" python3 experiments/table7.py --config experiments/configs/table7_gpu.toml --device cuda \
    --variants $variants --seeds 0 1 2 --jobs $jobs --runs runs/evidence/table7 --results experiments/results/evidence/gpu
  status=$?
  outputs="experiments/results/evidence/gpu"
else
  timeout "$limit" python3 -m experiments.evidence all --protocol "$protocol" --methods $methods \
    --seeds 0 1 2 --jobs 12 --device cuda
  status=$?
  outputs="experiments/results/evidence"
fi
unfinished=$(for d in runs/evidence/*/*/; do case $d in runs/evidence/table7/*) continue;; esac
  [ -f "$d/last.pt" ] && [ ! -f "$d/eval_test/records.pt" ] && echo "$d"; done)
[ -n "${OUT:-}" ] && tar czf "$OUT/evidence_part$part.tgz" $outputs $(for d in $unfinished; do echo "$d"last.pt "$d"log.csv; done)
# part 2's soft-argmax + JS checkpoints (the best method) come back too, to ship as pretrained models
# (experiments/ship_pretrained.py); one archive per category keeps each file under the 16 MiB a file may take
if [ "$part" = 2 ] && [ -n "${OUT:-}" ]; then
  for c in bathtub bed; do tar czf "$OUT/best_softjs_$c.tgz" runs/evidence/best/"$c"_soft+js_s*/best.pt; done
fi
echo "gpu_evidence.sh: part $part ($protocol) exit $status"
exit $status
