"""The ML-100K-LOO-Full benchmark protocol (design.md §4): filter, order, leave one out.

1. every interaction is an implicit positive; iterative k-core on users and items;
2. each user's events sorted by timestamp, stable: same-second events keep the
   source file's order (``source_order``, the default; ML-100K ships in random
   order, so this is a random tie-break, as RecBole does). ``item_id`` orders
   ties by item id instead — kept only to demonstrate the leak it plants: it
   makes every tied test target the later-catalogued, rarer item;
3. last event = test, second-to-last = valid, the rest = train.

What the k-core filter leaves must clear ``split.min_users``, ``min_items`` and
``min_events``, or the split refuses (``TooLittleData``, naming how many were left and
the settings). The stats say how many test targets repeat an item of the user's own
history: under ``evaluate.mask_history: true`` each of them is a certain miss.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.core.config import TieBreak, TooLittleData
from pipelines.core.schema import (
    GENRES,
    ITEM_ID,
    ITEM_IDX,
    SPLIT,
    TEST,
    TIMESTAMP,
    TITLE,
    TRAIN,
    USER_COLUMNS,
    USER_ID,
    USER_IDX,
    VALID,
    YEAR,
)
from pipelines.data.ids import id_sort_key


def k_core(interactions: pd.DataFrame, min_count: int) -> pd.DataFrame:
    """Drop users and items with fewer than ``min_count`` events until none are left."""
    frame = interactions
    while True:
        user_counts = frame[USER_ID].map(frame[USER_ID].value_counts())
        item_counts = frame[ITEM_ID].map(frame[ITEM_ID].value_counts())
        keep = (user_counts >= min_count) & (item_counts >= min_count)
        if keep.all():
            return frame
        frame = frame[keep]


def order_events(interactions: pd.DataFrame, tie_break: TieBreak = "source_order") -> pd.DataFrame:
    """Each user's events by timestamp, stable; same-second events by item id or source order."""
    if tie_break == "source_order":
        keyed = interactions.assign(_item_key=np.arange(len(interactions)))
    else:
        keyed = interactions.assign(_item_key=id_sort_key(interactions[ITEM_ID]))
    ordered = keyed.sort_values([USER_ID, TIMESTAMP, "_item_key"], kind="stable")
    return ordered.drop(columns="_item_key").reset_index(drop=True)


def leave_one_out(ordered: pd.DataFrame) -> pd.Series:
    """Label each event train / valid / test: the last is test, the one before valid."""
    from_end = ordered.groupby(USER_ID, sort=False).cumcount(ascending=False)
    labels = np.where(from_end == 0, TEST, np.where(from_end == 1, VALID, TRAIN))
    return pd.Series(labels, index=ordered.index, name=SPLIT)


def index_ids(ids: pd.Series, sort_key: pd.Series | None = None) -> pd.DataFrame:
    """Dense 0-based indices for distinct ids, in id order (numeric when possible)."""
    unique = pd.Series(ids.unique())
    keys = id_sort_key(unique) if sort_key is None else sort_key
    order = np.argsort(keys.to_numpy(), kind="stable")
    return pd.DataFrame({"id": unique.to_numpy()[order], "idx": np.arange(len(unique))})


def check_size(
    core: pd.DataFrame, min_count: int, min_users: int, min_items: int, min_events: int
) -> None:
    """Refuse a k-core too small to train and judge a model on, saying what was left."""
    users, items, events = core[USER_ID].nunique(), core[ITEM_ID].nunique(), len(core)
    short = [
        f"{need} {what} (split.{setting})"
        for have, need, what, setting in (
            (users, min_users, "users", "min_users"),
            (items, min_items, "items", "min_items"),
            (events, min_events, "events", "min_events"),
        )
        if have < need
    ]
    if short:
        raise TooLittleData(
            f"after the {min_count}-core filter (split.min_count) {users} users, {items} "
            f"items and {events} events are left; at least {', '.join(short)} are needed to "
            "train and judge a model: bring more events, or lower split.min_count or the "
            "minimum named"
        )


def split_interactions(
    interactions: pd.DataFrame,
    min_count: int,
    tie_break: TieBreak = "source_order",
    *,
    min_users: int = 1,
    min_items: int = 1,
    min_events: int = 1,
) -> pd.DataFrame:
    """Filtered, ordered, labelled interactions with user_idx and item_idx; refused
    (``TooLittleData``) when the k-core is below the minimum sizes."""
    core = k_core(interactions[[USER_ID, ITEM_ID, TIMESTAMP]], min_count)
    check_size(core, min_count, min_users, min_items, min_events)
    ordered = order_events(core, tie_break)
    ordered[SPLIT] = leave_one_out(ordered)
    users = index_ids(ordered[USER_ID], sort_key=pd.Series(ordered[USER_ID].unique()))
    items = index_ids(ordered[ITEM_ID])
    ordered[USER_IDX] = ordered[USER_ID].map(dict(zip(users["id"], users["idx"], strict=True)))
    ordered[ITEM_IDX] = ordered[ITEM_ID].map(dict(zip(items["id"], items["idx"], strict=True)))
    columns = [USER_IDX, ITEM_IDX, USER_ID, ITEM_ID, TIMESTAMP, SPLIT]
    return ordered[columns].astype({USER_IDX: np.int64, ITEM_IDX: np.int64, TIMESTAMP: np.int64})


def catalogue(split: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """The kept items with their text, one row per item_idx in index order."""
    index = split[[ITEM_IDX, ITEM_ID]].drop_duplicates().sort_values(ITEM_IDX)
    merged = index.merge(items[[ITEM_ID, TITLE, YEAR, GENRES]], on=ITEM_ID, how="left")
    return merged.reset_index(drop=True)


def user_table(split: pd.DataFrame, users: pd.DataFrame) -> pd.DataFrame:
    """The kept users with their (already privacy-safe) profile, in user_idx order."""
    index = split[[USER_IDX, USER_ID]].drop_duplicates().sort_values(USER_IDX)
    merged = index.merge(users[list(USER_COLUMNS)], on=USER_ID, how="left")
    return merged.reset_index(drop=True)


def repeat_targets(split: pd.DataFrame) -> int:
    """How many test targets are an item their user had earlier (a train or valid event)."""
    targets = split.loc[split[SPLIT] == TEST, [USER_IDX, ITEM_IDX]]
    earlier = split.loc[split[SPLIT] != TEST, [USER_IDX, ITEM_IDX]].drop_duplicates()
    return len(targets.merge(earlier, on=[USER_IDX, ITEM_IDX], how="inner"))


def split_stats(split: pd.DataFrame, raw_count: int) -> dict[str, int | float]:
    """Counts, and the share of test targets the user had before (``test_repeat_share``):
    with the history masked those are certain misses, so HR@k is at most 1 minus it."""
    counts = split[SPLIT].value_counts()
    tests = int(counts.get(TEST, 0))
    repeats = repeat_targets(split) if tests else 0
    return {
        "raw_interactions": raw_count,
        "users": int(split[USER_IDX].nunique()),
        "items": int(split[ITEM_IDX].nunique()),
        "interactions": len(split),
        "train": int(counts.get(TRAIN, 0)),
        "valid": int(counts.get(VALID, 0)),
        "test": tests,
        "test_repeats": repeats,
        "test_repeat_share": round(repeats / tests, 4) if tests else 0.0,
    }
