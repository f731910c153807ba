"""The benchmark protocol's split (design.md §4) on hand-built data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.data.ids import id_sort_key
from pipelines.data.split import (
    catalogue,
    index_ids,
    k_core,
    leave_one_out,
    order_events,
    split_interactions,
    split_stats,
    user_table,
)


def test_k_core_is_iterative() -> None:
    # dropping item "c" (1 event) leaves user "y" with 1 event, which must then go too
    frame = pd.DataFrame(
        {
            "user_id": ["x", "x", "y", "y", "z", "z"],
            "item_id": ["a", "b", "a", "c", "a", "b"],
            "timestamp": range(6),
        }
    )
    core = k_core(frame, 2)
    assert set(core["user_id"]) == {"x", "z"}
    assert set(core["item_id"]) == {"a", "b"}


def test_integer_item_ids_compare_as_numbers() -> None:
    keys = id_sort_key(pd.Series(["9", "10", "2"]))
    assert list(keys.sort_values()) == [2, 9, 10]
    assert list(id_sort_key(pd.Series(["b", "a10"]))) == ["b", "a10"]


def test_the_id_order_demonstration_orders_ties_by_numeric_item_id(tiny_interactions) -> None:
    ordered = order_events(tiny_interactions[tiny_interactions["user_id"] == "1"], "item_id")
    assert list(ordered["item_id"])[-2:] == ["9", "10"]  # as strings "10" < "9" would flip them


def test_by_default_ties_keep_the_file_order(tiny_interactions) -> None:
    # "10" is logged before "9" in the same second: the file's order decides, not the ids
    ordered = order_events(tiny_interactions[tiny_interactions["user_id"] == "1"])
    assert list(ordered["item_id"])[-2:] == ["10", "9"]
    shuffled = tiny_interactions.iloc[::-1].reset_index(drop=True)
    ordered = order_events(shuffled[shuffled["user_id"] == "1"])
    assert list(ordered["item_id"])[-2:] == ["9", "10"]


def test_leave_one_out_labels_last_two_events() -> None:
    ordered = pd.DataFrame({"user_id": ["a"] * 4 + ["b"] * 3, "item_id": list("pqrsxyz")})
    labels = leave_one_out(ordered)
    assert list(labels) == ["train", "train", "valid", "test", "train", "valid", "test"]


def test_split_end_to_end(tiny_interactions, tiny_items, tiny_users) -> None:
    split = split_interactions(tiny_interactions, min_count=2)
    assert "77" not in set(split["item_id"])
    user1 = split[split["user_id"] == "1"]
    assert user1[user1["split"] == "test"]["item_id"].item() == "9"  # logged after "10"
    assert user1[user1["split"] == "valid"]["item_id"].item() == "10"
    # indices are dense, 0-based, items in numeric id order
    items = catalogue(split, tiny_items)
    assert list(items["item_idx"]) == list(range(6))
    assert list(items["item_id"]) == ["2", "3", "4", "5", "9", "10"]
    assert list(items.columns) == ["item_idx", "item_id", "title", "year", "genres"]
    users = user_table(split, tiny_users)
    assert list(users["user_idx"]) == [0, 1, 2]
    stats = split_stats(split, len(tiny_interactions))
    assert stats == {
        "raw_interactions": 19,
        "users": 3,
        "items": 6,
        "interactions": 18,
        "train": 12,
        "valid": 3,
        "test": 3,
        "test_repeats": 0,  # no test target is an item its user had before
        "test_repeat_share": 0.0,
    }


def test_leave_one_out_labels_keep_the_input_index() -> None:
    ordered = pd.DataFrame({"user_id": ["a", "a", "a", "b"], "item_id": list("pqrs")})
    labels = leave_one_out(ordered.set_axis([10, 11, 12, 13]))
    assert labels.name == "split"
    assert labels.to_dict() == {10: "train", 11: "valid", 12: "test", 13: "test"}


def test_item_ids_equal_as_numbers_keep_their_first_appearance_order() -> None:
    # "7", "07" and "007" share a numeric key; a stable sort keeps them in the order seen,
    # and an unstable one would shuffle runs this long
    rng = np.random.default_rng(0)
    ids = pd.Series([f"{'0' * zeros}{n}" for n in range(10) for zeros in range(5)])
    ids = ids.iloc[rng.permutation(len(ids))].reset_index(drop=True)
    table = index_ids(ids)
    assert table["idx"].tolist() == list(range(50))
    for n in range(10):
        same = [value for value in table["id"] if int(value) == n]
        assert same == [value for value in ids if int(value) == n]
    assert [int(value) for value in table["id"]] == sorted(int(value) for value in ids)


def test_users_are_indexed_in_text_order_of_their_ids() -> None:
    # user ids are pseudonyms (text): "10" sorts before "9", unlike item ids
    frame = pd.DataFrame(
        {"user_id": ["9", "9", "10", "10"], "item_id": ["1", "2", "1", "2"], "timestamp": range(4)}
    )
    split = split_interactions(frame, min_count=1)
    users = split.drop_duplicates("user_id").set_index("user_id")["user_idx"]
    assert users.to_dict() == {"10": 0, "9": 1}


def test_items_and_users_missing_from_their_tables_are_kept(tiny_interactions) -> None:
    split = split_interactions(tiny_interactions, min_count=2)
    items_without_9 = pd.DataFrame(
        {"item_id": ["2", "3", "4", "5", "10"], "title": ["t"] * 5, "year": [1990] * 5}
    ).assign(genres=[["Drama"]] * 5)
    items = catalogue(split, items_without_9)
    assert items["item_id"].tolist() == ["2", "3", "4", "5", "9", "10"]
    assert items["title"].isna().tolist() == [False] * 4 + [True, False]
    users = user_table(
        split,
        pd.DataFrame(
            {
                "user_id": ["1", "3"],
                "age_band": ["18-24"] * 2,
                "gender": ["F"] * 2,
                "occupation": ["writer"] * 2,
                "region": ["857"] * 2,
            }
        ),
    )
    assert list(users.columns) == [
        "user_idx",
        "user_id",
        "age_band",
        "gender",
        "occupation",
        "region",
    ]
    assert users["user_id"].tolist() == ["1", "2", "3"] and users["gender"].isna().sum() == 1


def test_split_stats_count_an_absent_label_as_zero() -> None:
    # users with one event have a test event only: no train, no valid
    split = split_interactions(
        pd.DataFrame({"user_id": ["a", "b"], "item_id": ["x", "x"], "timestamp": [1, 2]}), 1
    )
    stats = split_stats(split, 2)
    assert (stats["train"], stats["valid"], stats["test"]) == (0, 0, 2)
    empty = split_stats(split.iloc[:0], 0)
    assert empty == dict.fromkeys(empty, 0)


def test_order_events_keeps_the_columns_and_renumbers_rows(tiny_interactions) -> None:
    shuffled = tiny_interactions.sample(frac=1.0, random_state=0)
    for tie_break in ("source_order", "item_id"):
        ordered = order_events(shuffled, tie_break)
        assert list(ordered.columns) == list(tiny_interactions.columns), tie_break
        assert ordered.index.tolist() == list(range(len(shuffled))), tie_break


def test_split_interactions_passes_the_tie_break_on(tiny_interactions) -> None:
    # user "1" logged "10" before "9" in the same second: the id order makes "10" the test
    split = split_interactions(tiny_interactions, min_count=2, tie_break="item_id")
    user1 = split[split["user_id"] == "1"]
    assert user1[user1["split"] == "test"]["item_id"].item() == "10"


# ---- size guards and the repeat share (issue 20) ----------------------------------------


def six_users() -> pd.DataFrame:
    """6 users, 2 events each: the 5-core filter leaves nothing."""
    rows = [(f"u{u}", f"i{(u + t) % 4}", 100 * u + t) for u in range(6) for t in range(2)]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def test_a_k_core_below_the_minimum_sizes_is_refused_saying_what_was_left() -> None:
    from pipelines.core.config import TooLittleData

    with pytest.raises(TooLittleData) as refused:
        split_interactions(six_users(), 5, min_users=10, min_items=10, min_events=100)
    message = str(refused.value)
    assert "0 users, 0 items and 0 events are left" in message
    for setting in ("split.min_count", "split.min_users", "split.min_items", "split.min_events"):
        assert setting in message
    assert "u0" not in message and "i1" not in message, "quotes no data"
    # what is enough passes, and only the setting that is short is named
    with pytest.raises(TooLittleData, match=r"at least 7 users \(split\.min_users\) are"):
        split_interactions(six_users(), 1, min_users=7, min_items=1, min_events=1)
    assert len(split_interactions(six_users(), 1, min_users=6, min_items=4, min_events=12)) == 12


def test_split_stats_report_the_share_of_test_targets_the_user_had_before() -> None:
    # user a buys x, y, x (the test target x is a repeat); user b buys x, y, z
    rows = [
        ("a", "x", 1),
        ("a", "y", 2),
        ("a", "x", 3),
        ("b", "x", 1),
        ("b", "y", 2),
        ("b", "z", 3),
    ]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    stats = split_stats(split_interactions(frame, 1), len(frame))
    assert (stats["test_repeats"], stats["test_repeat_share"]) == (1, 0.5)
