"""The blend of a model with recent popularity, by the gap: known answers."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.inference.now import (
    NowBlend,
    blend_probabilities,
    blend_scores,
    fit_blend,
)

HOUR, DAY = 3_600, 86_400


def test_the_weight_follows_the_gap_bucket():
    blend = NowBlend((0.0, 0.2, 0.6, 0.9))
    gaps = np.array([0, HOUR - 1, HOUR, DAY - 1, DAY, 7 * DAY, 30 * DAY, -1])
    assert blend.weight_of(gaps).tolist() == [0.0, 0.0, 0.2, 0.2, 0.6, 0.9, 0.9, 0.9]


def test_weight_zero_keeps_the_model_order_and_one_the_recent_order():
    model = np.array([[3.0, 1.0, 2.0, -np.inf]])
    recent = np.array([[0.0, 5.0, 1.0, 9.0]])
    keep = blend_scores(model, recent, np.array([0]), NowBlend((0.0, 0.0, 0.0, 1.0)))
    assert np.argsort(-keep[0], kind="stable").tolist()[:3] == [0, 2, 1]
    assert keep[0, 3] == -np.inf  # the model cannot score it and recent has no say
    swap = blend_scores(model, recent, np.array([30 * DAY]), NowBlend((0.0, 0.0, 0.0, 1.0)))
    assert np.argsort(-swap[0], kind="stable").tolist() == [3, 1, 2, 0]


def test_the_mixture_is_a_distribution_and_an_empty_recent_row_is_the_model():
    model = np.log(np.array([[0.5, 0.25, 0.25]]))
    p = blend_probabilities(model, np.array([[0.0, 0.0, 4.0]]), np.array([0.5]))
    assert p.sum() == pytest.approx(1.0)
    assert p[0].tolist() == pytest.approx([0.25, 0.125, 0.625])
    same = blend_probabilities(model, np.zeros((1, 3)), np.array([0.9]))
    assert same[0].tolist() == pytest.approx([0.5, 0.25, 0.25])


def test_fit_blend_picks_recent_for_the_cases_the_model_gets_wrong():
    rng = np.random.default_rng(0)
    n, items = 400, 50
    targets = rng.integers(0, items, n)
    gaps = np.where(np.arange(n) % 2 == 0, 60, 30 * DAY)  # half within the hour, half later
    model = rng.normal(size=(n, items))
    recent = rng.random((n, items))
    short = gaps < HOUR
    model[short, targets[short]] += 10.0  # right after an event the model knows
    recent[~short, targets[~short]] += 10.0  # a month later, what is popular now knows
    blend, report = fit_blend(model, recent, gaps, targets, np.zeros((n, items), bool), k=1)
    assert blend.weights[0] == 0.0 and blend.weights[-1] > 0.3
    assert [b["cases"] for b in report["buckets"]] == [200, 0, 0, 200]
    long = report["buckets"][-1]
    assert long["ndcg"] == 1.0 and long["ndcg_model_only"] < 0.2  # the blend fixed them all
    assert blend.weights[1] == blend.weights[2] == 0.0  # empty buckets: the shorter choice


def test_bad_blends_are_refused():
    with pytest.raises(ValueError, match="weights needed"):
        NowBlend((0.1,))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        NowBlend((0.0, 0.0, 0.0, 1.5))


def test_the_card_round_trips():
    blend = NowBlend((0.0, 0.1, 0.5, 0.8), window_days=3.0)
    assert NowBlend.from_card({"now_blend": blend.to_dict()}) == blend
    assert NowBlend.from_card({}) is None
