"""Sub-pixel accuracy of the map losses on image grids: does sampling-argmax quantise to cell centres?

Synthetic 32x32 images of a Gaussian blob (σ 1.5 px, pixel noise 0.05) at a uniform sub-pixel position in
[2, 29]²; a small CNN (two 3x3 convolutions of width 8 at full resolution, a strided convolution or a
transposed one to the map size, two 3x3 convolutions of width 8) gives one logit map of 8x8 (stride 4 px),
16x16 (stride 2) or 64x64 (stride 0.5) over :meth:`pckeypoints.PointBasis.grid` cell centres in pixel coordinates. Each cell
(map size, method, seed) trains with Adam for ``--steps`` steps on fresh images and reports, on 512 fixed
test images, the soft-argmax readout's mean Euclidean error in cells, the mean distance of the readout to
its nearest cell centre (0.38 cells for positions uniform in a cell) and the mean peak probability max π.

Methods: ``soft``, ``soft+js`` (target σ one cell), ``discrete``, and ``sampling/<basis>/<tau>`` for every
grid basis and temperature variant: ``anneal`` (exponential 1 -> 0.1 over the run, the point-cloud
default), ``tau1`` (held at 1), ``official`` (the authors' public code: Gumbel form softmax(l + g/τ),
linear 2 -> 0.5 over the run) and, triangular only, ``official+clip`` (with the clipped-integral gradient).
The schedules step every ``steps / 20`` steps (20 "epochs").

Three more tables: ``long``, the 8x8 map trained 3x longer with Ns = 30 (soft, soft + JS and sampling
at τ 1 with every basis: is the gap bias or gradient noise?); ``free``, the 8x8 logits of one map
optimised directly for a fixed target at every sub-cell offset (the loss minimiser without a network);
``exact_1d``, free logits of an 8-cell 1-D map at τ 1 with Ns = 4000 and a decaying learning rate (near
exact expected gradients), the offset of the minimiser's soft-argmax for targets 0.1, 0.25, 0.4 cells
from a cell centre.

Resumable: finished cells are read from the JSON and skipped; each new cell is appended as it finishes.
Run with one thread (the default) so that step times are comparable::

    python3 -m experiments.grid_subpixel            # the whole grid (~15 min of one core)
    python3 -m experiments.grid_subpixel --table    # only rewrite the markdown table
    python3 -m experiments.grid_subpixel --levers   # only the 8x8 levers and gradient noise (~10 min)
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

import pckeypoints as pk

RESULTS = Path(__file__).resolve().parent / "results"
IMAGE = 32
MAP_SIZES = (8, 16, 64)
SEEDS = (0, 1, 2)
BASES = ("uniform", "triangular", "gaussian")
TAUS = {  # name: (schedule, start, end, gumbel form, clipped integral)
    "anneal": ("exponential", 1.0, 0.1, "paper", False),
    "tau1": ("constant", 1.0, 1.0, "paper", False),
    "official": ("linear", 2.0, 0.5, "official", False),
    "official+clip": ("linear", 2.0, 0.5, "official", True),
}
METHODS = ("soft", "soft+js", "discrete") + tuple(
    f"sampling/{basis}/{tau}" for basis in BASES for tau in TAUS if tau != "official+clip" or basis == "triangular")
EPOCHS = 20
NUM_SAMPLES = 10
LONG = {"steps_factor": 3, "num_samples": 30,
        "methods": ("soft", "soft+js") + tuple(f"sampling/{b}/tau1" for b in BASES)}
OFFSETS_1D = (0.1, 0.25, 0.4)
#: 8x8 levers (:func:`lever_loss` specs), 3 seeds each at the main table's steps and batch.
LEVERS = (
    "soft", "soft,cos", "sampling/gaussian/tau1", "sampling/gaussian/tau1,cos", "sampling/gaussian/tau1,ns=100",
    "sampling/gaussian/tau1,ns=1000", "sampling/gaussian/tau1,l2", "sampling/gaussian/tau1,clip",
    "sampling/gaussian/official,clip", "sampling+js/gaussian/tau1", "sampling/gaussian/tau1,sigma=0.25",
    "sampling/gaussian/tau1,sigma=0.5", "sampling/gaussian/tau1,sigma=0.5,ns=100",
    "sampling/gaussian/tau1,sigma=0.5,ns=1000", "sampling/gaussian/tau1,sigma=0.7,ns=100",
    "sampling/gaussian/otau=2,sigma=0.5", "sampling/gaussian/otau=4,sigma=0.25,ns=100",
    "sampling/gaussian/otau=16,sigma=0.25",
    "sampling/triangular/tau1", "sampling/triangular/tau1,cos", "sampling/triangular/tau1,ns=300",
    "sampling+js/triangular/tau1", "sampling/uniform/tau1,ns=300",
)
#: gradient-noise specs, each at the network's initialisation and after soft-argmax training.
NOISE = ("soft", "sampling/gaussian/tau1", "sampling/gaussian/tau1,ns=100", "sampling/gaussian/tau1,sigma=0.5",
         "sampling/gaussian/tau1,clip", "sampling/gaussian/official,clip", "sampling/triangular/tau1",
         "sampling/uniform/tau1")


def grid_basis(size: int, kind: str) -> pk.PointBasis:
    """Cell centres of a size x size map over a 32x32 image, in pixel coordinates (pixel centres 0..31)."""
    stride = IMAGE / size
    return pk.PointBasis.grid((size, size), spacing=stride, origin=(stride - 1) / 2, kind=kind)


def blobs(count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``count`` images ``(B, 1, 32, 32)`` and their blob centres ``(B, 1, 2)`` (row, column) in pixels."""
    centres = 2 + (IMAGE - 5) * torch.rand(count, 1, 2, generator=generator)
    axis = torch.arange(IMAGE, dtype=torch.float32)
    rows = (axis[None, :] - centres[:, 0, :1]).square()  # (B, 32)
    cols = (axis[None, :] - centres[:, 0, 1:]).square()
    images = torch.exp(-(rows[:, :, None] + cols[:, None, :]) / (2 * 1.5**2))
    return (images + 0.05 * torch.randn(images.shape, generator=generator))[:, None], centres


class MapNet(nn.Module):
    """32x32 image -> ``(B, 1, size·size)`` logits."""

    def __init__(self, size: int, width: int = 8, head: int = 8):
        super().__init__()
        relu = nn.ReLU(inplace=True)
        resample = (nn.ConvTranspose2d(width, head, 2, stride=2) if size > IMAGE
                    else nn.Conv2d(width, head, IMAGE // size, stride=IMAGE // size))
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), relu, nn.Conv2d(width, width, 3, padding=1), relu,
            resample, relu, nn.Conv2d(head, head, 3, padding=1), relu, nn.Conv2d(head, 1, 3, padding=1),
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images).flatten(1)[:, None]


def make_loss(method: str, size: int, num_samples: int = NUM_SAMPLES
              ) -> tuple[pk.KeypointLoss, pk.PointBasis, pk.TemperatureSchedule]:
    stride = IMAGE / size
    if not method.startswith("sampling"):
        loss = pk.KeypointLoss(method, num_samples=num_samples, target_sigma=stride)
        return loss, grid_basis(size, "uniform"), pk.make_schedule("constant", 1.0)
    _, basis, tau = method.split("/")
    name, start, end, gumbel, clipped = TAUS[tau]
    loss = pk.KeypointLoss("sampling", num_samples=num_samples, gumbel=gumbel, clipped_integral=clipped)
    return loss, grid_basis(size, basis), pk.make_schedule(name, start, end, EPOCHS)


def readout_stats(logits: Tensor, basis: pk.PointBasis, centres: Tensor, stride: float) -> dict[str, float]:
    """Soft-argmax error, distance to the nearest cell centre (both in cells) and peak π."""
    pred = pk.soft_argmax(logits, basis)
    frac = (pred - basis.pos[0, 0]) / stride
    return {
        "error": float((pred - centres).norm(dim=-1).mean() / stride),
        "to_centre": float((frac - frac.round()).norm(dim=-1).mean()),
        "peak": float(basis.probabilities(logits).amax(-1).mean()),
    }


def lever_loss(spec: str, size: int = 8) -> tuple[pk.KeypointLoss, pk.PointBasis, pk.TemperatureSchedule,
                                                    str]:
    """A ``LEVERS`` spec ``method[,option...]``: the method of :func:`make_loss` (``sampling/<basis>/<tau>``
    also takes ``tau=X``, τ held at X in the paper's form, and ``otau=X``, held at X in the official form
    softmax(l + g/τ)), options ``ns=N`` (Ns), ``sigma=S`` (Gaussian basis σ in cells), ``clip`` (the
    clipped-integral gradient), ``l2`` (Euclidean instead of L1 error), ``cos`` (the learning rate decays to 0
    on a cosine). Returns the loss, basis, τ schedule and learning-rate mode."""
    method, *options = spec.split(",")
    opts = dict(o.split("=") if "=" in o else (o, "1") for o in options)
    num_samples = int(opts.get("ns", NUM_SAMPLES))
    stride = IMAGE / size
    if not method.startswith("sampling"):
        loss, basis, schedule = make_loss(method, size, num_samples)
    else:
        _, kind, tau = method.split("/")
        if tau in TAUS:
            name, start, end, gumbel, clipped = TAUS[tau]
            schedule = pk.make_schedule(name, start, end, EPOCHS)
        else:  # tau=X / otau=X
            form, value = tau.split("=")
            gumbel, clipped = {"tau": "paper", "otau": "official"}[form], False
            schedule = pk.make_schedule("constant", float(value))
        basis = grid_basis(size, kind)
        if "sigma" in opts:
            basis = pk.PointBasis(basis.pos, float(opts["sigma"]) * stride, kind, is_grid=True)
        loss = pk.KeypointLoss(method.split("/")[0], num_samples=num_samples, gumbel=gumbel,
                               clipped_integral=clipped or "clip" in opts, target_sigma=stride)
    loss.metric = "l2" if "l2" in opts else "l1"
    return loss, basis, schedule, "cos" if "cos" in opts else "constant"


def run_cell(size: int, method: str, seed: int, steps: int, batch: int, num_samples: int = NUM_SAMPLES,
             model: nn.Module | None = None) -> dict:
    """One training run; ``method`` is a ``METHODS`` name or, on the 8x8 map, a ``LEVERS`` spec; ``model``:
    train this network (in place) instead of a fresh one."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(1000 + seed)
    model = MapNet(size) if model is None else model
    if method in METHODS:
        loss_fn, basis, schedule = make_loss(method, size, num_samples)
        lr_mode = "constant"
    else:
        loss_fn, basis, schedule, lr_mode = lever_loss(method, size)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps) if lr_mode == "cos" else None
    per_epoch = max(1, steps // EPOCHS)
    start = time.process_time()
    for step in range(steps):
        images, centres = blobs(batch, generator)
        optimizer.zero_grad()
        loss_fn(model(images), centres, basis=basis, generator=generator, tau=schedule.value).backward()
        optimizer.step()
        if decay is not None:
            decay.step()
        if (step + 1) % per_epoch == 0:
            schedule.step()
    seconds = time.process_time() - start
    images, centres = blobs(512, torch.Generator().manual_seed(12345))
    with torch.no_grad():
        stats = readout_stats(model(images), basis, centres, IMAGE / size)
    return {"map": size, "method": method, "seed": seed, "steps": steps, "num_samples": num_samples,
            "cpu_s": round(seconds, 2), **stats}


def _flat_grad(model: nn.Module, loss: Tensor) -> Tensor:
    model.zero_grad()
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def gradient_noise(spec: str, state: str, seed: int = 0, draws: int = 64, batch: int = 16, steps: int = 400) -> dict:
    """Gradient noise of a ``LEVERS`` spec on the 8x8 map, at the network's initialisation (``state="init"``) or
    after ``steps`` steps of soft-argmax training (``"soft-trained"``, near soft-argmax's optimum).

    Over ``draws`` sampling draws on one fixed batch: ``draw_nsr`` = E‖g − ḡ‖² / ‖ḡ‖² (the draws' noise
    against their mean gradient ḡ, for one Ns-sample estimate) and ``cos_soft`` = cos(ḡ, soft-argmax's gradient
    on that batch). Over ``draws`` fresh batches (and draws): ``batch_nsr`` the same ratio for the stochastic
    gradient the optimiser sees; soft-argmax's own ``batch_nsr`` is the data noise that sampling adds to."""
    torch.manual_seed(seed)
    model = MapNet(8)
    if state == "soft-trained":
        run = run_cell(8, "soft", seed, steps, batch, model=model)
        del run
    loss_fn, basis, schedule, _ = lever_loss(spec)
    soft = pk.KeypointLoss("soft")
    tau = schedule.at(0.0)
    images, centres = blobs(batch, torch.Generator().manual_seed(777))
    soft_grad = _flat_grad(model, soft(model(images), centres, basis=basis))
    generator = torch.Generator().manual_seed(99)
    fixed = torch.stack([_flat_grad(model, loss_fn(model(images), centres, basis=basis, generator=generator, tau=tau))
                         for _ in range(draws)])
    data = torch.Generator().manual_seed(555)
    fresh = []
    for _ in range(draws):
        imgs, cents = blobs(batch, data)
        fresh.append(_flat_grad(model, loss_fn(model(imgs), cents, basis=basis, generator=generator, tau=tau)))
    fresh = torch.stack(fresh)

    def nsr(grads: Tensor) -> float:
        mean = grads.mean(0)
        return float((grads - mean).square().sum(1).mean() / mean.square().sum())

    mean = fixed.mean(0)
    return {"spec": spec, "state": state, "seed": seed, "draws": draws,
            "draw_nsr": nsr(fixed) if spec != "soft" else 0.0, "batch_nsr": nsr(fresh),
            "cos_soft": float(torch.nn.functional.cosine_similarity(mean, soft_grad, dim=0))}


def free_map(method: str, offsets: int = 5, steps: int = 300) -> dict:
    """Optimise free 8x8 logits for one target per sub-cell offset (a 5x5 lattice of offsets in the
    central cell); mean readout error / distance to the nearest centre / peak over the offsets."""
    size, stride = 8, IMAGE / 8
    loss_fn, basis, schedule = make_loss(method, size)
    tau = schedule.at(1.0)  # the end of the schedule: what training converges to
    grid = (torch.arange(offsets) + 0.5) / offsets - 0.5  # offsets in cells, in (-0.5, 0.5)
    centre = basis.pos[0, 3 * size + 3]
    targets = (centre + stride * torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2))[:, None]
    logits = torch.zeros(len(targets), 1, size * size, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=0.1)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(logits, targets, basis=basis, generator=generator, tau=tau).backward()
        optimizer.step()
    return {"method": method, "tau": tau, **readout_stats(logits.detach(), basis, targets, stride)}


def exact_1d(kind: str, offset: float, steps: int = 600, num_samples: int = 4000) -> dict:
    """Free logits of an 8-cell 1-D map (unit cells) at τ 1 for a target ``offset`` cells right of cell 3."""
    basis = pk.PointBasis.grid((8,), kind=kind)
    target = torch.tensor([[[3.0 + offset]]])
    logits = torch.zeros(1, 1, 8, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=0.05)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    loss_fn = pk.KeypointLoss("sampling", num_samples=num_samples, sampler="naive")
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(logits, target, basis=basis, generator=generator, tau=1.0).backward()
        optimizer.step()
        decay.step()
    return {"basis": kind, "offset": offset, "readout": float(pk.soft_argmax(logits.detach(), basis)) - 3.0}


def write_table(results: dict, out: Path) -> None:
    cells = results["cells"]
    lines = [
        "# Grid sub-pixel benchmark (`experiments/grid_subpixel.py`)", "",
        f"Mean soft-argmax error in cells on 512 test images (mean ± sd over seeds {list(SEEDS)}), "
        f"{results['steps']} Adam steps of batch {results['batch']}, Ns = {NUM_SAMPLES}; for the 8x8 map also the "
        "mean distance of the readout to its nearest cell centre (0.38 for positions uniform in a cell) "
        "and the mean peak π. One CPU thread; `cpu s` is the mean process time of one training run.", "",
        "| method | " + " | ".join(f"{m}x{m}" for m in MAP_SIZES) + " | 8x8 to centre | 8x8 peak π | cpu s (8 / 16 / 64) |",
        "|---" * (len(MAP_SIZES) + 4) + "|",
    ]
    for method in METHODS:
        row, extra, cpu = [], "", []
        for size in MAP_SIZES:
            runs = [c for c in cells if c["map"] == size and c["method"] == method]
            if not runs:
                row.append("–")
                cpu.append("–")
                continue
            err = [r["error"] for r in runs]
            sd = statistics.stdev(err) if len(err) > 1 else 0.0
            row.append(f"{statistics.mean(err):.3f} ± {sd:.3f}" + ("" if len(runs) == len(SEEDS) else f" (n={len(runs)})"))
            cpu.append(f"{statistics.mean(r['cpu_s'] for r in runs):.1f}")
            if size == 8:
                extra = (f"{statistics.mean(r['to_centre'] for r in runs):.3f} | "
                         f"{statistics.mean(r['peak'] for r in runs):.2f}")
        lines.append(f"| {method} | " + " | ".join(row) + f" | {extra or '– | –'} | {' / '.join(cpu)} |")
    if results.get("long"):
        lines += ["", f"8x8 map trained {LONG['steps_factor']}x longer ({LONG['steps_factor'] * results['steps']} steps), "
                  f"Ns = {LONG['num_samples']}: mean error in cells (mean ± sd over seeds).", "",
                  "| method | 8x8 error | 8x8 to centre | 8x8 peak π |", "|---|---|---|---|"]
        for method in LONG["methods"]:
            runs = [c for c in results["long"] if c["method"] == method]
            if runs:
                err = [r["error"] for r in runs]
                lines.append(f"| {method} | {statistics.mean(err):.3f} ± {statistics.stdev(err) if len(err) > 1 else 0:.3f} | "
                             f"{statistics.mean(r['to_centre'] for r in runs):.3f} | "
                             f"{statistics.mean(r['peak'] for r in runs):.2f} |")
    if results.get("free"):
        lines += ["", "Free 8x8 logits (no network) optimised for a target at 25 sub-cell offsets, 300 Adam steps at "
                  "the schedule's final τ: the loss minimiser's readout error and distance to the nearest cell "
                  "centre (cells), and its peak π.", "",
                  "| method | final τ | error | to centre | peak π |", "|---|---|---|---|---|"]
        for r in results["free"]:
            lines.append(f"| {r['method']} | {r['tau']:.2f} | {r['error']:.3f} | {r['to_centre']:.3f} | {r['peak']:.2f} |")
    if results.get("exact_1d"):
        lines += ["", "1-D map of 8 unit cells, free logits, τ = 1, Ns = 4000, 600 Adam steps with cosine decay: the "
                  "soft-argmax of the minimiser, in cells right of the cell centre the target is "
                  f"{', '.join(map(str, OFFSETS_1D))} cells right of.", "",
                  "| basis | " + " | ".join(f"target +{o}" for o in OFFSETS_1D) + " |", "|---" * (len(OFFSETS_1D) + 1) + "|"]
        for kind in BASES:
            cells = {r["offset"]: r["readout"] for r in results["exact_1d"] if r["basis"] == kind}
            lines.append(f"| {kind} | " + " | ".join(f"{cells[o]:+.3f}" if o in cells else "–" for o in OFFSETS_1D) + " |")
    lines += _lever_lines(results)
    out.write_text("\n".join(lines) + "\n")


def _lever_lines(results: dict) -> list[str]:
    lines = []
    if results.get("levers"):
        soft = [c["error"] for c in results["levers"] if c["method"] == "soft"]
        lines += ["", "## 8x8 levers", "",
                  f"8x8 map, {results['steps']} Adam steps of batch {results['batch']} (as above), seeds {list(SEEDS)}; "
                  "spec `method/basis/τ` plus options: `ns=` Ns (default 10), `sigma=` Gaussian basis σ in cells "
                  "(default 1), `tau=X` / `otau=X` τ held at X in the paper's / the official form, `clip` the "
                  "clipped-integral gradient (fused sampler for Gaussian bases, naive for the others), `l2` "
                  "Euclidean instead of L1 error, `cos` cosine learning-rate decay to 0. `ratio`: mean error over "
                  "soft-argmax's mean error (same seeds; per seed in brackets).", "",
                  "| spec | 8x8 error | ratio to soft (per seed) | to centre | peak π | cpu s |", "|---|---|---|---|---|---|"]
        for spec in LEVERS:
            runs = sorted((c for c in results["levers"] if c["method"] == spec), key=lambda c: c["seed"])
            if not runs:
                continue
            err = [r["error"] for r in runs]
            sd = statistics.stdev(err) if len(err) > 1 else 0.0
            ratio = statistics.mean(err) / statistics.mean(soft) if soft else float("nan")
            per_seed = " / ".join(f"{e / s:.1f}" for e, s in zip(err, soft))
            lines.append(f"| `{spec}` | {statistics.mean(err):.3f} ± {sd:.3f} | {ratio:.2f}x ({per_seed}) | "
                         f"{statistics.mean(r['to_centre'] for r in runs):.3f} | "
                         f"{statistics.mean(r['peak'] for r in runs):.2f} | "
                         f"{statistics.mean(r['cpu_s'] for r in runs):.1f} |")
    if results.get("noise"):
        lines += ["", "## Gradient noise (8x8, seed 0)", "",
                  "Gradients of the network's parameters at its initialisation and after 400 steps of soft-argmax "
                  "training (near soft-argmax's optimum). `draw NSR`: E‖g − ḡ‖² / ‖ḡ‖² over 64 sampling draws on one "
                  "batch of 16 (one Ns-sample estimate against the mean); `batch NSR`: the same over 64 fresh batches "
                  "(what the optimiser sees; soft-argmax's is the data noise alone); `cos soft`: cosine of the "
                  "draws' mean gradient with soft-argmax's on that batch.", "",
                  "| spec | init: draw NSR | init: batch NSR | init: cos soft | trained: draw NSR | "
                  "trained: batch NSR | trained: cos soft |", "|---|---|---|---|---|---|---|"]
        for spec in NOISE:
            row = {r["state"]: r for r in results["noise"] if r["spec"] == spec}
            cells = []
            for state in ("init", "soft-trained"):
                r = row.get(state)
                cells += ([f"{r['draw_nsr']:.2f}", f"{r['batch_nsr']:.2f}", f"{r['cos_soft']:+.2f}"] if r
                          else ["–"] * 3)
            lines.append(f"| `{spec}` | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "grid_subpixel.json")
    parser.add_argument("--table", action="store_true", help="only rewrite the markdown table from the JSON")
    parser.add_argument("--levers", action="store_true", help="only the 8x8 levers and gradient-noise tables")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {"cells": [], "long": [], "free": [], "exact_1d": [], "levers": [], "noise": []}
    if args.out.exists():
        results.update(json.loads(args.out.read_text()))
    if results["cells"] and (results["steps"], results["batch"]) != (args.steps, args.batch):
        parser.error(f"{args.out} holds runs of {results['steps']} steps, batch {results['batch']}: "
                     "use the same --steps/--batch or another --out")
    results.update(steps=args.steps, batch=args.batch, threads=args.threads)

    def save() -> None:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        write_table(results, args.out.with_suffix(".md"))

    if not args.table:
        done = {(c["method"], c["seed"]) for c in results["levers"]}
        todo = [(m, s) for m in LEVERS for s in SEEDS if (m, s) not in done]
        for method, seed in tqdm(todo, desc="8x8 levers", unit="run"):
            results["levers"].append(run_cell(8, method, seed, args.steps, args.batch))
            save()
        done = {(r["spec"], r["state"]) for r in results["noise"]}
        todo = [(m, s) for m in NOISE for s in ("init", "soft-trained") if (m, s) not in done]
        for spec, state in tqdm(todo, desc="gradient noise", unit="spec"):
            results["noise"].append(gradient_noise(spec, state, steps=args.steps, batch=args.batch))
            save()
    if not (args.table or args.levers):
        done = {(c["map"], c["method"], c["seed"]) for c in results["cells"]}
        todo = [(m, meth, s) for s in SEEDS for m in MAP_SIZES for meth in METHODS if (m, meth, s) not in done]
        for size, method, seed in tqdm(todo, desc="grid_subpixel", unit="run"):
            results["cells"].append(run_cell(size, method, seed, args.steps, args.batch))
            save()
        done = {(c["method"], c["seed"]) for c in results["long"]}
        todo = [(m, s) for s in SEEDS for m in LONG["methods"] if (m, s) not in done]
        for method, seed in tqdm(todo, desc="long", unit="run"):
            steps = LONG["steps_factor"] * args.steps
            results["long"].append(run_cell(8, method, seed, steps, args.batch, LONG["num_samples"]))
            save()
        done_free = {r["method"] for r in results["free"]}
        for method in tqdm([m for m in METHODS if m not in done_free], desc="free maps", unit="map"):
            results["free"].append(free_map(method))
            save()
        done = {(r["basis"], r["offset"]) for r in results["exact_1d"]}
        for kind, offset in tqdm([(b, o) for b in BASES for o in OFFSETS_1D if (b, o) not in done], desc="1-D", unit="map"):
            results["exact_1d"].append(exact_1d(kind, offset))
            save()
    save()


if __name__ == "__main__":
    main()
