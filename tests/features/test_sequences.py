"""Sequences and profiles the models learn from."""

from __future__ import annotations

import numpy as np

from pipelines.data.split import split_interactions, user_table
from pipelines.features.profiles import encode_profiles, profile_vocabulary
from pipelines.features.sequences import (
    build_sequences,
)
from pipelines.features.time import time_features


def test_time_features_know_the_calendar() -> None:
    # 1997-09-20 is a Saturday (weekday 5); the second event is 3 h 30 min later
    start = 874_713_600 + 13 * 3600  # 1997-09-20 13:00 UTC
    features = time_features(np.array([start, start + 12_600]), max_gap_days=365)
    assert list(features["gaps"]) == [0, 12_600]
    assert list(features["hours"]) == [13, 16]
    assert list(features["weekdays"]) == [5, 5]


def test_gaps_are_clipped() -> None:
    features = time_features(np.array([0, 10 * 86_400]), max_gap_days=2)
    assert features["gaps"][1] == 2 * 86_400


def test_sequences_hold_protocol_order(tiny_interactions) -> None:
    split = split_interactions(tiny_interactions, min_count=2)
    sequences = build_sequences(split, max_gap_days=365)
    assert list(sequences["user_idx"]) == [0, 1, 2]
    first = sequences.iloc[0]
    assert len(first["items"]) == 6 and first["n_train"] == 4
    assert list(first["timestamps"]) == sorted(first["timestamps"])
    assert first["items"][-1] == 4  # item "9" (index 4), logged after "10" in the same second


def test_unknown_profile_values_get_code_zero(tiny_interactions, tiny_users) -> None:
    users = user_table(split_interactions(tiny_interactions, min_count=2), tiny_users)
    vocabulary = profile_vocabulary(users.iloc[:2])
    encoded = encode_profiles(users, vocabulary)
    assert encoded.loc[0, "gender_code"] == vocabulary["gender"].index("F") + 1
    assert encoded.loc[2, "region_code"] == 0  # "V3N" was not in the vocabulary
    assert encoded.loc[2, "occupation_code"] == 0
