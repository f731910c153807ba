"""Sequences and profiles the models learn from."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.core.schema import SEQUENCE_COLUMNS
from pipelines.data.split import split_interactions, user_table
from pipelines.features.batch import PAD
from pipelines.features.profiles import encode_profiles, profile_vocabulary
from pipelines.features.sequences import (
    build_sequences,
    histories_for,
    remove_items,
    targets_for,
    train_matrix,
)


def test_sequences_hold_protocol_order(tiny_interactions) -> None:
    split = split_interactions(tiny_interactions, min_count=2)
    sequences = build_sequences(split)
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


def events(rows: list[list[int]]) -> pd.DataFrame:
    """A split frame in protocol order: each user's events an hour apart, last two held out."""
    return pd.DataFrame(
        [
            {
                "user_idx": user,
                "item_idx": item,
                "timestamp": 86_400 * (user + 1) + 3_600 * position,
                "split": "train" if position < len(items) - 2 else "held",
            }
            for user, items in enumerate(rows)
            for position, item in enumerate(items)
        ]
    )


ROWS = [[4, 1, 2, 3], [0, 5, 6], [7, 7, 8, 9, 1]]


def test_sequences_are_in_user_idx_order_whatever_the_row_order() -> None:
    frame = events(ROWS)
    shuffled = pd.concat([frame[frame["user_idx"] == u] for u in (2, 0, 1)])
    sequences = build_sequences(shuffled)
    assert sequences["user_idx"].tolist() == [0, 1, 2]
    assert [s.tolist() for s in sequences["items"]] == ROWS
    assert sequences["n_train"].tolist() == [2, 1, 3]
    assert list(sequences.columns) == ["user_idx", *SEQUENCE_COLUMNS]
    narrow = build_sequences(frame.astype({"item_idx": "int32", "timestamp": "int32"}))
    assert {a.dtype for a in [*narrow["items"], *narrow["timestamps"]]} == {np.dtype(np.int64)}
    empty = build_sequences(frame.iloc[:0])
    assert len(empty) == 0 and list(empty.columns) == ["user_idx", *SEQUENCE_COLUMNS]


def test_each_split_sees_exactly_its_history() -> None:
    sequences = build_sequences(events(ROWS))
    cut = {"train": [2, 1, 3], "valid": [2, 1, 3], "test": [3, 2, 4]}
    for split, lengths in cut.items():
        histories = histories_for(sequences, split)
        got = [[i for i in row if i != PAD] for row in histories.items.tolist()]
        assert got == [row[:n] for row, n in zip(ROWS, lengths, strict=True)], split
        stamps = [[t for t in row if t != 0] for row in histories.timestamps.tolist()]
        assert stamps[0] == [86_400 + 3_600 * p for p in range(lengths[0])], split
    assert targets_for(sequences, "valid").tolist() == [2, 5, 9]
    assert targets_for(sequences, "test").tolist() == [3, 6, 1]
    newest = histories_for(sequences, "test", max_len=2)  # the newest two events, left-padded
    assert newest.items.tolist() == [[1, 2], [0, 5], [8, 9]]


def test_the_training_matrix_is_binary_float32_of_training_events() -> None:
    sequences = build_sequences(events(ROWS))
    matrix = train_matrix(sequences, n_items=10)
    assert matrix.dtype == np.float32 and matrix.shape == (3, 10)
    # user 2 trains on 7, 7, 8: the repeated item counts once; held-out events never count
    assert matrix.toarray()[2].tolist() == [0] * 7 + [1, 1, 0]
    assert matrix.sum() == 2 + 1 + 2


def test_removing_items_keeps_the_index_and_the_types() -> None:
    sequences = build_sequences(events(ROWS)).set_axis([7, 8, 9])
    narrow = sequences.assign(  # integer widths a parquet file may hold
        items=[a.astype(np.int32) for a in sequences["items"]],
        timestamps=[a.astype(np.int32) for a in sequences["timestamps"]],
    )
    kept = remove_items(narrow, [0, 6, 4])
    assert kept.index.tolist() == [7, 8, 9]
    assert [s.tolist() for s in kept["items"]] == [[1, 2, 3], [5], [7, 7, 8, 9, 1]]
    for column in SEQUENCE_COLUMNS[:-1]:
        assert {a.dtype for a in kept[column]} == {np.dtype(np.int64)}, column
    assert kept["n_train"].dtype == np.int64 and kept["n_train"].tolist() == [1, 0, 3]
    for before, after, stamps in zip(
        sequences["items"], kept["items"], kept["timestamps"], strict=True
    ):  # each kept event keeps its own timestamp
        keep = ~np.isin(before, [0, 6, 4])
        original = sequences["timestamps"][sequences["items"].map(lambda a, b=before: a is b)]
        assert stamps.tolist() == original.iloc[0][keep].tolist() and len(stamps) == len(after)
