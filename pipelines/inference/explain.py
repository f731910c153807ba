"""Why an item was recommended: the history items that drove it (design.md §8, "reason").

Two pure functions the service calls with item indices:

- ``explain``: by embedding similarity. History item ``i`` supports
  recommended item ``j`` with the cosine of their vectors (e.g. the MiniLM
  item embeddings), whatever model produced the recommendation.
- ``explain_from_weights``: by a model's own item-to-item weights, for linear
  item models (EASE's B, ItemKNN's similarity, or any item × item similarity
  matrix). Their score is ``score(j) = Σ_{i in history} W[i, j]``, so
  ``W[i, j]`` *is* history item ``i``'s contribution to ``j``: the reason is
  exact, not a proxy.

Both return ``{recommended item: [(history item, contribution), ...]}``, at most
``top_n`` per item, largest contribution first; equal contributions go to the
lower item index, so the answer never depends on the order of the history.
A history item never explains itself, repeated history items count once, and
by default only positive contributions are named (a zero or negative weight
did not drive the recommendation).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

Explanation = dict[int, list[tuple[int, float]]]


def _check_items(name: str, items: Sequence[int], n_items: int) -> list[int]:
    values = [int(item) for item in items]
    bad = [item for item in values if not 0 <= item < n_items]
    if bad:
        raise ValueError(f"{name} holds item indices outside 0..{n_items - 1}: {bad[:5]}")
    return values


def _rows(
    values: torch.Tensor | np.ndarray, index: list[int], dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """The chosen rows only (never a copy of the whole matrix), as ``dtype``."""
    if isinstance(values, torch.Tensor):
        return values.detach()[index].to("cpu", dtype)
    return torch.from_numpy(np.asarray(values[index])).to(dtype)


def _drivers(
    history: list[int],
    recommended: list[int],
    contributions: torch.Tensor,
    top_n: int,
    positive_only: bool,
) -> Explanation:
    """Top history items per recommended item from ``contributions`` ``[H, R]``."""
    order = sorted(range(len(history)), key=history.__getitem__)  # lower item index first
    sources = torch.tensor([history[i] for i in order], dtype=torch.long)  # [H]
    table = contributions[order].T.clone()  # [R, H]
    targets = torch.tensor(recommended, dtype=torch.long)  # [R]
    table[sources[None, :] == targets[:, None]] = float("-inf")  # never explains itself
    if positive_only:
        table[table <= 0.0] = float("-inf")
    n = min(top_n, table.shape[1])
    # the n best per row in O(H) (topk), then the tie rule: a row whose n-th value ties
    # with the next one, or that picked equal values, is ranked again by a stable sort
    top = torch.topk(table, min(n + 1, table.shape[1]), dim=1)
    values, positions = top.values[:, :n], top.indices[:, :n]
    tied = (values[:, 1:] == values[:, :-1]).any(dim=1)
    if top.values.shape[1] > n:
        tied |= top.values[:, n - 1] == top.values[:, n]
    for row in tied.nonzero().flatten().tolist():
        ranked = torch.sort(table[row], descending=True, stable=True)
        values[row], positions[row] = ranked.values[:n], ranked.indices[:n]
    picks = sources[positions].tolist()
    values_list = values.tolist()
    return {
        item: [
            (s, v) for s, v in zip(picks[column], values_list[column], strict=True) if v > -np.inf
        ]
        for column, item in enumerate(recommended)
    }


def _prepare(
    history_items: Sequence[int], recommended: Sequence[int], n_items: int, top_n: int
) -> tuple[list[int], list[int]]:
    if top_n < 1:
        raise ValueError(f"top_n must be at least 1, got {top_n}")
    history = list(dict.fromkeys(_check_items("history_items", history_items, n_items)))
    targets = list(dict.fromkeys(_check_items("recommended", recommended, n_items)))
    return history, targets


def explain(
    history_items: Sequence[int],
    recommended: Sequence[int],
    item_vectors: torch.Tensor | np.ndarray,
    top_n: int = 3,
    positive_only: bool = True,
) -> Explanation:
    """For each recommended item, the ``top_n`` history items most similar to it.

    ``item_vectors`` is ``[n_items, D]`` (any scale: rows are L2-normalised
    here, so the contribution is the cosine, in [-1, 1]). An empty history
    gives an empty list for every recommended item.
    """
    if item_vectors.ndim != 2:
        raise ValueError(
            f"item_vectors must be [n_items, D], got shape {tuple(item_vectors.shape)}"
        )
    history, targets = _prepare(history_items, recommended, item_vectors.shape[0], top_n)
    if not history or not targets:
        return {item: [] for item in targets}
    # float32: MiniLM vectors are float32, and a cosine needs no more (a float64 product
    # of a long history was a fifth of a /recommend's CPU)
    sources = F.normalize(_rows(item_vectors, history, torch.float32), dim=1)  # [H, D]
    destinations = F.normalize(_rows(item_vectors, targets, torch.float32), dim=1)  # [R, D]
    return _drivers(history, targets, sources @ destinations.T, top_n, positive_only)  # [H, R]


def explain_from_weights(
    history_items: Sequence[int],
    recommended: Sequence[int],
    weights: torch.Tensor | np.ndarray,
    top_n: int = 3,
    positive_only: bool = True,
) -> Explanation:
    """For each recommended item ``j``, the history items ``i`` with the largest ``W[i, j]``.

    ``weights`` is an item × item matrix ``[from, to]``: EASE's ``weights``,
    ItemKNN's ``similarity``, or a precomputed similarity matrix.
    """
    if weights.ndim != 2 or weights.shape[0] != weights.shape[1]:
        raise ValueError(f"weights must be a square item × item matrix, got {tuple(weights.shape)}")
    history, targets = _prepare(history_items, recommended, weights.shape[0], top_n)
    if not history or not targets:
        return {item: [] for item in targets}
    contributions = _rows(weights, history)[:, targets]  # [H, R]
    return _drivers(history, targets, contributions, top_n, positive_only)
