"""Paired statistics: known answers, the cluster rule, and tests that can tell."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.evaluation.stats import mean_interval, paired_against, paired_difference


def test_a_constant_has_a_zero_width_interval():
    out = mean_interval(np.full(50, 0.25))
    assert (out.mean, out.low, out.high, out.n, out.clusters) == (0.25, 0.25, 0.25, 50, 50)


def test_the_interval_covers_the_mean_and_narrows_with_more_cases():
    rng = np.random.default_rng(0)
    small, large = rng.random(100), rng.random(10_000)
    a, b = mean_interval(small), mean_interval(large)
    assert a.low < a.mean < a.high and b.low < b.mean < b.high
    assert (b.high - b.low) < (a.high - a.low) / 5  # ~ 1/sqrt(100) of the width


def test_resampling_by_user_widens_the_interval_of_correlated_events():
    # 50 users x 20 events, each user's events identical: 50 cases of information, not 1,000
    rng = np.random.default_rng(1)
    per_user = rng.random(50)
    values, users = np.repeat(per_user, 20), np.repeat(np.arange(50), 20)
    naive, clustered = mean_interval(values), mean_interval(values, users)
    assert clustered.clusters == 50 and clustered.n == 1000
    assert (clustered.high - clustered.low) > 3 * (naive.high - naive.low)


def test_a_real_difference_is_called_and_noise_is_not():
    rng = np.random.default_rng(2)
    base = rng.random(943)
    better = paired_difference(base + 0.02, base)
    assert better.verdict == "better" and better.p_value < 0.01
    assert better.mean == pytest.approx(0.02)
    half = rng.normal(0, 0.2, 471)
    noise = paired_difference(base + np.concatenate([half, -half, [0.0]]), base)  # mean 0
    assert noise.low < 0 < noise.high and noise.verdict == "no difference shown"
    assert noise.p_value > 0.05
    assert paired_difference(base, base + 0.02).verdict == "worse"


def test_pairing_sees_a_small_shift_that_two_separate_intervals_hide():
    rng = np.random.default_rng(3)
    a = rng.random(500)
    b = a - 0.01 + rng.normal(0, 0.001, 500)
    ia, ib, diff = mean_interval(a), mean_interval(b), paired_difference(a, b)
    assert ia.low < ib.high  # the separate intervals overlap ...
    assert diff.low > 0  # ... the paired one does not


def test_the_p_value_is_near_uniform_under_the_null():
    rng = np.random.default_rng(4)
    ps = [
        paired_difference(rng.random(200), rng.random(200), resamples=400, seed=s).p_value
        for s in range(60)
    ]
    assert 0.02 <= np.mean(np.array(ps) < 0.05) <= 0.15  # ~5% false alarms, 60 draws


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="no cases"):
        mean_interval(np.array([]))
    with pytest.raises(ValueError, match="shape"):
        paired_difference(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="groups"):
        mean_interval(np.ones(3), np.arange(2))


def test_the_same_seed_gives_the_same_interval():
    values = np.random.default_rng(5).random(300)
    assert mean_interval(values, seed=7) == mean_interval(values, seed=7)


def test_every_ranker_is_paired_with_the_reference_on_the_same_cases():
    rng = np.random.default_rng(3)
    base = rng.random(900)
    per_case = {"best": base + 0.05, "same": base + 0.05 + rng.normal(0, 1e-3, 900), "worse": base}
    out = paired_against(per_case, "best")
    assert sorted(out) == ["same", "worse"]
    assert out["worse"].verdict == "worse" and out["worse"].mean == pytest.approx(-0.05)
    assert out["same"].verdict == "no difference shown"
    with pytest.raises(KeyError, match="reference 'nope'"):
        paired_against(per_case, "nope")
