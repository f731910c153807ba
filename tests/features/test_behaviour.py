"""Behaviour clusters: the rhythm numbers are what they say, and k-means finds planted groups."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.features.behaviour import RHYTHM_FEATURES, fit_rhythms, rhythm_features

HOUR, DAY = 3600, 86_400
MONDAY = 4 * DAY  # 1970-01-05 was a Monday


def test_rhythm_numbers_of_a_known_user() -> None:
    # Monday 20:00, 20:10, 20:20, then Saturday 09:00: 2 sittings, 2 active days
    times = np.array([20 * HOUR, 20 * HOUR + 600, 20 * HOUR + 1200, 5 * DAY + 9 * HOUR]) + MONDAY
    row = dict(zip(RHYTHM_FEATURES, rhythm_features([times])[0], strict=True))
    assert row["evening share"] == 0.75 and row["morning share"] == 0.25
    assert row["weekend share"] == 0.25
    assert row["log median gap (h)"] == pytest.approx(np.log1p(600 / HOUR))
    assert row["log session length"] == pytest.approx(np.log(2.0))
    assert row["log events per active day"] == pytest.approx(np.log(2.0))


def test_one_event_and_no_events_give_finite_rows() -> None:
    rows = rhythm_features([np.array([MONDAY]), np.array([], dtype=np.int64)])
    assert np.isfinite(rows).all() and rows[1].sum() == 0


def _planted(rng: np.random.Generator, users: int, hour: int, per_sitting: int) -> list:
    out = []
    for _ in range(users):
        days = rng.choice(60, size=3, replace=False)
        out.append(
            np.concatenate(
                [MONDAY + d * DAY + hour * HOUR + 60 * np.arange(per_sitting) for d in days]
            )
        )
    return out


def test_planted_night_and_evening_groups_are_found_whatever_the_seed() -> None:
    rng = np.random.default_rng(0)
    night, evening = _planted(rng, 30, 2, 5), _planted(rng, 20, 20, 40)
    features = rhythm_features(night + evening)
    truth = np.array([0] * 30 + [1] * 20)
    for seed in (0, 1, 2):
        rhythms = fit_rhythms(features, 2, seed=seed)
        assigned = rhythms.assign(features)
        assert (assigned == truth).all(), "largest cluster first: the 30 night users are 0"
        assert rhythms.names == (
            "rhythm 1: night, ~5 per sitting",
            "rhythm 2: evening, ~40 per sitting",
        )
    profile = rhythms.profile()
    assert profile[0]["night share"] == 1.0 and set(profile[0]) == {"cluster", *RHYTHM_FEATURES}


def test_other_users_are_placed_on_the_fitted_clusters() -> None:
    rng = np.random.default_rng(1)
    rhythms = fit_rhythms(rhythm_features(_planted(rng, 30, 2, 5) + _planted(rng, 20, 20, 40)), 2)
    newcomers = rhythm_features(_planted(rng, 3, 20, 40))
    assert rhythms.labels(newcomers) == [rhythms.names[1]] * 3


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="must be"):
        fit_rhythms(np.zeros((3, 2)), 2)
    with pytest.raises(ValueError, match="at least 1"):
        fit_rhythms(np.zeros((3, len(RHYTHM_FEATURES))), 0)
    with pytest.raises(ValueError, match="no users"):
        fit_rhythms(np.zeros((0, len(RHYTHM_FEATURES))), 2)
    assert len(fit_rhythms(np.zeros((3, len(RHYTHM_FEATURES))), 4).names) == 1  # one distinct
