"""The live state: idempotent events, items in one order, profiles, per-day counts,
durable and shared, the same behaviour from SQLite and from Redis; and sync_batch."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.inference.live import (
    DAY,
    LiveState,
    RedisState,
    SqliteState,
    consistency_problems,
    open_state,
    sync_batch,
)

U1, U2 = "u_0000000000000001", "u_0000000000000002"


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def state(request, tmp_path: Path) -> LiveState:
    if request.param == "sqlite":
        store: LiveState = SqliteState(tmp_path / "live.sqlite")
    else:  # a fresh prefix per test: the server is shared by the session
        store = RedisState(request.getfixturevalue("redis_url"), prefix=uuid.uuid4().hex)
    yield store
    store.close()


def vector(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=8).astype(np.float32)


def test_events_are_idempotent_and_read_oldest_first(state: LiveState) -> None:
    assert state.add_events([(U1, "a", 10), (U1, "b", 20), (U1, "a", 10)]) == 2
    assert state.add_events([(U1, "a", 10)]) == 0  # a retried event counts once
    assert state.add_events([(U1, "a", 30)]) == 1  # the same item later is a new event
    assert state.events(U1) == [("a", 10), ("b", 20), ("a", 30)]
    assert state.events(U1, limit=2) == [("b", 20), ("a", 30)]  # the newest, bounded
    assert state.events(U2) == []


def test_recent_counts_read_full_days_and_the_exact_part_of_today(state: LiveState) -> None:
    t = 100 * DAY + 3_600  # one hour into day 100
    state.add_events(
        [
            (U1, "a", 97 * DAY),  # 3 days before: outside a 2-day window
            (U1, "a", 98 * DAY + 5),
            (U2, "a", 99 * DAY + 5),
            (U2, "b", 99 * DAY + 6),
            (U1, "b", 100 * DAY + 10),  # today, before t
            (U2, "c", t),  # at t: not before it
            (U1, "c", t + 60),  # after t
        ]
    )
    assert state.recent_counts(t, 2) == {"a": 2, "b": 2}
    assert state.recent_counts(t, 3) == {"a": 3, "b": 2}
    assert state.recent_counts(t + 61, 0) == {"b": 1, "c": 2}


def test_items_arrive_in_one_order_once(state: LiveState) -> None:
    assert state.item_count() == 0 and state.items_after(0) == []
    rows = [("x1", "X One", "X One.", vector(1)), ("x2", "X Two", "X Two.", vector(2))]
    assert state.add_items(rows) == 2
    assert state.add_items([("x1", "again", "again", vector(3))]) == 0  # the first one stays
    assert state.item_count() == 2 and state.has_item("x2") and not state.has_item("x3")
    items = state.items_after(0)
    assert [(i.seq, i.item_id, i.title) for i in items] == [(1, "x1", "X One"), (2, "x2", "X Two")]
    assert np.isclose(np.linalg.norm(items[0].vector), 1.0)  # stored unit length
    assert [i.item_id for i in state.items_after(1)] == ["x2"]


def test_profiles_newest_row_wins(state: LiveState) -> None:
    state.set_users([(U1, {"age_band": "18-24", "gender": "F", "occupation": "x"})])
    assert state.profile(U1) == {
        "age_band": "18-24",
        "gender": "F",
        "occupation": "x",
        "region": None,
    }
    state.set_users([(U1, {"age_band": "25-34", "gender": "F", "occupation": "x", "region": "9"})])
    assert state.profile(U1)["age_band"] == "25-34" and state.profile(U2) is None
    assert state.user_ids() == {U1}


def test_sqlite_is_durable_and_shared_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "live.sqlite"
    first = SqliteState(path)
    first.add_events([(U1, "a", 1)])
    first.close()
    again = open_state(path)  # a restart
    assert again.events(U1) == [("a", 1)]
    writer = (
        "import sys; from pipelines.inference.live import SqliteState; "
        "SqliteState(sys.argv[1]).add_events([('u_0000000000000001', 'b', 2)])"
    )
    subprocess.run([sys.executable, "-c", writer, str(path)], check=True, timeout=60)
    assert again.events(U1) == [("a", 1), ("b", 2)]  # another worker's write, at once
    assert (path.parent / "live.sqlite-wal").exists()  # WAL: readers never block the writer


@pytest.mark.redis
def test_redis_is_shared_by_two_clients(redis_url: str) -> None:
    prefix = uuid.uuid4().hex
    a, b = RedisState(redis_url, prefix), open_state(redis_url)
    b.prefix = prefix
    a.add_events([(U1, "a", 1)])
    a.add_items([("x", "X", "X.", vector(0))])
    assert b.events(U1) == [("a", 1)] and b.item_count() == 1


class CountingEncoder:
    def __init__(self) -> None:
        self.texts: list[str] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.texts += texts
        return np.stack([vector(len(self.texts) + i) for i in range(len(texts))])


def test_sync_batch_pushes_events_items_and_users_once(state: LiveState) -> None:
    items = pd.DataFrame(
        {
            "item_id": ["1", "n1", "n2"],
            "title": ["Old Film", "New Film", "Newer Film"],
            "year": pd.array([1995, 2024, None], dtype="Int64"),
            "genres": [["Drama"], ["Sci-Fi"], []],
        }
    )
    users = pd.DataFrame(
        {
            "user_id": [U1],
            "age_band": ["25-34"],
            "gender": ["M"],
            "occupation": ["writer"],
            "region": ["940"],
        }
    )
    interactions = pd.DataFrame(
        {
            "user_id": [U1, U1],
            "item_id": ["1", "n1"],
            "rating": [4.0, 5.0],
            "timestamp": [1_000, 2_000],
        }
    )
    encoder = CountingEncoder()
    added = sync_batch(state, interactions, items, users, encoder, served_items=["1"])
    assert added == {"events": 2, "items": 2, "users": 1}
    assert encoder.texts == ["New Film (2024). Genres: Sci-Fi.", "Newer Film."]
    assert [i.item_id for i in state.items_after(0)] == ["n1", "n2"]
    assert consistency_problems(state, items, users, served_items=["1"]) == []
    again = sync_batch(state, interactions, items, users, encoder, served_items=["1"])
    assert again == {"events": 0, "items": 0, "users": 1} and len(encoder.texts) == 2
    assert consistency_problems(state, items, users, served_items=[]) == [
        "item 1 is in data/ but not servable"
    ]


def test_every_store_has_every_method() -> None:
    for store in (SqliteState, RedisState):
        missing = [name for name in LiveState.__abstractmethods__ if name not in vars(store)]
        assert not missing, (store, missing)
