"""Drift of a new batch against the training reference: a decision with a known false-alarm rate.

A week of MovieLens is 2-4 thousand events from 50-90 users, a handful of whom give a third
of its events; and every week differs from the weeks before it in ways nobody would call
drift (users do not rate a film twice, so the films they already rated, the popular ones,
fade from their weeks). Tests that count events as independent against a fixed threshold
(PSI, or a chi-square on events) saw "drift" in 22 of 24 random windows of an unchanged
period. So each signal here is judged against **the reference's own weeks**:

- the statistic of the batch against the reference (its past): for the distribution
  features (``FEATURES``: per event the item's popularity in the past, in quantile bins of
  the past, its first genre, the hour of day in 3-hour bins; per active user age band,
  gender and occupation; every user's events count as one user) the distribution; for the
  new, the share of events on items the reference never saw, and of users it never saw;
- its null, for the distribution features: same-size draws of the reference's own weeks
  (a week of the reference, the batch's number of its users), so the users' clustering
  and ordinary week-to-week change are in it; two statistics per feature, each with its
  p-value among the draws: the Jensen-Shannon distance (a broad change) and the largest
  per-category z-score (one category that moved);
- for the shares of the new: the reference's own weeks, each against the weeks before it
  (a one-sided z-test: MovieLens welcomes new users and films every week).

The batch drifts when any signal's p-value is below ``alpha / n_signals`` (Bonferroni).
``bench/drift.py`` measures the false-alarm rate on windows drawn from an unchanged period
and the power on injected shifts, at the sizes real weeks have.

Evidently writes the HTML report: its ``DataDriftPreset`` with the tests it picks by size
(KS or chi-square below 1,000 rows, Wasserstein or Jensen-Shannon above) on the same
features, and the embedding drift of the touched items' MiniLM vectors. Those are shown for
reading, not decided on; the decision and every signal's statistic, null and p-value are
on top of the report and in ``decision.json``. Below ``min_events`` nothing is decided.
So are the behaviour clusters (``features.behaviour``, ``monitoring.rhythm_clusters``):
fitted on the reference's users, the batch's users placed on them, each cluster's share of
users in both (``signals["rhythm"]``); a segment to read, not a signal.
"""

from __future__ import annotations

import html
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core import schema
from pipelines.core.config import MonitoringParams
from pipelines.core.io import write_json, write_text
from pipelines.features.behaviour import fit_rhythms, rhythm_features

log = logging.getLogger(__name__)

WEEK = 7 * 86_400
POPULARITY, GENRE, HOUR = "item_popularity", "genre", "hour"
EVENT_FEATURES = (POPULARITY, GENRE, HOUR)
USER_FEATURES = (schema.AGE_BAND, schema.GENDER, schema.OCCUPATION)
FEATURES = (*EVENT_FEATURES, *USER_FEATURES)
NEW_ITEMS, NEW_USERS = "new_items_share", "new_users_share"
SIGNALS = (*FEATURES, NEW_ITEMS, NEW_USERS)
NO_GENRE = "(none)"
POPULARITY_BINS = 10
HOUR_BIN = 3  # hours per bin of the hour of day

# item ids -> unit vectors (rows), or None for an item without one
Vectoriser = Callable[[Sequence[str]], np.ndarray | None]


@dataclass(frozen=True)
class Decision:
    batch: str
    status: str  # drift | no_drift | insufficient
    reasons: tuple[str, ...]
    signals: dict[str, Any] = field(default_factory=dict)

    @property
    def drift(self) -> bool:
        return self.status == "drift"

    @property
    def main_reason(self) -> str:
        return self.reasons[0] if self.reasons else ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "status": self.status,
            "drift": self.drift,
            "reasons": list(self.reasons),
            "signals": self.signals,
        }


# ---- features: one histogram per active user ------------------------------------------------


def _genres(items: pd.DataFrame) -> pd.Series:
    return (
        items.drop_duplicates(schema.ITEM_ID, keep="last")
        .set_index(schema.ITEM_ID)[schema.GENRES]
        .map(lambda g: str(next(iter(g))) if g is not None and len(g) else NO_GENRE)
    )


@dataclass(frozen=True)
class Window:
    """One window's users as rows of per-feature histograms, beside its past's histograms.

    ``per_user[f]`` is [U, bins] (for an event feature the user's events in each bin, for a
    profile field a one-hot row), ``past[f]`` the past's own histogram in the same bins;
    ``new`` is [U, 3]: the user's events, those on items the past never saw, and whether
    the user is new to the past.
    """

    per_user: dict[str, np.ndarray]
    past: dict[str, np.ndarray]
    new: np.ndarray

    def __len__(self) -> int:
        return len(self.new)


def window_of(
    events: pd.DataFrame,
    past: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame,
    vocabulary: dict[str, list[str]],
) -> Window:
    """The histograms of ``events`` against ``past`` (bins set by the past)."""
    user_index, user_ids = pd.factorize(events[schema.USER_ID].astype(str))
    n_users = len(user_ids)
    counts = past[schema.ITEM_ID].value_counts()
    per_user, reference = {}, {}

    # item popularity in the past: quantile bins of the past's own events; an event on an
    # item the past never saw has no bin (its share is the new-items signal)
    def log_pop(frame: pd.DataFrame) -> np.ndarray:
        return np.log1p(counts.reindex(frame[schema.ITEM_ID]).fillna(0).to_numpy(float))

    # always POPULARITY_BINS bins (tied edges leave some empty), so that every reference
    # a batch or a null week is compared with bins it alike
    edges = np.quantile(log_pop(past), np.linspace(0, 1, POPULARITY_BINS + 1)[1:-1])
    genres = _genres(items)
    genre_vocabulary = {g: i for i, g in enumerate(sorted(set(genres.tolist()) | {NO_GENRE}))}

    def codes(frame: pd.DataFrame) -> dict[str, tuple[np.ndarray, int]]:
        pop = log_pop(frame)
        genre = frame[schema.ITEM_ID].map(genres).fillna(NO_GENRE).map(genre_vocabulary)
        hours = (frame[schema.TIMESTAMP].to_numpy(np.int64) // 3600) % 24
        return {
            POPULARITY: (
                np.where(pop > 0, np.searchsorted(edges, pop, side="right"), -1),
                POPULARITY_BINS,
            ),
            GENRE: (genre.to_numpy(np.int64), len(genre_vocabulary)),
            HOUR: (hours // HOUR_BIN, 24 // HOUR_BIN),
        }

    # every user counts once, whatever their number of events: a week's events are a few
    # users' sessions, and a heavy user's habits would otherwise weigh as much as dozens
    ours, theirs = codes(events), codes(past)
    past_index, past_ids = pd.factorize(past[schema.USER_ID].astype(str))
    for name in EVENT_FEATURES:
        (mine, bins), (old, _) = ours[name], theirs[name]
        per_user[name] = _shares(_histograms(mine, user_index, bins, n_users))
        reference[name] = _shares(_histograms(old, past_index, bins, len(past_ids))).sum(axis=0)

    past_users = pd.unique(past[schema.USER_ID].astype(str))
    mine_profiles = user_codes(user_ids, users, vocabulary)
    past_profiles = user_codes(past_users, users, vocabulary)
    for name in USER_FEATURES:
        (mine, bins), (old, _) = mine_profiles[name], past_profiles[name]
        per_user[name] = np.eye(bins)[mine]
        reference[name] = np.bincount(old, minlength=bins).astype(float)

    seen_items = set(past[schema.ITEM_ID])
    on_new = (~events[schema.ITEM_ID].isin(seen_items)).to_numpy()
    totals = np.bincount(user_index, minlength=n_users).astype(float)
    fresh = np.bincount(user_index, weights=on_new.astype(float), minlength=n_users)
    known = set(past_users)
    is_new = np.array([u not in known for u in user_ids], dtype=float)
    return Window(per_user, reference, np.stack([totals, fresh, is_new], axis=1))


def user_codes(
    user_ids: Sequence[str], users: pd.DataFrame, vocabulary: dict[str, list[str]]
) -> dict[str, tuple[np.ndarray, int]]:
    """Per profile field: (code of each user, number of codes); unknown is a code too."""
    profile = users.drop_duplicates(schema.USER_ID, keep="last").set_index(schema.USER_ID)
    out = {}
    for column in USER_FEATURES:
        values = pd.Series(list(user_ids), dtype=object).map(profile.get(column, {}))
        values = values.fillna(schema.UNKNOWN).astype(str)
        labels = vocabulary[column]
        index = {label: i for i, label in enumerate(labels)}
        codes = np.array([index.get(v, len(labels)) for v in values], dtype=np.int64)
        out[column] = (codes, len(labels) + 1)
    return out


def _histograms(codes: np.ndarray, groups: np.ndarray, n_bins: int, n_groups: int) -> np.ndarray:
    """[n_groups, n_bins] counts of each group's codes; a code of -1 counts nowhere."""
    out = np.zeros((n_groups, n_bins))
    kept = codes >= 0
    np.add.at(out, (groups[kept], codes[kept]), 1.0)
    return out


def _shares(hists: np.ndarray) -> np.ndarray:
    """Rows scaled to sum 1 (a row of zeros stays zeros)."""
    totals = hists.sum(axis=1, keepdims=True)
    return np.divide(hists, totals, out=np.zeros_like(hists), where=totals > 0)


def js_distance(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon distance (base 2, in [0, 1]) between histograms, row-wise for ``p``."""
    p = np.atleast_2d(np.asarray(p, dtype=np.float64))
    q = np.asarray(q, dtype=np.float64)[None, :]
    p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-300)
    q = q / max(q.sum(), 1e-300)
    m = (p + q) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(a > 0, a * np.log2(a / np.where(b > 0, b, 1.0)), 0.0).sum(axis=1)

    return np.sqrt(np.maximum((kl(p, m) + kl(q, m)) / 2, 0.0))


def statistics(window: Window, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Every signal's statistic for each selection of users: ``rows`` is [R, n] user rows."""
    out = {}
    for name in FEATURES:
        sums = window.per_user[name][rows].sum(axis=1)  # [R, bins]
        out[name] = js_distance(sums, window.past[name])
    picked = window.new[rows]  # [R, n, 3]
    events = picked[..., 0].sum(axis=1)
    out[NEW_ITEMS] = picked[..., 1].sum(axis=1) / np.maximum(events, 1.0)
    out[NEW_USERS] = picked[..., 2].mean(axis=1)
    return out


# ---- the nulls ---------------------------------------------------------------------------------


def calendar_weeks(events: pd.DataFrame, min_events: int) -> list[np.ndarray]:
    """Row positions of each week of ``events`` (counted from its first event) holding at
    least ``min_events`` events, in time order."""
    times = events[schema.TIMESTAMP].to_numpy(np.int64)
    if not len(times):
        return []
    week = (times - times.min()) // WEEK
    return [np.flatnonzero(week == w) for w in np.unique(week) if (week == w).sum() >= min_events]


def _draw_users(rng: np.random.Generator, available: int, wanted: int, draws: int) -> np.ndarray:
    """[draws, wanted] user rows: without replacement while the week has enough users."""
    if available >= wanted:
        return np.argsort(rng.random((draws, available)), axis=1)[:, :wanted]
    return rng.integers(0, available, size=(draws, wanted))


@dataclass(frozen=True)
class Null:
    """Same-size draws of the reference's own weeks, each week against the rest of the
    reference: per distribution feature, each draw's Jensen-Shannon distance from its rest
    and its shares minus the rest's; per share of the new, each draw's share."""

    distances: dict[str, np.ndarray]  # [D]
    deviations: dict[str, np.ndarray]  # [D, bins]
    shares: dict[str, np.ndarray]  # [D]


def leave_one_week_out(
    reference: dict[str, pd.DataFrame],
    n_users: int,
    cfg: MonitoringParams,
    vocabulary: dict[str, list[str]],
) -> Null | None:
    """The null (``Null``): every reference week with ``min_events`` events is, in turn, a
    batch against the other weeks, its users drawn to the batch's number (``null_resamples``
    draws in all). A draw is what a new batch looks like when nothing changed: a week (its
    users came together and saw the same new films), of the batch's size, *outside* the
    reference it is compared with, exactly as a batch is."""
    events = reference["interactions"].reset_index(drop=True)
    weeks = calendar_weeks(events, cfg.min_events)
    if len(weeks) < 2:
        return None
    rng = np.random.default_rng(cfg.seed)
    draws = max(1, cfg.null_resamples // len(weeks))
    distances: dict[str, list[np.ndarray]] = {name: [] for name in FEATURES}
    deviations: dict[str, list[np.ndarray]] = {name: [] for name in FEATURES}
    shares: dict[str, list[np.ndarray]] = {NEW_ITEMS: [], NEW_USERS: []}
    for rows in weeks:
        rest = np.ones(len(events), dtype=bool)
        rest[rows] = False
        window = window_of(
            events.iloc[rows], events[rest], reference["items"], reference["users"], vocabulary
        )
        picks = _draw_users(rng, len(window), n_users, draws)
        for name in FEATURES:
            drawn = _shares(window.per_user[name][picks].sum(axis=1))  # [d, bins]
            past = window.past[name] / max(window.past[name].sum(), 1e-300)
            distances[name].append(js_distance(drawn, window.past[name]))
            deviations[name].append(drawn - past)
        for name in (NEW_ITEMS, NEW_USERS):
            shares[name].append(statistics(window, picks)[name])
    return Null(
        {name: np.concatenate(v) for name, v in distances.items()},
        {name: np.concatenate(v) for name, v in deviations.items()},
        {name: np.concatenate(v) for name, v in shares.items()},
    )


def distribution_tests(
    observed: np.ndarray, past: np.ndarray, null_distances: np.ndarray, null_deviations: np.ndarray
) -> dict[str, float]:
    """Two statistics of a batch's distribution against the reference (``past``), each a
    z-score against the null's draws (their mean and spread, the spread with a floor): the
    Jensen-Shannon distance (a broad change) and the largest per-category deviation (one
    category that moved: a genre's share x3). The p-value is the smaller one-sided normal
    tail, Bonferroni-corrected over the two and over the categories."""
    distance = float(js_distance(observed, past)[0])
    z_distance = (distance - null_distances.mean()) / max(null_distances.std(), DISTANCE_FLOOR)
    deviation = observed / max(observed.sum(), 1e-300) - past / max(past.sum(), 1e-300)
    mean = null_deviations.mean(axis=0)
    spread = np.maximum(null_deviations.std(axis=0), CATEGORY_FLOOR)
    moved = np.abs(deviation - mean) / spread
    categories = len(moved)
    p = min(1.0, 2 * min(_tail(z_distance), 2 * categories * _tail(float(moved.max()))))
    return {
        "statistic": distance,
        "null_mean": float(null_distances.mean()),
        "null_q95": float(np.quantile(null_distances, 0.95)),
        "z": float(z_distance),
        "category": int(moved.argmax()),
        "category_z": float(moved.max()),
        "p": p,
    }


def _tail(z: float) -> float:
    """One-sided normal tail P(Z >= z)."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def z_test(value: float, null: np.ndarray, floor: float) -> tuple[float, float]:
    """(z, one-sided p) of a statistic against its null values (the spread has a floor, so a
    reference of near-identical weeks does not make every wobble drift)."""
    if not len(null):
        return 0.0, 1.0
    spread = max(float(np.std(null, ddof=1)) if len(null) > 1 else 0.0, floor)
    z = (value - float(np.mean(null))) / spread
    return z, _tail(z)


# the least spread a null is given: below it, a reference of a few near-identical weeks
# would call every wobble drift
SPREAD_FLOOR = 0.02  # a share of the new (items, users) between weeks
DISTANCE_FLOOR = 0.01  # a Jensen-Shannon distance between same-size weeks
CATEGORY_FLOOR = 0.01  # one category's share between same-size weeks


# ---- the decision ---------------------------------------------------------------------------


def signals_of(
    reference: dict[str, pd.DataFrame], current: dict[str, pd.DataFrame], cfg: MonitoringParams
) -> dict[str, dict[str, Any]]:
    """Every signal's statistic, its null and p-value (module docstring)."""
    items = pd.concat([reference["items"], current["items"]])
    users = pd.concat([reference["users"], current["users"]])
    profile = users.drop_duplicates(schema.USER_ID, keep="last")
    vocabulary = {
        c: sorted(profile[c].dropna().astype(str).unique().tolist()) if c in profile else []
        for c in USER_FEATURES
    }
    reference = {**reference, "items": items, "users": users}
    window = window_of(current["interactions"], reference["interactions"], items, users, vocabulary)
    everyone = np.arange(len(window))[None, :]
    null = leave_one_week_out(reference, len(window), cfg, vocabulary)
    out: dict[str, dict[str, Any]] = {}
    for name in FEATURES:
        observed = _shares(window.per_user[name][everyone].sum(axis=1))[0]
        if null is None:
            out[name] = {"statistic": float(js_distance(observed, window.past[name])[0]), "p": 1.0}
            continue
        out[name] = distribution_tests(
            observed, window.past[name], null.distances[name], null.deviations[name]
        )
    observed_shares = statistics(window, everyone)
    for name in (NEW_ITEMS, NEW_USERS):
        value = float(observed_shares[name][0])
        weekly = np.zeros(0) if null is None else null.shares[name]
        z, p = z_test(value, weekly, SPREAD_FLOOR)
        out[name] = {
            "statistic": value,
            "null_mean": float(weekly.mean()) if len(weekly) else None,
            "z": z,
            "p": p,
        }
    return out


def decide(signals: dict[str, dict[str, Any]], alpha: float) -> tuple[str, list[str]]:
    """drift / no_drift and the reasons: every signal below alpha / n_signals, smallest p first."""
    level = alpha / len(signals)
    crossed = sorted(
        ((s["p"], name) for name, s in signals.items() if s["p"] < level), key=lambda t: t[0]
    )
    if not crossed:
        worst = min(signals.items(), key=lambda kv: kv[1]["p"])
        return "no_drift", [
            f"no signal below p {level:.4f} (alpha {alpha} over {len(signals)} signals); "
            f"smallest: {worst[0]} p {worst[1]['p']:.3f}"
        ]
    return "drift", [_reason(name, signals[name], level) for _, name in crossed]


def _reason(name: str, s: dict[str, Any], level: float) -> str:
    if name in (NEW_ITEMS, NEW_USERS):
        what = "events on items" if name == NEW_ITEMS else "active users"
        return (
            f"{s['statistic']:.0%} of {what} are new (the reference's own weeks: "
            f"{s['null_mean']:.0%} on average; z {s['z']:.1f}, p {s['p']:.2g} < {level:.4f})"
        )
    return (
        f"{name} moved: Jensen-Shannon distance {s['statistic']:.3f} from the reference "
        f"(same-size weeks of the reference: {s['null_mean']:.3f} on average, z "
        f"{s['z']:.1f}), its most moved category z {s['category_z']:.1f}; "
        f"p {s['p']:.2g} < {level:.4f}"
    )


def _user_times(events: pd.DataFrame) -> list[np.ndarray]:
    grouped = events.groupby(events[schema.USER_ID].astype(str), sort=True)[schema.TIMESTAMP]
    return [times.to_numpy(np.int64) for _, times in grouped]


def rhythm_shares(past: pd.DataFrame, events: pd.DataFrame, k: int) -> dict[str, dict]:
    """Each behaviour cluster's share of the past's users and of the batch's users.

    A batch user's rhythm is read from the batch's events only (the week they acted in).
    """
    past_features = rhythm_features(_user_times(past))  # [past users, 8]
    rhythms = fit_rhythms(past_features, k)
    ours = rhythms.assign(rhythm_features(_user_times(events)))
    theirs = rhythms.assign(past_features)
    shares = {}
    for index, name in enumerate(rhythms.names):
        shares[name] = {
            "reference_share": round(float(np.mean(theirs == index)), 4),
            "batch_share": round(float(np.mean(ours == index)), 4) if len(ours) else 0.0,
            "batch_users": int(np.sum(ours == index)),
        }
    return shares


def assess(
    batch: str,
    reference: dict[str, pd.DataFrame],
    current: dict[str, pd.DataFrame],
    cfg: MonitoringParams,
    *,
    out_dir: Path | None = None,
    vectoriser: Vectoriser | None = None,
    quality: dict[str, Any] | None = None,
    report: bool = True,
) -> Decision:
    """Compare a batch with the reference; write ``report.html`` and ``decision.json``.

    ``reference`` and ``current`` hold ``interactions``, ``items`` and ``users`` frames
    (canonical, after privacy). ``quality`` (the champion's prequential numbers on the
    batch, ``monitoring.quality.summary``) is reported beside the decision, not decided on.
    ``report=False`` skips Evidently's HTML (the benchmark decides thousands of windows).
    """
    started = time.perf_counter()
    events = current["interactions"]
    signals: dict[str, Any] = {
        "events": len(events),
        "users": int(events[schema.USER_ID].nunique()),
        "reference_events": len(reference["interactions"]),
    }
    if len(events) < cfg.min_events:
        decision = Decision(
            batch,
            "insufficient",
            (f"{len(events)} events, below the minimum window of {cfg.min_events}: no decision",),
            signals,
        )
        if out_dir is not None:
            _write(decision, Path(out_dir), None, quality)
        return decision
    tests = signals_of(reference, current, cfg)
    status, reasons = decide(tests, cfg.alpha)
    signals["tests"] = tests
    if cfg.rhythm_clusters:
        signals["rhythm"] = rhythm_shares(reference["interactions"], events, cfg.rhythm_clusters)
    decision = Decision(batch, status, tuple(reasons), signals)
    if out_dir is not None:
        snapshot = _evidently(reference, current, cfg, vectoriser) if report else None
        _write(decision, Path(out_dir), snapshot, quality)
    log.info(
        "batch %s: %s (%s) in %.1fs",
        batch,
        status,
        decision.main_reason,
        time.perf_counter() - started,
    )
    return decision


# ---- Evidently's report ---------------------------------------------------------------------


def _report_frame(
    events: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame, reference_events: pd.DataFrame
) -> pd.DataFrame:
    counts = reference_events[schema.ITEM_ID].value_counts()
    genres = _genres(items)
    profile = users.drop_duplicates(schema.USER_ID, keep="last").set_index(schema.USER_ID)
    out = pd.DataFrame(
        {
            POPULARITY: np.log1p(counts.reindex(events[schema.ITEM_ID]).fillna(0).to_numpy(float)),
            GENRE: events[schema.ITEM_ID].map(genres).fillna(NO_GENRE).to_numpy(),
            HOUR: ((events[schema.TIMESTAMP].to_numpy(np.int64) // 3600) % 24).astype(float),
        }
    )
    for column in USER_FEATURES:
        source = profile[column] if column in profile else pd.Series(dtype=object)
        out[column] = (
            events[schema.USER_ID].map(source).fillna(schema.UNKNOWN).astype(str).to_numpy()
        )
    return out


def _evidently(reference, current, cfg: MonitoringParams, vectoriser: Vectoriser | None):
    """Evidently's snapshot: size-picked drift tests per feature, embedding drift of items."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import EmbeddingsDrift
    from evidently.presets import DataDriftPreset

    items = pd.concat([reference["items"], current["items"]])
    users = pd.concat([reference["users"], current["users"]])
    ref_events = reference["interactions"]
    sample = (
        ref_events
        if len(ref_events) <= cfg.reference_rows
        else ref_events.sample(n=cfg.reference_rows, random_state=cfg.seed)
    )
    ref = _report_frame(sample, items, users, ref_events)
    cur = _report_frame(current["interactions"], items, users, ref_events)
    metrics: list[Any] = [DataDriftPreset(columns=list(FEATURES))]
    definition: dict[str, Any] = {
        "numerical_columns": [POPULARITY, HOUR],
        "categorical_columns": [GENRE, *USER_FEATURES],
    }
    vectors = [
        None if vectoriser is None else vectoriser(frame[schema.ITEM_ID].tolist())
        for frame in (sample, current["interactions"])
    ]
    if all(v is not None and len(v) for v in vectors):
        from evidently.legacy.metrics.data_drift import embeddings_drift

        # the report's t-SNE plot needs far fewer vectors than Evidently's default 2,500
        embeddings_drift.SAMPLE_CONSTANT = cfg.embedding_plot_rows
        columns = [f"e{i}" for i in range(vectors[0].shape[1])]
        ref, cur = _beside(ref, vectors[0], columns), _beside(cur, vectors[1], columns)
        definition["embeddings"] = {"items": columns}
        metrics.append(EmbeddingsDrift(embeddings_name="items"))
    dd = DataDefinition(**definition)
    return Report(metrics).run(
        Dataset.from_pandas(cur, data_definition=dd), Dataset.from_pandas(ref, data_definition=dd)
    )


def _beside(frame: pd.DataFrame, vectors: np.ndarray, columns: list[str]) -> pd.DataFrame:
    """Features and vectors side by side; the shorter part is resampled (with replacement)."""
    rows = max(len(frame), len(vectors))
    rng = np.random.default_rng(0)
    if len(frame) < rows:
        frame = frame.iloc[rng.integers(0, len(frame), rows)]
    if len(vectors) < rows:
        vectors = vectors[rng.integers(0, len(vectors), rows)]
    return pd.concat([frame.reset_index(drop=True), pd.DataFrame(vectors, columns=columns)], axis=1)


def _write(decision: Decision, out_dir: Path, snapshot, quality: dict[str, Any] | None) -> None:
    payload = {**decision.to_dict(), "quality": quality}
    write_json(payload, out_dir / "decision.json")
    head = (
        f"<h1>Batch {html.escape(decision.batch)}: {html.escape(decision.status)}</h1><ul>"
        + "".join(f"<li>{html.escape(r)}</li>" for r in decision.reasons)
        + "</ul><p>The decision uses the calibrated tests below (each against same-size "
        "resamples of the reference); Evidently's own per-feature tests further down are "
        "shown for reading.</p>"
        + f"<pre>{html.escape(json.dumps(decision.signals, indent=2, default=str))}</pre>"
        + (
            ""
            if quality is None
            else "<h2>Champion quality on this batch, as served</h2>"
            f"<pre>{html.escape(json.dumps(quality, indent=2, default=str))}</pre>"
        )
    )
    if snapshot is None:
        write_text(f"<!doctype html><html><body>{head}</body></html>\n", out_dir / "report.html")
        return
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        snapshot.save_html(str(Path(tmp) / "report.html"))
        body = (Path(tmp) / "report.html").read_text()
    marker = "<body>"
    page = (
        body.replace(marker, marker + f'<div id="recops-decision">{head}</div>', 1)
        if marker in body
        else head + body
    )
    write_text(page, out_dir / "report.html")
