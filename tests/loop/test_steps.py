"""The loop's steps: an append reaches the live state; the lineage names what was trained on."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from pipelines.core.config import Params
from pipelines.core.paths import Layout
from pipelines.data.snapshot import current_version, data_version, read_ledger, read_snapshot
from pipelines.inference.live import SqliteState, consistency_problems
from pipelines.loop import stream
from pipelines.loop.steps import ingest_batch, record_lineage, repro
from tests.monitoring.synthetic import synthetic_raw


class FakeEncoder:
    """Stand-in for MiniLM: one unit vector per text (the steps only store them)."""

    def encode(self, texts):
        rng = np.random.default_rng(len(texts))
        vectors = rng.normal(size=(len(texts), 384)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture
def layout(tmp_path, monkeypatch):
    import pipelines.features.text as text

    monkeypatch.setattr(text, "TextEncoder", lambda **_: FakeEncoder())
    monkeypatch.delenv("RECOPS_LIVE_STATE", raising=False)
    out = Layout(tmp_path)
    feed = stream.cut(synthetic_raw(events_per_week=120, weeks=2), initial_weeks=2)
    params = Params()
    results = []
    for week in (0, 1):
        path = stream.drop_week(feed, out.landing, week)
        results.append(ingest_batch(out, path.name, params.ingest, params.replay))
    return out, results


def test_an_appended_batch_reaches_the_live_state_and_the_snapshot_does_not(layout):
    out, (initial, week) = layout
    assert initial["status"] == week["status"] == "accepted"
    assert initial["live"] is None  # the first model is trained on the snapshot itself
    ledger = read_ledger(out.data)
    n0 = ledger[0]["rows"]["interactions"]
    snapshot = read_snapshot(out.data)
    events = snapshot["interactions"].iloc[n0:]
    assert week["live"]["events"] == len(events) > 0
    state = SqliteState(out.live_state)
    user = events["user_id"].iloc[0]
    mine = events[events["user_id"] == user]
    assert sorted(state.events(user)) == sorted(
        zip(mine["item_id"], mine["timestamp"], strict=True)
    )
    # nothing served yet: every item of the batch is servable from the state
    batch_items = snapshot["items"][snapshot["items"]["item_id"].isin(events["item_id"])]
    batch_users = snapshot["users"][snapshot["users"]["user_id"].isin(events["user_id"])]
    assert consistency_problems(state, batch_items, batch_users, served_items=[]) == []


def test_repro_records_the_data_version_it_trained_on(layout, monkeypatch):
    out, _ = layout
    monkeypatch.setenv("RECOPS_REPRO_CMD", f"{sys.executable} -c pass")
    blessing = repro(out)
    version = current_version(out.data)
    assert blessing["trained_on"] == {"data_version": version, "ledger_batches": 2}
    ledger = read_ledger(out.data)
    assert version == data_version(ledger) != data_version(ledger[:1])  # not the previous one
    entry = record_lineage(out, version, blessing, None)
    assert entry["data_version"] == version
    assert entry["ledger"] == [e["batch"] for e in ledger]
