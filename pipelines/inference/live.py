"""Live serving state: what happened after the served model was built (design.md §8).

The bundle freezes histories, profiles and the catalogue at training time. The live
state holds what arrived since, so the next ``/recommend`` uses it without a retrain:

- **events** ``(user_id, item_id, timestamp)``: a repeat of the same triple is a no-op
  (idempotent), so a batch pushed twice, or a client retrying, counts once;
- **items** added after training, each with its unit MiniLM vector, in arrival order
  (``seq`` 1, 2, ...), so every worker grows its catalogue by the same rows, O(new);
- **users** and their profile values (age band, gender, occupation, region, as in
  ``data/users.parquet``), the newest row winning;
- **per-day item counts**, so "how often was each item seen in the N days before t"
  is a handful of counter reads (``recent_counts``), not a scan of the log.

Two stores with one interface: ``SqliteState`` (the embedded default: one file under
the layout's ``artifacts/serving/``, WAL mode, so every worker on one host shares it
and a restart keeps it) and ``RedisState`` (several workers or hosts). Both are plain
library code: no BentoML here. ``open_state`` picks one from a URL.

The loop pushes an appended batch with ``sync_batch``; the service reads the state on
every request (measured in bench/serve.py).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core.schema import (
    GENRES,
    ITEM_ID,
    PROFILE_COLUMNS,
    TIMESTAMP,
    TITLE,
    USER_ID,
    YEAR,
)
from pipelines.features.text import item_text

DAY = 86_400  # seconds; the counters' bucket
# newest events per user a read returns: more than any model's context (max_len 50)
# and than a session request may carry (500), so nothing a ranking uses is cut off
MAX_EVENTS_READ = 500

Event = tuple[str, str, int]  # (user_id, item_id, Unix seconds)


@dataclass(frozen=True)
class LiveItem:
    """An item added after training: its text and unit MiniLM vector, in arrival order."""

    seq: int  # 1, 2, ...: the order every worker appends it to its catalogue
    item_id: str
    title: str
    text: str
    vector: np.ndarray  # [D] float32, unit length


def _unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    return (vector / max(float(np.linalg.norm(vector)), 1e-12)).astype(np.float32)


class LiveState(ABC):
    """The interface both stores keep. Every method is safe to call from many threads."""

    # -- events --------------------------------------------------------------------------
    @abstractmethod
    def add_events(self, events: Iterable[Event]) -> int:
        """Record events; returns how many were new (a repeated triple is ignored)."""

    @abstractmethod
    def events(self, user_id: str, limit: int = MAX_EVENTS_READ) -> list[tuple[str, int]]:
        """The user's newest ``limit`` live events as (item_id, timestamp), oldest first."""

    @abstractmethod
    def recent_counts(self, t: int, days: int) -> dict[str, int]:
        """Events per item from the start of the day ``days`` days before ``t``'s day up to
        ``t`` (exclusive): ``days`` full day counters plus the exact part of ``t``'s day."""

    # -- items ---------------------------------------------------------------------------
    @abstractmethod
    def add_items(self, items: Iterable[tuple[str, str, str, np.ndarray]]) -> int:
        """Add (item_id, title, text, vector) rows whose id is new; returns how many."""

    @abstractmethod
    def items_after(self, seq: int) -> list[LiveItem]:
        """Items with ``seq`` greater than ``seq``, in order (0: all of them)."""

    @abstractmethod
    def item_count(self) -> int:
        """The newest item's ``seq`` (0 when none): cheap, read on every request."""

    @abstractmethod
    def has_item(self, item_id: str) -> bool: ...

    # -- users ---------------------------------------------------------------------------
    @abstractmethod
    def set_users(self, users: Iterable[tuple[str, dict[str, str]]]) -> int:
        """Store each user's profile values (PROFILE_COLUMNS); returns how many rows."""

    @abstractmethod
    def profile(self, user_id: str) -> dict[str, str] | None: ...

    @abstractmethod
    def user_ids(self) -> set[str]: ...

    def close(self) -> None:  # noqa: B027 (a store without resources has nothing to close)
        """Release connections."""


# -- the embedded default: SQLite in WAL mode ----------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL, item_id TEXT NOT NULL, ts INTEGER NOT NULL,
    UNIQUE (user_id, item_id, ts));
CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id, seq);
CREATE INDEX IF NOT EXISTS events_by_time ON events (ts);
CREATE TABLE IF NOT EXISTS items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id TEXT NOT NULL UNIQUE, title TEXT NOT NULL, text TEXT NOT NULL,
    vector BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    user_id TEXT PRIMARY KEY,
    age_band TEXT, gender TEXT, occupation TEXT, region TEXT);
CREATE TABLE IF NOT EXISTS day_counts (
    day INTEGER NOT NULL, item_id TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (day, item_id));
"""


class SqliteState(LiveState):
    """One SQLite file, WAL mode: readers never block the writer, every process on the
    host sees a committed write at its next read, and a restart keeps everything."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._lock = threading.Lock()  # one writer per process; SQLite serialises the rest
        with self._lock:
            self._db().executescript(SCHEMA)  # executescript commits on its own

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # durable at each WAL checkpoint/commit
            db.execute("PRAGMA busy_timeout=10000")
            self._local.db = db
        return db

    class _Tx:
        def __init__(self, state: SqliteState) -> None:
            self.state = state

        def __enter__(self) -> sqlite3.Connection:
            self.state._lock.acquire()
            self.db = self.state._db()
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, kind: Any, *_: Any) -> None:
            try:
                self.db.execute("ROLLBACK" if kind else "COMMIT")
            finally:
                self.state._lock.release()

    def _write(self) -> SqliteState._Tx:
        return SqliteState._Tx(self)

    def add_events(self, events: Iterable[Event]) -> int:
        added: Counter[tuple[int, str]] = Counter()
        with self._write() as db:
            for user, item, stamp in events:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO events (user_id, item_id, ts) VALUES (?, ?, ?)",
                    (str(user), str(item), int(stamp)),
                )
                if cursor.rowcount:
                    added[(int(stamp) // DAY, str(item))] += 1
            db.executemany(
                "INSERT INTO day_counts (day, item_id, n) VALUES (?, ?, ?) "
                "ON CONFLICT (day, item_id) DO UPDATE SET n = n + excluded.n",
                [(day, item, n) for (day, item), n in added.items()],
            )
        return sum(added.values())

    def events(self, user_id: str, limit: int = MAX_EVENTS_READ) -> list[tuple[str, int]]:
        rows = (
            self._db()
            .execute(
                "SELECT item_id, ts FROM events WHERE user_id = ? ORDER BY seq DESC LIMIT ?",
                (user_id, int(limit)),
            )
            .fetchall()
        )
        return [(item, int(stamp)) for item, stamp in reversed(rows)]

    def recent_counts(self, t: int, days: int) -> dict[str, int]:
        today = int(t) // DAY
        db = self._db()
        counts: Counter[str] = Counter()
        for item, n in db.execute(
            "SELECT item_id, SUM(n) FROM day_counts WHERE day >= ? AND day < ? GROUP BY item_id",
            (today - int(days), today),
        ):
            counts[item] += int(n)
        for item, n in db.execute(
            "SELECT item_id, COUNT(*) FROM events WHERE ts >= ? AND ts < ? GROUP BY item_id",
            (today * DAY, int(t)),
        ):
            counts[item] += int(n)
        return dict(counts)

    def add_items(self, items: Iterable[tuple[str, str, str, np.ndarray]]) -> int:
        with self._write() as db:
            added = 0
            for item_id, title, text, vector in items:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO items (item_id, title, text, vector) VALUES (?,?,?,?)",
                    (str(item_id), str(title), str(text), _unit(vector).tobytes()),
                )
                added += cursor.rowcount
        return added

    def items_after(self, seq: int) -> list[LiveItem]:
        rows = self._db().execute(
            "SELECT seq, item_id, title, text, vector FROM items WHERE seq > ? ORDER BY seq",
            (int(seq),),
        )
        return [
            LiveItem(int(s), i, t, x, np.frombuffer(v, dtype=np.float32).copy())
            for s, i, t, x, v in rows
        ]

    def item_count(self) -> int:
        row = self._db().execute("SELECT COALESCE(MAX(seq), 0) FROM items").fetchone()
        return int(row[0])

    def has_item(self, item_id: str) -> bool:
        row = self._db().execute("SELECT 1 FROM items WHERE item_id = ?", (item_id,)).fetchone()
        return row is not None

    def set_users(self, users: Iterable[tuple[str, dict[str, str]]]) -> int:
        rows = [
            (str(user), *(None if p.get(c) is None else str(p[c]) for c in PROFILE_COLUMNS))
            for user, p in users
        ]
        with self._write() as db:
            db.executemany(
                "INSERT INTO users (user_id, age_band, gender, occupation, region) "
                "VALUES (?,?,?,?,?) ON CONFLICT (user_id) DO UPDATE SET "
                "age_band = excluded.age_band, gender = excluded.gender, "
                "occupation = excluded.occupation, region = excluded.region",
                rows,
            )
        return len(rows)

    def profile(self, user_id: str) -> dict[str, str] | None:
        row = (
            self._db()
            .execute(
                "SELECT age_band, gender, occupation, region FROM users WHERE user_id = ?",
                (user_id,),
            )
            .fetchone()
        )
        return None if row is None else dict(zip(PROFILE_COLUMNS, row, strict=True))

    def user_ids(self) -> set[str]:
        return {row[0] for row in self._db().execute("SELECT user_id FROM users")}

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


# -- several workers or hosts: Redis -------------------------------------------------------

# one event, atomically: SADD says whether the triple is new; only then is it appended to
# the user's list, indexed by time for today's exact count, and counted for its day
_ADD_EVENT = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[2])
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
  redis.call('HINCRBY', KEYS[4], ARGV[4], 1)
  return 1
end
return 0
"""
_ADD_ITEM = """
if redis.call('HSETNX', KEYS[1], ARGV[1], '1') == 1 then
  local seq = redis.call('INCR', KEYS[2])
  redis.call('HSET', KEYS[3] .. seq, 'item_id', ARGV[1], 'title', ARGV[2], 'text', ARGV[3],
             'vector', ARGV[4])
  return seq
end
return 0
"""


class RedisState(LiveState):
    """The same state in Redis (``redis://host:port/db``), under ``prefix``."""

    def __init__(self, url: str, prefix: str = "recops") -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self.client.ping()
        self.prefix = prefix
        self._add_event = self.client.register_script(_ADD_EVENT)
        self._add_item = self.client.register_script(_ADD_ITEM)

    def _key(self, *parts: object) -> str:
        return ":".join([self.prefix, *map(str, parts)])

    def add_events(self, events: Iterable[Event]) -> int:
        pipe = self.client.pipeline(transaction=False)
        n = 0
        for user, item, stamp in events:
            triple = f"{user}\t{item}\t{int(stamp)}"
            self._add_event(
                keys=[
                    self._key("seen", user),
                    self._key("events", user),
                    self._key("by_time"),
                    self._key("day", int(stamp) // DAY),
                ],
                args=[triple, f"{item}\t{int(stamp)}", int(stamp), str(item)],
                client=pipe,
            )
            n += 1
        return int(sum(pipe.execute())) if n else 0

    def events(self, user_id: str, limit: int = MAX_EVENTS_READ) -> list[tuple[str, int]]:
        rows = self.client.lrange(self._key("events", user_id), -int(limit), -1)
        out = []
        for row in rows:
            item, _, stamp = row.decode().rpartition("\t")
            out.append((item, int(stamp)))
        return out

    def recent_counts(self, t: int, days: int) -> dict[str, int]:
        today = int(t) // DAY
        pipe = self.client.pipeline(transaction=False)
        for day in range(today - int(days), today):
            pipe.hgetall(self._key("day", day))
        pipe.zrangebyscore(self._key("by_time"), today * DAY, f"({int(t)}")
        *days_counts, partial = pipe.execute()
        counts: Counter[str] = Counter()
        for table in days_counts:
            for item, n in table.items():
                counts[item.decode()] += int(n)
        for triple in partial:
            counts[triple.decode().split("\t")[1]] += 1
        return dict(counts)

    def add_items(self, items: Iterable[tuple[str, str, str, np.ndarray]]) -> int:
        added = 0
        for item_id, title, text, vector in items:
            seq = self._add_item(
                keys=[self._key("item_ids"), self._key("item_seq"), self._key("item", "")],
                args=[str(item_id), str(title), str(text), _unit(vector).tobytes()],
            )
            added += int(seq) > 0
        return added

    def items_after(self, seq: int) -> list[LiveItem]:
        last = self.item_count()
        pipe = self.client.pipeline(transaction=False)
        for s in range(int(seq) + 1, last + 1):
            pipe.hgetall(self._key("item", s))
        out = []
        for s, row in zip(range(int(seq) + 1, last + 1), pipe.execute(), strict=True):
            if not row:  # a concurrent add between INCR and HSET: picked up next time
                break
            out.append(
                LiveItem(
                    s,
                    row[b"item_id"].decode(),
                    row[b"title"].decode(),
                    row[b"text"].decode(),
                    np.frombuffer(row[b"vector"], dtype=np.float32).copy(),
                )
            )
        return out

    def item_count(self) -> int:
        return int(self.client.get(self._key("item_seq")) or 0)

    def has_item(self, item_id: str) -> bool:
        return bool(self.client.hexists(self._key("item_ids"), item_id))

    def set_users(self, users: Iterable[tuple[str, dict[str, str]]]) -> int:
        pipe = self.client.pipeline(transaction=False)
        n = 0
        for user, values in users:
            fields = {c: str(values[c]) for c in PROFILE_COLUMNS if values.get(c) is not None}
            pipe.delete(self._key("user", user))
            pipe.hset(self._key("user", user), mapping={"_": "1", **fields})
            pipe.sadd(self._key("users"), user)
            n += 1
        pipe.execute()
        return n

    def profile(self, user_id: str) -> dict[str, str] | None:
        row = self.client.hgetall(self._key("user", user_id))
        if not row:
            return None
        values = {k.decode(): v.decode() for k, v in row.items()}
        return {c: values.get(c) for c in PROFILE_COLUMNS}

    def user_ids(self) -> set[str]:
        return {u.decode() for u in self.client.smembers(self._key("users"))}

    def close(self) -> None:
        self.client.close()


def open_state(url_or_path: str | Path) -> LiveState:
    """``redis://...`` opens Redis; anything else is the path of a SQLite file."""
    text = str(url_or_path)
    if text.startswith(("redis://", "rediss://", "unix://")):
        return RedisState(text)
    return SqliteState(Path(text))


# -- what the loop calls after an append ------------------------------------------------------


Encoder = Callable[[list[str]], np.ndarray]  # texts -> [n, D] vectors (TextEncoder.encode)


def _profiles(users: pd.DataFrame) -> list[tuple[str, dict[str, str]]]:
    columns = [c for c in PROFILE_COLUMNS if c in users.columns]
    return [
        (str(row[USER_ID]), {c: None if pd.isna(row[c]) else str(row[c]) for c in columns})
        for row in users[[USER_ID, *columns]].to_dict("records")
    ]


def sync_batch(
    state: LiveState,
    interactions: pd.DataFrame | None,
    items: pd.DataFrame | None,
    users: pd.DataFrame | None,
    encoder: Any,
    served_items: Collection[str] = (),
) -> dict[str, int]:
    """Push one appended batch (canonical tables, pseudonymised ids, as in ``data/``) into
    the live state of what is served; returns how many events, items and users it added.

    - users: their profile values are stored (a newer row replaces an older one);
    - items: every item not in ``served_items`` (the served catalogue's ids) and not yet
      in the state is encoded from its text (``item_text``, the template the embed stage
      uses) by ``encoder`` (a ``TextEncoder``, or anything with ``encode(texts)``) and
      added, so it is scored from its text exactly as ``POST /items`` scores one;
    - interactions: recorded as events (repeats are no-ops, so a re-pushed batch is safe).

    Items go in before events, so no event ever names an item the state cannot serve.
    Call it after every append; ``consistency_problems`` checks the result against data/.
    """
    counts = {"events": 0, "items": 0, "users": 0}
    if users is not None and len(users):
        counts["users"] = state.set_users(_profiles(users))
    if items is not None and len(items):
        served = set(map(str, served_items))
        fresh = items[~items[ITEM_ID].astype(str).isin(served)]
        fresh = fresh.drop_duplicates(ITEM_ID, keep="last")
        fresh = fresh[[not state.has_item(str(i)) for i in fresh[ITEM_ID]]]
        if len(fresh):
            texts = [
                item_text(title, year, genres)
                for title, year, genres in zip(
                    fresh[TITLE],
                    fresh[YEAR] if YEAR in fresh else [None] * len(fresh),
                    fresh[GENRES] if GENRES in fresh else [None] * len(fresh),
                    strict=True,
                )
            ]
            vectors = np.asarray(encoder.encode(texts), dtype=np.float32)
            rows = zip(
                fresh[ITEM_ID].astype(str),
                ["" if t is None or pd.isna(t) else str(t) for t in fresh[TITLE]],
                texts,
                vectors,
                strict=True,
            )
            counts["items"] = state.add_items(rows)
    if interactions is not None and len(interactions):
        rows = zip(
            interactions[USER_ID].astype(str),
            interactions[ITEM_ID].astype(str),
            interactions[TIMESTAMP].astype("int64"),
            strict=True,
        )
        counts["events"] = state.add_events(rows)
    return counts


def consistency_problems(
    state: LiveState, items: pd.DataFrame, users: pd.DataFrame, served_items: Collection[str]
) -> list[str]:
    """What ``data/``'s item and user tables hold that serving cannot see (empty: in step):
    an item neither in the served catalogue nor in the state, a user whose stored profile
    differs. The loop asserts this after ``sync_batch``."""
    served = set(map(str, served_items))
    problems = [
        f"item {i} is in data/ but not servable"
        for i in items[ITEM_ID].astype(str)
        if i not in served and not state.has_item(i)
    ]
    for user, values in _profiles(users):
        stored = state.profile(user)
        if stored is None or any(stored.get(c) != v for c, v in values.items()):
            problems.append(f"user {user}'s profile differs from data/")
    return problems


def merged_history(
    stored: Sequence[tuple[int, int]], live: Sequence[tuple[int, int]]
) -> list[tuple[int, int]]:
    """The bundle's (item index, timestamp) events followed by the live ones: what a
    ranking sees (``recommend.clean_history`` then orders them by time, each item once)."""
    return [*stored, *live]


def now_seconds() -> int:
    """The server's clock, Unix seconds: the ``now`` a request is ranked for by default."""
    return int(time.time())
