"""The champion's next-item quality on a new batch (design.md §6).

For every user active in the batch whom the reference knows, the history is the
user's reference events (oldest first) and the target is the user's first event
in the batch: NDCG@k of that target in the ranking of all items the ranker knows,
history masked. A target the ranker cannot score (an item new to it) counts as a
miss: that is exactly the quality a stale model loses. Pure functions of frames;
the ranker is any ``histories -> top-k item ids`` callable (``bundle_ranker`` for a
served champion, ``popularity_ranker`` as a floor and in tests).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.core import schema

# histories (item ids, oldest first) and their timestamps -> top-k item ids per history
Ranker = Callable[[Sequence[Sequence[str]], Sequence[Sequence[int]], int], list[list[str]]]


def next_item_cases(
    reference: pd.DataFrame, batch: pd.DataFrame
) -> tuple[list[list[str]], list[list[int]], list[str]]:
    """(histories, their timestamps, targets) for the batch's users the reference knows."""
    ordered = reference.sort_values(schema.TIMESTAMP, kind="stable")
    history = ordered.groupby(schema.USER_ID, sort=False)
    items = history[schema.ITEM_ID].agg(list)
    stamps = history[schema.TIMESTAMP].agg(list)
    firsts = (
        batch.sort_values(schema.TIMESTAMP, kind="stable")
        .groupby(schema.USER_ID, sort=True)
        .head(1)
    )
    firsts = firsts[firsts[schema.USER_ID].isin(items.index)]
    users = firsts[schema.USER_ID].tolist()
    return (
        [items[u] for u in users],
        [[int(t) for t in stamps[u]] for u in users],
        firsts[schema.ITEM_ID].astype(str).tolist(),
    )


def ndcg_of_target(top: Sequence[str], target: str, k: int) -> float:
    """Binary relevance, one target: 1/log2(rank+2) if the target is in the top k, else 0."""
    for rank, item in enumerate(top[:k]):
        if item == target:
            return 1.0 / math.log2(rank + 2)
    return 0.0


def next_item_ndcg(
    reference: pd.DataFrame, batch: pd.DataFrame, ranker: Ranker, k: int = 10
) -> tuple[float | None, int]:
    """Mean NDCG@k over the batch's known users, and how many users it averages (None if none)."""
    histories, stamps, targets = next_item_cases(reference, batch)
    if not targets:
        return None, 0
    tops = ranker(histories, stamps, k)
    scores = [ndcg_of_target(top, target, k) for top, target in zip(tops, targets, strict=True)]
    return float(np.mean(scores)), len(scores)


def popularity_ranker(reference: pd.DataFrame) -> Ranker:
    """Most-interacted reference items, the user's history masked (ties to the lower id)."""
    counts = reference[schema.ITEM_ID].value_counts()
    ranked = sorted(counts.index, key=lambda i: (-counts[i], str(i)))

    def rank(histories, stamps, k):
        out = []
        for history in histories:
            seen = set(history)
            out.append([i for i in ranked if i not in seen][:k])
        return out

    return rank


def bundle_ranker(bundle_dir: Path, batch_size: int = 256) -> Ranker:
    """The served champion's own scoring (the evaluate stage's masked full-catalogue pass)."""
    from pipelines.inference.bundle import load_bundle

    return ranker_of(load_bundle(bundle_dir), batch_size)


def ranker_of(bundle, batch_size: int = 256) -> Ranker:
    """``bundle_ranker`` of a bundle already loaded (``inference.bundle.load_bundle``)."""
    import torch

    from pipelines.evaluation.ranking import masked_scores, top_k
    from pipelines.inference.recommend import histories_of

    index = bundle.catalogue.index
    ids = bundle.catalogue.item_ids
    n_items = bundle.model.n_items

    def rank(histories, stamps, k):
        out: list[list[str]] = []
        for start in range(0, len(histories), batch_size):
            chunk_items, chunk_stamps = [], []
            for history, times in zip(
                histories[start : start + batch_size],
                stamps[start : start + batch_size],
                strict=True,
            ):
                pairs = [(index[i], t) for i, t in zip(history, times, strict=True) if i in index]
                chunk_items.append([i for i, _ in pairs])
                chunk_stamps.append([t for _, t in pairs])
            batch = histories_of(chunk_items, chunk_stamps, None, n_items)
            with torch.no_grad():
                top = top_k(masked_scores(bundle.model, batch), k)
            out += [[ids[int(i)] for i in row] for row in top.tolist()]
        return out

    return rank
