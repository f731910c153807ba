"""A retried ingest task (its worker died after moving a batch) appends nothing twice."""

from __future__ import annotations

import yaml

from pipelines.core.config import load_params
from pipelines.core.paths import PROJECT, Layout
from pipelines.data.snapshot import read_ledger
from pipelines.loop import stream
from pipelines.loop.steps import ingest_batch, pending_batches
from tests.monitoring.synthetic import synthetic_raw


def test_a_batch_moved_by_an_earlier_try_is_answered_from_the_ledger(tmp_path):
    params = yaml.safe_load(PROJECT.params.read_text())
    params["replay"]["initial_weeks"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    ws, loaded = Layout(tmp_path), load_params(tmp_path / "params.yaml")
    feed = stream.cut(synthetic_raw(events_per_week=120, weeks=2), initial_weeks=2)
    for week in (0, 1):
        stream.drop_week(feed, ws.landing, week)
    names = pending_batches(ws)  # what the task's first try was given (its XCom)
    first = [ingest_batch(ws, name, loaded.ingest, loaded.replay) for name in names]
    assert [r["status"] for r in first] == ["accepted", "accepted"]
    assert pending_batches(ws) == []  # both moved to landing/.processed

    # the retry gets the same names; the batches are no longer in landing/
    again = [ingest_batch(ws, name, loaded.ingest, loaded.replay) for name in names]
    assert [r["status"] for r in again] == ["duplicate", "duplicate"]
    assert [e["batch"] for e in read_ledger(ws.data)] == ["week-00", "week-01"]
    assert sorted(p.name for p in ws.processed.iterdir()) == ["week-00", "week-01"]
