"""The evaluator every quality number comes from: known answers and a cross-check."""

from __future__ import annotations

import math
import random

import pytest
import torch

from pipelines.evaluation.metrics import (
    auc,
    auc_from_ranks,
    catalogue_coverage,
    dcg_at_k,
    f1_at_k,
    f1_from_ranks,
    hit_from_ranks,
    hit_rate_at_k,
    mask_seen,
    mrr_at_k,
    mrr_from_ranks,
    ndcg_at_k,
    ndcg_from_ranks,
    precision_at_k,
    precision_from_ranks,
    recall_at_k,
    target_ranks,
)


def test_perfect_ranking_scores_one() -> None:
    assert ndcg_at_k([1, 2, 3, 4], {1, 2}, 10) == pytest.approx(1.0)
    assert mrr_at_k([1, 2, 3], {1}, 10) == 1.0
    assert recall_at_k([1, 2, 3], {1, 2}, 2) == 1.0


def test_no_hit_scores_zero() -> None:
    for metric in (ndcg_at_k, hit_rate_at_k, recall_at_k, mrr_at_k):
        assert metric([5, 6, 7], {1}, 3) == 0.0
    assert ndcg_at_k([1, 2], set(), 10) == 0.0  # nothing relevant: no credit, no division by zero


def test_textbook_dcg() -> None:
    # relevant at positions 1 and 3: DCG = 1/log2(2) + 1/log2(4) = 1.5;
    # ideal puts both first: 1 + 1/log2(3)
    ranked, relevant = ["a", "b", "c", "d"], {"a", "c"}
    assert dcg_at_k(ranked, relevant, 4) == pytest.approx(1.5)
    assert ndcg_at_k(ranked, relevant, 4) == pytest.approx(1.5 / (1 + 1 / math.log2(3)))


def test_cutoff_ignores_hits_below_k() -> None:
    assert hit_rate_at_k([5, 6, 1], {1}, 2) == 0.0
    assert mrr_at_k([5, 1], {1}, 2) == 0.5


def test_target_ranks_breaks_ties_by_item_index() -> None:
    scores = torch.tensor([[0.5, 0.9, 0.5, 0.1]])
    assert target_ranks(scores, torch.tensor([2])).item() == 2  # item 0 ties and wins
    assert target_ranks(scores, torch.tensor([0])).item() == 1
    assert target_ranks(scores, torch.tensor([1])).item() == 0


def test_masked_items_never_rank_ahead() -> None:
    scores = torch.tensor([[9.0, 1.0, 2.0]])
    masked = mask_seen(scores, torch.tensor([[True, False, False]]))
    assert target_ranks(masked, torch.tensor([2])).item() == 0


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_metrics_match_the_reference(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(64, 50, generator=generator)
    scores[:, :5] = scores[:, :5].round()  # force some ties
    targets = torch.randint(0, 50, (64,), generator=generator)
    ranks = target_ranks(scores, targets)
    k = 10
    for row in range(64):
        # a stable sort by descending score is the reference order
        ranked = sorted(range(50), key=lambda item, r=row: (-scores[r, item].item(), item))
        relevant = {int(targets[row])}
        assert ndcg_from_ranks(ranks[row : row + 1], k).item() == pytest.approx(
            ndcg_at_k(ranked, relevant, k)
        )
        assert hit_from_ranks(ranks[row : row + 1], k).item() == hit_rate_at_k(ranked, relevant, k)
        assert mrr_from_ranks(ranks[row : row + 1], k).item() == pytest.approx(
            mrr_at_k(ranked, relevant, k)
        )
        assert precision_from_ranks(ranks[row : row + 1], k).item() == pytest.approx(
            precision_at_k(ranked, relevant, k)
        )
        assert f1_from_ranks(ranks[row : row + 1], k).item() == pytest.approx(
            f1_at_k(ranked, relevant, k)
        )
        n_candidates = torch.tensor([50])
        assert auc_from_ranks(ranks[row : row + 1], n_candidates).item() == pytest.approx(
            auc(ranked, relevant)
        )


def test_classic_metrics_known_answers() -> None:
    ranked = [4, 7, 1, 9, 2]  # 7 and 2 are relevant
    relevant = {7, 2}
    assert precision_at_k(ranked, relevant, 2) == 0.5  # 7 in the top 2
    assert recall_at_k(ranked, relevant, 2) == 0.5  # 1 of 2 relevant found
    assert f1_at_k(ranked, relevant, 2) == 0.5  # 2·0.5·0.5 / (0.5 + 0.5)
    assert precision_at_k(ranked, relevant, 5) == 0.4 and recall_at_k(ranked, relevant, 5) == 1.0
    assert f1_at_k(ranked, relevant, 5) == pytest.approx(2 * 0.4 / 1.4)
    # pairs (relevant above non-relevant): 7 beats 1, 9 -> 2; 2 beats none -> 0; of 2 · 3 = 6
    assert auc(ranked, relevant) == pytest.approx(2 / 6)
    assert auc([1, 2, 3], {1}) == 1.0 and auc([1, 2, 3], {3}) == 0.0
    assert auc([1, 2], set()) == 0.5  # no pair to order
    assert f1_at_k(ranked, {99}, 3) == 0.0


def test_vectorised_classic_metrics_at_exactly_k() -> None:
    ranks = torch.tensor([0, 9, 10, 99])  # rank 9 is the 10th place: inside k = 10
    assert precision_from_ranks(ranks, 10).tolist() == [0.1, 0.1, 0.0, 0.0]
    assert f1_from_ranks(ranks, 10).tolist() == pytest.approx([2 / 11, 2 / 11, 0.0, 0.0])
    assert hit_from_ranks(ranks, 10).tolist() == [1.0, 1.0, 0.0, 0.0]
    assert ndcg_from_ranks(ranks, 10)[1].item() == pytest.approx(1 / math.log2(11))
    assert mrr_from_ranks(ranks, 10).tolist() == pytest.approx([1.0, 0.1, 0.0, 0.0])
    # AUC of a target ranked r among n candidates: 1 - r / (n - 1)
    n = torch.tensor([100, 100, 11, 100])
    assert auc_from_ranks(ranks, n).tolist() == pytest.approx([1.0, 1 - 9 / 99, 0.0, 0.0])


def test_coverage_counts_distinct_items() -> None:
    top = torch.tensor([[0, 1], [1, 2]])
    assert catalogue_coverage(top, 6) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        catalogue_coverage(top, 0)


def test_reference_metrics_are_bounded() -> None:
    rng = random.Random(0)
    for _ in range(200):
        ranked = rng.sample(range(30), 30)
        relevant = set(rng.sample(range(30), rng.randint(1, 5)))
        for metric in (ndcg_at_k, hit_rate_at_k, recall_at_k, mrr_at_k, precision_at_k, f1_at_k):
            assert 0.0 <= metric(ranked, relevant, 10) <= 1.0
        assert 0.0 <= auc(ranked, relevant) <= 1.0
