"""A tiny MovieLens-shaped stream for the orchestration tests: raw tables before privacy.

Users have an age, gender, occupation and zip; items a title, year and genres; events
span ``initial_weeks + weeks`` weeks from a Monday in 1997, with every user active
early so later weeks reference known users and items (plus a few new ones).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.core import schema
from pipelines.data.privacy import RAW_AGE, RAW_ZIP
from pipelines.data.sources import RawTables

GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance")
MONDAY_1997 = 874_281_600  # 1997-09-15 00:00 UTC, a Monday


def synthetic_raw(
    n_users: int = 40,
    n_items: int = 60,
    initial_weeks: int = 2,
    weeks: int = 3,
    events_per_week: int = 120,
    seed: int = 0,
) -> RawTables:
    rng = np.random.default_rng(seed)
    users = pd.DataFrame(
        {
            schema.USER_ID: [str(u + 1) for u in range(n_users)],
            RAW_AGE: rng.integers(16, 70, n_users).astype(float),
            schema.GENDER: rng.choice(["M", "F"], n_users),
            schema.OCCUPATION: rng.choice(["student", "engineer", "writer"], n_users),
            RAW_ZIP: [f"{rng.integers(10000, 99999)}" for _ in range(n_users)],
        }
    )
    items = pd.DataFrame(
        {
            schema.ITEM_ID: [str(i + 1) for i in range(n_items)],
            schema.TITLE: [f"Movie {i + 1}" for i in range(n_items)],
            schema.YEAR: pd.array(rng.integers(1950, 1998, n_items), dtype="Int64"),
            schema.GENRES: [[GENRES[i % len(GENRES)]] for i in range(n_items)],
        }
    )
    week = 7 * 86400
    rows = []
    total_weeks = initial_weeks + weeks
    # popularity skewed to low ids, horror (every 5th item from 4) rare
    weights = 1.0 / np.arange(1, n_items + 1) ** 0.7
    weights[3::5] *= 0.1
    weights /= weights.sum()
    for w in range(total_weeks):
        # new items appear over time: the last 10% only after the initial weeks
        allowed = n_items if w >= initial_weeks else int(n_items * 0.9)
        p = weights[:allowed] / weights[:allowed].sum()
        for _ in range(events_per_week):
            u = rng.integers(0, n_users)  # every user may appear in any week
            i = rng.choice(allowed, p=p)
            ts = MONDAY_1997 + w * week + int(rng.integers(0, week))
            rows.append((str(u + 1), str(i + 1), float(rng.integers(1, 6)), ts))
    inter = pd.DataFrame(rows, columns=list(schema.INTERACTION_COLUMNS))
    inter = inter.drop_duplicates([schema.USER_ID, schema.ITEM_ID]).reset_index(drop=True)
    inter[schema.TIMESTAMP] = inter[schema.TIMESTAMP].astype("int64")
    return RawTables(inter, items, users, origin="synthetic", ratings_required=True)
