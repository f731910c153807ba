"""Prequential quality: cases, what was popular before each one, known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.monitoring.quality import (
    DAY,
    Popularity,
    RecentPopularity,
    Scored,
    Timeline,
    counts_before,
    per_case,
    score,
    summary,
    window_cases,
)

T0 = 1_000 * DAY  # a Monday far from the epoch; whole days keep the arithmetic readable


def events(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).assign(rating=1.0)


# user a: 3 events before the window, 2 in it; b: 1 before, 1 in it (after a break);
# c: new in the window (2 events); same-second events keep the source order (a2 then a3)
ROWS = [
    ("a", "i1", T0),
    ("b", "i1", T0 + 1),
    ("a", "i2", T0 + 2 * DAY),
    ("a", "i3", T0 + 2 * DAY),
    ("a", "i4", T0 + 10 * DAY),  # window [T0 + 10 d, T0 + 17 d)
    ("c", "i2", T0 + 10 * DAY + 5),
    ("a", "i1x", T0 + 10 * DAY + 60),
    ("c", "i4", T0 + 11 * DAY),
    ("b", "i4", T0 + 12 * DAY),
]
WINDOW = (T0 + 10 * DAY, T0 + 17 * DAY)


@pytest.fixture
def timeline():
    return Timeline.from_events(events(ROWS))


def test_cases_are_every_window_event_with_a_history(timeline):
    cases = window_cases(timeline, *WINDOW)
    assert timeline.items[cases.events].tolist() == ["i4", "i1x", "i4", "i4"]
    assert cases.users.tolist() == ["a", "a", "c", "b"]
    assert cases.known.tolist() == [True, True, False, True]  # c is new in the window
    assert cases.first_of_window.tolist() == [True, False, False, True]
    assert cases.gaps.tolist() == [8 * DAY, 60, DAY - 5, 12 * DAY - 1]
    assert cases.after_break.tolist() == [True, False, False, True]
    # the live history is every earlier event of the user, the window's own included
    assert timeline.items[timeline.history(int(cases.events[1]))].tolist() == [
        "i1",
        "i2",
        "i3",
        "i4",
    ]


def test_counts_before_see_only_the_past(timeline):
    cases = window_cases(timeline, *WINDOW)
    codes = {item: code for code, item in enumerate(timeline.item_ids)}
    every = counts_before(timeline, cases)
    # before a's i4 (event 4): i1 twice, i2 once, i3 once; nothing of the window
    assert every[0, codes["i1"]] == 2 and every[0, codes["i4"]] == 0
    assert every[3, codes["i4"]] == 2  # before b's i4: a's and c's
    recent = counts_before(timeline, cases, days=7)
    assert recent[0].sum() == 0  # the week before a's i4 (T0+3d .. T0+10d) was empty
    assert recent[3, codes["i4"]] == 2 and recent[3, codes["i1"]] == 0


def test_popularity_masks_the_history_and_never_invents_items(timeline):
    cases = window_cases(timeline, *WINDOW)
    top = Popularity().top_k(timeline, cases, 3)
    # a (case 0) has seen i1 i2 i3: nothing else was interacted with before, no pick
    assert top[0].tolist() == [None, None, None]
    # b has seen i1; i2 and i4 have 2 events each: the tie goes to the earlier-seen item
    assert top[3].tolist() == ["i2", "i4", "i3"]
    recent = RecentPopularity(days=7).top_k(timeline, cases, 1)
    assert recent[3].tolist() == ["i4"]


def test_per_case_metrics_are_the_textbook_values():
    tops = np.array([["x", "t", "y"], ["t", "x", "y"], ["x", "y", "z"]], dtype=object)
    ndcg, hr = per_case(tops, np.array(["t", "t", "t"], dtype=object), k=3)
    assert ndcg.tolist() == pytest.approx([1 / np.log2(3), 1.0, 0.0])  # ranks 2, 1, none
    assert hr.tolist() == [1.0, 1.0, 0.0]
    assert per_case(tops, np.array(["t", "t", "t"], dtype=object), k=1)[0].tolist() == [0, 1, 0]


def test_summary_slices_and_pairs_against_popularity(timeline):
    cases = window_cases(timeline, *WINDOW)
    scored = score([Popularity(), RecentPopularity(7)], timeline, cases, k=10)
    out = summary(scored, cases, k=10)
    assert out["all"]["cases"] == 3 and out["new users"]["cases"] == 1
    assert out["after a break"]["cases"] == 2 and out["first of week"]["cases"] == 2
    recent = out["all"]["popularity, last 7 days"]
    assert (
        "ndcg@10 vs popularity" in recent
        and "ndcg@10 vs popularity" not in out["all"]["popularity"]
    )
    perfect = Scored("perfect", np.ones(len(cases)), np.ones(len(cases)))
    zero = Scored("popularity", np.zeros(len(cases)), np.zeros(len(cases)))
    diff = summary([zero, perfect], cases, k=10)["all"]["perfect"]["ndcg@10 vs popularity"]
    assert diff["mean"] == 1.0 and diff["verdict"] == "better"
