"""Statistics and number formats of the result tables: paired bootstrap CIs, mean ± sd over seeds."""
from __future__ import annotations

import math
import statistics

import numpy as np

__all__ = ["BOOTSTRAP_DRAWS", "bootstrap", "mean_sd", "nan_mean", "paired_bootstrap", "percent", "summarize",
           "two_level_bootstrap"]

#: Bootstrap resamples of a CI: 10,000, so that a CI's ends (and whether it excludes 0) do not move with the
#: bootstrap seed at the tables' precision.
BOOTSTRAP_DRAWS = 10_000


def paired_bootstrap(a: np.ndarray, b: np.ndarray, groups: np.ndarray, draws: int = BOOTSTRAP_DRAWS,
                     seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``b − a`` over items (``(n,)`` scores of the same items, e.g. per-keypoint correctness averaged
    over seeds) with its 95 % percentile CI, resampling whole ``groups`` (``(n,)`` ids 0..G-1, e.g. the test
    model of each keypoint) with replacement."""
    diff = np.asarray(b, np.float64) - np.asarray(a, np.float64)
    groups = np.asarray(groups)
    if diff.shape != groups.shape or diff.ndim != 1 or len(diff) == 0:
        raise ValueError(f"need equal non-empty (n,) scores and groups, got {diff.shape} and {groups.shape}")
    num_groups = int(groups.max()) + 1
    per_group_sum = np.bincount(groups, diff, num_groups)
    per_group_count = np.bincount(groups, minlength=num_groups).astype(np.float64)
    _, low, high = bootstrap(lambda weights: (weights @ per_group_sum) / (weights @ per_group_count), num_groups,
                             draws, seed)
    return float(diff.mean()), low, high


def two_level_bootstrap(strata: list[tuple[np.ndarray, np.ndarray, np.ndarray]], draws: int = BOOTSTRAP_DRAWS,
                        seed: int = 0) -> tuple[float, float, float]:
    """Mean over seed pairs of the paired difference ``b − a`` with a 95 % percentile CI that resamples both
    levels: per stratum (e.g. category) its seed pairs with replacement, then, within each drawn pair, the
    stratum's groups (test models) with replacement, the same groups for ``a`` and ``b`` of the pair.

    Args:
        strata: per stratum ``(a, b, groups)``: scores ``(P, n)`` of P seed pairs on the same n items, and the
            items' group ids ``(n,)`` (0..G-1).
    Returns:
        ``(mean, low, high)``: the mean of the pairs' differences (every pair of every stratum weighs the same).
    """
    rng = np.random.default_rng(seed)
    totals, whole = np.zeros(draws), []
    for a, b, groups in strata:
        diff = np.asarray(b, np.float64) - np.asarray(a, np.float64)
        groups = np.asarray(groups)
        if diff.ndim != 2 or diff.shape[1:] != groups.shape or diff.size == 0:
            raise ValueError(f"need (P, n) scores and (n,) groups, got {diff.shape} and {groups.shape}")
        num_groups = int(groups.max()) + 1
        sums = np.stack([np.bincount(groups, row, num_groups) for row in diff])  # (P, G)
        counts = np.bincount(groups, minlength=num_groups).astype(np.float64)
        whole += list(diff.mean(1))
        pairs = rng.integers(0, len(diff), size=(draws, len(diff)))  # (draws, P) drawn seed pairs
        weights = rng.multinomial(num_groups, np.full(num_groups, 1 / num_groups), size=(draws, len(diff)))
        totals += ((weights * sums[pairs]).sum(-1) / (weights @ counts)).sum(1)
    means = totals / len(whole)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(np.mean(whole)), float(low), float(high)

def bootstrap(statistic, num_groups: int, draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> tuple[float, float, float]:
    """``statistic`` of the whole sample and its 95 % percentile CI over resamples of ``num_groups`` groups with
    replacement. ``statistic`` maps group weights ``(d, G)`` (how often each group was drawn; all ones for the
    sample itself) to ``(d,)`` values, e.g. a metric of method b minus method a on the same weighted shapes."""
    rng = np.random.default_rng(seed)
    stats = np.empty(draws)
    for start in range(0, draws, 1000):  # (1000, G) weights at a time
        picks = rng.integers(0, num_groups, size=(min(1000, draws - start), num_groups))
        weights = np.stack([np.bincount(p, minlength=num_groups) for p in picks]).astype(np.float64)
        stats[start:start + len(picks)] = statistic(weights)
    low, high = np.percentile(stats, [2.5, 97.5])
    return float(statistic(np.ones((1, num_groups)))[0]), float(low), float(high)


def nan_mean(values: list[float]) -> float:
    """Mean of the values that are not NaN (NaN if none is)."""
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def summarize(values: list[float]) -> dict:
    """``{"mean", "sd" (None for one value), "n"}``."""
    return {"mean": statistics.mean(values), "sd": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values)}


def mean_sd(values: list[float], whole: float = 1.0) -> str:
    """Fractions of ``whole`` (1: fractions, 100: values already in percent) as ``"mean ± sd"`` in percent (one
    decimal; the mean alone for one value, ``–`` for none)."""
    if not values:
        return "–"
    cell = summarize([value / whole for value in values])
    return percent(cell["mean"]) if cell["sd"] is None else f"{percent(cell['mean'])} ± {percent(cell['sd'])}"


def percent(value: float | None) -> str:
    """A fraction in percent with one decimal; ``n/a`` for None or NaN."""
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}"
