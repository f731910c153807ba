"""What is happening now: a model's ranking blended with recent popularity, by the gap.

A sequential model ranks what follows a user's last event. Right after it that is what
matters; a day or a month later the user comes back to a catalogue that moved on, and
what everyone has been watching in the last days predicts them better (on the MovieLens
stream, events more than a day after the user's previous one: flagship 0.018 NDCG@10,
last-7-days popularity 0.085). So the served score is a mixture of the two
distributions, weighted by how long the user has been away:

    p(item) = (1 - a[g]) * softmax(model scores)(item) + a[g] * recent(item) / sum(recent)

with ``g`` the bucket of the gap between the ranking's moment and the user's last event,
and ``a`` one weight per bucket, chosen on held-out events (``fit_blend``: a grid per
bucket, the best mean NDCG@k). Ranking by log p keeps the model's order where ``a`` is 0
and the recent order where it is 1. A model that cannot score an item (-inf) leaves it
to the recent part alone, so an item that arrived after training but is popular now
can be recommended by any model.

``NowBlend`` is stored in the model card (``card["now_blend"]``); the service and the
prequential evaluation (``monitoring.quality``) both score through ``blend_scores``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# gap buckets (seconds): within the hour, the day, the week, longer
DEFAULT_EDGES = (3_600, 86_400, 7 * 86_400)
GRID = tuple(round(a, 2) for a in np.linspace(0.0, 1.0, 21))
FLOOR = 1e-12  # keeps log p finite for an item neither part gives any mass


@dataclass(frozen=True)
class NowBlend:
    """One recent-popularity weight per gap bucket (``len(edges) + 1`` of them)."""

    weights: tuple[float, ...]
    edges: tuple[int, ...] = DEFAULT_EDGES
    window_days: float = 7.0  # "recent": the events of the last days before the moment

    def __post_init__(self) -> None:
        if len(self.weights) != len(self.edges) + 1:
            raise ValueError(f"{len(self.edges) + 1} weights needed, got {len(self.weights)}")
        if any(not 0.0 <= w <= 1.0 for w in self.weights):
            raise ValueError("every weight must be in [0, 1]")
        if list(self.edges) != sorted(set(self.edges)) or self.window_days <= 0:
            raise ValueError("edges must increase and window_days be positive")

    def weight_of(self, gaps: np.ndarray) -> np.ndarray:
        """[B] the recent weight of each gap (a negative gap, no history: the longest bucket)."""
        gaps = np.asarray(gaps, dtype=np.int64)
        buckets = np.searchsorted(np.asarray(self.edges), gaps, side="right")
        buckets[gaps < 0] = len(self.edges)
        return np.asarray(self.weights, dtype=np.float64)[buckets]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> NowBlend:
        return cls(
            tuple(float(w) for w in values["weights"]),
            tuple(int(e) for e in values.get("edges", DEFAULT_EDGES)),
            float(values.get("window_days", 7.0)),
        )

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> NowBlend | None:
        values = card.get("now_blend")
        return None if not values else cls.from_dict(values)


def _softmax(scores: np.ndarray) -> np.ndarray:
    """Row softmax that gives -inf entries no mass; an all -inf row is all zeros."""
    finite = np.isfinite(scores)
    top = np.where(finite, scores, -np.inf).max(axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    exp = np.where(finite, np.exp(np.where(finite, scores, 0.0) - top), 0.0)
    total = exp.sum(axis=1, keepdims=True)
    return np.divide(exp, total, out=np.zeros_like(exp), where=total > 0)


def blend_probabilities(
    model_scores: np.ndarray, recent_counts: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """[B, N] the mixture p above for per-row weights [B] (a row without recent events
    keeps the model's distribution whole)."""
    model = _softmax(np.asarray(model_scores, dtype=np.float64))
    recent = np.asarray(recent_counts, dtype=np.float64)
    if recent.ndim == 1:
        recent = np.broadcast_to(recent, model.shape)
    total = recent.sum(axis=1, keepdims=True)
    recent = np.divide(recent, total, out=np.zeros_like(model), where=total > 0)
    weights = np.where(total[:, 0] > 0, np.asarray(weights, dtype=np.float64), 0.0)[:, None]
    return (1.0 - weights) * model + weights * recent


def blend_scores(
    model_scores: np.ndarray, recent_counts: np.ndarray, gaps: np.ndarray, blend: NowBlend
) -> np.ndarray:
    """[B, N] log of the blended probabilities (-inf where neither part gives mass)."""
    p = blend_probabilities(model_scores, recent_counts, blend.weight_of(gaps))
    with np.errstate(divide="ignore"):
        return np.where(p > FLOOR, np.log(np.maximum(p, FLOOR)), -np.inf).astype(np.float32)


def _ndcg_of_target(p: np.ndarray, target: np.ndarray, seen: np.ndarray, k: int) -> np.ndarray:
    """[B] NDCG@k of each row's target column under scores p, seen columns masked, ties
    to the lower column (the evaluation's rule)."""
    scores = np.where(seen, -np.inf, p)
    mine = scores[np.arange(len(scores)), target]
    columns = np.arange(scores.shape[1])[None, :]
    better = (scores > mine[:, None]) | ((scores == mine[:, None]) & (columns < target[:, None]))
    rank = better.sum(axis=1)
    hit = np.isfinite(mine) & (rank < k)
    return np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0)


def fit_blend(
    model_scores: np.ndarray,
    recent_counts: np.ndarray,
    gaps: np.ndarray,
    targets: np.ndarray,
    seen: np.ndarray,
    *,
    k: int = 10,
    edges: tuple[int, ...] = DEFAULT_EDGES,
    window_days: float = 7.0,
    grid: tuple[float, ...] = GRID,
) -> tuple[NowBlend, dict[str, Any]]:
    """The weight per gap bucket with the best mean NDCG@k on these cases (their targets
    and masks), each bucket chosen on its own cases; a bucket without cases gets the
    neighbouring buckets' choice (the nearest shorter one, else 0). Returns the blend and
    what was measured per bucket."""
    gaps = np.asarray(gaps, dtype=np.int64)
    buckets = np.searchsorted(np.asarray(edges), gaps, side="right")
    buckets[gaps < 0] = len(edges)
    weights: list[float | None] = []
    report: dict[str, Any] = {"buckets": []}
    for bucket in range(len(edges) + 1):
        rows = np.flatnonzero(buckets == bucket)
        if not len(rows):
            weights.append(None)
            report["buckets"].append({"bucket": bucket, "cases": 0})
            continue
        curve = []
        # seen items are out of the ranking before the blend, as the server masks them
        scores = np.where(seen[rows], -np.inf, model_scores[rows])
        for a in grid:
            p = blend_probabilities(scores, recent_counts[rows], np.full(len(rows), a))
            curve.append(float(_ndcg_of_target(p, targets[rows], seen[rows], k).mean()))
        best = int(np.argmax(curve))  # the first (smallest weight) of equal bests
        weights.append(float(grid[best]))
        report["buckets"].append(
            {
                "bucket": bucket,
                "cases": len(rows),
                "weight": grid[best],
                "ndcg": curve[best],
                "ndcg_model_only": curve[0],
            }
        )
    filled, last = [], 0.0
    for w in weights:
        last = last if w is None else w
        filled.append(last)
    return NowBlend(tuple(filled), tuple(edges), window_days), report


def gaps_of(histories) -> np.ndarray:
    """[B] seconds from each history's newest event to its ``now`` (-1: no history, or no
    moment given: the longest bucket, as after a long absence)."""
    if histories.now is None:
        return np.full(len(histories), -1, dtype=np.int64)
    last = histories.timestamps[:, -1].numpy() if histories.timestamps.shape[1] else None
    present = histories.mask[:, -1].numpy() if last is not None else None
    if last is None:
        return np.full(len(histories), -1, dtype=np.int64)
    return np.where(present, histories.now.numpy() - last, -1).astype(np.int64)


def blended(scores, histories, recent: np.ndarray, blend: NowBlend):
    """``scores`` ([B, N] torch, seen items -inf) blended with ``recent`` ([B, N] counts of
    the window before each ``now``): a torch tensor again, seen items still -inf."""
    import torch

    masked = ~torch.isfinite(scores)
    mixed = blend_scores(scores.float().numpy(), recent, gaps_of(histories), blend)
    out = torch.as_tensor(mixed)
    out[masked] = float("-inf")
    return out
