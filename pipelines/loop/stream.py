"""The replay feed (design.md §6): MovieLens replayed in time as a weekly stream of batches.

Weeks are aligned on Monday 00:00 UTC, counted from the Monday of the week of the
first event; the first ``initial_weeks`` (12: to 1997-12-07 on ML-100K, 43,694
events) form the initial snapshot and every later week is one batch.

A batch is a folder ``<landing>/<name>/`` holding raw tables in the table
adapter's format (``data.append.BATCH_FILES``: ``interactions.csv``, ``items.csv``,
``users.csv``, canonical column names, genres joined by ``|``), **before** privacy:
ingestion applies it at the door, exactly as for any other source. A batch carries the item and user
rows its events need that no earlier batch of the feed carried, so cross-batch
references resolve. The folder is filled beside the landing folder and renamed in
whole, so the ingest DAG never sees half a batch.

Options for tests and demos: ``corrupt`` (a few rows a validator must reject: a
rating outside the scale, a timestamp in the future, an event on an unknown item)
and ``shift`` (a deliberately drifted week: ``genre:<Name>`` turns a share of the
week's events into a burst on that genre, ``age:<low>-<high>`` keeps only users
of one age range, ``new-items`` moves a share of the events onto items never seen
before).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.core import schema
from pipelines.data.append import BATCH_FILES, GENRE_SEPARATOR
from pipelines.data.privacy import RAW_AGE, RAW_ZIP
from pipelines.data.sources import RawTables

log = logging.getLogger(__name__)

WEEK_SECONDS = 7 * 24 * 3600
INITIAL = "week-00"  # the name of the initial snapshot's batch
CURSOR = ".replay-cursor.json"  # in the landing folder: the next week to drop
RAW_USER_COLUMNS = (schema.USER_ID, RAW_AGE, schema.GENDER, schema.OCCUPATION, RAW_ZIP)
SHIFT_KINDS = ("genre", "age", "new-items")


def batch_name(week: int) -> str:
    """week-00 is the initial snapshot; week-01 the first weekly batch."""
    return f"week-{week:02d}"


# ---- cutting the stream into weeks --------------------------------------------------------


def week_anchor(first_timestamp: int) -> int:
    """Monday 00:00 UTC of the week holding ``first_timestamp`` (1970-01-01 was a Thursday)."""
    days = first_timestamp // 86400
    monday = days - (days + 3) % 7
    return int(monday * 86400)


def week_of(timestamps: pd.Series | np.ndarray, anchor: int, initial_weeks: int) -> np.ndarray:
    """0 for the initial snapshot, n >= 1 for the n-th weekly batch after it."""
    index = (np.asarray(timestamps, dtype=np.int64) - anchor) // WEEK_SECONDS
    return np.maximum(index - initial_weeks + 1, 0)


@dataclass(frozen=True)
class Stream:
    """A source cut into weeks: the raw tables and each event's week (0 = initial snapshot)."""

    raw: RawTables
    weeks: np.ndarray  # one per interaction row
    anchor: int
    initial_weeks: int

    @property
    def n_weeks(self) -> int:
        """Weekly batches after the initial snapshot."""
        return int(self.weeks.max()) if len(self.weeks) else 0

    def week_bounds(self, week: int) -> tuple[int, int]:
        """[start, end) Unix seconds of a weekly batch (week >= 1) or of the snapshot (0)."""
        if week == 0:
            return self.anchor, self.anchor + self.initial_weeks * WEEK_SECONDS
        start = self.anchor + (self.initial_weeks + week - 1) * WEEK_SECONDS
        return start, start + WEEK_SECONDS


def cut(raw: RawTables, initial_weeks: int = 12) -> Stream:
    if initial_weeks < 1:
        raise ValueError("initial_weeks must be at least 1")
    ts = raw.interactions[schema.TIMESTAMP].to_numpy(dtype=np.int64)
    anchor = week_anchor(int(ts.min()))
    return Stream(raw, week_of(ts, anchor, initial_weeks), anchor, initial_weeks)


def _first_weeks(stream: Stream, column: str) -> pd.Series:
    """The week in which each user or item first appears in the event stream."""
    frame = pd.DataFrame({column: stream.raw.interactions[column].to_numpy(), "week": stream.weeks})
    return frame.groupby(column, sort=False)["week"].min()


def batch_tables(stream: Stream, week: int) -> dict[str, pd.DataFrame]:
    """The raw tables of one batch: its events, plus the items and users first seen in it."""
    raw = stream.raw
    events = raw.interactions[stream.weeks == week]
    tables = {"interactions": events[list(schema.INTERACTION_COLUMNS)].reset_index(drop=True)}
    for table, frame, column in (
        ("items", raw.items, schema.ITEM_ID),
        ("users", raw.users, schema.USER_ID),
    ):
        first = _first_weeks(stream, column)
        new_ids = set(first.index[first.to_numpy() == week])
        tables[table] = frame[frame[column].isin(new_ids)].reset_index(drop=True)
    return tables


# ---- corrupted and shifted batches --------------------------------------------------------


def corrupt(tables: dict[str, pd.DataFrame], seed: int = 0) -> dict[str, pd.DataFrame]:
    """Three bad rows a validator must reject; the rest of the batch is left as it was."""
    rng = np.random.default_rng(seed)
    events = tables["interactions"].copy()
    if events.empty:
        raise ValueError("cannot corrupt an empty batch")
    rows = rng.choice(len(events), size=min(3, len(events)), replace=False)
    events[schema.RATING] = events[schema.RATING].astype("float64")
    events.loc[rows[0], schema.RATING] = 9.0  # outside the 1-5 scale
    if len(rows) > 1:
        events.loc[rows[1], schema.TIMESTAMP] = 4_102_444_800  # 2100-01-01: in the future
    if len(rows) > 2:
        events.loc[rows[2], schema.ITEM_ID] = "no-such-item"  # resolves nowhere
    return {**tables, "interactions": events}


def _genres(items: pd.DataFrame) -> pd.Series:
    return items[schema.GENRES].map(
        lambda g: list(g) if isinstance(g, list | tuple | np.ndarray) else []
    )


def shift(
    tables: dict[str, pd.DataFrame],
    stream: Stream,
    how: str,
    share: float = 0.6,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """A deliberately drifted copy of a batch (see the module doc for ``how``)."""
    kind, _, arg = how.partition(":")
    if kind not in SHIFT_KINDS:
        raise ValueError(
            f"shift must be one of genre:<Name>, age:<low>-<high>, new-items; got {how!r}"
        )
    rng = np.random.default_rng(seed)
    events = tables["interactions"].copy()
    out = dict(tables)
    if kind == "age":
        low, _, high = arg.partition("-")
        lo, hi = int(low), int(high)
        ages = stream.raw.users.set_index(schema.USER_ID)[RAW_AGE]
        age = events[schema.USER_ID].map(ages)
        keep = (age >= lo) & (age <= hi)
        if not keep.any():
            raise ValueError(f"no events of users aged {lo}-{hi} in this batch")
        events = events[keep.to_numpy()].reset_index(drop=True)
        out["interactions"] = events
        out["users"] = tables["users"][tables["users"][schema.USER_ID].isin(events[schema.USER_ID])]
        out["items"] = tables["items"][tables["items"][schema.ITEM_ID].isin(events[schema.ITEM_ID])]
        return out
    moved = rng.random(len(events)) < share
    if kind == "genre":
        items = stream.raw.items
        wanted = items[_genres(items).map(lambda g: arg in g)]
        # only items the stream already carried (or this batch carries), so references resolve
        first = _first_weeks(stream, schema.ITEM_ID)
        known = set(first.index[first.to_numpy() <= _week_of_batch(tables, stream)])
        pool = wanted[wanted[schema.ITEM_ID].isin(known)][schema.ITEM_ID].to_numpy()
        if len(pool) == 0:
            raise ValueError(f"no known item has the genre {arg!r}")
        events.loc[moved, schema.ITEM_ID] = rng.choice(pool, size=int(moved.sum()))
    else:  # new-items: titles and genres of real items, ids never seen before
        n_new = max(1, int(moved.sum()) // 5)
        donors = stream.raw.items.sample(n=min(n_new, len(stream.raw.items)), random_state=seed)
        new_items = donors.copy()
        new_items[schema.ITEM_ID] = [f"new-{seed}-{i}" for i in range(len(new_items))]
        new_items[schema.TITLE] = new_items[schema.TITLE].map(lambda t: f"{t} (new release)")
        events.loc[moved, schema.ITEM_ID] = rng.choice(
            new_items[schema.ITEM_ID].to_numpy(), size=int(moved.sum())
        )
        out["items"] = pd.concat([tables["items"], new_items], ignore_index=True)
    # a user rating one item twice in the same second is a repeated event: drop such repeats
    events = events.drop_duplicates([schema.USER_ID, schema.ITEM_ID, schema.TIMESTAMP])
    out["interactions"] = events.reset_index(drop=True)
    return out


def _week_of_batch(tables: dict[str, pd.DataFrame], stream: Stream) -> int:
    ts = tables["interactions"][schema.TIMESTAMP]
    return int(week_of(ts.iloc[:1], stream.anchor, stream.initial_weeks)[0]) if len(ts) else 0


# ---- writing batches into the landing folder -------------------------------------------


def _csv_ready(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    if table == "items":
        out[schema.GENRES] = _genres(out).map(GENRE_SEPARATOR.join)
        out = out[list(schema.ITEM_COLUMNS)]
    elif table == "users":
        out = out[list(RAW_USER_COLUMNS)]
    else:
        out = out[list(schema.INTERACTION_COLUMNS)]
    return out


def write_batch(tables: dict[str, pd.DataFrame], landing: Path, name: str) -> Path:
    """``<landing>/<name>/`` with the three CSV files, moved in whole; an existing one is kept."""
    landing = Path(landing)
    landing.mkdir(parents=True, exist_ok=True)
    target = landing / name
    if target.exists():
        raise FileExistsError(f"{target} already exists; a landed batch is never overwritten")
    staging = Path(tempfile.mkdtemp(dir=landing, prefix=f".staging-{name}."))
    try:
        for table, file in BATCH_FILES.items():
            if table != "interactions" and tables[table].empty:
                continue  # no new rows: the file is left out (see table_source)
            _csv_ready(table, tables[table]).to_csv(staging / file, index=False)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("landed %s: %d events", target, len(tables["interactions"]))
    return target


def read_cursor(landing: Path) -> int:
    path = Path(landing) / CURSOR
    return int(json.loads(path.read_text())["next_week"]) if path.exists() else 0


def write_cursor(landing: Path, week: int) -> None:
    from pipelines.core.io import write_json

    write_json({"next_week": week}, Path(landing) / CURSOR)


def drop_week(
    stream: Stream,
    landing: Path,
    week: int | None = None,
    *,
    corrupted: bool = False,
    shifted: str | None = None,
    seed: int = 0,
) -> Path:
    """Land one batch: the next week by the cursor (or ``week``), optionally corrupted or shifted.

    A variant gets its own name (``week-05-corrupt``, ``week-05-shift-genre-Horror``) so a
    clean copy of the same week can still be landed after it.
    """
    auto = week is None
    week = read_cursor(landing) if auto else week
    if week > stream.n_weeks:
        raise IndexError(
            f"the stream has {stream.n_weeks} weekly batches; week {week} is past the end"
        )
    tables = batch_tables(stream, week)
    name = batch_name(week)
    if shifted:
        tables = shift(tables, stream, shifted, seed=seed)
        name += "-shift-" + "".join(c if c.isalnum() else "-" for c in shifted)
    if corrupted:
        tables = corrupt(tables, seed=seed)
        name += "-corrupt"
    path = write_batch(tables, landing, name)
    if auto:
        write_cursor(landing, week + 1)
    return path
