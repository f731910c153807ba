"""Recommendations and similar items, scored exactly as evaluation scores them.

``recommend`` goes through ``evaluation.ranking.masked_scores`` and ``top_k``
(the same full-catalogue pass, history mask and tie rule as the evaluate
stage), then names the history items that drove each pick (``explain``).
``popular`` is the fallback for a user the bundle does not know; ``similar``
ranks catalogue items by MiniLM cosine to an item or to an encoded text.
Pure functions of tensors and arrays: the service only turns requests into
``Histories`` and results into JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pipelines.evaluation.ranking import masked_scores, top_k
from pipelines.features.batch import Histories
from pipelines.inference.explain import explain, explain_from_weights
from pipelines.inference.now import NowBlend, blended
from pipelines.models import Recommender

DEFAULT_REASONS = 3  # history items named per recommendation


@dataclass(frozen=True)
class Scored:
    """One recommended item: its index, its score and the history items behind it."""

    item: int
    score: float
    reasons: tuple[tuple[int, float], ...] = ()


def clean_history(events: Sequence[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """(items, timestamps) oldest first; a repeated item counts once, at its latest event.

    The sort is stable, so events in the same second keep the order they came in.
    """
    latest: dict[int, tuple[int, int]] = {}
    for position, (item, stamp) in enumerate(events):
        latest[int(item)] = (int(stamp), position)
    ordered = sorted(latest.items(), key=lambda entry: entry[1])
    return [item for item, _ in ordered], [stamp for _, (stamp, _) in ordered]


def _item_weights(model: Recommender, n_items: int) -> torch.Tensor | None:
    """A linear item model's own item × item weights, when it has them (EASE, ItemKNN)."""
    for name in ("weights", "similarity"):
        matrix = getattr(model, name, None)
        if isinstance(matrix, torch.Tensor) and matrix.shape == (n_items, n_items):
            return matrix
    return None


def reasons_for(
    model: Recommender,
    history: Sequence[int],
    picked: Sequence[int],
    item_vectors: np.ndarray,
    top_n: int = DEFAULT_REASONS,
) -> dict[int, list[tuple[int, float]]]:
    """The history items that drove each picked item: the model's own weights where it
    has them (exact), else the MiniLM similarity of item texts (``inference.explain``)."""
    weights = _item_weights(model, model.n_items)
    inside = all(i < model.n_items for i in (*history, *picked))
    if weights is not None and inside:
        return explain_from_weights(history, picked, weights, top_n=top_n)
    return explain(history, picked, item_vectors, top_n=top_n)


@torch.inference_mode()
def recommend(
    model: Recommender,
    histories: Histories,
    k: int,
    item_vectors: np.ndarray,
    exclude_seen: bool = True,
    n_reasons: int = DEFAULT_REASONS,
    recent: np.ndarray | None = None,
    blend: NowBlend | None = None,
) -> list[list[Scored]]:
    """The ``k`` best items per history with their reasons; seen items are never
    recommended when ``exclude_seen``. Items the model cannot score (-inf) are dropped.

    With a ``blend`` (the card's ``NowBlend``) and ``recent`` ([B, n_items] item counts of
    the blend's window before each history's ``now``), the model's scores are mixed with
    what is popular now by how long the user has been away (``inference.now``); the score
    returned is then the blend's log probability."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    scores = masked_scores(model, histories, exclude_seen)  # [B, n_items]
    if blend is not None and recent is not None:
        scores = blended(scores, histories, recent, blend)
    top = top_k(scores, k)  # [B, k]
    top_scores = scores.gather(1, top).float()  # [B, k]
    finite = torch.isfinite(top_scores).tolist()
    top_items, top_values = top.tolist(), top_scores.tolist()
    results = []
    for row, events in enumerate(histories.items.tolist()):
        history = [i for i in events if i >= 0]
        picked = [
            (item, value)
            for item, value, ok in zip(top_items[row], top_values[row], finite[row], strict=True)
            if ok
        ]
        why = reasons_for(model, history, [item for item, _ in picked], item_vectors, n_reasons)
        results.append([Scored(item, score, tuple(why[item])) for item, score in picked])
    return results


def popular(popularity: np.ndarray, k: int, exclude: Sequence[int] = ()) -> list[Scored]:
    """The ``k`` most popular items (ties to the lower index), without ``exclude``."""
    scores = torch.as_tensor(np.asarray(popularity, dtype=np.float32)).clone()[None]  # [1, n]
    if len(exclude):
        scores[0, list(exclude)] = float("-inf")
    return _finite(scores, top_k(scores, k))


def _finite(scores: torch.Tensor, top: torch.Tensor) -> list[Scored]:
    """The picked items of row 0 that have a finite score, in order (one vectorised pass)."""
    values = scores[0, top[0]]
    keep = torch.isfinite(values)
    return [Scored(i, v) for i, v in zip(top[0][keep].tolist(), values[keep].tolist(), strict=True)]


def similar(
    item_vectors: np.ndarray, query: np.ndarray, k: int, exclude: Sequence[int] = ()
) -> list[Scored]:
    """The ``k`` items whose unit vectors are closest (cosine) to ``query``."""
    query = np.asarray(query, dtype=np.float32).reshape(-1)
    query = query / max(float(np.linalg.norm(query)), 1e-12)
    scores = torch.as_tensor(item_vectors @ query)[None]  # [1, n_items]
    if len(exclude):
        scores[0, list(exclude)] = float("-inf")
    return _finite(scores, top_k(scores, k))


def histories_of(
    items: Sequence[Sequence[int]],
    timestamps: Sequence[Sequence[int]],
    profiles: Sequence[Sequence[int]] | None,
    n_items: int,
    max_len: int | None = None,
    now: Sequence[int] | None = None,
) -> Histories:
    """Padded histories for the model, keeping only items it can score (index < n_items).

    ``now``: per history, the Unix second the ranking is for (a request's time, or a
    replayed event's); None leaves ``Histories.now`` unset (right after the newest event).
    """
    kept_items, kept_stamps = [], []
    for seq, stamps in zip(items, timestamps, strict=True):
        pairs = [(int(i), int(t)) for i, t in zip(seq, stamps, strict=True) if 0 <= i < n_items]
        kept_items.append([i for i, _ in pairs])
        kept_stamps.append([t for _, t in pairs])
    rows = None if profiles is None else [list(map(int, p)) for p in profiles]
    moments = None if now is None else [int(t) for t in now]
    return Histories.from_lists(kept_items, kept_stamps, rows, max_len=max_len, now=moments)
