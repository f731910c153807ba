"""The evaluator every quality number comes from: known answers and a cross-check."""

from __future__ import annotations

import math
import random

import pytest
import torch

from pipelines.evaluation.metrics import (
    auc,
    auc_from_ranks,
    candidate_metrics,
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
    random_candidate_metrics,
    random_ndcg_one_target,
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


def test_k_below_one_is_refused_and_k_one_is_not() -> None:
    assert precision_at_k([3, 1], {3}, 1) == 1.0 and precision_at_k([3, 1], {1}, 1) == 0.0
    with pytest.raises(ValueError, match=r"^k must be at least 1$"):
        precision_at_k([3, 1], {3}, 0)
    assert catalogue_coverage(torch.tensor([[0]]), 1) == 1.0  # a one-item catalogue
    with pytest.raises(ValueError, match=r"^n_items must be positive$"):
        catalogue_coverage(torch.tensor([[0]]), -1)


def test_auc_with_a_single_pair_or_none() -> None:
    assert auc([1, 2], {1}) == 1.0 and auc([2, 1], {1}) == 0.0  # exactly one negative
    assert auc([1], {1}) == 0.5  # no negative: no pair
    # one target among n candidates: n = 1 has no pair, n = 2 exactly one
    ranks, n_candidates = torch.tensor([0, 0, 1, 1]), torch.tensor([1, 2, 2, 3])
    assert auc_from_ranks(ranks, n_candidates).tolist() == [0.5, 1.0, 0.0, 0.5]


def test_ranks_stay_on_the_scores_device() -> None:
    # the meta device checks device placement without a GPU: a CPU tensor mixed in fails
    scores, targets = torch.randn(2, 5).to("meta"), torch.tensor([1, 2]).to("meta")
    assert target_ranks(scores, targets).device.type == "meta"


def test_top_lists_keep_item_order_among_many_ties() -> None:
    # an unstable sort reorders large runs of equal scores; ties must go to the lower index
    n = 300
    scores = torch.zeros(2, n)
    scores[1, 7] = 1.0
    relevant = torch.zeros(2, n, dtype=torch.bool)
    relevant[:, [5, 250]] = True
    recall, ndcg = candidate_metrics(scores, relevant, k=10)
    assert recall.tolist() == [0.5, 0.5]  # item 5 is in both top 10s, item 250 in neither
    ideal = 1 + 1 / math.log2(3)
    assert ndcg.tolist() == pytest.approx([(1 / math.log2(7)) / ideal, (1 / math.log2(8)) / ideal])


def test_candidate_metrics_refuse_misaligned_inputs() -> None:
    with pytest.raises(ValueError, match=r"^scores \(1, 3\) and relevant \(1, 2\) differ$"):
        candidate_metrics(torch.zeros(1, 3), torch.zeros(1, 2, dtype=torch.bool), 2)


def test_set_metrics_are_computed_in_double_precision() -> None:
    # float32 discounts would be off by about 1e-8: compare to within 1e-12
    scores = torch.tensor([[0.3, 0.9, 0.1, 0.5]])
    relevant = torch.tensor([[True, False, True, False]])
    recall, ndcg = candidate_metrics(scores, relevant, 3)
    # order 1, 3, 0: relevant item 0 at position 3 of 3, item 2 not in the top 3
    assert recall.dtype == ndcg.dtype == torch.float64
    assert ndcg.item() == pytest.approx((1 / math.log2(4)) / (1 + 1 / math.log2(3)), rel=1e-12)
    assert random_ndcg_one_target(4, 2) == pytest.approx((1 + 1 / math.log2(3)) / 4, rel=1e-12)
    exact = random_candidate_metrics(torch.tensor([1]), 3, 2)
    assert exact["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 3, rel=1e-12)


def test_random_expectations_count_users_with_nothing_relevant_as_zero() -> None:
    # of 4 candidates, user 0 has 2 relevant, user 1 none: the means halve
    exact = random_candidate_metrics(torch.tensor([2, 0]), 4, 2)
    assert exact["recall@2"] == pytest.approx((2 / 4) / 2)
    assert exact["ndcg@2"] == pytest.approx((2 / 4) / 2)  # E[DCG] = 2/4 · ideal DCG of 2
    assert random_ndcg_one_target(0, 10) == 0.0
