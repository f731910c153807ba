"""Full-catalogue ranking: the one scoring pass that evaluation, training and serving share.

Every item is scored, items already in the history are masked (never
recommended), and ties are broken by item index (lower first) both in a
target's rank and in a top-k list, so ``top[u, r] == targets[u]`` exactly when
``ranks[u] == r < k``. Early stopping, tuning, the evaluate stage and the
service's recommendations all go through ``masked_scores`` and ``top_k``.

Masking is the protocol's choice (``evaluate.mask_history``, design.md §4): on by
default, where a test target already in the history is a certain miss. A shop where
people buy the same things again turns it off (``exclude_seen=False`` here): every
item is a candidate, a repeat target can be hit, and ``repeats@k`` says how much of
each list is things the user already had.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipelines.evaluation.beyond_accuracy import list_metrics
from pipelines.evaluation.metrics import (
    auc_from_ranks,
    catalogue_coverage,
    f1_from_ranks,
    hit_from_ranks,
    mask_seen,
    mrr_from_ranks,
    ndcg_from_ranks,
    precision_from_ranks,
    target_ranks,
)
from pipelines.models.base import Histories, Recommender


def metric_names(k: int) -> tuple[str, ...]:
    """The evaluate stage's metrics, in report order; the first one picks the best model."""
    return (
        f"ndcg@{k}",
        f"hr@{k}",
        f"mrr@{k}",
        f"precision@{k}",
        f"recall@{k}",
        f"f1@{k}",
        "auc",
        f"coverage@{k}",
        f"novelty@{k}",
        f"arp@{k}",
        f"repeats@{k}",  # only with evaluate.mask_history: false (0 by construction otherwise)
    )


def candidates(histories: Histories, n_items: int, exclude_seen: bool = True) -> torch.Tensor:
    """Unmasked items per user (the catalogue less the distinct items of the history), ``[U]``."""
    if not exclude_seen:
        return torch.full((len(histories),), n_items, dtype=torch.long)
    seen = torch.zeros(len(histories), dtype=torch.long)
    for rows, batch in histories.batches(1024):
        seen[rows] = batch.to_matrix(n_items).sum(dim=1).long()
    return n_items - seen


def masked_scores(model: Recommender, batch: Histories, exclude_seen: bool = True) -> torch.Tensor:
    """Scores of every item for each history, ``[B, n_items]`` float; seen items -inf."""
    scores = model.score_all(batch).float()  # [B, n_items]
    if not exclude_seen:
        return scores
    return mask_seen(scores, batch.to_matrix(model.n_items).bool())


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` best item indices per row, ``[B, k]``; equal scores keep item order."""
    return torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]


@torch.inference_mode()
def ranks_and_top_k(
    model: Recommender,
    histories: Histories,
    targets: torch.Tensor,
    k: int,
    batch_size: int,
    exclude_seen: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank of each target ``[U]`` (0-based, long) and each user's top-k list ``[U, k]``.

    Masked items score -inf, so they never rank above a target: the rank counts only
    unmasked items, and ``candidates`` gives how many there are per user. A target that
    is itself masked (the user had it before) is put past every list (rank
    ``n_items + k``): a certain miss, even in a catalogue smaller than k. With
    ``exclude_seen`` False nothing is masked (repeat consumption).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if len(targets) != len(histories):
        raise ValueError(f"{len(targets)} targets for {len(histories)} histories")
    ranks, top_items = [], []
    for rows, batch in histories.batches(batch_size):
        scores = masked_scores(model, batch, exclude_seen)  # [B, n_items]
        rank = target_ranks(scores, targets[rows])  # [B]
        if exclude_seen:
            seen = batch.to_matrix(model.n_items).bool().to(rank.device)  # [B, n_items]
            masked = seen.gather(1, targets[rows, None].to(rank.device)).squeeze(1)  # [B]
            rank = torch.where(masked, torch.full_like(rank, model.n_items + k), rank)
        ranks.append(rank)
        top_items.append(top_k(scores, k))
    if not ranks:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, k, dtype=torch.long)
    return torch.cat(ranks), torch.cat(top_items)


@dataclass(frozen=True)
class Catalogue:
    """What beyond-accuracy metrics compare the lists with: training popularity."""

    popularity: np.ndarray  # [n_items] distinct training users per item
    n_users: int


def history_share(top: torch.Tensor, histories: Histories, n_items: int, batch_size: int) -> float:
    """Share of the recommended slots ``[U, k]`` that hold an item of the user's history.

    0 by construction when the history is masked; with repeats allowed it says how much
    of each list is things the user already had. Bounds: min=0, max=1; no users gives 0.
    """
    if top.numel() == 0:
        return 0.0
    repeats = 0
    for rows, batch in histories.batches(batch_size):
        seen = batch.to_matrix(n_items).bool()  # [B, n_items]
        repeats += int(seen.gather(1, top[rows].to(seen.device)).sum())
    return repeats / top.numel()


@torch.inference_mode()
def evaluate_per_user(
    model: Recommender,
    histories: Histories,
    targets: torch.Tensor,
    k: int,
    batch_size: int,
    catalogue: Catalogue | None = None,
    exclude_seen: bool = True,
) -> tuple[dict[str, float], torch.Tensor]:
    """Mean metrics over all users, and each user's NDCG@k (for segment tables).

    With ``exclude_seen`` False (``evaluate.mask_history: false``) history items stay
    candidates, and ``repeats@k`` (``history_share``) is reported too.
    """
    ranks, top = ranks_and_top_k(model, histories, targets, k, batch_size, exclude_seen)
    per_user_ndcg = ndcg_from_ranks(ranks, k)
    hits = hit_from_ranks(ranks, k)
    metrics = {
        f"ndcg@{k}": float(per_user_ndcg.mean()),
        f"hr@{k}": float(hits.mean()),
        f"mrr@{k}": float(mrr_from_ranks(ranks, k).mean()),
        f"precision@{k}": float(precision_from_ranks(ranks, k).mean()),
        f"recall@{k}": float(hits.mean()),  # one relevant item per user: recall = hit rate
        f"f1@{k}": float(f1_from_ranks(ranks, k).mean()),
        # a masked target (ranked past every list) counts as AUC 0: every candidate is above it
        "auc": float(
            auc_from_ranks(
                ranks, candidates(histories, model.n_items, exclude_seen).to(ranks.device)
            )
            .clamp(min=0.0)
            .mean()
        ),
    }
    if catalogue is None:
        metrics[f"coverage@{k}"] = catalogue_coverage(top, model.n_items)
    else:
        metrics |= list_metrics(top, catalogue.popularity, catalogue.n_users, model.n_items)
    if not exclude_seen:
        metrics[f"repeats@{k}"] = history_share(top, histories, model.n_items, batch_size)
    metrics["users"] = len(ranks)
    return metrics, per_user_ndcg


def evaluate_model(
    model: Recommender,
    histories: Histories,
    targets: torch.Tensor,
    k: int,
    batch_size: int,
    exclude_seen: bool = True,
) -> dict[str, float]:
    """Mean ranking metrics of ``model`` over all users, scoring the full catalogue
    (history masked unless ``exclude_seen`` is False)."""
    return evaluate_per_user(model, histories, targets, k, batch_size, None, exclude_seen)[0]
