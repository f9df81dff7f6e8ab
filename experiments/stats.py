"""Statistics and number formats of the result tables: paired bootstrap CIs, mean ± sd over seeds."""
from __future__ import annotations

import math
import statistics

import numpy as np

__all__ = ["BOOTSTRAP_DRAWS", "bootstrap", "mean_sd", "nan_mean", "paired_bootstrap", "percent", "summarize"]

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


def mean_sd(values: list[float]) -> str:
    """Fractions as ``"mean ± sd"`` in percent (one decimal; the mean alone for one value, ``–`` for none)."""
    if not values:
        return "–"
    cell = summarize(values)
    return percent(cell["mean"]) if cell["sd"] is None else f"{percent(cell['mean'])} ± {percent(cell['sd'])}"


def percent(value: float | None) -> str:
    """A fraction in percent with one decimal; ``n/a`` for None or NaN."""
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}"
