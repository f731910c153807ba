"""Users grouped by when and how they act: hour of day, weekly rhythm, sessions and pace.

Each user's event times give eight numbers (``RHYTHM_FEATURES``): the share of events in
each quarter of the day (UTC: MovieLens's clock; a local clock would shift the quarters,
not the groups), the weekend share, the log of the median gap between consecutive events,
the log of the mean session length (events closer than ``SESSION_GAP`` seconds form a
session) and the log of the events per active day. Standardised by the fitting users' own
spread, they are clustered by k-means (the best of ``RESTARTS`` seeded k-means++ starts), so
a user is "evening, ~40 per sitting" or "mixed hours, ~3 per sitting, weekends" by
measurement, not by rule.

``fit_rhythms`` fits on one set of users (the training events) and ``Rhythms.assign``
places any other users (a drift batch) on the same clusters. Every cluster is named by
its centre (``Rhythms.names``). Pure numpy: the evaluate stage reports
NDCG per cluster in the fairness table; the drift report shows a batch's cluster shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SESSION_GAP = 3600  # seconds: a pause longer than an hour starts a new session
DAY = 86_400
QUARTERS = ("night", "morning", "afternoon", "evening")  # 0-6, 6-12, 12-18, 18-24 h
RHYTHM_FEATURES = (
    *(f"{q} share" for q in QUARTERS),
    "weekend share",
    "log median gap (h)",
    "log session length",
    "log events per active day",
)
KMEANS_ITERATIONS = 100
RESTARTS = 10


def rhythm_features(timestamps: Sequence[np.ndarray]) -> np.ndarray:
    """The eight rhythm numbers of each user's event times (Unix seconds): [U, 8].

    A user with one event has no gap: its gap is 0 and its session one event long.
    """
    rows = np.zeros((len(timestamps), len(RHYTHM_FEATURES)))
    for row, times in enumerate(timestamps):
        times = np.sort(np.asarray(times, dtype=np.int64))
        if not len(times):
            continue
        hours = (times // 3600) % 24
        rows[row, :4] = np.bincount(hours // 6, minlength=4) / len(times)
        weekday = (times // DAY + 3) % 7  # 1970-01-01 was a Thursday: 0 = Monday
        rows[row, 4] = float(np.mean(weekday >= 5))
        gaps = np.diff(times)
        rows[row, 5] = np.log1p(float(np.median(gaps)) / 3600) if len(gaps) else 0.0
        sessions = 1 + int(np.sum(gaps > SESSION_GAP))
        rows[row, 6] = np.log(len(times) / sessions)
        rows[row, 7] = np.log(len(times) / len(np.unique(times // DAY)))
    return rows


def _kmeans_plus_plus(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centres = [points[rng.integers(len(points))]]
    for _ in range(1, k):
        distance = np.min([((points - c) ** 2).sum(axis=1) for c in centres], axis=0)
        total = distance.sum()
        pick = (
            rng.choice(len(points), p=distance / total) if total > 0 else rng.integers(len(points))
        )
        centres.append(points[pick])
    return np.stack(centres)


def _nearest(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return ((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2).argmin(axis=1)


def _lloyd(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    for _ in range(KMEANS_ITERATIONS):
        assigned = _nearest(points, centres)
        moved = np.stack(
            [
                points[assigned == c].mean(axis=0) if (assigned == c).any() else centres[c]
                for c in range(len(centres))
            ]
        )
        if np.allclose(moved, centres):
            return moved
        centres = moved
    return centres


def _inertia(points: np.ndarray, centres: np.ndarray) -> float:
    return float(((points - centres[_nearest(points, centres)]) ** 2).sum())


@dataclass(frozen=True)
class Rhythms:
    """k-means clusters of standardised rhythm features, ordered largest first."""

    mean: np.ndarray  # [8] of the fitting users
    scale: np.ndarray  # [8]
    centres: np.ndarray  # [k, 8] standardised
    names: tuple[str, ...]  # [k]

    def assign(self, features: np.ndarray) -> np.ndarray:
        """The cluster of each row of ``rhythm_features``: [U] int."""
        return _nearest((features - self.mean) / self.scale, self.centres)

    def labels(self, features: np.ndarray) -> list[str]:
        return [self.names[c] for c in self.assign(features)]

    def profile(self) -> list[dict[str, float | str]]:
        """Each cluster's centre in the features' own units (for reading)."""
        raw = self.centres * self.scale + self.mean
        return [
            {
                "cluster": name,
                **{f: round(float(v), 3) for f, v in zip(RHYTHM_FEATURES, centre, strict=True)},
            }
            for name, centre in zip(self.names, raw, strict=True)
        ]


def _describe(centre: np.ndarray) -> str:
    """A cluster's name from its centre in the features' units: day part, sitting, weekend."""
    shares = centre[:4]
    part = QUARTERS[int(np.argmax(shares))] if shares.max() >= 0.5 else "mixed hours"
    per_sitting = max(1, round(float(np.exp(centre[6]))))
    weekend = ", weekends" if centre[4] >= 0.5 else ""
    return f"{part}, ~{per_sitting} per sitting{weekend}"


def fit_rhythms(features: np.ndarray, k: int, seed: int = 0) -> Rhythms:
    """k clusters of the users whose ``rhythm_features`` are given (fewer if fewer users)."""
    if features.ndim != 2 or features.shape[1] != len(RHYTHM_FEATURES):
        raise ValueError(f"rhythm features must be [users, {len(RHYTHM_FEATURES)}]")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not len(features):
        raise ValueError("no users to cluster")
    k = min(k, len(np.unique(features, axis=0)))
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)  # a constant feature (one-event users) stays 0
    points = (features - mean) / scale
    rng = np.random.default_rng(seed)
    # the best of several starts: one k-means++ start moves whole groups between seeds
    centres = min(
        (_lloyd(points, _kmeans_plus_plus(points, k, rng)) for _ in range(RESTARTS)),
        key=lambda found: _inertia(points, found),
    )
    sizes = np.bincount(_nearest(points, centres), minlength=k)
    centres = centres[np.argsort(-sizes, kind="stable")]
    # the leading number keeps two clusters with the same description apart
    raw = centres * scale + mean
    names = tuple(f"rhythm {i + 1}: {_describe(c)}" for i, c in enumerate(raw))
    return Rhythms(mean, scale, centres, names)
