"""Ranking metrics: pure functions with known bounds.

Two forms of each metric:

- the *reference* form takes a ranked list and a set of relevant items and is
  plain Python, written to be obviously right;
- the *vectorised* form works on the rank of each user's single held-out
  target (leave-one-out), in torch, for full-catalogue evaluation.

Tests check that both agree on random data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


# -- reference forms -----------------------------------------------------------
def dcg_at_k(ranked: Sequence[int], relevant: set[int], k: int) -> float:
    """Discounted cumulative gain with binary relevance; min=0."""
    return sum(1.0 / math.log2(pos + 2) for pos, item in enumerate(ranked[:k]) if item in relevant)


def ndcg_at_k(ranked: Sequence[int], relevant: set[int], k: int) -> float:
    """DCG over the ideal DCG; min=0 (no hit), max=1 (relevant items first)."""
    if not relevant:
        return 0.0
    ideal = sum(1.0 / math.log2(pos + 2) for pos in range(min(len(relevant), k)))
    return dcg_at_k(ranked, relevant, k) / ideal


def hit_rate_at_k(ranked: Sequence[int], relevant: set[int], k: int) -> float:
    """1 when any relevant item is in the top k, else 0."""
    return float(any(item in relevant for item in ranked[:k]))


def recall_at_k(ranked: Sequence[int], relevant: set[int], k: int) -> float:
    """Share of the relevant items found in the top k; min=0, max=1."""
    if not relevant:
        return 0.0
    return sum(item in relevant for item in ranked[:k]) / len(relevant)


def precision_at_k(ranked: Sequence[int], relevant: set[int], k: int) -> float:
    """Share of the top k that is relevant; min=0, max=min(1, |relevant| / k)."""
    if k < 1:
        raise ValueError("k must be at least 1")
    return sum(item in relevant for item in ranked[:k]) / k


def f1_at_k(ranked: Sequence[int], relevant: set[int], k: int) -> float:
    """Harmonic mean of precision@k and recall@k; 0 when either is 0."""
    precision, recall = precision_at_k(ranked, relevant, k), recall_at_k(ranked, relevant, k)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def auc(ranked: Sequence[int], relevant: set[int]) -> float:
    """Share of (relevant, non-relevant) pairs the full ranking orders correctly; min=0, max=1.

    ``ranked`` is every candidate, best first. 0.5 is a random order; with no
    relevant or no non-relevant candidate there is no pair and the answer is 0.5.
    """
    positives = sum(item in relevant for item in ranked)
    negatives = len(ranked) - positives
    if positives == 0 or negatives == 0:
        return 0.5
    correct, negatives_seen = 0, 0
    for item in ranked:
        if item in relevant:
            correct += negatives - negatives_seen  # every negative below this positive
        else:
            negatives_seen += 1
    return correct / (positives * negatives)


def mrr_at_k(ranked: Sequence[int], relevant: set[int], k: int) -> float:
    """Reciprocal rank of the first relevant item within the top k; 0 when none."""
    for pos, item in enumerate(ranked[:k]):
        if item in relevant:
            return 1.0 / (pos + 1)
    return 0.0


# -- vectorised forms (one target per user) --------------------------------------
def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target among all items, ``[B]``.

    Ties are broken by item index (lower index ranks first), the same order a
    stable sort by descending score gives, so ranks never depend on the device.
    """
    target_scores = scores.gather(1, targets[:, None])  # [B, 1]
    index = torch.arange(scores.shape[1], device=scores.device)[None, :]  # [1, N]
    ahead = (scores > target_scores) | ((scores == target_scores) & (index < targets[:, None]))
    return ahead.sum(dim=1)


def ndcg_from_ranks(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """Per-user NDCG@k of a single relevant item at ``ranks`` (0-based)."""
    gains = 1.0 / torch.log2(ranks.double() + 2.0)
    return torch.where(ranks < k, gains, torch.zeros_like(gains))


def hit_from_ranks(ranks: torch.Tensor, k: int) -> torch.Tensor:
    return (ranks < k).double()


def mrr_from_ranks(ranks: torch.Tensor, k: int) -> torch.Tensor:
    reciprocal = 1.0 / (ranks.double() + 1.0)
    return torch.where(ranks < k, reciprocal, torch.zeros_like(reciprocal))


def precision_from_ranks(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """Per-user precision@k with one relevant item: 1/k on a hit, else 0."""
    return hit_from_ranks(ranks, k) / k


def f1_from_ranks(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """Per-user F1@k with one relevant item: 2 / (k + 1) on a hit (P = 1/k, R = 1), else 0."""
    return hit_from_ranks(ranks, k) * (2.0 / (k + 1))


def auc_from_ranks(ranks: torch.Tensor, n_candidates: torch.Tensor) -> torch.Tensor:
    """Per-user AUC of one target among ``n_candidates`` unmasked items (target included).

    The target's 0-based rank counts the negatives above it, so AUC = 1 - rank / negatives.
    """
    negatives = (n_candidates - 1).double()
    auc_values = 1.0 - ranks.double() / negatives.clamp(min=1.0)
    return torch.where(negatives > 0, auc_values, torch.full_like(auc_values, 0.5))


def mask_seen(scores: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """Scores with every seen item set to -inf so it is never recommended; ``seen`` is bool."""
    return scores.masked_fill(seen, float("-inf"))


def catalogue_coverage(top_items: torch.Tensor, n_items: int) -> float:
    """Share of the catalogue that appears in at least one user's top-k list; max=1."""
    if n_items <= 0:
        raise ValueError("n_items must be positive")
    return torch.unique(top_items).numel() / n_items


# -- a candidate set with several relevant items (the cold-start protocols) ----------
def _discounts(k: int) -> torch.Tensor:
    return 1.0 / torch.log2(torch.arange(k, dtype=torch.float64) + 2.0)  # [k]


def candidate_metrics(
    scores: torch.Tensor, relevant: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-user Recall@k and NDCG@k over a candidate set, ``[B]`` each.

    ``scores`` and ``relevant`` (bool) are ``[B, C]``, column c the same
    candidate for every user. Ties go to the lower column (candidates in item
    order: the lower item index), as in ``metrics.target_ranks``. Same values
    as ``metrics.recall_at_k`` / ``ndcg_at_k`` on the ranked list; a user
    with nothing relevant scores 0.
    """
    if scores.shape != relevant.shape:
        raise ValueError(
            f"scores {tuple(scores.shape)} and relevant {tuple(relevant.shape)} differ"
        )
    cut = min(k, scores.shape[1])
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :cut]  # [B, cut]
    hits = relevant.gather(1, order).double()  # [B, cut]
    discounts = _discounts(cut)
    n_relevant = relevant.sum(dim=1)  # [B]
    ideal = torch.cat([torch.zeros(1, dtype=torch.float64), discounts.cumsum(0)])  # [cut + 1]
    ideal = ideal[n_relevant.clamp(max=cut)]  # [B]
    has_any = n_relevant > 0
    safe = torch.where(has_any, ideal, torch.ones_like(ideal))
    ndcg = torch.where(has_any, (hits * discounts).sum(dim=1) / safe, torch.zeros_like(safe))
    recall = torch.where(
        has_any, hits.sum(dim=1) / n_relevant.clamp(min=1).double(), torch.zeros_like(safe)
    )
    return recall, ndcg


def random_candidate_metrics(
    n_relevant: torch.Tensor, n_candidates: int, k: int
) -> dict[str, float]:
    """Exact expected mean Recall@k and NDCG@k of a uniformly random candidate order.

    With R of C candidates relevant, each position holds a relevant item with
    probability R/C: E[recall@k] = min(k, C)/C and E[DCG@k] = R/C · Σ_{p<k} 1/log2(p+2),
    divided by the ideal DCG of R items. Users with R = 0 count as 0.
    """
    cut = min(k, n_candidates)
    discounts = _discounts(cut)
    ideal = torch.cat([torch.zeros(1, dtype=torch.float64), discounts.cumsum(0)])
    relevant = n_relevant.double()
    has_any = n_relevant > 0
    expected_dcg = relevant / n_candidates * discounts.sum()
    safe = torch.where(has_any, ideal[n_relevant.clamp(max=cut)], torch.ones_like(relevant))
    ndcg = torch.where(has_any, expected_dcg / safe, torch.zeros_like(relevant))
    recall = torch.where(has_any, torch.full_like(relevant, cut / n_candidates), 0.0)
    return {f"recall@{k}": float(recall.mean()), f"ndcg@{k}": float(ndcg.mean())}


def random_ndcg_one_target(n_candidates: int, k: int) -> float:
    """Exact expected NDCG@k of one relevant item placed uniformly among ``n_candidates``."""
    if n_candidates < 1:
        return 0.0
    return float(_discounts(min(k, n_candidates)).sum()) / n_candidates
