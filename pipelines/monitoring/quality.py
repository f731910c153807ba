"""Prequential quality: every event of a window scored before the window is trained on.

design.md §6. A window (a replayed week) is scored event by event: each event of a user
the data already knew before the window is a case whose target is that event's item,
whose history is every earlier event of that user (events of the same window included,
as live serving sees them through ``POST /events``), all available items ranked,
history masked. New users' events (the user's first event falls in the window) are
scored the same way from their second event on and reported beside, not mixed in.

Rankers, each a ``top_k(timeline, cases, k)`` over the same cases, so every comparison
is paired:

- ``Popularity``: the items most interacted with before the event (all time);
- ``RecentPopularity``: the same over the ``days`` before the event (what is popular now);
- ``Served``: a served bundle. ``live=True`` is the model **as served**: the live history,
  and a catalogue that grows as items arrive (an item is recommendable from the first
  event after its first appearance, scored from its text by a text-aware model, as
  ``POST /items`` does), blended with recent popularity by the bundle's ``NowBlend``
  when it has one. ``live=False`` is the **stale counterfactual**: the history and the
  catalogue frozen at training.

Metrics are per case (NDCG@k, HR@k, binary relevance, one target); means carry a 95%
bootstrap interval over users (``evaluation.stats``: a user's events are one cluster).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipelines.core import schema
from pipelines.evaluation.stats import mean_interval, paired_difference

DAY = 86_400
AFTER_BREAK = DAY  # a gap longer than this makes an event "after a break"
NO_GAP = -1  # the gap of a user's first event

# item ids -> unit MiniLM vectors [m, D] of their texts (None: no text path available)
Vectoriser = Callable[[Sequence[str]], np.ndarray | None]


# ---- the timeline and its cases ------------------------------------------------------------


@dataclass(frozen=True)
class Timeline:
    """Every event in time order (stable: same-second events keep the source's order)."""

    users: np.ndarray  # [E] object, user ids
    items: np.ndarray  # [E] object, item ids
    times: np.ndarray  # [E] int64, Unix seconds
    previous: np.ndarray  # [E] int64, index of the user's previous event, -1 for the first
    item_ids: tuple[str, ...]  # every item id, by first appearance
    item_codes: np.ndarray  # [E] int64, position of each event's item in item_ids
    first_seen: np.ndarray  # [len(item_ids)] int64, index of each item's first event

    @classmethod
    def from_events(cls, events: pd.DataFrame) -> Timeline:
        ordered = events.sort_values(schema.TIMESTAMP, kind="stable").reset_index(drop=True)
        users = ordered[schema.USER_ID].astype(str).to_numpy(dtype=object)
        items = ordered[schema.ITEM_ID].astype(str).to_numpy(dtype=object)
        times = ordered[schema.TIMESTAMP].to_numpy(dtype=np.int64)
        position = pd.Series(np.arange(len(ordered)))
        previous = position.groupby(users, sort=False).shift(1).fillna(-1).to_numpy(dtype=np.int64)
        codes, uniques = pd.factorize(items)
        first_seen = np.full(len(uniques), len(items), dtype=np.int64)
        np.minimum.at(first_seen, codes, np.arange(len(items)))
        return cls(
            users,
            items,
            times,
            previous,
            tuple(map(str, uniques)),
            codes.astype(np.int64),
            first_seen,
        )

    def __len__(self) -> int:
        return len(self.times)

    def history(self, event: int) -> list[int]:
        """Indices of the user's events before ``event``, oldest first."""
        out = []
        at = int(self.previous[event])
        while at >= 0:
            out.append(at)
            at = int(self.previous[at])
        return out[::-1]

    def index_at(self, time: int) -> int:
        """The first event at or after ``time`` (events before it are the past)."""
        return int(np.searchsorted(self.times, time, side="left"))


@dataclass(frozen=True)
class Cases:
    """The events of a window to score, and the slices reported beside the whole."""

    events: np.ndarray  # [C] int64, timeline indices, increasing
    users: np.ndarray  # [C] object
    gaps: np.ndarray  # [C] int64, seconds since the user's previous event
    known: np.ndarray  # [C] bool, the user had an event before the window
    first_of_window: np.ndarray  # [C] bool, the user's first event in the window

    def __len__(self) -> int:
        return len(self.events)

    def subset(self, mask: np.ndarray) -> Cases:
        return Cases(*(np.asarray(getattr(self, f))[mask] for f in self.__dataclass_fields__))

    @property
    def after_break(self) -> np.ndarray:
        return self.gaps > AFTER_BREAK


def window_cases(timeline: Timeline, start: int, end: int) -> Cases:
    """Every event in ``[start, end)`` (Unix seconds) that has a history to rank from.

    A user's very first event has none (nothing is known of them) and is not a case.
    """
    lo, hi = timeline.index_at(start), timeline.index_at(end)
    events = np.arange(lo, hi, dtype=np.int64)
    previous = timeline.previous[events]
    events, previous = events[previous >= 0], previous[previous >= 0]
    users = timeline.users[events]
    first_event = _first_event_of_users(timeline, users)
    known = first_event < lo
    first_of_window = previous < lo
    gaps = timeline.times[events] - timeline.times[previous]
    return Cases(events, users, gaps.astype(np.int64), known, first_of_window)


def _first_event_of_users(timeline: Timeline, users: np.ndarray) -> np.ndarray:
    first = pd.Series(np.arange(len(timeline))).groupby(timeline.users, sort=False).min()
    return first.reindex(users).to_numpy(dtype=np.int64)


# ---- counting what was popular before each case ---------------------------------------------


def counts_before(timeline: Timeline, cases: Cases, days: float | None = None) -> np.ndarray:
    """[C, n_items] float32: events per item before each case (within ``days``, or all)."""
    n_items = len(timeline.item_ids)
    out = np.zeros((len(cases), n_items), dtype=np.float32)
    counts = np.zeros(n_items, dtype=np.float32)
    added = removed = 0
    for row, event in enumerate(cases.events.tolist()):
        while added < event:
            counts[timeline.item_codes[added]] += 1
            added += 1
        if days is not None:
            horizon = timeline.times[event] - days * DAY
            while removed < added and timeline.times[removed] < horizon:
                counts[timeline.item_codes[removed]] -= 1
                removed += 1
        out[row] = counts
    return out


def history_masks(timeline: Timeline, cases: Cases) -> np.ndarray:
    """[C, n_items] bool: the items each case's user interacted with before it."""
    mask = np.zeros((len(cases), len(timeline.item_ids)), dtype=bool)
    for row, event in enumerate(cases.events.tolist()):
        mask[row, timeline.item_codes[timeline.history(event)]] = True
    return mask


def top_of(scores: np.ndarray, k: int) -> np.ndarray:
    """[C, k] column indices of the k best scores per row; ties go to the lower index
    (the evaluation's tie rule: a stable sort of the negated scores)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    return order[:, :k]


# ---- rankers ----------------------------------------------------------------------------------


class Popularity:
    """The most interacted items before each event, the user's history masked."""

    name = "popularity"
    days: float | None = None
    exclude_seen = True  # evaluate.mask_history: the protocol's choice on repeats

    def top_k(self, timeline: Timeline, cases: Cases, k: int) -> np.ndarray:
        scores = counts_before(timeline, cases, self.days)
        if self.exclude_seen:
            scores[history_masks(timeline, cases)] = -np.inf
        scores[scores <= 0] = -np.inf  # nothing interacted with yet: not recommendable
        return _ids(timeline, top_of(scores, k), scores)


class RecentPopularity(Popularity):
    """The most interacted items in the ``days`` before each event."""

    def __init__(self, days: float = 7.0, exclude_seen: bool = True) -> None:
        self.days, self.exclude_seen = days, exclude_seen
        self.name = f"popularity, last {days:g} days"


def _ids(timeline: Timeline, columns: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Item ids of the chosen columns; a column whose score is -inf is no pick (None)."""
    ids = np.asarray(timeline.item_ids, dtype=object)[columns]
    picked = np.take_along_axis(scores, columns, axis=1)
    ids[~np.isfinite(picked)] = None
    return ids


@dataclass
class Served:
    """A served bundle scored as served (``live``) or frozen at its training (stale).

    ``users`` holds the live profiles (canonical users table); ``vectoriser`` gives the
    text vectors of items that arrive after training (as served only).
    """

    bundle: Any  # inference.bundle.Bundle
    live: bool = True
    users: pd.DataFrame | None = None
    vectoriser: Vectoriser | None = None
    exclude_seen: bool = True  # evaluate.mask_history: the protocol's choice on repeats
    batch_size: int = 256
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = "as served" if self.live else "stale"

    def top_k(self, timeline: Timeline, cases: Cases, k: int) -> np.ndarray:
        from pipelines.evaluation.ranking import masked_scores
        from pipelines.inference.now import NowBlend, blend_scores

        bundle = self.bundle
        # the model's column of every timeline item (-1: the model cannot score it)
        column = np.array([bundle.catalogue.index.get(i, -1) for i in timeline.item_ids])
        model = bundle.model
        if self.live:
            model, column = grown(bundle, timeline.item_ids, column, self.vectoriser)
        blend = NowBlend.from_card(bundle.card) if self.live else None
        recent = counts_before(timeline, cases, blend.window_days) if blend else None
        scorable = column >= 0
        out = np.empty((len(cases), k), dtype=object)
        for start in range(0, len(cases), self.batch_size):
            rows = slice(start, start + self.batch_size)
            part = cases.subset(np.arange(len(cases))[rows])
            histories, seen = self._histories(timeline, part, column, model.n_items)
            with torch.inference_mode():
                scores = masked_scores(model, histories, exclude_seen=False).float().numpy()
            full = np.full((len(part), len(timeline.item_ids)), -np.inf, dtype=np.float32)
            full[:, scorable] = scores[:, column[scorable]]
            # what the server does: the seen and the not yet arrived are out of the
            # ranking before the blend (so out of its softmax), and stay out after it
            hidden = seen.copy() if self.exclude_seen else np.zeros_like(seen)
            if self.live:  # an item is servable once it has arrived (its first event)
                hidden |= part.events[:, None] <= timeline.first_seen[None, :]
            full[hidden] = -np.inf
            if blend is not None:
                full = blend_scores(full, recent[rows], part.gaps, blend)
                full[hidden] = -np.inf
            out[rows] = _ids(timeline, top_of(full, k), full)
        return out

    def _histories(self, timeline: Timeline, part: Cases, column: np.ndarray, n_items: int):
        """The model's inputs for each case, and the items the server would mask."""
        from pipelines.features.batch import Histories
        from pipelines.inference.recommend import histories_of

        bundle = self.bundle
        seen = np.zeros((len(part), len(timeline.item_ids)), dtype=bool)
        items, stamps, profiles = [], [], []
        code_of = {item: code for code, item in enumerate(timeline.item_ids)}
        for row, (event, user) in enumerate(zip(part.events, part.users, strict=True)):
            if self.live:
                past = timeline.history(int(event))
                codes = timeline.item_codes[past]
                items.append(column[codes].tolist())
                stamps.append(timeline.times[past].tolist())
                seen[row, codes] = True
            else:  # the history the bundle was built with, nothing since
                known = bundle.users.index.get(user)
                model_items = [] if known is None else bundle.users.items[known]
                items.append(list(model_items))
                stamps.append([] if known is None else bundle.users.timestamps[known])
                ids = [bundle.catalogue.item_ids[i] for i in model_items]
                seen[row, [code_of[i] for i in ids if i in code_of]] = True
            profiles.append(self._profile(user))
        batch = histories_of(items, stamps, profiles, n_items)
        now = torch.as_tensor(timeline.times[part.events], dtype=torch.long)
        return Histories(batch.items, batch.timestamps, batch.profiles, now), seen

    def _profile(self, user: str) -> list[int]:
        bundle = self.bundle
        if self.live and self.users is not None:
            row = self._profiles().get(user)
            if row is not None:
                return bundle.profile_code(row)
        known = bundle.users.index.get(user)
        return [0, 0, 0, 0] if known is None else bundle.users.profiles[known].tolist()

    def _profiles(self) -> dict[str, dict[str, str]]:
        if not hasattr(self, "_profile_rows"):
            table = self.users.drop_duplicates(schema.USER_ID, keep="last")
            self._profile_rows = {
                str(u): {c: row[c] for c in schema.PROFILE_COLUMNS if c in table}
                for u, row in table.set_index(schema.USER_ID).iterrows()
            }
        return self._profile_rows


def grown(bundle, item_ids: Sequence[str], column: np.ndarray, vectoriser: Vectoriser | None):
    """(model, column) with the items the bundle lacks added from their text vectors, when
    the model scores items from text (``inference.catalogue``, as ``POST /items`` does)."""
    from pipelines.inference.catalogue import extend_model, scores_from_text

    missing = [i for i, c in zip(item_ids, column, strict=True) if c < 0]
    if not missing or vectoriser is None or not scores_from_text(bundle.model):
        return bundle.model, column
    vectors = vectoriser(missing)
    if vectors is None or not len(vectors):
        return bundle.model, column
    model = extend_model(bundle.model, vectors)
    column = column.copy()
    added = iter(range(bundle.model.n_items, model.n_items))
    for position, c in enumerate(column.tolist()):
        if c < 0:
            column[position] = next(added)
    return model, column


# ---- metrics ------------------------------------------------------------------------------------


def per_case(tops: np.ndarray, targets: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(NDCG@k, HR@k) per case: binary relevance, one target, 1/log2(rank + 2) at its rank."""
    ndcg = np.zeros(len(targets))
    for row, (top, target) in enumerate(zip(tops, targets, strict=True)):
        for rank, item in enumerate(top[:k]):
            if item == target:
                ndcg[row] = 1.0 / math.log2(rank + 2)
                break
    return ndcg, (ndcg > 0).astype(float)


@dataclass(frozen=True)
class Scored:
    """Per-case metrics of one ranker on a set of cases."""

    name: str
    ndcg: np.ndarray
    hr: np.ndarray


def score(rankers: Sequence[Any], timeline: Timeline, cases: Cases, k: int) -> list[Scored]:
    targets = timeline.items[cases.events]
    out = []
    for ranker in rankers:
        ndcg, hr = per_case(ranker.top_k(timeline, cases, k), targets, k)
        out.append(Scored(ranker.name, ndcg, hr))
    return out


SLICES = {
    "all": lambda c: c.known,
    "first of week": lambda c: c.known & c.first_of_window,
    "after a break": lambda c: c.known & c.after_break,
    "new users": lambda c: ~c.known,
}


def summary(
    scored: list[Scored], cases: Cases, k: int, *, baseline: str = "popularity", seed: int = 42
) -> dict[str, dict[str, Any]]:
    """Per slice, per ranker: NDCG@k and HR@k with 95% bootstrap intervals over users,
    and the paired difference in NDCG@k against ``baseline`` on the same cases."""
    base = next((s for s in scored if s.name == baseline), None)
    out: dict[str, dict[str, Any]] = {}
    for slice_name, pick in SLICES.items():
        mask = pick(cases)
        entry: dict[str, Any] = {"cases": int(mask.sum()), "users": len(set(cases.users[mask]))}
        if not mask.any():
            out[slice_name] = entry
            continue
        groups = cases.users[mask]
        for s in scored:
            row = {
                f"ndcg@{k}": mean_interval(s.ndcg[mask], groups, seed=seed).to_dict(),
                f"hr@{k}": mean_interval(s.hr[mask], groups, seed=seed).to_dict(),
            }
            if base is not None and s is not base:
                diff = paired_difference(s.ndcg[mask], base.ndcg[mask], groups, seed=seed)
                row[f"ndcg@{k} vs {baseline}"] = {**diff.to_dict(), "verdict": diff.verdict}
            entry[s.name] = row
        out[slice_name] = entry
    return out


# ---- the curve ----------------------------------------------------------------------------------

CURVE_RANKERS = (
    "as served",
    "stale",
    "previous champion, as served",
    "popularity",
    "popularity, last 7 days",
)
CURVE_SLICES = ("all", "first of week", "after a break", "new users")


def curve_rows(entries: Sequence[tuple[str, str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per monitored batch: (batch, drift status, ``summary`` output) -> NDCG@k and
    HR@k of every ranker on every slice, with the intervals' bounds (blank when absent)."""
    rows = []
    for batch, status, measured in entries:
        k, slices = measured["k"], measured["slices"]
        row: dict[str, Any] = {"batch": batch, "drift": status}
        for slice_name in CURVE_SLICES:
            entry = slices.get(slice_name, {})
            prefix = slice_name.replace(" ", "_")
            row[f"{prefix}_cases"] = entry.get("cases", 0)
            for ranker in CURVE_RANKERS:
                name = ranker.replace(", ", "_").replace(" ", "_")
                values = entry.get(ranker, {})
                for metric in (f"ndcg@{k}", f"hr@{k}"):
                    got = values.get(metric, {})
                    column = f"{prefix}_{name}_{metric.split('@')[0]}"
                    row[column] = got.get("mean")
                    if slice_name == "all":
                        row[f"{column}_low"], row[f"{column}_high"] = (
                            got.get("low"),
                            got.get("high"),
                        )
        rows.append(row)
    return rows


def curve_csv(rows: list[dict[str, Any]]) -> str:
    """The rows as CSV (a DVC plot): every column any row has, in first-seen order."""
    import csv
    import io

    columns = list(dict.fromkeys(c for row in rows for c in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: ("" if row.get(c) is None else row[c]) for c in columns})
    return out.getvalue()


def text_vectoriser(items: pd.DataFrame) -> Vectoriser:
    """Item ids -> unit MiniLM vectors of their texts, the encoder loaded on first use (an
    item that arrived after training is encoded as ``POST /items`` encodes it)."""
    from pipelines.features.text import TextEncoder, item_text

    texts = {
        str(row.item_id): item_text(row.title, row.year, row.genres)
        for row in items.drop_duplicates(schema.ITEM_ID, keep="last").itertuples()
    }
    encoder: list[Any] = []

    def vectorise(ids: Sequence[str]) -> np.ndarray | None:
        wanted = [texts[i] for i in ids if i in texts]
        if not wanted:
            return None
        if not encoder:
            encoder.append(TextEncoder(device="cpu"))
        return np.asarray(encoder[0].encode(wanted), dtype=np.float32)

    return vectorise


# ---- per-case scores kept on disk, so weeks can be pooled ---------------------------------------


def save_cases(path: Any, scored: list[Scored], cases: Cases) -> None:
    """Every ranker's per-case NDCG and HR and the cases' slices, in one .npz file."""
    from pipelines.core.io import atomic_path

    arrays: dict[str, np.ndarray] = {
        "users": cases.users.astype(str),
        "gaps": cases.gaps,
        "known": cases.known,
        "first_of_window": cases.first_of_window,
        "names": np.array([s.name for s in scored]),
    }
    for position, s in enumerate(scored):
        arrays[f"ndcg_{position}"], arrays[f"hr_{position}"] = s.ndcg, s.hr
    with atomic_path(path) as staging, open(staging, "wb") as handle:
        np.savez_compressed(handle, **arrays)


def load_cases(path: Any) -> tuple[list[Scored], Cases]:
    data = np.load(path, allow_pickle=False)
    names = data["names"].tolist()
    scored = [Scored(n, data[f"ndcg_{i}"], data[f"hr_{i}"]) for i, n in enumerate(names)]
    users = data["users"].astype(object)
    cases = Cases(
        np.arange(len(users)), users, data["gaps"], data["known"], data["first_of_window"]
    )
    return scored, cases


def pool(parts: Sequence[tuple[list[Scored], Cases]]) -> tuple[list[Scored], Cases]:
    """Several windows' cases as one set; a ranker missing from a window is left out."""
    names = set.intersection(*(set(s.name for s in scored) for scored, _ in parts))
    order = [s.name for s in parts[0][0] if s.name in names]
    scored = [
        Scored(
            name,
            np.concatenate([next(s for s in sc if s.name == name).ndcg for sc, _ in parts]),
            np.concatenate([next(s for s in sc if s.name == name).hr for sc, _ in parts]),
        )
        for name in order
    ]
    cases = Cases(
        *(np.concatenate([getattr(c, f) for _, c in parts]) for f in Cases.__dataclass_fields__)
    )
    return scored, cases
