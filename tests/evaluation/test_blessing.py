"""The blessing rule: floors first, then margin over the champion and no cold-start regression."""

from __future__ import annotations

import pytest

from pipelines.evaluation.blessing import BlessingRule, Evidence, bless, coldstart_slices

RULE = BlessingRule(floors={"ndcg@10": 0.03}, margin=0.002, coldstart_tolerance=0.05)


def evidence(ndcg: float, items: float | None = 0.30, users: float | None = 0.30) -> Evidence:
    return Evidence("fusion_transformer", {"ndcg@10": ndcg}, items, users)


def test_first_run_the_floors_alone_decide() -> None:
    assert bless(evidence(0.05), None, RULE).blessed
    below = bless(evidence(0.02), None, RULE)
    assert not below.blessed and "failed" in below.reasons[0]


def test_a_worse_or_equal_model_is_not_blessed() -> None:
    champion = evidence(0.10)
    assert not bless(evidence(0.09), champion, RULE).blessed
    assert not bless(evidence(0.10), champion, RULE).blessed  # equal is not better
    assert not bless(evidence(0.101), champion, RULE).blessed  # inside the margin
    assert bless(evidence(0.103), champion, RULE).blessed


def test_a_cold_start_regression_beyond_the_tolerance_blocks() -> None:
    champion = evidence(0.10, items=0.40, users=0.30)
    assert bless(evidence(0.12, items=0.39, users=0.30), champion, RULE).blessed  # -2.5%
    regressed = bless(evidence(0.12, items=0.30, users=0.30), champion, RULE)
    assert not regressed.blessed
    assert any(r.startswith("new items") and "regressed" in r for r in regressed.reasons)
    assert not bless(evidence(0.12, items=0.40, users=0.20), champion, RULE).blessed


def test_an_unmeasured_slice_is_reported_and_optionally_required() -> None:
    champion = evidence(0.10)
    loose = bless(evidence(0.12, items=None, users=None), champion, RULE)
    assert loose.blessed and any("not measured" in r for r in loose.reasons)
    strict = BlessingRule(floors={}, require_coldstart=True)
    assert not bless(evidence(0.12, items=None), champion, strict).blessed


def test_every_check_leaves_a_reason() -> None:
    decision = bless(evidence(0.12), evidence(0.10), RULE)
    assert len(decision.reasons) == 4  # floor, margin, new items, new users


def test_rule_bounds_and_coldstart_extraction() -> None:
    with pytest.raises(ValueError):
        BlessingRule(margin=-0.1)
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


def test_evidence_round_trips_through_metadata() -> None:
    original = evidence(0.1, items=None)
    assert Evidence.from_dict(original.to_dict()) == original
