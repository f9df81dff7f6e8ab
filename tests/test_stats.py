"""experiments/stats.py: the paired bootstrap against hand-computed cases and formats of table cells."""
import math

import numpy as np
import pytest

from experiments import stats


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
    assert stats.mean_sd([45.3, 47.3], whole=100) == "46.3 ± 1.4"  # values already in percent (speedrun's)
    assert stats.percent(None) == "n/a" and stats.percent(math.nan) == "n/a" and stats.percent(0.1234) == "12.3"
    assert stats.nan_mean([1.0, math.nan, 3.0]) == 2.0 and math.isnan(stats.nan_mean([math.nan]))


def test_two_level_bootstrap_of_a_constant_difference_is_that_difference():
    groups = np.array([0, 0, 1, 2])
    a = np.zeros((3, 4))
    stratum = (a, a + 0.25, groups)
    assert stats.two_level_bootstrap([stratum, stratum], draws=200) == pytest.approx((0.25, 0.25, 0.25))


def test_two_level_bootstrap_resamples_seed_pairs():
    """Two seed pairs whose differences are 0 and 1 on every test model: test models alone would give [0.5, 0.5];
    resampling the pairs gives means 0, 0.5, 1 with chances 1/4, 1/2, 1/4, so the 95 % interval is [0, 1]."""
    a = np.zeros((2, 6))
    b = np.stack([np.zeros(6), np.ones(6)])
    mean, low, high = stats.two_level_bootstrap([(a, b, np.array([0, 0, 1, 1, 2, 2]))], draws=4000)
    assert (mean, low, high) == (0.5, 0.0, 1.0)


def test_two_level_bootstrap_resamples_test_models_within_a_pair():
    """One seed pair, B better on model 0 only (both its items), level on models 1-2: a draw's difference is
    (times model 0 is drawn) / 3, with chances 8/27, 12/27, 6/27, 1/27 for 0..3 draws: the interval is [0, 1]."""
    a = np.zeros((1, 6))
    b = np.array([[1.0, 1.0, 0, 0, 0, 0]])
    groups = np.array([0, 0, 1, 1, 2, 2])
    mean, low, high = stats.two_level_bootstrap([(a, b, groups)], draws=4000)
    assert mean == pytest.approx(1 / 3)
    assert (low, high) == (0.0, 1.0)


def test_two_level_bootstrap_weighs_every_pair_of_every_stratum_the_same():
    one = (np.zeros((1, 2)), np.ones((1, 2)), np.array([0, 1]))  # +1
    three = (np.zeros((3, 2)), np.zeros((3, 2)), np.array([0, 1]))  # 0, 0, 0
    assert stats.two_level_bootstrap([one, three], draws=100)[0] == pytest.approx(0.25)
