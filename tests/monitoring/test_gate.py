"""The paired gate: the same cases for champion and challenger, the blend chosen on validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.core import schema
from pipelines.features.dataset import load_dataset
from pipelines.inference.bundle import load_bundle, write_bundle
from pipelines.inference.now import NowBlend
from pipelines.models import load_model
from pipelines.monitoring.gate import Snapshot, compare, holdout_start, validation_blend
from tests.inference.tiny import FILMS, USERS, build_artifacts, events_frame, users_frame

DAY = 86_400


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate")
    vectors = np.random.default_rng(0).normal(size=(len(FILMS), 384)).astype("float32")
    artifacts = build_artifacts(root, vectors, models=("popularity",))
    split = artifacts / "split"
    pd.DataFrame(events_frame()).to_parquet(split / "interactions.parquet")
    bundles = {}
    for name in ("champion", "challenger"):
        folder = root / name
        write_bundle(
            folder,
            artifacts / "models" / "popularity",
            artifacts / "features",
            split,
            artifacts / "embeddings" / "items.npy",
            {"name": "popularity", "version": name},
        )
        bundles[name] = load_bundle(folder)
    return artifacts, bundles


def snapshot_after(extra_days: int = 3) -> Snapshot:
    """The tiny events, then a 'newest week' in which every user comes back twice."""
    events = events_frame()[[schema.USER_ID, schema.ITEM_ID, schema.TIMESTAMP]].copy()
    later = []
    start = int(events[schema.TIMESTAMP].max()) + extra_days * DAY
    for position, user in enumerate(USERS):
        for step, item in enumerate(("3", "7")):
            later.append((user, item, start + position * 60 + step * 3600))
    later_frame = pd.DataFrame(later, columns=[schema.USER_ID, schema.ITEM_ID, schema.TIMESTAMP])
    both = pd.concat([events, later_frame], ignore_index=True).assign(**{schema.RATING: 4.0})
    items = pd.DataFrame(
        {
            schema.ITEM_ID: [f[0] for f in FILMS],
            schema.TITLE: [f[1] for f in FILMS],
            schema.YEAR: [f[2] for f in FILMS],
            schema.GENRES: [f[3] for f in FILMS],
        }
    )
    return Snapshot(both, items, users_frame())


def test_the_holdout_is_the_newest_days():
    snapshot = snapshot_after()
    start = holdout_start(snapshot.interactions, 1)
    held = snapshot.interactions[snapshot.interactions[schema.TIMESTAMP] >= start]
    assert len(held) == 2 * len(USERS)
    assert len(snapshot.before(start).interactions) == len(events_frame())


def test_identical_models_differ_by_exactly_nothing_on_the_same_cases(tiny):
    _, bundles = tiny
    snapshot = snapshot_after()
    start = holdout_start(snapshot.interactions, 1)
    out = compare(bundles["champion"], bundles["challenger"], snapshot, start, None, k=10)
    known = out["known users"]
    # every held-out event of a user the data knew, each with its earlier events as history
    assert known["cases"] == 2 * len(USERS) and known["users"] == len(USERS)
    diff = known["difference"]
    assert diff["mean"] == diff["low"] == diff["high"] == 0.0
    assert known["challenger"]["ndcg@10"] == known["champion"]["ndcg@10"]
    assert out["new users"]["cases"] == 0 and "difference" not in out["new users"]


def test_the_validation_blend_is_chosen_on_each_users_validation_event(tiny):
    artifacts, _ = tiny
    dataset = load_dataset(
        artifacts / "features",
        artifacts / "split" / "items.parquet",
        artifacts / "embeddings" / "items.npy",
    )
    model = load_model(artifacts / "models" / "popularity")
    events = pd.read_parquet(artifacts / "split" / "interactions.parquet")
    blend, report = validation_blend(model, dataset, events, k=10)
    assert isinstance(blend, NowBlend) and report["cases"] == len(USERS)
    # the tiny users come back an hour after each event: every case is in the first buckets
    assert sum(b["cases"] for b in report["buckets"][:2]) == len(USERS)
