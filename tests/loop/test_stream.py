"""The replay feed (design.md §6): weeks cut on Mondays, batches landed whole, variants."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.core import schema
from pipelines.data.append import table_source
from pipelines.data.sources import read_table_source
from pipelines.loop import stream
from tests.monitoring.synthetic import MONDAY_1997, synthetic_raw

WEEK = stream.WEEK_SECONDS


def test_the_anchor_is_the_monday_of_the_first_event():
    # 1997-09-20 (ML-100K's first event) was a Saturday; its Monday is 1997-09-15
    assert stream.week_anchor(874_724_710) == MONDAY_1997
    assert stream.week_anchor(MONDAY_1997) == MONDAY_1997


def test_ml100k_initial_snapshot_ends_on_1997_12_07():
    _, end = stream.Stream(None, np.zeros(1), MONDAY_1997, 12).week_bounds(0)  # type: ignore[arg-type]
    assert pd.Timestamp(end - 1, unit="s").strftime("%Y-%m-%d") == "1997-12-07"
    assert stream.Stream(None, np.zeros(1), MONDAY_1997, 12).week_bounds(1) == (end, end + WEEK)  # type: ignore[arg-type]


def test_weeks_partition_the_events_and_new_rows_come_once():
    feed = stream.cut(synthetic_raw(), initial_weeks=2)
    assert feed.n_weeks == 3
    batches = [stream.batch_tables(feed, w) for w in range(feed.n_weeks + 1)]
    assert sum(len(b["interactions"]) for b in batches) == len(feed.raw.interactions)
    seen_items: set[str] = set()
    for week, batch in enumerate(batches):
        start, end = feed.week_bounds(week)
        assert batch["interactions"][schema.TIMESTAMP].between(start, end - 1).all()
        new = set(batch["items"][schema.ITEM_ID])
        assert not new & seen_items  # an item row is carried once, by its first week
        seen_items |= new
        assert set(batch["interactions"][schema.ITEM_ID]) <= seen_items  # every reference resolves


def test_drop_week_lands_whole_batches_the_table_adapter_reads(tmp_path):
    feed = stream.cut(synthetic_raw(), initial_weeks=2)
    first = stream.drop_week(feed, tmp_path)
    second = stream.drop_week(feed, tmp_path)
    assert (first.name, second.name) == ("week-00", "week-01")
    assert stream.read_cursor(tmp_path) == 2
    raw = read_table_source(table_source(second), second)
    assert len(raw.interactions) == (feed.weeks == 1).sum()
    assert not raw.problems
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".staging")]
    with pytest.raises(FileExistsError):
        stream.drop_week(feed, tmp_path, week=1)
    with pytest.raises(IndexError):
        stream.drop_week(feed, tmp_path, week=99)


def test_a_corrupted_batch_has_three_bad_rows(tmp_path):
    feed = stream.cut(synthetic_raw(), initial_weeks=2)
    clean = stream.batch_tables(feed, 1)["interactions"]
    bad = stream.corrupt(stream.batch_tables(feed, 1))["interactions"]
    assert len(bad) == len(clean)
    assert (bad != clean).any(axis=1).sum() == 3
    assert stream.drop_week(feed, tmp_path, 1, corrupted=True).name == "week-01-corrupt"


@pytest.mark.parametrize("how", ["genre:Horror", "age:30-45", "new-items"])
def test_a_shifted_batch_drifts_the_way_it_says(how):
    feed = stream.cut(synthetic_raw(), initial_weeks=2)
    clean = stream.batch_tables(feed, 2)
    shifted = stream.shift(clean, feed, how, share=0.6)
    events = shifted["interactions"]
    assert not events.duplicated([schema.USER_ID, schema.ITEM_ID, schema.TIMESTAMP]).any()
    if how.startswith("genre"):
        horror = set(
            feed.raw.items[feed.raw.items[schema.GENRES].map(lambda g: "Horror" in g)][
                schema.ITEM_ID
            ]
        )
        share = lambda f: f[schema.ITEM_ID].isin(horror).mean()  # noqa: E731
        assert share(events) > 0.5 > share(clean["interactions"])
    elif how.startswith("age"):
        ages = feed.raw.users.set_index(schema.USER_ID)["age"]
        assert events[schema.USER_ID].map(ages).between(30, 45).all()
    else:
        new = set(shifted["items"][schema.ITEM_ID]) - set(feed.raw.items[schema.ITEM_ID])
        assert new and events[schema.ITEM_ID].isin(new).mean() > 0.4


def test_an_unknown_shift_is_refused():
    feed = stream.cut(synthetic_raw(), initial_weeks=2)
    with pytest.raises(ValueError, match="shift must be one of"):
        stream.shift(stream.batch_tables(feed, 1), feed, "colour:red")
