"""The blessing rule: floors first, then the gate's paired interval, then the cold slices."""

from __future__ import annotations

import pytest

from pipelines.evaluation.blessing import BlessingRule, bless, coldstart_slices

RULE = BlessingRule(floors={"ndcg@10": 0.03}, margin=-0.01, coldstart_tolerance=0.05)


def entry(champion: float, low: float, high: float, cases: int = 900) -> dict:
    mean = (low + high) / 2

    def interval(value: float) -> dict:
        return {"mean": value, "low": value - 0.01, "high": value + 0.01}

    return {
        "cases": cases,
        "users": 60,
        "challenger": {"ndcg@10": interval(champion + mean)},
        "champion": {"ndcg@10": interval(champion)},
        "difference": {"mean": mean, "low": low, "high": high, "p_value": 0.3},
    }


def comparison(low: float, high: float, items=(-0.01, 0.01), users=(-0.01, 0.01)) -> dict:
    return {
        "known users": entry(0.08, low, high),
        "new items": entry(0.05, *items, cases=40),
        "new users": entry(0.10, *users, cases=300),
    }


def test_without_a_comparison_the_floors_alone_decide() -> None:
    assert bless({"ndcg@10": 0.05}, None, RULE).blessed
    below = bless({"ndcg@10": 0.02}, None, RULE, "no champion yet: the floors alone decide")
    assert not below.blessed and "failed" in below.reasons[0]
    assert below.reasons[1] == "no champion yet: the floors alone decide"


def test_the_lower_bound_decides_against_the_margin() -> None:
    valid = {"ndcg@10": 0.1}
    assert bless(valid, comparison(-0.009, 0.02), RULE).blessed  # not shown worse by > 0.01
    assert bless(valid, comparison(-0.010, 0.02), RULE).blessed  # exactly at the margin
    worse = bless(valid, comparison(-0.011, 0.02), RULE)
    assert not worse.blessed and "shown worse" in worse.reasons[1]
    strict = BlessingRule(floors={}, margin=0.0)  # a shown gain is asked for
    assert not bless(valid, comparison(-0.001, 0.03), strict).blessed
    assert "not shown better" in bless(valid, comparison(-0.001, 0.03), strict).reasons[0]
    assert bless(valid, comparison(0.001, 0.03), strict).blessed


def test_the_reason_carries_both_numbers_the_cases_and_the_interval() -> None:
    reason = bless({"ndcg@10": 0.1}, comparison(-0.005, 0.015), RULE).reasons[1]
    assert "challenger 0.0850" in reason and "champion 0.0800" in reason
    assert "difference +0.0050 [-0.0050, +0.0150]" in reason and "900 cases of 60 users" in reason


def test_a_cold_slice_blocks_only_when_shown_worse_beyond_the_tolerance() -> None:
    valid = {"ndcg@10": 0.1}
    wide = comparison(0.0, 0.02, items=(-0.2, 0.1))  # a wide interval is not a regression
    assert bless(valid, wide, RULE).blessed
    # the champion's new-item NDCG is 0.05: 5% of it is 0.0025
    regressed = bless(valid, comparison(0.0, 0.02, items=(-0.05, -0.003)), RULE)
    assert not regressed.blessed
    assert any(r.startswith("new items") and r.endswith("regressed") for r in regressed.reasons)
    assert bless(valid, comparison(0.0, 0.02, items=(-0.05, -0.002)), RULE).blessed


def test_a_slice_without_cases_is_reported_and_optionally_required() -> None:
    valid = {"ndcg@10": 0.1}
    empty = {**comparison(0.0, 0.02), "new items": {"cases": 0, "users": 0}}
    loose = bless(valid, empty, RULE)
    assert loose.blessed and "new items: no held-out cases, not compared" in loose.reasons
    strict = BlessingRule(floors={}, margin=-0.01, require_coldstart=True)
    assert not bless(valid, empty, strict).blessed
    nothing = bless(valid, {"known users": {"cases": 0, "users": 0}}, RULE)
    assert not nothing.blessed


def test_every_check_leaves_a_reason() -> None:
    decision = bless({"ndcg@10": 0.12}, comparison(0.0, 0.02), RULE)
    assert len(decision.reasons) == 4  # floor, known users, new items, new users


def test_rule_bounds_and_coldstart_extraction() -> None:
    with pytest.raises(ValueError):
        BlessingRule(margin=-1.5)
    with pytest.raises(ValueError):
        BlessingRule(coldstart_tolerance=1.0)
    metrics = {
        "models": {
            "ease": {
                "new_items": {"model": {"recall@20": 0.25}},
                "new_users": {"shots": {"0": {"ndcg@10": 0.1}, "5": {"ndcg@10": 0.2}}},
            }
        }
    }
    assert coldstart_slices(metrics, "ease", 20, 10) == (0.25, 0.1)
    assert coldstart_slices(metrics, "sasrec", 20, 10) == (None, None)
