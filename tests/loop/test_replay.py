"""The replay's table: one row per week that says what the loop did, its numbers, the timings."""

from __future__ import annotations

from pipelines.loop.replay import HEADER, Week, gate_reason, retrain_cell, row, timing

PAIRED = (
    "paired NDCG@10 as served on the newest events: challenger ...; lower bound ...: shown worse"
)


def interval(mean, low, high):
    return {"mean": mean, "low": low, "high": high}


def quality(served=0.07, stale=0.02, popularity=0.03, recent=0.035):
    slices = {
        "all": {
            "cases": 2143,
            "users": 47,
            "as served": {
                "ndcg@10": interval(served, served - 0.01, served + 0.01),
                "ndcg@10 vs popularity": interval(served - popularity, 0.02, 0.06),
            },
            "stale": {"ndcg@10": interval(stale, 0.01, 0.03)},
            "popularity": {"ndcg@10": interval(popularity, 0.02, 0.04)},
            "popularity, last 7 days": {"ndcg@10": interval(recent, 0.03, 0.04)},
        },
        "after a break": {
            "as served": {"ndcg@10": interval(0.09, 0.06, 0.12)},
            "popularity, last 7 days": {"ndcg@10": interval(0.085, 0.06, 0.11)},
        },
    }
    return {"k": 10, "slices": slices}


def test_the_deciding_blessing_reason_is_the_failed_floor_or_the_paired_comparison():
    floor_ok, floor_failed = (
        "floor valid ndcg@10: 0.09 >= 0.03: ok",
        "floor x: 0.01 >= 0.03: failed",
    )
    cold = "new items: no held-out cases, not compared"
    assert gate_reason([floor_ok, PAIRED, cold]) == PAIRED
    assert gate_reason([floor_failed, PAIRED]) == floor_failed
    assert gate_reason([floor_ok, "no champion yet: the floors alone decide"]).startswith(
        "no champ"
    )


def test_rows_say_what_each_week_did_and_show_its_numbers_as_served():
    week = Week(1, "week-01", "accepted", 2143, 2143, decision="no_drift", reason="calm")
    week.retrained, week.blessed, week.gate, week.quality = True, False, PAIRED, quality()
    week.seconds = {"ingest": 2, "retrain": 370}
    assert retrain_cell(week) == f"not blessed: {PAIRED}"
    line = row(week)
    assert line.count("|") == HEADER.splitlines()[0].count("|")  # one cell per column
    assert "| 2,143 / 47 | 0.0700 [0.0600, 0.0800] | 0.0200 | 0.0300 | 0.0350 |" in line
    assert "| +0.0400 [+0.0200, +0.0600] | 0.0900 / 0.0850 |" in line and line.endswith("| 372 |")

    held = Week(4, "week-04-corrupt", "quarantined", 3663, quarantined=3663, rejected=3)
    held.reason = "1 interaction has a rating outside 1–5"
    assert "| 0 | 3,663 (3 failed a check) | quarantined: 1 interaction" in row(held)
    assert retrain_cell(held) == "—" and "| — |" in row(held)

    stuck = Week(2, "week-02", "accepted", blessed=True, retrained=True, note="not ready in 180s")
    assert retrain_cell(stuck) == "blessed, not served: not ready in 180s"
    assert retrain_cell(Week(0, "week-00", "accepted", retrained=True, switched=True)) == (
        "switched (first release)"
    )


def test_timing_averages_each_step_with_and_without_a_retrain():
    calm = Week(5, "week-05", "accepted", seconds={"land": 1, "ingest": 2, "monitor": 40})
    busy = Week(6, "week-06", "accepted", retrained=True, seconds={"monitor": 30, "retrain": 300})
    text = timing([Week(0, "week-00", "accepted", retrained=True), calm, busy])
    assert "without a retrain: 43 s (mean of 1; land 1, ingest 2, monitor 40)" in text
    assert "with a retrain: 330 s (mean of 1; monitor 30, retrain 300)" in text
