"""The drift decision: Evidently report + JSON decision, minimum window, thresholds."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipelines.core import schema
from pipelines.core.config import IngestParams, MonitoringParams
from pipelines.data.append import append_batch
from pipelines.data.privacy import PUBLIC_DEMO_KEY
from pipelines.data.snapshot import read_snapshot
from pipelines.loop import stream
from pipelines.monitoring.drift import PROFILE_FEATURES, assess, event_features
from pipelines.monitoring.quality import ndcg_of_target, next_item_ndcg, popularity_ranker
from tests.monitoring.synthetic import GENRES, synthetic_raw

CFG = MonitoringParams(
    min_events=50, reference_rows=2000, min_quality_users=10, embedding_plot_rows=50
)


def genre_vectoriser(items: pd.DataFrame):
    """A stand-in for MiniLM: one-hot genre plus a little noise, unit rows."""
    genre = items.set_index(schema.ITEM_ID)[schema.GENRES].map(
        lambda g: next(iter(g)) if len(g) else None
    )
    rng = np.random.default_rng(0)

    def vectors(ids):
        rows = []
        for i in ids:
            v = np.zeros(len(GENRES)) + rng.normal(0, 0.05, len(GENRES))
            if genre.get(i) in GENRES:
                v[GENRES.index(genre[i])] += 1
            rows.append(v / np.linalg.norm(v))
        return np.array(rows)

    return vectors


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """Reference = weeks 0-1 appended; batches: week 2 clean or shifted, privacy applied."""
    tmp = tmp_path_factory.mktemp("drift")
    feed = stream.cut(synthetic_raw(events_per_week=300, weeks=3), initial_weeks=2)
    for _ in range(2):
        append_batch(
            IngestParams(),
            stream.drop_week(feed, tmp / "landing"),
            data_dir=tmp / "data",
            quarantine_dir=tmp / "q",
            key=PUBLIC_DEMO_KEY,
        )
    reference = read_snapshot(tmp / "data")

    cache: dict = {}

    def batch_of(**variant):
        key = tuple(sorted(variant.items()))
        if key not in cache:
            cache[key] = _batch_of(**variant)
        return cache[key]

    def _batch_of(**variant):
        path = stream.drop_week(feed, tmp / "landing", 2, **variant)
        scratch = tmp / f"scratch-{path.name}"
        import shutil

        shutil.copytree(tmp / "data", scratch)
        append_batch(
            IngestParams(), path, data_dir=scratch, quarantine_dir=tmp / "q", key=PUBLIC_DEMO_KEY
        )
        after = read_snapshot(scratch)
        n = len(reference["interactions"])
        return {
            "interactions": after["interactions"].iloc[n:].reset_index(drop=True),
            "items": after["items"],
            "users": after["users"],
        }

    return tmp, reference, batch_of, genre_vectoriser(feed.raw.items)


def test_ndcg_of_one_target_has_known_values():
    assert ndcg_of_target(["a", "b"], "a", 10) == 1.0
    assert ndcg_of_target(["a", "b"], "b", 10) == pytest.approx(1 / np.log2(3))  # rank 2: 1/log2(3)
    assert ndcg_of_target(["a", "b"], "c", 10) == 0.0
    assert ndcg_of_target(["a", "b"], "b", 1) == 0.0


def test_next_item_ndcg_uses_the_first_batch_event_of_known_users():
    ref = pd.DataFrame(
        {
            schema.USER_ID: ["u", "u", "v"],
            schema.ITEM_ID: ["a", "b", "a"],
            schema.TIMESTAMP: [1, 2, 3],
        }
    )
    batch = pd.DataFrame(
        {
            schema.USER_ID: ["u", "u", "w"],
            schema.ITEM_ID: ["c", "a", "a"],
            schema.TIMESTAMP: [10, 5, 6],
        }
    )
    # u's first batch event is "a" (t=5), already seen: masked, so a miss; w is unknown
    ndcg, users = next_item_ndcg(ref, batch, popularity_ranker(ref), k=10)
    assert (ndcg, users) == (0.0, 1)


def test_features_follow_row_positions_whatever_the_index(loop):
    # a sampled reference keeps its index labels; the profile of every event must still be
    # found (it once came out "nan" for every label past the sample's length)
    _, reference, _, _ = loop
    events = reference["interactions"]
    sample = events.sample(frac=0.5, random_state=0)
    popularity = events[schema.ITEM_ID].value_counts()
    features = event_features(sample, reference["items"], reference["users"], popularity)
    again = event_features(
        sample.reset_index(drop=True), reference["items"], reference["users"], popularity
    )
    pd.testing.assert_frame_equal(features, again)
    profiles = features[list(PROFILE_FEATURES)]
    assert (profiles != "nan").all().all() and not profiles.eq(schema.UNKNOWN).all().any()


def test_a_clean_batch_does_not_drift_and_writes_both_files(loop):
    tmp, reference, batch_of, vectors = loop
    out = tmp / "out-clean"
    decision = assess(
        "week-02",
        reference,
        batch_of(),
        CFG,
        out_dir=out,
        vectoriser=vectors,
        ranker=popularity_ranker(reference["interactions"]),
        baseline_ndcg=0.05,
    )
    assert decision.status == "no_drift", decision.reasons
    saved = json.loads((out / "decision.json").read_text())
    assert saved["drift"] is False and saved["reasons"]
    assert set(saved["signals"]["psi"]) >= {"genre", "hour", "item_popularity", "age_band"}
    page = (out / "report.html").read_text()
    assert "recops-decision" in page and len(page) > 10_000  # Evidently's page with our summary


def test_a_genre_burst_drifts_with_a_reason(loop):
    tmp, reference, batch_of, vectors = loop
    decision = assess(
        "week-02-horror",
        reference,
        batch_of(shifted="genre:Horror"),
        CFG,
        out_dir=tmp / "out-horror",
        vectoriser=vectors,
    )
    assert decision.drift
    assert any("genre" in r or "embedding" in r for r in decision.reasons)


def test_new_items_drift_on_the_unseen_share(loop):
    tmp, reference, batch_of, _ = loop
    decision = assess(
        "week-02-new", reference, batch_of(shifted="new-items"), CFG, out_dir=tmp / "out-new"
    )
    assert decision.drift and "never saw" in decision.main_reason


def test_below_the_minimum_window_nothing_is_decided(loop):
    tmp, reference, batch_of, _ = loop
    small = batch_of(shifted="age:30-32")
    decision = assess(
        "week-02-small",
        reference,
        small,
        MonitoringParams(min_events=len(small["interactions"]) + 1),
        out_dir=tmp / "out-small",
    )
    assert decision.status == "insufficient" and not decision.drift
    assert json.loads((tmp / "out-small" / "decision.json").read_text())["status"] == "insufficient"


def test_a_quality_drop_is_the_main_reason(loop):
    tmp, reference, batch_of, _ = loop
    never = lambda histories, stamps, k: [["nothing"] * k for _ in histories]  # noqa: E731
    decision = assess(
        "week-02-q",
        reference,
        batch_of(),
        CFG,
        out_dir=tmp / "out-q",
        ranker=never,
        baseline_ndcg=0.1,
    )
    assert decision.drift and decision.main_reason.startswith("champion NDCG@10 fell 100%")
    # the same drop measured on fewer users than min_quality_users is reported, not decided on
    few = CFG.model_copy(update={"min_quality_users": decision.signals["ndcg_users"] + 1})
    quiet = assess(
        "week-02-q2",
        reference,
        batch_of(),
        few,
        out_dir=tmp / "out-q2",
        ranker=never,
        baseline_ndcg=0.1,
    )
    assert quiet.signals["ndcg@10"] == 0.0 and not any("NDCG" in r for r in quiet.reasons)
