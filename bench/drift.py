"""The drift decision's false-alarm rate and power, at the sizes real weeks have (issue 16).

    python bench/drift.py [--windows 30] [--seed 0] [--evidently]

Reads MovieLens-100K from data/ (`make ingest` first). The replay's initial snapshot (its
first ``replay.initial_weeks`` weeks) is the period with no change:

- **null windows**: random 7-day windows inside it (starting after its 4th week, so the
  reference holds a few weeks), the reference being every event before the window, the
  window's users subsampled to the number a real week has (drawn from weeks 1-8). The
  share declared drifted is the false-alarm rate (goal <= 5%).
- **injected shifts**, into the same windows: a genre's share of events x3, an age band's
  users x3 (users of that band drawn three times as often), 30% of events moved to items
  never seen before, every event 6 hours later. The share detected is the power (goal >=
  90% for each).
- the **real weeks 1-8**, each against everything before it: what the monitor says.

``--evidently`` also counts how often Evidently's own DataDriftPreset (tests picked by
size, dataset drift at its default share) calls the same null windows drifted.
Prints Markdown tables; nothing is written.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.core import schema
from pipelines.core.config import load_params
from pipelines.core.paths import PROJECT
from pipelines.data.snapshot import read_snapshot
from pipelines.loop.stream import WEEK_SECONDS, week_anchor
from pipelines.monitoring.drift import assess

SHIFTS = ("genre share x3", "age band users x3", "30% events on new items", "hour +6 h")


def real_weeks(events: pd.DataFrame, anchor: int, initial: int, n: int) -> list[pd.DataFrame]:
    start = anchor + initial * WEEK_SECONDS
    return [
        events[
            (events[schema.TIMESTAMP] >= start + w * WEEK_SECONDS)
            & (events[schema.TIMESTAMP] < start + (w + 1) * WEEK_SECONDS)
        ]
        for w in range(n)
    ]


def subsample_users(window: pd.DataFrame, n_users: int, rng, weights=None) -> pd.DataFrame:
    users = pd.unique(window[schema.USER_ID])
    if len(users) <= n_users:
        return window
    p = None if weights is None else weights / weights.sum()
    kept = rng.choice(users, size=n_users, replace=False, p=p)
    return window[window[schema.USER_ID].isin(set(kept))]


def genre_x3(window, tables, reference, rng):
    """A genre with a 3-12% share of the window's events gets three times that share."""
    genres = (
        tables["items"]
        .set_index(schema.ITEM_ID)[schema.GENRES]
        .map(lambda g: str(g[0]) if len(g) else None)
    )
    first = window[schema.ITEM_ID].map(genres)
    shares = first.value_counts(normalize=True)
    candidates = shares[(shares >= 0.03) & (shares <= 0.12)]
    genre = candidates.index[rng.integers(len(candidates))]
    share = shares[genre]
    others = np.flatnonzero((first != genre).to_numpy())
    n_move = round((3 * share - share) * len(window) / (1 - share))
    pool = reference[reference[schema.ITEM_ID].map(genres) == genre][schema.ITEM_ID].to_numpy()
    out = window.copy()
    moved = rng.choice(others, size=min(n_move, len(others)), replace=False)
    out.iloc[moved, out.columns.get_loc(schema.ITEM_ID)] = rng.choice(pool, size=len(moved))
    return out.drop_duplicates([schema.USER_ID, schema.ITEM_ID])


def age_x3(window, tables, n_users, rng):
    """Users of one age band (5-20% of the window's users) drawn three times as often."""
    users = pd.unique(window[schema.USER_ID])
    bands = tables["users"].set_index(schema.USER_ID)[schema.AGE_BAND].reindex(users)
    shares = bands.value_counts(normalize=True)
    candidates = shares[(shares >= 0.05) & (shares <= 0.2)]
    if candidates.empty:  # no band that small: the smallest one
        candidates = shares.tail(1)
    band = candidates.index[rng.integers(len(candidates))]
    weights = np.where(bands.to_numpy() == band, 3.0, 1.0)
    users_kept = rng.choice(
        users, size=min(n_users, len(users)), replace=False, p=weights / weights.sum()
    )
    return window[window[schema.USER_ID].isin(set(users_kept))]


def new_items(window, tables, rng):
    """30% of the events moved to 50 items never seen before (texts of real items)."""
    out = window.copy()
    moved = rng.random(len(out)) < 0.3
    donors = tables["items"].sample(n=50, random_state=int(rng.integers(1 << 30)))
    fresh = donors.assign(**{schema.ITEM_ID: [f"new-{i}" for i in range(len(donors))]})
    out.loc[moved, schema.ITEM_ID] = rng.choice(fresh[schema.ITEM_ID].to_numpy(), moved.sum())
    items = pd.concat([tables["items"], fresh], ignore_index=True)
    return out.drop_duplicates([schema.USER_ID, schema.ITEM_ID]), items


def decide(reference, window, tables, cfg, items=None):
    ref = {"interactions": reference, "items": tables["items"], "users": tables["users"]}
    cur = {
        "interactions": window,
        "items": tables["items"] if items is None else items,
        "users": tables["users"],
    }
    return assess("bench", ref, cur, cfg, report=False)


def evidently_drift(reference, window, tables) -> bool:
    """Evidently's DataDriftPreset alone (its size-picked tests, dataset drift share 0.5)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    from pipelines.monitoring.drift import FEATURES, GENRE, HOUR, POPULARITY, USER_FEATURES
    from pipelines.monitoring.drift import _report_frame as frame

    ref = frame(reference, tables["items"], tables["users"], reference)
    cur = frame(window, tables["items"], tables["users"], reference)
    dd = DataDefinition(
        numerical_columns=[POPULARITY, HOUR], categorical_columns=[GENRE, *USER_FEATURES]
    )
    snapshot = Report([DataDriftPreset(columns=list(FEATURES))]).run(
        Dataset.from_pandas(cur, data_definition=dd), Dataset.from_pandas(ref, data_definition=dd)
    )
    for metric in snapshot.dict()["metrics"]:
        if metric["config"]["type"].endswith("DriftedColumnsCount"):
            return metric["value"]["share"] >= 0.5
    return False


def windows(events, snapshot, tables, cfg, sizes, anchor, initial, n, rng, mode, with_evidently):
    """(detections per kind, Evidently's alarms on the null windows) over ``n`` windows."""
    counts = {"null": 0, **dict.fromkeys(SHIFTS, 0)}
    evidently_alarms = 0
    low, high = anchor + 4 * WEEK_SECONDS, anchor + (initial - 1) * WEEK_SECONDS
    for _ in range(n):
        start = int(rng.integers(low, high))
        past = events[events[schema.TIMESTAMP] < start]
        reference = snapshot if mode == "snapshot" else past
        times = events[schema.TIMESTAMP]
        full = events[(times >= start) & (times < start + WEEK_SECONDS)]
        n_users = int(rng.choice(sizes))
        window = subsample_users(full, n_users, rng)
        counts["null"] += decide(reference, window, tables, cfg).drift
        if with_evidently:
            evidently_alarms += evidently_drift(reference, window, tables)
        shifted = genre_x3(window, tables, past, rng)
        counts["genre share x3"] += decide(reference, shifted, tables, cfg).drift
        shifted = age_x3(full, tables, n_users, rng)
        counts["age band users x3"] += decide(reference, shifted, tables, cfg).drift
        moved, items = new_items(window, tables, rng)
        counts["30% events on new items"] += decide(reference, moved, tables, cfg, items).drift
        later = window.assign(**{schema.TIMESTAMP: window[schema.TIMESTAMP] + 6 * 3600})
        counts["hour +6 h"] += decide(reference, later, tables, cfg).drift
    return counts, evidently_alarms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--evidently", action="store_true")
    args = parser.parse_args(argv)
    params = load_params(PROJECT.params)
    # the rhythm shares are for reading; thousands of windows need only the decision
    cfg = params.monitoring.model_copy(update={"rhythm_clusters": 0})
    tables = read_snapshot(PROJECT.data)
    events = tables["interactions"].sort_values(schema.TIMESTAMP, kind="stable")
    anchor = week_anchor(int(events[schema.TIMESTAMP].min()))
    initial = params.replay.initial_weeks
    weeks = real_weeks(events, anchor, initial, 8)
    sizes = [w[schema.USER_ID].nunique() for w in weeks]
    snapshot = events[events[schema.TIMESTAMP] < anchor + initial * WEEK_SECONDS]
    started = time.perf_counter()
    modes = ("snapshot", "past")
    results = {
        mode: windows(
            events,
            snapshot,
            tables,
            cfg,
            sizes,
            anchor,
            initial,
            args.windows,
            np.random.default_rng(args.seed),
            mode,
            args.evidently,
        )
        for mode in modes
    }
    n = args.windows
    print(
        f"## Drift decision, {n} windows of the initial snapshot (seed {args.seed}, "
        f"{time.perf_counter() - started:.0f} s)\n"
    )
    print(f"alpha {cfg.alpha} over 8 signals; window users drawn from weeks 1-8: {sizes}\n")
    print("| windows | against the whole snapshot | against the past only | goal |")
    print("|---|---:|---:|---|")
    for name, goal in (("null", "<= 5%"), *((shift, ">= 90%") for shift in SHIFTS)):
        cells = [f"{results[m][0][name]} of {n} ({results[m][0][name] / n:.0%})" for m in modes]
        label = "null (no change)" if name == "null" else name
        print(f"| {label} | {' | '.join(cells)} | {goal} |")
    if args.evidently:
        cells = [f"{results[m][1]} of {n} ({results[m][1] / n:.0%})" for m in modes]
        print(f"| null, Evidently's DataDriftPreset alone | {' | '.join(cells)} | (comparison) |")
    print("\n## The real weeks 1-8, each against everything before it\n")
    print("| week | events | users | decision | main reason |\n|---:|---:|---:|---|---|")
    for number, week in enumerate(weeks, start=1):
        before = events[events[schema.TIMESTAMP] < week[schema.TIMESTAMP].min()]
        decision = decide(before, week, tables, cfg)
        print(
            f"| {number} | {len(week):,} | {week[schema.USER_ID].nunique()} | "
            f"{decision.status} | {decision.main_reason} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
