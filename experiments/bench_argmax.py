"""Forward+backward time and peak memory: soft-argmax + L1 vs sampling-argmax + L1.

    python -m experiments.bench_argmax [--device cpu|cuda] [--quick] [--out DIR]

Writes experiments/results/bench_argmax_<device>.{json,md}; times are the best of the repeats, ratios
are to the soft-argmax row of the same run. Targets for the fused sampler at Ns = 30: on a CPU within
30x the time (one soft-argmax per sample) and 2x the peak memory of soft-argmax; on a GPU within 2x the
time and 1.5x the memory.
"""
from __future__ import annotations

import argparse

import torch

from experiments.benchutil import add_problem_arguments, best_time, peak_bytes, write_results
from pckeypoints.core.argmax import sampling_argmax, soft_argmax
from pckeypoints.core.basis import PointBasis
from pckeypoints.core.losses import error_of_expectation, expectation_of_error


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_problem_arguments(p, batch=8)
    args = p.parse_args()
    dev, (b, k, n) = args.device, (args.batch, args.keypoints, args.points)
    torch.manual_seed(0)
    basis = PointBasis(torch.rand(b, n, 3, device=dev), 0.01)  # timings do not depend on σ
    logits = torch.randn(b, k, n, device=dev, requires_grad=True)
    target = torch.rand(b, k, 3, device=dev)

    def soft():
        error_of_expectation(soft_argmax(logits, basis), target).backward()

    def sampling(ns, sampler, chunk_size=None):
        def run():
            samples = sampling_argmax(logits, basis, ns, 0.5, sampler=sampler, chunk_size=chunk_size)
            expectation_of_error(samples, target).backward()

        return run

    cases = [("soft-argmax", None, soft)]
    for sampler in ("naive", "gaussian", "fused"):
        cases += [(f"sampling ({sampler})", ns, sampling(ns, sampler)) for ns in (1, 10, 30)]
    cases += [(f"sampling (gaussian, chunk {c})", 30, sampling(30, "gaussian", c)) for c in (1, 5, 30)]
    repeat = 3 if args.quick else 10
    rows = []
    for name, ns, fn in cases:
        ms, mib = best_time(fn, dev, repeat, 2, args.clock), peak_bytes(fn, dev) / 2**20
        rows.append({"method": name, "Ns": ns or "-", "fwd+bwd ms": ms, "peak MiB": mib})
    base = rows[0]
    for r in rows:
        r["time x soft"] = r["fwd+bwd ms"] / base["fwd+bwd ms"]
        r["memory x soft"] = r["peak MiB"] / base["peak MiB"]
    write_results(f"bench_argmax_{dev.split(':')[0]}", rows, {"B": b, "K": k, "N": n, "D": 3, "tau": 0.5, "repeat": repeat, "clock": args.clock},
                  args.out)


if __name__ == "__main__":
    main()
