"""Beyond-accuracy metrics: what the top-k lists look like, and who they serve well.

Pure functions on top-k lists ``[U, k]`` (item indices) and the training
popularity of each item ``[n_items]`` (distinct training users per item):

- catalogue coverage (``metrics.catalogue_coverage``, reused here);
- novelty: mean self-information ``-log2(share of training users with the item)``
  of the recommended items (Zhou et al., PNAS 2010; Vargas & Castells, RecSys 2011);
- average recommended popularity (ARP): mean training count of the
  recommended items (Abdollahpouri et al., FLAIRS 2019);
- per-segment NDCG: the mean of per-user NDCG within each profile segment
  (gender, age band), and a fairness table with the max/min ratio per attribute.
  Without demographics (every profile field unknown, as in most shop logs) the
  segments are behavioural instead: user activity (training events, three bands of
  equal size) and the test item's popularity (the short head, the 20% most popular
  items in training, against the long tail); ``behaviour_segments`` labels them.
  Where some test targets are items the user had before, ``target`` (repeat / new)
  is a segment too.

The top-k lists come from ``ranking.ranks_and_top_k``, the one scoring pass
that accuracy metrics use too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from pipelines.core.schema import AGE_BAND, GENDER, PROFILE_COLUMNS, UNKNOWN
from pipelines.evaluation.metrics import catalogue_coverage

UNKNOWN_SEGMENT = "unknown"  # label of a user whose attribute is missing

# behavioural segments, for data without demographics
ACTIVITY = "activity"  # the user's training events, in three bands of equal size
ITEM_POPULARITY = "item_popularity"  # the test item: short head or long tail
TARGET = "target"  # the test item is one the user had before (repeat), or new to them
RHYTHM = "rhythm"  # the user's cluster of when and how they act (features.behaviour)
HEAD_SHARE = 0.2  # the short head: the 20% most popular items (Abdollahpouri et al. 2019)
NO_DEMOGRAPHICS = (
    "No demographics: every user's age band, gender, occupation and region is unknown, so "
    "fairness is segmented by user activity (training events, three bands of equal size) "
    "and by the popularity of the test item (the 20% most popular items in training are "
    "the head) instead."
)


# -- list metrics ----------------------------------------------------------------
def item_popularity(matrix: sp.spmatrix) -> np.ndarray:
    """Distinct training users per item, ``[n_items]`` int; repeated events count once."""
    return np.asarray((matrix > 0).sum(axis=0)).ravel().astype(np.int64)


def _as_index_array(top_items: torch.Tensor | np.ndarray) -> np.ndarray:
    top = np.asarray(top_items.cpu() if isinstance(top_items, torch.Tensor) else top_items)
    if top.ndim != 2:
        raise ValueError(f"top-k lists must be [users, k], got shape {top.shape}")
    return top.astype(np.int64)


def novelty(top_items: torch.Tensor | np.ndarray, popularity: np.ndarray, n_users: int) -> float:
    """Mean self-information of the recommended items, in bits.

    novelty = mean over every recommended slot of ``-log2(pop(i) / n_users)``,
    ``pop(i)`` the number of training users of item ``i``. An item no training
    user has is counted as if one had (its share is clipped to ``1 / n_users``),
    so the value stays finite.

    Bounds: min=0 (every list holds only items every user has), max=log2(n_users).
    Empty input (no users) gives 0.0.
    """
    if n_users < 1:
        raise ValueError("n_users must be positive")
    top = _as_index_array(top_items)
    if top.size == 0:
        return 0.0
    counts = np.clip(np.asarray(popularity, dtype=np.float64)[top], 1.0, float(n_users))
    return float(np.mean(-np.log2(counts / n_users)))


def average_popularity(top_items: torch.Tensor | np.ndarray, popularity: np.ndarray) -> float:
    """Average recommended popularity (ARP): mean training count of the recommended items.

    Every user's list has the same length k, so this is also the mean over
    users of each list's mean. Bounds: min=0, max=max(popularity).
    Empty input gives 0.0.
    """
    top = _as_index_array(top_items)
    if top.size == 0:
        return 0.0
    return float(np.mean(np.asarray(popularity, dtype=np.float64)[top]))


def list_metrics(
    top_items: torch.Tensor | np.ndarray, popularity: np.ndarray, n_users: int, n_items: int
) -> dict[str, float]:
    """Coverage, novelty and ARP of a set of top-k lists, keyed ``<name>@k``."""
    top = _as_index_array(top_items)
    k = top.shape[1]
    return {
        f"coverage@{k}": catalogue_coverage(torch.from_numpy(top), n_items) if top.size else 0.0,
        f"novelty@{k}": novelty(top, popularity, n_users),
        f"arp@{k}": average_popularity(top, popularity),
    }


# -- segments and fairness -------------------------------------------------------
def _segment_labels(segments: Sequence[object] | pd.Series | np.ndarray) -> pd.Series:
    labels = pd.Series(segments, dtype="object")
    return labels.where(labels.notna(), UNKNOWN_SEGMENT).astype(str)


def segment_ndcg(
    per_user_ndcg: torch.Tensor | np.ndarray | Sequence[float],
    segments: Sequence[object] | pd.Series | np.ndarray,
    k: int = 10,
) -> dict[str, dict[str, float | int]]:
    """Mean NDCG@k per segment: ``{segment: {"users": n, "ndcg@k": mean}}``.

    ``per_user_ndcg[u]`` and ``segments[u]`` describe the same user. A missing
    label (None/NaN) becomes the segment ``"unknown"``; labels are compared as
    strings. Segments come out sorted by label. Each mean is in [0, 1].
    """
    values = np.asarray(per_user_ndcg, dtype=np.float64)
    labels = _segment_labels(segments)
    if len(values) != len(labels):
        raise ValueError(f"{len(values)} NDCG values but {len(labels)} segment labels")
    frame = pd.DataFrame({"segment": labels.to_numpy(), "ndcg": values})
    grouped = frame.groupby("segment", sort=True)["ndcg"].agg(["size", "mean"])
    return {
        str(segment): {"users": int(row["size"]), f"ndcg@{k}": float(row["mean"])}
        for segment, row in grouped.iterrows()
    }


def max_min_ratio(
    table: dict[str, dict[str, float | int]], k: int = 10, min_users: int = 1
) -> float | None:
    """Best segment mean over worst, among segments with at least ``min_users`` users.

    1.0 is perfect parity; larger is less fair. None when fewer than two
    segments qualify or the worst mean is 0 (the ratio is undefined).
    """
    means = [float(row[f"ndcg@{k}"]) for row in table.values() if row["users"] >= min_users]
    if len(means) < 2 or min(means) <= 0.0:
        return None
    return max(means) / min(means)


def fairness_table(
    per_user_ndcg: torch.Tensor | np.ndarray | Sequence[float],
    profiles: pd.DataFrame,
    k: int = 10,
    attributes: Sequence[str] = (GENDER, AGE_BAND),
    min_users: int = 1,
) -> dict[str, dict[str, object]]:
    """Per-attribute NDCG@k by segment, with the max/min ratio of the segment means.

    ``profiles`` is the features stage's profiles table; row ``u`` must describe
    the user of ``per_user_ndcg[u]`` (the row order evaluate.py already assumes
    when it hands profile codes to the models). Returns, for each attribute::

        {"segments": {label: {"users": n, "ndcg@k": mean}}, "max_min_ratio": float | None}

    The ratio only counts segments with at least ``min_users`` users, so a
    handful of users cannot dominate it; see ``max_min_ratio`` for when it is None.
    """
    values = np.asarray(per_user_ndcg, dtype=np.float64)
    if len(values) != len(profiles):
        raise ValueError(f"{len(values)} NDCG values but {len(profiles)} profile rows")
    missing = [name for name in attributes if name not in profiles.columns]
    if missing:
        raise ValueError(f"profiles lack the column(s) {', '.join(missing)}")
    result: dict[str, dict[str, object]] = {}
    for attribute in attributes:
        segments = segment_ndcg(values, profiles[attribute].to_numpy(), k)
        result[attribute] = {
            "segments": segments,
            "max_min_ratio": max_min_ratio(segments, k, min_users),
        }
    return result


def fairness_markdown(table: dict[str, dict[str, object]], k: int = 10) -> str:
    """The fairness table as markdown: one row per attribute and segment."""
    lines = [f"| attribute | segment | users | ndcg@{k} |", "|---|---|---:|---:|"]
    for attribute, block in table.items():
        for segment, row in block["segments"].items():  # type: ignore[union-attr]
            lines.append(f"| {attribute} | {segment} | {row['users']} | {row[f'ndcg@{k}']:.4f} |")
        ratio = block["max_min_ratio"]
        shown = "n/a" if ratio is None or not math.isfinite(ratio) else f"{ratio:.2f}"
        lines.append(f"| {attribute} | max/min ratio | | {shown} |")
    return "\n".join(lines) + "\n"


# -- segments without demographics -------------------------------------------------
def has_demographics(profiles: pd.DataFrame) -> bool:
    """Whether any user has any known profile field (age band, gender, occupation, region)."""
    columns = [c for c in PROFILE_COLUMNS if c in profiles.columns]
    values = profiles[columns].astype("string").fillna(UNKNOWN)
    return bool((values != UNKNOWN).to_numpy().any())


def activity_bands(events: np.ndarray | Sequence[int]) -> list[str]:
    """Each user's band of training-event counts: three bands of (about) equal size, cut at
    the terciles, labelled with their ranges (``"1 light: 3-7 events"``); ties never split."""
    counts = np.asarray(events, dtype=np.int64)
    if counts.size == 0:
        return []
    low, high = (int(v) for v in np.quantile(counts, [1 / 3, 2 / 3], method="lower"))
    lowest, highest = int(counts.min()), int(counts.max())

    def span(a: int, b: int) -> str:
        return f"{a} events" if a == b else f"{a}-{b} events"

    names = {
        0: f"1 light: {span(lowest, low)}",
        1: f"2 medium: {span(low + 1, high)}",
        2: f"3 heavy: {span(high + 1, highest)}",
    }
    band = np.where(counts <= low, 0, np.where(counts <= high, 1, 2))
    return [names[int(b)] for b in band]


def popularity_bands(
    items: np.ndarray | Sequence[int], popularity: np.ndarray, head_share: float = HEAD_SHARE
) -> list[str]:
    """Each item's band: ``head`` when it is among the ``head_share`` most popular items of
    training (ties by index, as rankings break them), else ``tail``."""
    popularity = np.asarray(popularity)
    order = np.argsort(-popularity, kind="stable")
    head = np.zeros(len(popularity), dtype=bool)
    head[order[: max(1, round(head_share * len(popularity)))]] = True
    share = f"{head_share:.0%}"
    labels = (f"head (top {share} of items)", f"tail (other {1 - head_share:.0%})")
    return [labels[0] if head[int(i)] else labels[1] for i in np.asarray(items, dtype=np.int64)]


def behaviour_segments(
    train_events: np.ndarray | Sequence[int],
    targets: np.ndarray | Sequence[int],
    popularity: np.ndarray,
    repeats: np.ndarray | Sequence[bool] | None = None,
    demographics: pd.DataFrame | None = None,
    rhythm: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """The segment labels of each user and the attributes to report, in order.

    With ``demographics`` (the profiles, when ``has_demographics``) they are gender and
    age band; without, activity and the test item's popularity. ``repeats`` (the test
    target is in the user's history) adds ``target`` when any target is a repeat;
    ``rhythm`` (each user's behaviour cluster) adds ``rhythm``.
    """
    if demographics is not None:
        frame = demographics.reset_index(drop=True).copy()
        attributes: tuple[str, ...] = (GENDER, AGE_BAND)
    else:
        frame = pd.DataFrame(
            {
                ACTIVITY: activity_bands(train_events),
                ITEM_POPULARITY: popularity_bands(targets, popularity),
            }
        )
        attributes = (ACTIVITY, ITEM_POPULARITY)
    flags = None if repeats is None else np.asarray(repeats, dtype=bool)
    if flags is not None and flags.any():
        frame[TARGET] = np.where(flags, "repeat (had it before)", "new to the user")
        attributes += (TARGET,)
    if rhythm is not None:
        if len(rhythm) != len(frame):
            raise ValueError(f"{len(rhythm)} rhythm labels for {len(frame)} users")
        frame[RHYTHM] = list(rhythm)
        attributes += (RHYTHM,)
    return frame, attributes
