"""experiments/stats.py: the paired bootstrap against hand-computed cases and formats of table cells."""
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import stats  # noqa: E402


def test_paired_bootstrap_of_a_constant_difference_is_that_difference():
    groups = np.array([0, 0, 1, 1, 2, 2])
    assert stats.paired_bootstrap(np.zeros(6), np.ones(6), groups) == (1.0, 1.0, 1.0)
    assert stats.paired_bootstrap(np.ones(6), np.ones(6), groups) == (0.0, 0.0, 0.0)


def test_paired_bootstrap_resamples_whole_groups():
    # group 0 gains 1 on both items, group 1 nothing: a draw's mean is the share of group-0 picks, so the CI
    # spans the binomial quantiles of 2 picks: 0 (both group 1), 0.5 or 1
    a, b, groups = np.zeros(4), np.array([1.0, 1.0, 0.0, 0.0]), np.array([0, 0, 1, 1])
    mean, low, high = stats.paired_bootstrap(a, b, groups, draws=10_000)
    assert mean == 0.5 and low == 0.0 and high == 1.0
    # unequal groups: the mean is per item, and resampling the 3-item group weighs it by its size
    mean, low, high = stats.paired_bootstrap(np.zeros(4), np.array([1.0, 1.0, 1.0, 0.0]), np.array([0, 0, 0, 1]))
    assert mean == 0.75 and low == 0.0 and high == 1.0


def test_paired_bootstrap_is_stable_with_the_default_draws():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(100), 10)
    a, b = rng.random(1000) < 0.5, rng.random(1000) < 0.55
    ends = [stats.paired_bootstrap(a, b, groups, seed=seed)[1:] for seed in range(3)]
    assert np.ptp(np.array(ends), axis=0).max() < 0.005  # CI ends move by < 0.5 points with the seed


def test_paired_bootstrap_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="equal non-empty"):
        stats.paired_bootstrap(np.zeros(3), np.zeros(3), np.zeros(2, dtype=int))


def test_cell_formats():
    assert stats.summarize([0.5, 0.7]) == {"mean": 0.6, "sd": pytest.approx(math.sqrt(0.02)), "n": 2}
    assert stats.mean_sd([0.5, 0.7]) == "60.0 ± 14.1" and stats.mean_sd([0.5]) == "50.0" and stats.mean_sd([]) == "–"
    assert stats.percent(None) == "n/a" and stats.percent(math.nan) == "n/a" and stats.percent(0.1234) == "12.3"
    assert stats.nan_mean([1.0, math.nan, 3.0]) == 2.0 and math.isnan(stats.nan_mean([math.nan]))
