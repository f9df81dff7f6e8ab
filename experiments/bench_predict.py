"""``pckeypoints predict`` on big clouds: wall time and peak memory of the whole command.

    python -m experiments.bench_predict [--checkpoint RUN_OR_CKPT] [--sizes 2000 100000 1000000] [--out DIR]

Each size is a bathtub of the shared KeypointNet data, repeated with Gaussian jitter (σ 0.002) up to N points
and written as an ASCII PCD; the command runs in a fresh process (import, checkpoint load, PCD parse,
subsampling to ``--num-points 2048``, model) and reports its wall time, CPU time (user + system: the wall
time it needs on idle cores, at most, when the shared machine is busy) and peak resident memory (``ru_maxrss``);
clouds up to ``--whole-up-to`` points are also run whole (``--num-points N``, the model on every point, as
``predict`` did before it subsampled). Without
``--checkpoint`` a tiny model is trained first (1 epoch, 8 models, width 0.25): the model's cost does not
depend on its weights. Writes experiments/results/bench_predict.{json,md}.
Target (issue 11): 1 M points in <= 5 s and <= 1 GB on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from experiments.benchutil import RESULTS, write_results

ROOT = Path(__file__).resolve().parents[1]

#: Runs one ``pckeypoints predict`` in this process and prints its wall time and peak RSS as JSON.
CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
from pckeypoints.cli import main
code = main(sys.argv[1:])
wall = time.perf_counter() - t0
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"code": code, "seconds": wall, "cpu_seconds": usage.ru_utime + usage.ru_stime,
                  "peak_mb": usage.ru_maxrss / 1024}))
"""


def synthetic_cloud(num_points: int, seed: int = 0) -> np.ndarray:
    """A shared bathtub cloud repeated with jitter to ``num_points`` points (float64)."""
    from pckeypoints.data import KeypointNet

    base = KeypointNet(None, "bathtub", "test")[0]["points"].numpy().astype(np.float64)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(base), num_points)
    return base[picks] + rng.normal(0, 0.002, (num_points, 3))


def write_ascii_pcd(path: Path, points: np.ndarray) -> None:
    with open(path, "w") as f:
        f.write(f"VERSION .7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH {len(points)}\nHEIGHT 1\n"
                f"VIEWPOINT 0 0 0 1 0 0 0\nPOINTS {len(points)}\nDATA ascii\n")
        np.savetxt(f, points, fmt="%.6f")


def tiny_checkpoint(folder: Path) -> Path:
    from pckeypoints.train.training import TrainConfig, train

    config = TrainConfig.from_fields(category="bathtub", epochs=1, max_models=8, width=0.25, batch_size=8,
                                     num_samples=4, out=str(folder), name="tiny")
    return train(config, progress=False)


def run_predict(checkpoint: Path, cloud: Path, output: Path, threads: int, num_points: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    result = subprocess.run([sys.executable, "-c", CHILD, "predict", str(checkpoint), str(cloud), "-o", str(output),
                             "--num-points", str(num_points)], env=env, capture_output=True, text=True, check=True)
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    if measured["code"] != 0:
        raise RuntimeError(f"predict failed on {cloud}: {result.stderr[-500:]}")
    return measured


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="run folder or checkpoint (default: train a tiny one)")
    p.add_argument("--sizes", type=int, nargs="+", default=[2_000, 100_000, 1_000_000])
    p.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of the command (default: 2 cores)")
    p.add_argument("--repeat", type=int, default=3, help="runs per size; the fastest is reported")
    p.add_argument("--whole-up-to", type=int, default=100_000,
                   help="also run the model on the whole cloud (no subsampling, as before) up to this size")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder (default: experiments/results)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = Path(args.checkpoint) if args.checkpoint else tiny_checkpoint(tmp / "runs")
        rows = []
        for size in args.sizes:
            cloud = tmp / f"cloud_{size}.pcd"
            write_ascii_pcd(cloud, synthetic_cloud(size))
            for model_points in [2048] + ([size] if 2048 < size <= args.whole_up_to else []):
                runs = [run_predict(checkpoint, cloud, tmp / "kp.json", args.threads, model_points)
                        for _ in range(args.repeat)]
                rows.append({"points": size, "file_mb": round(cloud.stat().st_size / 2**20, 1),
                             "model_points": min(size, model_points),
                             "seconds": min(r["seconds"] for r in runs),
                             "cpu_seconds": min(r["cpu_seconds"] for r in runs),
                             "peak_mb": max(r["peak_mb"] for r in runs),
                             "keypoints": len(json.loads((tmp / "kp.json").read_text())["keypoints"])})
                print(rows[-1], flush=True)
    write_results("bench_predict", rows, {"threads": args.threads, "repeat": args.repeat, "format": "ascii pcd",
                                          "checkpoint": args.checkpoint or "tiny (1 epoch)",
                                          "load_average_at_end": os.getloadavg()[0]}, args.out)


if __name__ == "__main__":
    main()
