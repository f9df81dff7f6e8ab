"""Why σ from the k nearest neighbours loses to a fixed σ (issue 30, item 2), answered with numbers.

Reads the KeypointNet clouds of each category exactly as training does (``KeypointNet(..., normalize=True)``:
bounding-box centre, unit radius; the ``[augment]`` jitter and scaling as a second, augmented reading) and the
committed per-keypoint test records of ``experiments/results/evidence/records/cpu-full``, and writes
``experiments/results/knn_sigma/``: ``knn_sigma.json`` (every number), ``knn_sigma.md`` (the tables),
``knn_sigma.png`` (σ distributions, one bed cloud's spread, loss by σ) and ``README_section.md``.

1. σ_i = factor · mean distance to the k nearest neighbours (:meth:`pckeypoints.core.basis.PointBasis.from_points`,
   k = 4, 8, 16, the factor it uses) over the train clouds: quantiles in normalised units (radius 1, the units
   of ``model.sigma``) and dataset units (× the cloud's ``scale``, the units of the PCK radius 0.01), against
   the fixed σ = 0.01 and the PCK radius (0.01 dataset units = 0.01 / scale normalised).
2. σ at the annotated keypoints (their cloud points) against elsewhere: ratio of medians.
3. The per-keypoint records of ``sampling30-knn`` against ``sampling30`` (and the ``+js`` pair), joined with each
   test keypoint's σ and semantic id: where the lost keypoints are.
4. The mechanism: the sampling loss of a map concentrated on point i is
   c_i = E‖y_i + σ_i ε − t‖₁ = Σ_d [σ_i √(2/π) exp(−Δ_d²/2σ_i²) + Δ_d erf(Δ_d / (√2 σ_i))], Δ = y_i − t,
   which grows with σ_i (2.39 σ_i at the target itself). With one σ the target point minimises it; with a
   per-point σ a neighbour with a smaller σ can: the loss's own optimum moves off the keypoint. We score, for each
   basis, the PCK@0.01 of that loss-optimal point ("loss-optimal PCK", the ceiling of a map that minimises the
   training loss at τ → 0) on val (to choose a candidate) and test.

    python -m experiments.knn_sigma                     # both categories, ~2 min of one core
    python -m experiments.knn_sigma --categories bed --no-plot
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from experiments.evidence import correct, load_records
from pckeypoints.config import FIXED_SIGMA, AugmentConfig
from pckeypoints.core.basis import KNN_FACTOR, PointBasis
from pckeypoints.data.from_config import augmentation
from pckeypoints.data.keypointnet import KeypointNet
from pckeypoints.evaluation.inference import THRESHOLD

ROOT = Path(__file__).resolve().parents[1]

OUT = ROOT / "experiments" / "results" / "knn_sigma"
RECORDS = ROOT / "experiments" / "results" / "evidence" / "records" / "cpu-full"
#: the factor PointBasis.from_points (and so the trainer's k-NN basis, model.knn_factor) uses by default
FACTOR = KNN_FACTOR
MIN_SIGMA = inspect.signature(PointBasis.from_points).parameters["min_sigma"].default
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
#: (k-NN method, fixed-σ method) pairs of the committed evidence
PAIRS = (("sampling30-knn", "sampling30"), ("sampling30+js-knn", "sampling30+js"))


# ---------------------------------------------------------------------------------------------- data
def load_split(root, category: str, split: str, augment_seed: int | None = None) -> dict:
    """The split's normalised clouds ``(M, N, 3)`` float32, ``scale (M,)``, ``point_index (M, K)`` and model ids;
    with ``augment_seed`` each cloud once through the training augmentation (default ``[augment]``)."""
    dataset = KeypointNet(root, category, split, normalize=True)
    transform = None
    if augment_seed is not None:
        torch.manual_seed(augment_seed)
        transform = augmentation(AugmentConfig())
    items = [dataset[i] for i in range(len(dataset))]
    if transform is not None:
        items = [transform(item) for item in items]
    return {"points": torch.stack([it["points"] for it in items]), "scale": torch.stack([it["scale"] for it in items]),
            "point_index": torch.stack([it["point_index"] for it in items]), "model_ids": list(dataset.model_ids)}


def knn_sigma(points: torch.Tensor, k: int, factor: float = FACTOR) -> torch.Tensor:
    """σ ``(M, N)`` of the k-NN basis, as the trainer builds it (normalised units)."""
    return PointBasis.from_points(points, k=k, factor=factor, min_sigma=MIN_SIGMA).bandwidth[..., 0]


def smoothed_sigma(points: torch.Tensor, sigma: torch.Tensor, k: int) -> torch.Tensor:
    """σ averaged over each point and its k nearest neighbours (σ of a smoothed density), ``(M, N)``."""
    from pckeypoints.ops.neighbors import knn_points

    index = knn_points(points, points, k + 1).index  # (M, N, k+1), self included
    return torch.gather(sigma[:, None, :].expand(-1, points.shape[1], -1), 2, index).mean(-1)


# ---------------------------------------------------------------------------------------------- statistics
def quantiles(values: np.ndarray) -> dict:
    q = np.quantile(values, QUANTILES)
    return {f"q{int(round(100 * p)):02d}": float(v) for p, v in zip(QUANTILES, q)} | {"mean": float(values.mean())}


def expected_l1(delta: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """E Σ_d |Δ_d + σ ε_d|, ε ~ N(0, I): the L1 sampling loss of a one-hot map on a point offset ``delta (..., 3)``
    from the target with basis ``sigma (...)``."""
    s = sigma[..., None]
    return (s * math.sqrt(2 / math.pi) * torch.exp(-0.5 * (delta / s) ** 2)
            + delta * torch.erf(delta / (math.sqrt(2) * s))).sum(-1)


def loss_contrast(sigma: float, radius: float) -> float:
    """(c(R) − c(0)) / R for a one-axis offset R: 1 for σ → 0, smaller the more σ flattens the loss within R."""
    d = torch.tensor([[radius, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    c = expected_l1(d, torch.full((2,), sigma, dtype=torch.float64))
    return float((c[0] - c[1]) / radius)


def loss_optimal(points: torch.Tensor, sigma: torch.Tensor, point_index: torch.Tensor, scale: torch.Tensor) -> dict:
    """For each annotated keypoint of the clouds, the point minimising :func:`expected_l1`: its distance to the
    target (dataset units) and whether it is the target point. ``sigma (M, N)`` (normalised)."""
    dist, same = [], []
    for m in range(points.shape[0]):
        present = point_index[m] >= 0
        target = points[m, point_index[m][present]].double()  # (K', 3)
        cost = expected_l1(points[m].double()[None] - target[:, None], sigma[m].double()[None].expand(len(target), -1))
        best = cost.argmin(-1)
        dist.append(((points[m, best].double() - target).norm(dim=-1) * scale[m].double()).numpy())
        same.append((best == point_index[m][present]).numpy())
    dist, same = np.concatenate(dist), np.concatenate(same)
    return {"pck": float(100 * (dist <= THRESHOLD).mean()), "on_target": float(100 * same.mean()),
            "median_miss": float(np.median(dist[~same])) if (~same).any() else 0.0, "n": int(len(dist))}


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


# ---------------------------------------------------------------------------------------------- sections
def sigma_distribution(train: dict, ks, factor: float, augmented: dict) -> dict:
    """Item 1 and 2 of the module doc for one category's train split."""
    from scipy.stats import chi

    scale = train["scale"].numpy()
    out = {"clouds": int(len(scale)), "scale": quantiles(scale), "pck_radius_normalised": quantiles(THRESHOLD / scale),
           "per_k": {}}
    for k in ks:
        sig = knn_sigma(train["points"], k, factor)
        flat = sig.numpy().ravel()
        in_data = (sig * train["scale"][:, None]).numpy().ravel()
        radius = (THRESHOLD / train["scale"])[:, None].expand_as(sig).numpy().ravel()
        pi = train["point_index"]
        is_kp = torch.zeros_like(sig, dtype=torch.bool)
        rows, cols = (pi >= 0).nonzero(as_tuple=True)
        is_kp[rows, pi[rows, cols]] = True
        kp, rest = sig[is_kp].numpy(), sig[~is_kp].numpy()
        # relative sparsity: σ at a keypoint against the median σ of its 16 nearest points
        cloud_spread = np.quantile(sig.numpy(), 0.95, axis=1) / np.quantile(sig.numpy(), 0.05, axis=1)
        out["per_k"][k] = {
            "normalised": quantiles(flat), "dataset_units": quantiles(in_data),
            "median_over_fixed": float(np.median(flat) / FIXED_SIGMA),
            "share_above_fixed": float(100 * (flat > FIXED_SIGMA).mean()),
            "median_over_pck_radius": float(np.median(flat / radius)),
            "share_above_pck_radius": float(100 * (flat > radius).mean()),
            "factor_for_median_at_fixed": float(factor * FIXED_SIGMA / np.median(flat)),
            # how much the loss rises when the sample's centre moves one PCK radius off the target along an axis,
            # per unit of offset (1 for σ → 0): the loss's contrast inside the PCK radius
            "loss_contrast_at_radius": loss_contrast(float(np.median(flat)), float(np.median(radius))),
            # P(‖σ ε‖ < PCK radius): the within-radius probability of a map all on the right point
            "within_radius_ceiling": float(np.median(chi.cdf(radius / flat, 3))),
            "keypoints": quantiles(kp), "elsewhere": quantiles(rest),
            "keypoint_over_elsewhere": float(np.median(kp) / np.median(rest)),
            "keypoints_n": int(len(kp)),
            "within_cloud_p95_over_p05": quantiles(cloud_spread),
        }
    sig_aug = knn_sigma(augmented["points"], 8, factor).numpy().ravel()
    out["fixed_loss_contrast_at_radius"] = loss_contrast(FIXED_SIGMA, float(np.median(THRESHOLD / scale)))
    out["fixed_within_radius_ceiling"] = float(np.median(chi.cdf(THRESHOLD / scale / FIXED_SIGMA, 3)))
    out["augmented_k8"] = quantiles(sig_aug) | {"median_over_fixed": float(np.median(sig_aug) / FIXED_SIGMA)}
    return out


def one_cloud(train: dict, factor: float, index: int) -> dict:
    sig = knn_sigma(train["points"][index:index + 1], 8, factor)[0].numpy()
    return {"model_id": train["model_ids"][index], "scale": float(train["scale"][index]),
            "sigma_k8": quantiles(sig) | {"min": float(sig.min()), "max": float(sig.max()),
                                           "max_over_min": float(sig.max() / sig.min()),
                                           "p95_over_p05": float(np.quantile(sig, 0.95) / np.quantile(sig, 0.05)),
                                           "cv": float(sig.std() / sig.mean()),
                                           "share_above_fixed": float(100 * (sig > FIXED_SIGMA).mean())}}


def where_lost(category: str, test: dict, records_dir: Path, factor: float) -> dict:
    """Item 3: per test keypoint, correctness of the k-NN run minus the fixed-σ run (mean over common seeds),
    by σ quintile and by semantic id."""
    sig = knn_sigma(test["points"], 8, factor)
    relative = relative_sigma(test["points"], sig)
    out = {}
    for knn_method, fixed_method in PAIRS:
        paired = paired_correctness(category, test["model_ids"], records_dir, knn_method, fixed_method)
        if paired is None:
            continue
        seeds, keys, diffs, base = paired
        rows, kp = keys[:, 0], keys[:, 1]
        point = test["point_index"][rows, kp].numpy()
        s_kp = sig[rows, point].numpy()
        rel = relative[rows, point].numpy()
        d = {name: np.mean(v, 0) for name, v in diffs.items()}
        fixed_pck = {name: np.mean(v, 0) for name, v in base.items()}
        edges, bins = quintiles(s_kp)
        rel_edges, rel_bins = quintiles(rel)
        on_target = on_loss_optimum(test["points"], sig, rows, point)

        def table(groups, labels):
            return [{"group": lab, "n": int((groups == g).sum()),
                     **{f"fixed_{n}": float(100 * fixed_pck[n][groups == g].mean()) for n in d},
                     **{f"diff_{n}": float(100 * d[n][groups == g].mean()) for n in d}}
                    for g, lab in labels if (groups == g).any()]

        out[knn_method] = {
            "against": fixed_method, "seeds": seeds, "keypoints": int(len(kp)),
            "diff": {n: float(100 * v.mean()) for n, v in d.items()},
            "by_sigma_quintile": table(bins, [(i, f"{edges[i]:.4f}-{edges[i + 1]:.4f}") for i in range(5)]),
            "by_relative_sigma_quintile": table(rel_bins, [(i, f"{rel_edges[i]:.2f}-{rel_edges[i + 1]:.2f}")
                                                           for i in range(5)]),
            "by_loss_optimum": table(on_target.astype(int), [(1, "on the annotated point"),
                                                               (0, "off it (a neighbour with smaller σ)")]),
            "by_keypoint": sorted(table(kp, [(i, str(i)) for i in np.unique(kp)]), key=lambda r: r["diff_euclidean"]),
            "spearman_sigma_diff": {n: spearman(s_kp, v) for n, v in d.items()},
            "spearman_relative_sigma_diff": {n: spearman(rel, v) for n, v in d.items()},
            "_sigma": s_kp.tolist(), "_diff_euclidean": d["euclidean"].tolist(),
        }
    return out


def relative_sigma(points: torch.Tensor, sig: torch.Tensor) -> torch.Tensor:
    """Relative sparsity ``(M, N)``: σ at each point over the median σ of its 16 nearest points."""
    from pckeypoints.ops.neighbors import knn_points

    nbr = knn_points(points, points, 17).index[..., 1:]
    local = torch.gather(sig[:, None, :].expand(-1, sig.shape[1], -1), 2, nbr).median(-1).values
    return sig / local


def paired_correctness(category: str, model_ids: list, records_dir: Path, knn_method: str, fixed_method: str
                       ) -> tuple[list[int], np.ndarray, dict, dict] | None:
    """The seeds both methods have records of, the test keypoints ``(P, 2)`` as (row of ``model_ids``, keypoint
    id), and per distance (``euclidean``, ``geodesic``) each seed's correctness difference k-NN − fixed ``(P,)``
    and the fixed run's correctness ``(P,)``; None without common seeds."""
    seeds = sorted(int(p.stem.rsplit("_s", 1)[1]) for p in records_dir.glob(f"{category}_{knn_method}_s*.npz"))
    seeds = [s for s in seeds if (records_dir / f"{category}_{fixed_method}_s{s}.npz").exists()]
    if not seeds:
        return None
    row_of = {m: i for i, m in enumerate(model_ids)}
    diffs = {"euclidean": [], "geodesic": []}
    base, keys = {"euclidean": [], "geodesic": []}, None
    for s in seeds:
        runs = []
        for method in (knn_method, fixed_method):
            meta, rec = load_records(records_dir / f"{category}_{method}_s{s}.npz")
            rows = np.array([row_of[meta["model_id"][c]] for c in rec["cloud"]])
            runs.append((np.stack([rows, rec["keypoint"]], 1), rec))
        (ka, ra), (kb, rb) = runs
        if not (np.array_equal(ka, kb) and (keys is None or np.array_equal(keys, ka))):
            raise SystemExit(f"{category} seed {s}: the records of {knn_method} and {fixed_method} differ")
        keys = ka
        for name, geo in (("euclidean", False), ("geodesic", True)):
            diffs[name].append(correct(ra, "expectation", geo) - correct(rb, "expectation", geo))
            base[name].append(correct(rb, "expectation", geo))
    return seeds, keys, diffs, base


def quintiles(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 6 quintile edges of ``values (P,)`` and each value's quintile ``(P,)`` in 0..4."""
    edges = np.quantile(values, np.linspace(0, 1, 6))
    return edges, np.clip(np.searchsorted(edges, values, side="right") - 1, 0, 4)


def on_loss_optimum(points: torch.Tensor, sig: torch.Tensor, rows: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Whether each annotated point ``point (P,)`` of cloud ``rows (P,)`` is the training loss's own optimum
    under the basis σ ``sig (M, N)`` (section 4): ``(P,)`` booleans."""
    on_target = np.zeros(len(point), dtype=bool)
    for m in np.unique(rows):
        sel = rows == m
        target = points[m, point[sel]].double()
        cost = expected_l1(points[m].double()[None] - target[:, None], sig[m].double()[None].expand(len(target), -1))
        on_target[sel] = (cost.argmin(-1).numpy() == point[sel])
    return on_target


def candidates(factor: float, train_median_k8: float) -> dict:
    """Bases scored by the loss-optimal PCK: name -> function (points) -> σ (M, N), normalised."""
    fit = factor * FIXED_SIGMA / train_median_k8  # puts the k=8 median at the fixed σ
    return {
        "fixed 0.01": lambda p: torch.full(p.shape[:2], FIXED_SIGMA),
        f"knn k=4 factor {factor:g}": lambda p: knn_sigma(p, 4, factor),
        f"knn k=8 factor {factor:g} (evidence)": lambda p: knn_sigma(p, 8, factor),
        f"knn k=16 factor {factor:g}": lambda p: knn_sigma(p, 16, factor),
        "knn k=8, factor fit: train median at 0.01": lambda p: knn_sigma(p, 8, fit),
        "knn k=8 factor 0.2": lambda p: knn_sigma(p, 8, 0.2),
        "knn k=4 factor 0.25": lambda p: knn_sigma(p, 4, 0.25),
        f"knn k=8 factor {factor:g}, clamped to [0.005, 0.01] (= fixed: every σ > 0.01)":
            lambda p: knn_sigma(p, 8, factor).clamp(0.005, 0.01),
        "knn k=8, factor fit, smoothed over 8-NN": lambda p: smoothed_sigma(p, knn_sigma(p, 8, fit), 8),
        f"knn k=8 factor {factor:g}, smoothed over 8-NN": lambda p: smoothed_sigma(p, knn_sigma(p, 8, factor), 8),
    }


# ---------------------------------------------------------------------------------------------- output
def fmt(v, digits=4):
    return f"{v:.{digits}f}"


def markdown(result: dict) -> str:
    lines = ["# Why σ from kNN loses (issue 30, item 2)", "",
             f"`python -m experiments.knn_sigma` (factor {result['factor']:g}, the one `PointBasis.from_points` "
             "and so `basis = \"knn\"` uses; σ in normalised units, clouds of radius 1, as `model.sigma`; the PCK "
             "radius 0.01 is in dataset units, 0.01 / scale normalised).", ""]
    lines += sigma_section(result) + keypoint_section(result) + where_lost_section(result) + loss_optimum_section(result)
    return "\n".join(lines) + "\n"


def sigma_section(result: dict) -> list[str]:
    """Section 1: σ's quantiles per category and k against the fixed σ and the PCK radius; one bed cloud."""
    lines = ["## 1. σ over the train clouds", "",
             "| category | k | σ q05 | q25 | median | q75 | q95 | median / 0.01 | % > 0.01 | median / PCK radius | "
             "% > PCK radius | within-cloud q95/q05 (median cloud) | P(within radius) of a perfect map | loss contrast at the "
             "radius |", "|" + "---|" * 14]
    for c, r in result["categories"].items():
        for k, v in r["sigma"]["per_k"].items():
            q = v["normalised"]
            lines.append(f"| {c} | {k} | {fmt(q['q05'])} | {fmt(q['q25'])} | {fmt(q['q50'])} | {fmt(q['q75'])} | "
                         f"{fmt(q['q95'])} | {v['median_over_fixed']:.2f} | {v['share_above_fixed']:.0f} | "
                         f"{v['median_over_pck_radius']:.2f} | {v['share_above_pck_radius']:.0f} | "
                         f"{v['within_cloud_p95_over_p05']['q50']:.2f} | {v['within_radius_ceiling']:.2f} | "
                         f"{v['loss_contrast_at_radius']:.2f} |")
        lines.append(f"| {c} | fixed | 0.0100 | | | | | 1.00 | | {FIXED_SIGMA / r['sigma']['pck_radius_normalised']['q50']:.2f} "
                     f"| 0 | 1.00 | {r['sigma']['fixed_within_radius_ceiling']:.2f} | "
                     f"{r['sigma']['fixed_loss_contrast_at_radius']:.2f} |")
    lines += [""]
    for c, r in result["categories"].items():
        s = r["sigma"]
        lines.append(f"- {c}: {s['clouds']} train clouds, scale (dataset radius) median {s['scale']['q50']:.3f}, so "
                     f"the PCK radius is {s['pck_radius_normalised']['q50']:.4f} normalised (median); with the "
                     f"training augmentation (jitter 0.005, scale 0.9-1.1) the 8-NN σ median is "
                     f"{s['augmented_k8']['q50']:.4f} ({s['augmented_k8']['median_over_fixed']:.2f}x 0.01).")
    oc = result["one_bed_cloud"]["sigma_k8"]
    lines += ["", f"One bed cloud ({result['one_bed_cloud']['model_id']}, k = 8): σ from {oc['min']:.4f} to "
              f"{oc['max']:.4f} ({oc['max_over_min']:.1f}x), q05-q95 {oc['q05']:.4f}-{oc['q95']:.4f} "
              f"({oc['p95_over_p05']:.2f}x), median {oc['q50']:.4f}, CV {oc['cv']:.2f}, "
              f"{oc['share_above_fixed']:.0f} % of points above 0.01.", ""]
    return lines


def keypoint_section(result: dict) -> list[str]:
    """Section 2: the median σ at the annotated keypoints against elsewhere."""
    lines = ["## 2. σ at annotated keypoints against elsewhere (train)", "",
             "| category | k | keypoints | median σ at keypoints | median σ elsewhere | ratio |", "|---|---|---|---|---|---|"]
    for c, r in result["categories"].items():
        for k, v in r["sigma"]["per_k"].items():
            lines.append(f"| {c} | {k} | {v['keypoints_n']} | {fmt(v['keypoints']['q50'])} | "
                         f"{fmt(v['elsewhere']['q50'])} | {v['keypoint_over_elsewhere']:.2f} |")
    return lines


#: the groupings of section 3: (first column's heading, key of :func:`where_lost`'s rows)
GROUPINGS = (("σ quintile (8-NN, normalised)", "by_sigma_quintile"),
             ("relative σ quintile (σ / local median)", "by_relative_sigma_quintile"),
             ("the 8-NN loss optimum (section 4)", "by_loss_optimum"), ("keypoint id", "by_keypoint"))


def where_lost_section(result: dict) -> list[str]:
    """Section 3: per k-NN method the difference to its fixed-σ run, one table per grouping of the keypoints."""
    lines = ["", "## 3. Where the lost keypoints are (test, k-NN run − fixed-σ run, PCK@0.01 points, "
             "mean over seeds)", ""]
    for c, r in result["categories"].items():
        for method, v in r["where_lost"].items():
            lines += [f"### {c}: {method} − {v['against']} (seeds {v['seeds']}, {v['keypoints']} keypoints): "
                      f"Euclidean {v['diff']['euclidean']:+.1f}, geodesic {v['diff']['geodesic']:+.1f}", "",
                      f"Spearman(σ at keypoint, difference): Euclidean {v['spearman_sigma_diff']['euclidean']:+.3f}, "
                      f"geodesic {v['spearman_sigma_diff']['geodesic']:+.3f}; "
                      f"Spearman(σ / median σ of its 16 nearest points, difference): Euclidean "
                      f"{v['spearman_relative_sigma_diff']['euclidean']:+.3f}, "
                      f"geodesic {v['spearman_relative_sigma_diff']['geodesic']:+.3f}", ""]
            for heading, key in GROUPINGS:
                lines += [f"| {heading} | n | fixed PCK Eucl. | diff Eucl. | fixed PCK geo. | diff geo. |",
                          "|---|---|---|---|---|---|"]
                lines += [f"| {row['group']} | {row['n']} | {row['fixed_euclidean']:.1f} | {row['diff_euclidean']:+.1f} "
                          f"| {row['fixed_geodesic']:.1f} | {row['diff_geodesic']:+.1f} |" for row in v[key]]
                lines.append("")
    return lines


def loss_optimum_section(result: dict) -> list[str]:
    """Section 4: the loss-optimal PCK and share on target of every candidate basis, val and test."""
    fits = ", ".join(f"{c} {r['sigma']['per_k'][8]['factor_for_median_at_fixed']:.3f}"
                     for c, r in result["categories"].items())
    lines = ["## 4. The training loss's own optimum (loss-optimal PCK@0.01, Euclidean, %)", "",
             "The point minimising the L1 sampling loss c_i = E‖y_i + σ_i ε − t‖₁ (a map that minimises the "
             "training loss at τ → 0 puts all its mass there): % within the PCK radius, % on the annotated point."
             f" Factor fit (train median of the 8-NN σ at 0.01): {fits}.", "",
             "| basis | " + " | ".join(f"{c} {s} PCK | {c} {s} on target" for c in result["categories"]
                                      for s in ("val", "test")) + " |",
             "|---|" + "---|---|" * 2 * len(result["categories"])]
    for name in next(iter(result["categories"].values()))["loss_optimal"]["val"]:
        cells = []
        for c, r in result["categories"].items():
            for s in ("val", "test"):
                v = r["loss_optimal"][s][name]
                cells += [f"{v['pck']:.1f}", f"{v['on_target']:.1f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def plot(result: dict, sig: dict, path: Path) -> None:
    """σ over the train clouds per category and k, one bed cloud's σ, and where sampling30-knn loses by σ."""
    from viz.plots import panel_figure, save_figure

    fig, (axes,) = panel_figure(1, 3, (5, 4.2))
    ax = axes[0]
    for (c, k), values in sig.items():
        if c == "one bed cloud":
            continue
        ax.hist(values, bins=np.linspace(0, 0.08, 81), histtype="step", density=True, label=f"{c}, k = {k}")
    for c, r in result["categories"].items():
        ax.axvline(r["sigma"]["pck_radius_normalised"]["q50"], ls=":", color="gray")
    ax.axvline(FIXED_SIGMA, color="k", ls="--", label="fixed σ = 0.01")
    ax.set(xlabel="σ (normalised units, radius 1)", ylabel="density", title="k-NN σ over the train clouds "
           f"(factor {result['factor']:g}); dotted: PCK radius")
    ax.legend(fontsize=7)
    ax = axes[1]
    cloud = sig[("one bed cloud", 8)]
    ax.hist(cloud, bins=60, color="C1")
    ax.axvline(FIXED_SIGMA, color="k", ls="--", label="fixed σ = 0.01")
    ax.set(xlabel="σ (k = 8)", title=f"one bed cloud: {len(cloud)} points", ylabel="points")
    ax.legend(fontsize=7)
    ax = axes[2]
    for i, (c, r) in enumerate(result["categories"].items()):
        v = r["where_lost"].get("sampling30-knn")
        if v is None:
            continue
        x = np.arange(len(v["by_sigma_quintile"])) + 0.2 * (i - 0.5)
        ax.bar(x, [row["diff_euclidean"] for row in v["by_sigma_quintile"]], width=0.4, label=f"{c} (Euclidean)")
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xlabel="quintile of σ at the test keypoint (1 = densest)", ylabel="PCK@0.01 points, k-NN − fixed",
           title="where sampling30-knn loses", xticks=range(5), xticklabels=[str(i + 1) for i in range(5)])
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--categories", nargs="+", default=["bed", "bathtub"])
    p.add_argument("--ks", nargs="+", type=int, default=[4, 8, 16])
    p.add_argument("--factor", type=float, default=FACTOR, help=f"σ factor (default {FACTOR:g}, the trainer's)")
    p.add_argument("--data-root", default=None, help="KeypointNet folder (default: pckeypoints' data_root())")
    p.add_argument("--records", type=Path, default=RECORDS, help="per-keypoint evidence records (.npz)")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--augment-seed", type=int, default=0, help="seed of the one augmented reading of the clouds")
    p.add_argument("--no-plot", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"factor": args.factor, "fixed_sigma": FIXED_SIGMA, "pck_radius_dataset_units": THRESHOLD,
              "categories": {}}
    hist = {}
    steps = tqdm(total=4 * len(args.categories), desc="knn_sigma", unit="step")
    for c in args.categories:
        train = load_split(args.data_root, c, "train")
        augmented = load_split(args.data_root, c, "train", args.augment_seed)
        r = {"sigma": sigma_distribution(train, args.ks, args.factor, augmented)}
        for k in args.ks:
            hist[(c, k)] = knn_sigma(train["points"], k, args.factor).numpy().ravel()
        if c == "bed":
            # the bed train cloud whose median σ is the median over clouds: a typical one
            med = knn_sigma(train["points"], 8, args.factor).median(1).values.numpy()
            idx = int(np.argsort(med)[len(med) // 2])
            result["one_bed_cloud"] = one_cloud(train, args.factor, idx)
            hist[("one bed cloud", 8)] = knn_sigma(train["points"][idx:idx + 1], 8, args.factor)[0].numpy()
        steps.update()
        test = load_split(args.data_root, c, "test")
        r["where_lost"] = where_lost(c, test, args.records, args.factor)
        steps.update()
        bases = candidates(args.factor, r["sigma"]["per_k"][8]["normalised"]["q50"])
        r["loss_optimal"] = {}
        for split, data in (("val", load_split(args.data_root, c, "val")), ("test", test)):
            r["loss_optimal"][split] = {name: loss_optimal(data["points"], fn(data["points"]), data["point_index"],
                                                           data["scale"]) for name, fn in bases.items()}
            steps.update()
        result["categories"][c] = r
    steps.close()
    if "one_bed_cloud" not in result:
        result["one_bed_cloud"] = {"model_id": "-", "sigma_k8": {}}
    md = markdown(result)
    (args.out / "knn_sigma.md").write_text(md)
    slim = json.loads(json.dumps(result, default=float))
    for r in slim["categories"].values():
        for v in r["where_lost"].values():
            v.pop("_sigma"), v.pop("_diff_euclidean")
    (args.out / "knn_sigma.json").write_text(json.dumps(slim, indent=1) + "\n")
    if not args.no_plot:
        plot(result, hist, args.out / "knn_sigma.png")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
