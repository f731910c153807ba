"""The replay's table: one row per week that says what the loop did, and the timings."""

from __future__ import annotations

from pipelines.loop.replay import HEADER, Week, gate_reason, quality_csv, retrain_cell, row, timing

NOT_BETTER = (
    "valid ndcg@10: 0.0969 vs champion fusion_transformer 0.1024 (margin 0.0000): not better"
)


def test_the_deciding_blessing_reason_is_the_failed_floor_or_the_comparison():
    floor_ok, floor_failed = (
        "floor valid ndcg@10: 0.09 >= 0.03: ok",
        "floor x: 0.01 >= 0.03: failed",
    )
    cold = "new items: not measured for the challenger, not compared"
    assert gate_reason([floor_ok, NOT_BETTER, cold]) == NOT_BETTER
    assert gate_reason([floor_failed, NOT_BETTER]) == floor_failed
    assert gate_reason([floor_ok, "no champion yet: the floors alone decide"]).startswith(
        "no champ"
    )


def test_rows_say_what_each_week_did():
    drifted = Week(1, "week-01", "accepted", 2143, 2143, decision="drift", reason="51% new")
    drifted.retrained, drifted.blessed, drifted.gate = True, False, NOT_BETTER
    drifted.ndcg_before = drifted.ndcg_after = 0.0088
    drifted.users, drifted.ndcg_popularity, drifted.seconds = (
        36,
        0.0573,
        {"ingest": 2, "retrain": 370},
    )
    assert retrain_cell(drifted) == "not blessed (valid NDCG@10 0.0969 vs 0.1024)"
    line = row(drifted)
    assert line.count("|") == HEADER.splitlines()[0].count("|")  # one cell per column
    assert (
        "| 2,143 | 0 | drift: 51% new |" in line
        and "| 0.0088 | 0.0088 | 36 | 0.0573 | 372 |" in line
    )

    held = Week(4, "week-04-corrupt", "quarantined", 3663, quarantined=3663, rejected=3)
    held.reason = "1 interaction has a rating outside 1–5"
    assert "| 0 | 3,663 (3 failed a check) | quarantined: 1 interaction" in row(held)
    assert retrain_cell(held) == "—"

    stuck = Week(2, "week-02", "accepted", blessed=True, retrained=True, note="not ready in 180s")
    assert retrain_cell(stuck) == "blessed, not served: not ready in 180s"


def test_timing_averages_each_step_with_and_without_a_retrain():
    calm = Week(5, "week-05", "accepted", seconds={"land": 1, "ingest": 2, "monitor": 40})
    busy = Week(6, "week-06", "accepted", retrained=True, seconds={"monitor": 30, "retrain": 300})
    text = timing([Week(0, "week-00", "accepted", retrained=True), calm, busy])
    assert "without a retrain: 43 s (mean of 1; land 1, ingest 2, monitor 40)" in text
    assert "with a retrain: 330 s (mean of 1; monitor 30, retrain 300)" in text


def test_the_quality_curve_has_one_row_per_accepted_weekly_batch():
    weeks = [
        Week(0, "week-00", "accepted", retrained=True),
        Week(1, "week-01", "accepted", ndcg_before=0.01, ndcg_after=0.02, ndcg_popularity=0.03),
        Week(2, "week-02-corrupt", "quarantined"),
    ]
    weeks[1].retrained = weeks[1].switched = True
    assert quality_csv(weeks).splitlines() == [
        "week,batch,ndcg_before,ndcg_after,ndcg_popularity,retrained,switched",
        "1,week-01,0.01,0.02,0.03,1,1",
    ]
