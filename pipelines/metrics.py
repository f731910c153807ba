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


def mask_seen(scores: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """Scores with every seen item set to -inf so it is never recommended; ``seen`` is bool."""
    return scores.masked_fill(seen, float("-inf"))


def catalogue_coverage(top_items: torch.Tensor, n_items: int) -> float:
    """Share of the catalogue that appears in at least one user's top-k list; max=1."""
    if n_items <= 0:
        raise ValueError("n_items must be positive")
    return torch.unique(top_items).numel() / n_items
