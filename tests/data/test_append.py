"""Incremental ingestion: append validated batches to data/, idempotently and atomically."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from pipelines.core import schema
from pipelines.core.config import IngestParams
from pipelines.data import snapshot as snapshot_mod
from pipelines.data.append import append_batch
from pipelines.data.privacy import PUBLIC_DEMO_KEY
from pipelines.data.snapshot import LEDGER, read_ledger
from pipelines.loop import stream
from tests.data.files import tree
from tests.monitoring.synthetic import synthetic_raw

KEY = PUBLIC_DEMO_KEY


@pytest.fixture
def world(tmp_path):
    feed = stream.cut(synthetic_raw(), initial_weeks=2)

    def run(batch: Path):
        return append_batch(
            IngestParams(),
            batch,
            data_dir=tmp_path / "data",
            quarantine_dir=tmp_path / "quarantine",
            key=KEY,
        )

    return feed, tmp_path, run


def test_batches_append_and_the_ledger_records_them(world):
    feed, tmp, run = world
    first = run(stream.drop_week(feed, tmp / "landing"))
    second = run(stream.drop_week(feed, tmp / "landing"))
    assert first.accepted and second.accepted
    events = pd.read_parquet(tmp / "data" / "interactions.parquet")
    assert len(events) == (feed.weeks <= 1).sum()
    assert events[schema.USER_ID].str.startswith("u_").all()  # privacy at the door
    ledger = read_ledger(tmp / "data")
    assert [e["batch"] for e in ledger] == ["week-00", "week-01"]
    assert ledger[1]["rows"]["interactions"] == second.added["interactions"]
    assert first.data_version != second.data_version != "empty"


def test_the_same_batch_twice_adds_nothing(world):
    feed, tmp, run = world
    batch = stream.drop_week(feed, tmp / "landing")
    run(batch)
    before = tree(tmp / "data")
    again = run(batch)
    assert again.status == "duplicate" and sum(again.added.values()) == 0
    # a renamed copy of the same bytes is the same batch
    copy = tmp / "landing" / "week-00-again"
    copy.mkdir()
    for f in batch.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    assert run(copy).status == "duplicate"
    assert tree(tmp / "data") == before


def test_an_event_already_held_is_rejected_and_the_batch_quarantined(world):
    feed, tmp, run = world
    run(stream.drop_week(feed, tmp / "landing"))
    before = tree(tmp / "data")
    # week 0's events again, as a new batch (a different file: one more event of week 1)
    tables = stream.batch_tables(feed, 0)
    tables["interactions"] = pd.concat(
        [tables["interactions"], stream.batch_tables(feed, 1)["interactions"].head(1)]
    )
    tables["items"] = tables["items"].iloc[:0]
    tables["users"] = tables["users"].iloc[:0]
    result = run(stream.write_batch(tables, tmp / "landing", "replayed"))
    assert result.status == "quarantined"
    assert result.counts["interactions"]["rejected"] == (feed.weeks == 0).sum()
    assert any("already holds" in m for m in result.messages)
    assert tree(tmp / "data") == before
    report = json.loads((tmp / "quarantine" / "replayed" / "report.json").read_text())
    assert report["accepted"] is False


def test_references_resolve_against_data_or_the_batch_itself(world):
    feed, tmp, run = world
    run(stream.drop_week(feed, tmp / "landing"))
    tables = stream.batch_tables(feed, 1)
    orphan = tables["interactions"].head(1).copy()
    orphan[schema.ITEM_ID] = "999"  # neither in data/ nor in the batch's items
    tables["interactions"] = pd.concat([tables["interactions"], orphan], ignore_index=True)
    assert run(stream.write_batch(tables, tmp / "landing", "orphan")).status == "quarantined"
    # the same item arriving with its own row is fine
    tables["items"] = pd.concat(
        [
            tables["items"],
            pd.DataFrame(
                {
                    schema.ITEM_ID: ["999"],
                    schema.TITLE: ["New"],
                    schema.YEAR: [1997],
                    schema.GENRES: [["Drama"]],
                }
            ),
        ],
        ignore_index=True,
    )
    assert run(stream.write_batch(tables, tmp / "landing", "with-item")).status == "accepted"


def test_a_corrupted_batch_is_quarantined_once(world):
    feed, tmp, run = world
    run(stream.drop_week(feed, tmp / "landing"))
    before = tree(tmp / "data")
    bad = stream.drop_week(feed, tmp / "landing", 1, corrupted=True)
    first = run(bad)
    assert first.status == "quarantined" and first.counts["interactions"]["rejected"] == 3
    assert (tmp / "quarantine" / bad.name / "report.md").exists()
    assert run(bad).status == "duplicate"  # not judged twice, no second folder
    assert tree(tmp / "data") == before


def test_a_crash_midway_leaves_data_byte_identical(world, monkeypatch):
    feed, tmp, run = world
    run(stream.drop_week(feed, tmp / "landing"))
    before = tree(tmp / "data")
    calls = []
    real = snapshot_mod.write_table

    def crash_on_second(frame, path, table_schema=None):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("injected crash while writing the second table")
        real(frame, path, table_schema)

    monkeypatch.setattr(snapshot_mod, "write_table", crash_on_second)
    with pytest.raises(OSError, match="injected"):
        run(stream.drop_week(feed, tmp / "landing"))
    assert tree(tmp / "data") == before
    assert [p.name for p in tmp.iterdir() if p.name.startswith(".staging")] == []
    monkeypatch.undo()
    assert run(tmp / "landing" / "week-01").accepted  # the retry goes through


def test_a_hard_kill_midway_leaves_data_byte_identical(world):
    """os._exit skips every cleanup, like SIGKILL: only the folder swap protects data/."""
    feed, tmp, run = world
    run(stream.drop_week(feed, tmp / "landing"))
    before = tree(tmp / "data")
    batch = stream.drop_week(feed, tmp / "landing")
    script = textwrap.dedent(
        f"""
        import os
        from pipelines.core.config import IngestParams
        from pipelines.data import append, snapshot
        from pipelines.data.privacy import PUBLIC_DEMO_KEY
        real = snapshot.write_table
        n = []
        def die(frame, path, schema=None):
            n.append(1)
            if len(n) == 3:
                os._exit(137)
            real(frame, path, schema)
        snapshot.write_table = die
        append.append_batch(IngestParams(), {str(batch)!r}, data_dir={str(tmp / "data")!r},
                            quarantine_dir={str(tmp / "quarantine")!r}, key=PUBLIC_DEMO_KEY)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=Path(__file__).parents[2], timeout=120
    )
    assert done.returncode == 137
    assert tree(tmp / "data") == before
    assert run(batch).accepted  # the next run cleans up and appends
    assert len(read_ledger(tmp / "data")) == 2


def test_the_ledger_travels_with_the_tables(world):
    feed, tmp, run = world
    run(stream.drop_week(feed, tmp / "landing"))
    assert (tmp / "data" / LEDGER).exists()
    assert set(p.name for p in (tmp / "data").iterdir()) == {
        "interactions.parquet",
        "items.parquet",
        "users.parquet",
        LEDGER,
    }
