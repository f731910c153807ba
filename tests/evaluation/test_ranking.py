"""The one masked full-catalogue ranking: known ranks, lists and means on a hand-built case."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipelines.evaluation.beyond_accuracy import list_metrics
from pipelines.evaluation.ranking import (
    Catalogue,
    candidates,
    evaluate_model,
    evaluate_per_user,
    masked_scores,
    metric_names,
    ranks_and_top_k,
    top_k,
)
from pipelines.models import Histories, Recommender

SCORES = [0.1, 0.5, 0.5, 0.9, 0.2]  # items 1 and 2 tie: the lower index ranks first


class FixedScores(Recommender):
    name = "fixed"

    def score_all(self, histories: Histories) -> torch.Tensor:
        return torch.tensor(SCORES).expand(histories.items.shape[0], -1)  # [B, 5]


# user 0 saw item 3 (target 1), user 1 nothing (target 4), user 2 item 1 twice (target 2)
HISTORIES = Histories.from_lists([[3], [], [1, 1]], [[1], [], [1, 2]])
TARGETS = torch.tensor([1, 4, 2])
# masked orders: 1 2 4 0 | 3 1 2 4 0 | 3 2 4 0 → target ranks 0, 3, 1
RANKS = [0, 3, 1]
TOP_2 = [[1, 2], [3, 1], [3, 2]]


def test_metric_names_in_report_order() -> None:
    assert metric_names(5) == (
        "ndcg@5",
        "hr@5",
        "mrr@5",
        "precision@5",
        "recall@5",
        "f1@5",
        "auc",
        "coverage@5",
        "novelty@5",
        "arp@5",
        "repeats@5",  # reported only when the history is not masked
    )


def test_candidates_count_distinct_unseen_items() -> None:
    counts = candidates(HISTORIES, 5)
    assert counts.tolist() == [4, 5, 4] and counts.dtype == torch.long  # repeats count once


def test_masked_scores_hide_the_history_only_when_asked() -> None:
    model = FixedScores(5)
    masked = masked_scores(model, HISTORIES)
    assert masked[0].tolist() == pytest.approx([0.1, 0.5, 0.5, float("-inf"), 0.2])
    assert torch.isinf(masked[2, 1]) and torch.isfinite(masked[1]).all()
    assert torch.equal(masked_scores(model, HISTORIES, exclude_seen=False)[0], torch.tensor(SCORES))


def test_top_k_keeps_item_order_on_ties() -> None:
    scores = torch.tensor([[1.0, 3.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    assert top_k(scores, 2).tolist() == [[1, 2], [0, 1]]
    assert top_k(scores, 9).shape == (2, 4)  # k beyond the catalogue: every item
    # an unstable sort reorders long runs of equal scores
    assert top_k(torch.zeros(3, 300), 20).tolist() == [list(range(20))] * 3


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_ranks_and_lists_do_not_depend_on_the_batch_size(batch_size: int) -> None:
    ranks, top = ranks_and_top_k(FixedScores(5), HISTORIES, TARGETS, 2, batch_size)
    assert ranks.tolist() == RANKS and top.tolist() == TOP_2
    assert ranks.dtype == torch.long
    # the promise of the module doc: top[u, r] == target exactly when rank r < k
    for user, rank in enumerate(RANKS):
        assert (top[user] == TARGETS[user]).nonzero().flatten().tolist() == (
            [rank] if rank < 2 else []
        )


def test_ranks_and_top_k_refuse_bad_inputs_and_handle_no_users() -> None:
    model = FixedScores(5)
    with pytest.raises(ValueError, match="k must be at least 1, got 0"):
        ranks_and_top_k(model, HISTORIES, TARGETS, 0, 8)
    with pytest.raises(ValueError, match="2 targets for 3 histories"):
        ranks_and_top_k(model, HISTORIES, TARGETS[:2], 2, 8)
    empty = Histories.from_lists([], [])
    ranks, top = ranks_and_top_k(model, empty, torch.zeros(0, dtype=torch.long), 3, 8)
    assert ranks.shape == (0,) and top.shape == (0, 3)
    assert ranks.dtype == top.dtype == torch.long


def test_evaluate_per_user_known_means() -> None:
    metrics, per_user = evaluate_per_user(FixedScores(5), HISTORIES, TARGETS, 2, batch_size=2)
    hit_ndcg = 1 / math.log2(3)
    assert per_user.tolist() == pytest.approx([1.0, 0.0, hit_ndcg])
    assert metrics == pytest.approx(
        {
            "ndcg@2": (1 + hit_ndcg) / 3,
            "hr@2": 2 / 3,
            "mrr@2": (1 + 0.5) / 3,
            "precision@2": 1 / 3,
            "recall@2": 2 / 3,
            "f1@2": 2 * (2 / 3) / 3,  # 2 / (k + 1) per hit
            # 1 - rank / (candidates - 1): 1 - 0/3, 1 - 3/4, 1 - 1/3
            "auc": (1 + 0.25 + 2 / 3) / 3,
            "coverage@2": 3 / 5,  # items 1, 2 and 3
            "users": 3,
        }
    )
    assert evaluate_model(FixedScores(5), HISTORIES, TARGETS, 2, batch_size=8) == metrics


def test_evaluate_per_user_describes_the_lists_against_the_catalogue() -> None:
    popularity = np.array([4, 3, 2, 1, 1])
    catalogue = Catalogue(popularity, n_users=4)
    metrics, _ = evaluate_per_user(FixedScores(5), HISTORIES, TARGETS, 2, 8, catalogue)
    expected = list_metrics(torch.tensor(TOP_2), popularity, 4, 5)
    assert {name: metrics[name] for name in expected} == pytest.approx(expected)
    assert metrics["arp@2"] == pytest.approx((3 + 2 + 1 + 3 + 1 + 2) / 6)
    assert metrics["users"] == 3 and metrics["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
