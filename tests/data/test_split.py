"""The benchmark protocol's split (design.md §4) on hand-built data."""

from __future__ import annotations

import pandas as pd

from pipelines.data.ids import id_sort_key
from pipelines.data.split import (
    catalogue,
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
    }
